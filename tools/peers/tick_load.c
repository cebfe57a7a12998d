/*
 * tick_load — a game-shaped load client for the ENet and plain-UDP echo peers.
 *
 * N clients each send ONE message of --size bytes per tick at --tick-hz (a game client's
 * input/state update), the sends spread evenly over the tick period (client i of N sends
 * at offset i/N of each tick, not all at once), for --seconds after every client has
 * connected; then it waits up to --drain seconds for the last echoes and prints ONE JSON
 * line shaped like `xrudp bench --json` where the two overlap (settings, connected,
 * messages, offered/achieved rates, rtt_us, server, loadgen_cpu_ns_per_msg), so one
 * filter in scripts/bench.sh reads xrudp's and these peers' results alike.
 *
 *   --proto enet  ENet client hosts talking to enet_echo; messages go RELIABLE on
 *                 channel 0, the counterpart of xrudp's reliable-ordered channel 0. One
 *                 ENet host holds at most 4095 peers, so the clients are spread over
 *                 ceil(N/P) hosts, each with its own socket (P = --peers-per-host,
 *                 default 4000). Each service pass of a host walks all its peers, so
 *                 only hosts with work are serviced; a smaller P makes each pass
 *                 cheaper (see README.md).
 *   --proto udp   one nonblocking UDP socket per client (its own source port, like a
 *                 real player), talking to udp_echo; no reliability: loss is loss.
 *
 * Message layout: bytes 0..4 client index (u32 LE), 4..8 the client's sequence number =
 * its tick number (u32 LE), 8..16 the send time, CLOCK_MONOTONIC ns (u64 LE), then a
 * fixed pattern. Every echo is checked byte for byte (length, pattern, the index of the
 * client that got it, a sequence number it sent, a send time in the past); a mismatch is
 * counted as corrupt and not as echoed. The round-trip time of a message is the time its
 * echo was read minus its send time (not minus its scheduled time, as `xrudp bench`
 * does: how late sends were is reported apart, in send_lag_us and behind).
 *
 * The load is single-threaded: between sends it sleeps in epoll_pwait2 until the next
 * send is due or an echo arrives, so its CPU time is work, not spinning.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <enet/enet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000ULL
#define CHANNELS 2
#define MIN_SIZE 24
#define MAX_SIZE 1200
#define MAX_CLIENTS 100000UL
#define MAX_TICK_HZ 1000UL
#define MAX_SECONDS 3600UL
#define MAX_DRAIN 60UL
#define MAX_CONNECT_TIMEOUT 600UL
#define MAX_SCHEDULED (1ULL << 30) /* the seen-bitmap is then at most 128 MiB */
#define SAMPLE_CAP (64ULL << 20)   /* RTT samples kept at most: 512 MiB of u64 */
#define PEERS_PER_HOST 4000        /* default; ENet allows 4095 (ENET_PROTOCOL_MAXIMUM_PEER_ID) */
#define CONNECT_WINDOW 256         /* ENet connects in flight at once */
#define SEND_BURST_MAX 1024        /* sends between two I/O passes, when behind */
#define EPOLL_BATCH 256
#define DRAIN_EVENTS_MAX 65536
#define ENET_WAIT_CAP_NS 5000000ULL /* service each ENet host at least every 5 ms (timers) */
#define CLOSE_WAIT_NS (2 * NS_PER_S)
#define SOCK_BUF_BYTES (4 * 1024 * 1024)
#define DGRAM_MAX 2048
#define FD_HEADROOM 64
#define TIMER_TAG UINT32_MAX /* epoll tag of the fallback timerfd */

enum proto { PROTO_ENET, PROTO_UDP };
enum phase { PH_CONNECT, PH_RUN, PH_DRAIN, PH_CLOSE };
enum cstate { C_IDLE, C_CONNECTING, C_CONNECTED, C_FAILED, C_CLOSED };

struct opts {
    enum proto proto;
    struct sockaddr_in server;
    const char *server_arg;
    unsigned long clients, tick_hz, size, seconds, drain, connect_timeout, peers_per_host;
    long core;       /* -1: not pinned */
    long server_pid; /* 0: not given */
};

struct client {
    ENetPeer *peer; /* enet */
    int fd;         /* udp */
    uint32_t index;
    uint8_t state;
    uint64_t connect_start;
};

/* An ENet client host, serviced when it has work: sends queued, input, or timers due. */
struct ehost {
    ENetHost *h;
    uint64_t last_service;
    uint8_t dirty;
};

struct samples {
    uint64_t *v;
    uint64_t len, cap, overflow;
};

struct msgs {
    uint64_t scheduled, sent, unsent, send_refused, not_connected;
    uint64_t echoed, duplicates, corrupt;
};

struct run {
    const struct opts *o;
    enum phase phase;
    struct client *clients;
    uint32_t n;
    uint32_t *active; /* the clients connected when the schedule starts */
    uint32_t nactive;
    uint64_t per_client; /* messages each client sends: tick_hz * seconds */
    uint64_t tick_ns;
    uint8_t *seen; /* one bit per (client, sequence) */
    struct samples rtt, connect;
    struct msgs m;
    uint64_t connected, connect_failed, closed_during_run, inflight;
    char connect_failure[160];
    uint64_t behind, lag_sum, lag_max;
    uint64_t t_origin, t0;
    uint64_t socket_errors;
    int first_errno;
    int ep;
    int tfd; /* -1 unless epoll_pwait2 is missing */
    struct ehost *hosts;
    uint32_t nhosts;
    ENetAddress enet_server;
    unsigned char pattern[MAX_SIZE];
    unsigned char tx[MAX_SIZE];
    unsigned char rx[DGRAM_MAX];
};

/* ---------------------------------------------------------------- arguments ---- */

static void usage(const char *why)
{
    if (why != NULL)
        fprintf(stderr, "tick_load: %s\n", why);
    fprintf(stderr,
            "usage: tick_load --proto enet|udp --server IP:PORT --clients N --seconds T\n"
            "                 [--tick-hz H] [--size S] [--drain D] [--core C]\n"
            "                 [--server-pid PID] [--connect-timeout S] [--peers-per-host P]\n"
            "  --clients N          1..%lu\n"
            "  --tick-hz H          messages per client per second, 1..%lu (default 60)\n"
            "  --size S             message bytes, %d..%d (default 64)\n"
            "  --seconds T          schedule length after all clients connected, 1..%lu\n"
            "  --drain D            wait up to D s for the last echoes, 0..%lu (default 1)\n"
            "  --core C             pin to CPU C\n"
            "  --server-pid PID     report that process's CPU time over the schedule\n"
            "  --connect-timeout S  ENet connect deadline, 1..%lu (default 30)\n"
            "  --peers-per-host P   ENet clients per client host (socket), 1..%d (default %d)\n",
            MAX_CLIENTS, MAX_TICK_HZ, MIN_SIZE, MAX_SIZE, MAX_SECONDS, MAX_DRAIN,
            MAX_CONNECT_TIMEOUT, ENET_PROTOCOL_MAXIMUM_PEER_ID, PEERS_PER_HOST);
    exit(2);
}

/* Decimal unsigned in [min, max]; nothing else accepted (no sign, no spaces, no junk). */
static int parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
    char *end = NULL;
    unsigned long v;

    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* "a.b.c.d:port" (port 1..65535) into an IPv4 socket address. */
static int parse_addr(const char *s, struct sockaddr_in *out)
{
    char ip[INET_ADDRSTRLEN];
    const char *colon = strrchr(s, ':');
    unsigned long port;
    size_t len;

    if (colon == NULL)
        return -1;
    len = (size_t)(colon - s);
    if (len == 0 || len >= sizeof ip)
        return -1;
    memcpy(ip, s, len);
    ip[len] = '\0';
    if (parse_ulong(colon + 1, 1, 65535, &port) != 0)
        return -1;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &out->sin_addr) != 1)
        return -1;
    return 0;
}

static void want(const char *val, unsigned long min, unsigned long max, unsigned long *out,
                 const char *why)
{
    if (parse_ulong(val, min, max, out) != 0)
        usage(why);
}

/* One option; returns 0 if the name is unknown. */
static int parse_opt(const char *k, const char *v, struct opts *o, int *have)
{
    unsigned long x;

    if (strcmp(k, "--proto") == 0) {
        if (strcmp(v, "enet") == 0)
            o->proto = PROTO_ENET;
        else if (strcmp(v, "udp") == 0)
            o->proto = PROTO_UDP;
        else
            usage("--proto wants enet or udp");
        have[0] = 1;
    } else if (strcmp(k, "--server") == 0) {
        if (parse_addr(v, &o->server) != 0)
            usage("--server wants IPv4:PORT, e.g. 127.0.0.1:7777");
        o->server_arg = v;
        have[1] = 1;
    } else if (strcmp(k, "--clients") == 0) {
        want(v, 1, MAX_CLIENTS, &o->clients, "--clients out of range");
        have[2] = 1;
    } else if (strcmp(k, "--seconds") == 0) {
        want(v, 1, MAX_SECONDS, &o->seconds, "--seconds out of range");
        have[3] = 1;
    } else if (strcmp(k, "--tick-hz") == 0) {
        want(v, 1, MAX_TICK_HZ, &o->tick_hz, "--tick-hz out of range");
    } else if (strcmp(k, "--size") == 0) {
        want(v, MIN_SIZE, MAX_SIZE, &o->size, "--size out of range (24..1200)");
    } else if (strcmp(k, "--drain") == 0) {
        want(v, 0, MAX_DRAIN, &o->drain, "--drain out of range");
    } else if (strcmp(k, "--connect-timeout") == 0) {
        want(v, 1, MAX_CONNECT_TIMEOUT, &o->connect_timeout, "--connect-timeout out of range");
    } else if (strcmp(k, "--peers-per-host") == 0) {
        want(v, 1, ENET_PROTOCOL_MAXIMUM_PEER_ID, &o->peers_per_host,
             "--peers-per-host out of range (1..4095)");
    } else if (strcmp(k, "--core") == 0) {
        want(v, 0, CPU_SETSIZE - 1, &x, "--core wants a CPU number");
        o->core = (long)x;
    } else if (strcmp(k, "--server-pid") == 0) {
        want(v, 1, 0x7fffffffUL, &x, "--server-pid wants a pid");
        o->server_pid = (long)x;
    } else {
        return 0;
    }
    return 1;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
    int have[4] = { 0, 0, 0, 0 };

    memset(o, 0, sizeof *o);
    o->tick_hz = 60;
    o->size = 64;
    o->drain = 1;
    o->connect_timeout = 30;
    o->peers_per_host = PEERS_PER_HOST;
    o->core = -1;
    for (int i = 1; i < argc; i += 2) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            usage(NULL);
        if (i + 1 >= argc)
            usage("every option takes a value");
        if (!parse_opt(argv[i], argv[i + 1], o, have))
            usage("unknown option");
    }
    if (!have[0] || !have[1] || !have[2] || !have[3])
        usage("--proto, --server, --clients and --seconds are required");
    if ((uint64_t)o->clients * o->tick_hz * o->seconds > MAX_SCHEDULED)
        usage("clients x tick-hz x seconds is over 2^30 messages");
}

/* ---------------------------------------------------------------- helpers ------ */

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0.0;
}

static void note_errno(struct run *r, int err)
{
    if (r->socket_errors++ == 0)
        r->first_errno = err;
}

static int pin_core(long core)
{
    cpu_set_t set;

    if (core < 0)
        return 0;
    CPU_ZERO(&set);
    CPU_SET((size_t)core, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        fprintf(stderr, "tick_load: cannot pin to core %ld: %s\n", core, strerror(errno));
        return -1;
    }
    return 0;
}

/* Enough descriptors for `need`, raising the hard limit too when allowed (root). */
static int raise_nofile(uint64_t need)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "tick_load: getrlimit(RLIMIT_NOFILE): %s\n", strerror(errno));
        return -1;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t hard = rl.rlim_max;

        rl.rlim_cur = need;
        if (hard != RLIM_INFINITY && hard < need)
            rl.rlim_max = need;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            fprintf(stderr,
                    "tick_load: this run needs %" PRIu64 " file descriptors but the hard "
                    "limit is %llu and cannot be raised (%s): raise it (ulimit -Hn, as "
                    "root) or use fewer clients\n",
                    need, (unsigned long long)hard, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* The process's user+system CPU time (getrusage), ns. */
static uint64_t self_cpu_ns(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * NS_PER_S +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ULL;
}

/*
 * utime + stime of /proc/PID/stat (fields 14 and 15, all threads) in ns. The command
 * name (field 2) may hold spaces and parentheses, so fields are counted from the last
 * ')'. Resolution is one clock tick (usually 10 ms).
 */
static int proc_cpu_ns(long pid, uint64_t *out)
{
    char path[64], buf[1024], *p, *save = NULL, *tok;
    unsigned long long ticks = 0, v;
    long hz = sysconf(_SC_CLK_TCK);
    FILE *f;
    size_t len;

    if (hz <= 0 || snprintf(path, sizeof path, "/proc/%ld/stat", pid) >= (int)sizeof path)
        return -1;
    f = fopen(path, "re");
    if (f == NULL)
        return -1;
    len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    /* After ')': field 3 (state) is token 1, utime (14) token 12, stime (15) token 13. */
    tok = strtok_r(p + 1, " ", &save);
    for (int t = 1; tok != NULL && t <= 13; t++, tok = strtok_r(NULL, " ", &save)) {
        char *end = NULL;

        if (t < 12)
            continue;
        errno = 0;
        v = strtoull(tok, &end, 10);
        if (errno != 0 || end == tok)
            return -1;
        ticks += v;
        if (t == 13) {
            *out = (uint64_t)ticks * (NS_PER_S / (uint64_t)hz);
            return 0;
        }
    }
    return -1;
}

/* ---------------------------------------------------------------- samples ------ */

static int samples_init(struct samples *s, uint64_t want_cap)
{
    s->cap = want_cap < SAMPLE_CAP ? want_cap : SAMPLE_CAP;
    s->len = 0;
    s->overflow = 0;
    s->v = calloc(s->cap > 0 ? s->cap : 1, sizeof *s->v);
    return s->v == NULL ? -1 : 0;
}

static void samples_add(struct samples *s, uint64_t ns)
{
    if (s->len < s->cap)
        s->v[s->len++] = ns;
    else
        s->overflow++;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least q of all samples at or below it. */
static double pct_us(const struct samples *s, double q)
{
    uint64_t rank = (uint64_t)(q * (double)s->len + 0.999999);

    if (s->len == 0)
        return 0.0;
    if (rank < 1)
        rank = 1;
    if (rank > s->len)
        rank = s->len;
    return (double)s->v[rank - 1] / 1000.0;
}

/* Sorts the samples and prints them as {"count":..,"p50":..,...} in µs. */
static void print_pcts(struct samples *s)
{
    double sum = 0.0;

    qsort(s->v, s->len, sizeof *s->v, cmp_u64);
    for (uint64_t i = 0; i < s->len; i++)
        sum += (double)s->v[i];
    printf("{\"count\":%" PRIu64 ",\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,"
           "\"max\":%.3f,\"mean\":%.3f}",
           s->len, pct_us(s, 0.50), pct_us(s, 0.90), pct_us(s, 0.99), pct_us(s, 0.999),
           pct_us(s, 1.0), ratio(sum, (double)s->len) / 1000.0);
}

/* ---------------------------------------------------------------- messages ----- */

static void put_le32(unsigned char *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, 4);
}

static void put_le64(unsigned char *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, 8);
}

static uint32_t get_le32(const unsigned char *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return le32toh(v);
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return le64toh(v);
}

/* The fixed filler after the 16-byte header: a byte sequence with no short period. */
static void make_pattern(unsigned char *p, size_t len)
{
    uint32_t x = 0x9e3779b9u;

    for (size_t i = 0; i < len; i++) {
        x = x * 1664525u + 1013904223u;
        p[i] = (unsigned char)(x >> 24);
    }
}

/* Stamps r->tx (which already holds the pattern) for client idx, sequence seq. */
static void stamp(struct run *r, uint32_t idx, uint32_t seq, uint64_t t)
{
    put_le32(r->tx, idx);
    put_le32(r->tx + 4, seq);
    put_le64(r->tx + 8, t);
}

/* Checks one echo that came back to client `expect`; counts and samples it. */
static void on_echo(struct run *r, uint32_t expect, const unsigned char *d, size_t len,
                    uint64_t now)
{
    size_t size = r->o->size;
    uint32_t idx, seq;
    uint64_t sent, bit;

    if (len != size) {
        r->m.corrupt++;
        return;
    }
    idx = get_le32(d);
    seq = get_le32(d + 4);
    sent = get_le64(d + 8);
    if (idx != expect || seq >= r->per_client || sent < r->t_origin || sent > now ||
        memcmp(d + 16, r->pattern + 16, size - 16) != 0) {
        r->m.corrupt++;
        return;
    }
    bit = (uint64_t)idx * r->per_client + seq;
    if (r->seen[bit / 8] & (1u << (bit % 8))) {
        r->m.duplicates++;
        return;
    }
    r->seen[bit / 8] |= (uint8_t)(1u << (bit % 8));
    r->m.echoed++;
    samples_add(&r->rtt, now - sent);
}

/* ---------------------------------------------------------------- waiting ------ */

/*
 * The fallback for kernels (and valgrind) without epoll_pwait2: a timerfd in the epoll
 * set, armed for `ns`, and a plain epoll_wait; its millisecond timeout only bounds the
 * wait in case the timer is lost. The timer's own event is read and dropped.
 */
static int wait_timerfd(struct run *r, struct epoll_event *ev, uint64_t ns)
{
    struct itimerspec its = { .it_value = { .tv_sec = (time_t)(ns / NS_PER_S),
                                            .tv_nsec = (long)(ns % NS_PER_S) } };
    int n, k = 0;

    if (ns > 0 && timerfd_settime(r->tfd, 0, &its, NULL) != 0)
        note_errno(r, errno);
    n = epoll_wait(r->ep, ev, EPOLL_BATCH, ns > 0 ? (int)(ns / 1000000) + 2 : 0);
    if (n < 0) {
        if (errno != EINTR)
            note_errno(r, errno);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        uint64_t expirations;

        if (ev[i].data.u32 != TIMER_TAG)
            ev[k++] = ev[i];
        else if (read(r->tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
            note_errno(r, errno);
    }
    return k;
}

static int use_timerfd(struct run *r)
{
    struct epoll_event ee = { .events = EPOLLIN, .data.u32 = TIMER_TAG };

    r->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (r->tfd < 0 || epoll_ctl(r->ep, EPOLL_CTL_ADD, r->tfd, &ee) != 0) {
        fprintf(stderr, "tick_load: no epoll_pwait2 and no timerfd: %s\n", strerror(errno));
        exit(1);
    }
    return 0;
}

/*
 * Waits up to `ns` (0: just polls) for input on the epoll set; returns the events.
 * epoll_pwait2 takes a nanosecond timeout, so a send is not rounded to the next
 * millisecond; without it (Linux < 5.11, valgrind), a timerfd does the same.
 */
static int wait_input(struct run *r, struct epoll_event *ev, uint64_t ns)
{
    struct timespec ts = { .tv_sec = (time_t)(ns / NS_PER_S), .tv_nsec = (long)(ns % NS_PER_S) };
    int n;

    if (r->tfd >= 0)
        return wait_timerfd(r, ev, ns);
    n = epoll_pwait2(r->ep, ev, EPOLL_BATCH, &ts, NULL);
    if (n < 0) {
        if (errno == ENOSYS && use_timerfd(r) == 0)
            return wait_timerfd(r, ev, ns);
        if (errno != EINTR)
            note_errno(r, errno);
        return 0;
    }
    return n;
}

/* ---------------------------------------------------------------- enet --------- */

static struct client *peer_client(struct run *r, ENetPeer *peer)
{
    struct client *c = peer != NULL ? peer->data : NULL;

    if (c == NULL || c < r->clients || c >= r->clients + r->n)
        return NULL;
    return c;
}

static void enet_on_connect(struct run *r, struct client *c, uint64_t now)
{
    if (c->state != C_CONNECTING)
        return;
    c->state = C_CONNECTED;
    r->inflight--;
    r->connected++;
    samples_add(&r->connect, now - c->connect_start);
}

static void enet_on_disconnect(struct run *r, struct client *c)
{
    if (c->state == C_CONNECTING) {
        c->state = C_FAILED;
        r->inflight--;
        r->connect_failed++;
        if (r->connect_failure[0] == '\0')
            snprintf(r->connect_failure, sizeof r->connect_failure,
                     "ENet connect attempt failed (no answer or refused: server full?)");
    } else if (c->state == C_CONNECTED) {
        c->state = C_CLOSED;
        if (r->phase == PH_RUN || r->phase == PH_DRAIN)
            r->closed_during_run++;
    }
    c->peer->data = NULL; /* ENet will reuse this slot */
}

static void enet_handle(struct run *r, ENetEvent *ev)
{
    struct client *c = peer_client(r, ev->peer);
    uint64_t now = now_ns();

    if (ev->type == ENET_EVENT_TYPE_RECEIVE) {
        if (c == NULL || ev->channelID != 0)
            r->m.corrupt++;
        else
            on_echo(r, c->index, ev->packet->data, ev->packet->dataLength, now);
        enet_packet_destroy(ev->packet);
    } else if (c != NULL && ev->type == ENET_EVENT_TYPE_CONNECT) {
        enet_on_connect(r, c, now);
    } else if (c != NULL && ev->type == ENET_EVENT_TYPE_DISCONNECT) {
        enet_on_disconnect(r, c);
    }
}

/* One I/O pass on a host (timeout 0: flush, read, dispatch), then its event queue. */
static void enet_service_one(struct run *r, struct ehost *eh, uint64_t now)
{
    ENetEvent ev;
    int got = enet_host_service(eh->h, &ev, 0);

    eh->dirty = 0;
    eh->last_service = now;
    if (got < 0) {
        note_errno(r, errno);
        return;
    }
    if (got > 0)
        enet_handle(r, &ev);
    for (int k = 0; got > 0 && k < DRAIN_EVENTS_MAX; k++) {
        got = enet_host_check_events(eh->h, &ev);
        if (got > 0)
            enet_handle(r, &ev);
    }
}

/*
 * Services the hosts that have work: sends queued since their last pass, input (epoll
 * said so), or no pass for ENET_WAIT_CAP_NS (retransmission and ping timers); all of
 * them if `all`. Every pass walks all of a host's peer slots, so passing over idle
 * hosts would make the load generator's cost grow with the number of clients.
 */
static void enet_service(struct run *r, int all)
{
    uint64_t now = now_ns();

    for (uint32_t h = 0; h < r->nhosts; h++) {
        struct ehost *eh = &r->hosts[h];

        if (all || eh->dirty || now - eh->last_service >= ENET_WAIT_CAP_NS)
            enet_service_one(r, eh, now);
    }
}

static void size_buffer(int fd, int force_opt, int opt)
{
    int v = SOCK_BUF_BYTES;

    /* Same 4 MiB as the servers' sockets: one socket carries up to 4000 clients. */
    if (setsockopt(fd, SOL_SOCKET, force_opt, &v, sizeof v) != 0 &&
        setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v) != 0)
        fprintf(stderr, "tick_load: warning: socket buffer: %s\n", strerror(errno));
}

static int enet_setup(struct run *r)
{
    struct epoll_event ee = { .events = EPOLLIN };
    uint32_t pph = (uint32_t)r->o->peers_per_host;

    r->enet_server.host = r->o->server.sin_addr.s_addr;
    r->enet_server.port = ntohs(r->o->server.sin_port);
    r->nhosts = (uint32_t)((r->n + pph - 1) / pph);
    r->hosts = calloc(r->nhosts, sizeof *r->hosts);
    if (r->hosts == NULL)
        return -1;
    for (uint32_t h = 0; h < r->nhosts; h++) {
        uint32_t share = r->n - h * pph;
        ENetHost *host;

        share = share < pph ? share : pph;
        host = enet_host_create(NULL, share, CHANNELS, 0, 0);
        if (host == NULL) {
            fprintf(stderr, "tick_load: enet_host_create (%u peers) failed\n", share);
            return -1;
        }
        r->hosts[h].h = host;
        size_buffer(host->socket, SO_RCVBUFFORCE, SO_RCVBUF);
        size_buffer(host->socket, SO_SNDBUFFORCE, SO_SNDBUF);
        ee.data.u32 = h;
        if (epoll_ctl(r->ep, EPOLL_CTL_ADD, host->socket, &ee) != 0) {
            fprintf(stderr, "tick_load: epoll_ctl: %s\n", strerror(errno));
            return -1;
        }
    }
    return 0;
}

static void enet_start_connect(struct run *r, uint32_t i)
{
    struct client *c = &r->clients[i];
    ENetHost *host = r->hosts[i / r->o->peers_per_host].h;

    c->peer = enet_host_connect(host, &r->enet_server, CHANNELS, i);
    if (c->peer == NULL) {
        c->state = C_FAILED;
        r->connect_failed++;
        if (r->connect_failure[0] == '\0')
            snprintf(r->connect_failure, sizeof r->connect_failure,
                     "enet_host_connect returned NULL (no free peer slot or no memory)");
        return;
    }
    c->peer->data = c;
    c->state = C_CONNECTING;
    c->connect_start = now_ns();
    r->inflight++;
}

/* Gives up on the clients that did not connect before the deadline. */
static void enet_connect_expire(struct run *r, uint32_t started)
{
    uint64_t expired = 0;

    for (uint32_t i = 0; i < r->n; i++) {
        struct client *c = &r->clients[i];

        if (c->state == C_CONNECTING) {
            c->peer->data = NULL;
            enet_peer_reset(c->peer);
            c->state = C_FAILED;
            r->inflight--;
            expired++;
        } else if (i >= started) {
            c->state = C_FAILED;
            expired++;
        }
    }
    r->connect_failed += expired;
    if (expired > 0 && r->connect_failure[0] == '\0')
        snprintf(r->connect_failure, sizeof r->connect_failure,
                 "%" PRIu64 " not connected within --connect-timeout %lu s", expired,
                 r->o->connect_timeout);
}

/* Connects every client, at most CONNECT_WINDOW at once, within --connect-timeout. */
static void enet_connect_all(struct run *r)
{
    struct epoll_event ev[EPOLL_BATCH];
    uint64_t deadline = now_ns() + r->o->connect_timeout * NS_PER_S;
    uint32_t next = 0;

    while ((next < r->n || r->inflight > 0) && now_ns() < deadline) {
        while (r->inflight < CONNECT_WINDOW && next < r->n)
            enet_start_connect(r, next++);
        enet_service(r, 1);
        wait_input(r, ev, 1000000);
    }
    enet_connect_expire(r, next);
}

/* Graceful disconnects (so the server frees its slots now, not at its timeout). */
static void enet_close_all(struct run *r)
{
    struct epoll_event ev[EPOLL_BATCH];
    uint64_t deadline = now_ns() + CLOSE_WAIT_NS;
    uint64_t open = 0;

    r->phase = PH_CLOSE;
    for (uint32_t i = 0; i < r->n; i++) {
        if (r->clients[i].state == C_CONNECTED) {
            enet_peer_disconnect(r->clients[i].peer, 0);
            open++;
        }
    }
    while (open > 0 && now_ns() < deadline) {
        enet_service(r, 1);
        open = 0;
        for (uint32_t i = 0; i < r->n; i++)
            open += r->clients[i].state == C_CONNECTED;
        if (open > 0)
            wait_input(r, ev, 1000000);
    }
    for (uint32_t i = 0; i < r->n; i++) {
        if (r->clients[i].state == C_CONNECTED) {
            r->clients[i].peer->data = NULL;
            enet_peer_disconnect_now(r->clients[i].peer, 0);
        }
    }
    for (uint32_t h = 0; h < r->nhosts; h++)
        if (r->hosts[h].h != NULL)
            enet_host_destroy(r->hosts[h].h);
    free(r->hosts);
    r->hosts = NULL;
}

static int enet_send(struct run *r, struct client *c)
{
    ENetPacket *p = enet_packet_create(r->tx, r->o->size, ENET_PACKET_FLAG_RELIABLE);

    if (p == NULL)
        return -1;
    if (enet_peer_send(c->peer, 0, p) != 0) {
        enet_packet_destroy(p);
        return -1;
    }
    r->hosts[c->index / r->o->peers_per_host].dirty = 1; /* to be flushed */
    return 0;
}

/* ---------------------------------------------------------------- udp ---------- */

static int udp_open_one(struct run *r, uint32_t i)
{
    struct epoll_event ee = { .events = EPOLLIN };
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        fprintf(stderr, "tick_load: socket (client %u): %s\n", i, strerror(errno));
        return -1;
    }
    r->clients[i].fd = fd;
    /* connect: a fixed peer, an ephemeral source port of its own, foreign packets filtered */
    if (connect(fd, (const struct sockaddr *)&r->o->server, sizeof r->o->server) != 0) {
        fprintf(stderr, "tick_load: connect (client %u): %s%s\n", i, strerror(errno),
                errno == EADDRNOTAVAIL ? " (out of local ports: widen "
                                         "net.ipv4.ip_local_port_range or use fewer clients)"
                                       : "");
        return -1;
    }
    ee.data.u32 = i;
    if (epoll_ctl(r->ep, EPOLL_CTL_ADD, fd, &ee) != 0) {
        fprintf(stderr, "tick_load: epoll_ctl: %s\n", strerror(errno));
        return -1;
    }
    r->clients[i].state = C_CONNECTED;
    r->connected++;
    return 0;
}

static int udp_setup(struct run *r)
{
    if (raise_nofile((uint64_t)r->n + FD_HEADROOM) != 0)
        return -1;
    for (uint32_t i = 0; i < r->n; i++)
        if (udp_open_one(r, i) != 0)
            return -1;
    return 0;
}

/*
 * Reads one datagram from client i's socket. One, not until EAGAIN: a client gets one
 * echo per tick, so draining would cost a second, empty recv per echo; epoll is
 * level-triggered and reports the socket again if more is queued.
 */
static void udp_read(struct run *r, uint32_t i)
{
    ssize_t n = recv(r->clients[i].fd, r->rx, sizeof r->rx, MSG_TRUNC);

    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            note_errno(r, errno); /* e.g. ECONNREFUSED: nothing listening */
        return;
    }
    on_echo(r, i, r->rx, (size_t)n, now_ns()); /* n > sizeof rx: truncated, corrupt */
}

static int udp_send(struct run *r, struct client *c)
{
    ssize_t n = send(c->fd, r->tx, r->o->size, 0);

    if (n == (ssize_t)r->o->size)
        return 0;
    note_errno(r, n < 0 ? errno : EMSGSIZE);
    return -1;
}

static void udp_close_all(struct run *r)
{
    r->phase = PH_CLOSE;
    for (uint32_t i = 0; i < r->n; i++) {
        if (r->clients[i].fd >= 0 && close(r->clients[i].fd) != 0)
            note_errno(r, errno);
        r->clients[i].fd = -1;
    }
}

/* ---------------------------------------------------------------- schedule ----- */

/*
 * One I/O step: for ENet, an I/O pass on each host with work (it flushes the sends just
 * queued and reads what arrived), then a wait of up to `ns` (capped, so ENet's timers
 * run) that marks the hosts with input for the next step; for UDP, a wait of up to `ns`
 * and the reads of every socket that has input.
 */
static void io_step(struct run *r, uint64_t ns)
{
    struct epoll_event ev[EPOLL_BATCH];
    int n;

    if (r->o->proto == PROTO_ENET) {
        enet_service(r, 0);
        n = wait_input(r, ev, ns < ENET_WAIT_CAP_NS ? ns : ENET_WAIT_CAP_NS);
        for (int k = 0; k < n; k++)
            if (ev[k].data.u32 < r->nhosts)
                r->hosts[ev[k].data.u32].dirty = 1;
        return;
    }
    n = wait_input(r, ev, ns);
    for (int k = 0; k < n; k++)
        if (ev[k].data.u32 < r->n)
            udp_read(r, ev[k].data.u32);
}

/*
 * When slot s is due: message k = s / nactive of active client j = s % nactive, at
 * t0 + k/H + j/(H * nactive) seconds — the clients' sends spread evenly over each tick.
 */
static uint64_t due_ns(const struct run *r, uint64_t s)
{
    uint64_t k = s / r->nactive, j = s % r->nactive, hz = r->o->tick_hz;

    return r->t0 + k * NS_PER_S / hz + j * NS_PER_S / (hz * r->nactive);
}

static void send_slot(struct run *r, uint64_t s)
{
    struct client *c = &r->clients[r->active[s % r->nactive]];
    uint64_t t = now_ns(), lag = t - due_ns(r, s);
    int rc;

    if (c->state != C_CONNECTED) {
        r->m.not_connected++;
        return;
    }
    if (lag > r->tick_ns)
        r->behind++;
    r->lag_sum += lag;
    r->lag_max = lag > r->lag_max ? lag : r->lag_max;
    stamp(r, c->index, (uint32_t)(s / r->nactive), t);
    rc = r->o->proto == PROTO_ENET ? enet_send(r, c) : udp_send(r, c);
    if (rc == 0)
        r->m.sent++;
    else
        r->m.send_refused++;
}

/*
 * The schedule: every due message is sent (late ones too, counted in `behind` when more
 * than a tick late), until all are sent or one tick after its end; what is left then is
 * `unsent` — the load generator fell behind and stopped first.
 */
static void run_schedule(struct run *r)
{
    uint64_t total = r->m.scheduled, s = 0;
    uint64_t hard_end = r->t0 + r->o->seconds * NS_PER_S + r->tick_ns;

    r->phase = PH_RUN;
    while (s < total) {
        uint64_t now = now_ns(), next;
        int burst = 0;

        if (now >= hard_end)
            break;
        while (s < total && burst < SEND_BURST_MAX && due_ns(r, s) <= now) {
            send_slot(r, s++);
            burst++;
        }
        next = s < total ? due_ns(r, s) : 0;
        now = now_ns();
        io_step(r, next > now ? next - now : 0);
    }
    r->m.unsent = total - s;
}

/* Waits up to --drain s for the echoes still outstanding (less if none are). */
static void run_drain(struct run *r)
{
    uint64_t end = now_ns() + r->o->drain * NS_PER_S, now;

    r->phase = PH_DRAIN;
    while ((now = now_ns()) < end && r->m.echoed + r->m.corrupt < r->m.sent) {
        uint64_t left = end - now;

        io_step(r, left < ENET_WAIT_CAP_NS ? left : ENET_WAIT_CAP_NS);
    }
}

/* ---------------------------------------------------------------- report ------- */

struct window {
    uint64_t self_cpu0, self_cpu1;
    uint64_t srv_cpu0, srv_cpu1;
    int srv_ok;
};

static void print_server(const struct run *r, const struct window *w)
{
    uint64_t ns;

    if (r->o->server_pid == 0 || !w->srv_ok) {
        printf("null");
        return;
    }
    ns = w->srv_cpu1 >= w->srv_cpu0 ? w->srv_cpu1 - w->srv_cpu0 : 0;
    printf("{\"pid\":%ld,\"cpu_ns\":%" PRIu64 ",\"cpu_ns_per_msg\":%.1f}", r->o->server_pid, ns,
           ratio((double)ns, (double)r->m.echoed));
}

static void print_messages(const struct run *r)
{
    const struct msgs *m = &r->m;
    /* lost: scheduled but never echoed (never sent, refused, or sent and not echoed). */
    uint64_t lost = m->scheduled - (m->echoed < m->scheduled ? m->echoed : m->scheduled);

    printf("\"messages\":{\"scheduled\":%" PRIu64 ",\"sent\":%" PRIu64 ",\"unsent\":%" PRIu64
           ",\"send_refused\":%" PRIu64 ",\"not_connected\":%" PRIu64 ",\"echoed\":%" PRIu64
           ",\"lost\":%" PRIu64 ",\"loss_ratio\":%.6f,\"duplicates\":%" PRIu64
           ",\"corrupt\":%" PRIu64 "},",
           m->scheduled, m->sent, m->unsent, m->send_refused, m->not_connected, m->echoed, lost,
           ratio((double)lost, (double)m->scheduled), m->duplicates, m->corrupt);
}

static void print_report(struct run *r, const struct window *w)
{
    const struct opts *o = r->o;
    double secs = (double)o->seconds;
    uint64_t self = w->self_cpu1 - w->self_cpu0;

    printf("{\"settings\":{\"proto\":\"%s\",\"server\":\"%s\",\"clients\":%lu,\"tick_hz\":%lu,"
           "\"rate\":%lu,\"size\":%lu,\"duration_secs\":%.1f,\"peers_per_host\":%lu},",
           o->proto == PROTO_ENET ? "enet" : "udp", o->server_arg, o->clients, o->tick_hz,
           o->clients * o->tick_hz, o->size, secs,
           o->proto == PROTO_ENET ? o->peers_per_host : 1UL);
    printf("\"connected\":%" PRIu64 ",\"connect_failed\":%" PRIu64 ",\"connect_us\":",
           r->connected, r->connect_failed);
    print_pcts(&r->connect);
    printf(",\"closed_during_run\":%" PRIu64 ",", r->closed_during_run);
    print_messages(r);
    printf("\"offered_msg_per_s\":%.1f,\"achieved_msg_per_s\":%.1f,\"rtt_us\":",
           ratio((double)r->m.scheduled, secs), ratio((double)r->m.echoed, secs));
    print_pcts(&r->rtt);
    printf(",\"rtt_samples_dropped\":%" PRIu64 ",\"server\":", r->rtt.overflow);
    print_server(r, w);
    printf(",\"loadgen_cpu_ns_per_msg\":%.1f,\"behind\":%" PRIu64
           ",\"send_lag_us\":{\"mean\":%.3f,\"max\":%.3f},\"socket_errors\":%" PRIu64 "}\n",
           ratio((double)self, (double)r->m.echoed), r->behind,
           ratio((double)r->lag_sum, (double)(r->m.sent + r->m.send_refused)) / 1000.0,
           (double)r->lag_max / 1000.0, r->socket_errors);
    fflush(stdout);
}

/* ---------------------------------------------------------------- main --------- */

static int alloc_run(struct run *r, const struct opts *o)
{
    uint64_t bits;

    memset(r, 0, sizeof *r);
    r->o = o;
    r->n = (uint32_t)o->clients;
    r->per_client = (uint64_t)o->tick_hz * o->seconds;
    r->tick_ns = NS_PER_S / o->tick_hz;
    r->ep = -1;
    r->tfd = -1;
    bits = (uint64_t)r->n * r->per_client;
    r->clients = calloc(r->n, sizeof *r->clients);
    r->active = calloc(r->n, sizeof *r->active);
    r->seen = calloc(bits / 8 + 1, 1);
    if (r->clients == NULL || r->active == NULL || r->seen == NULL ||
        samples_init(&r->rtt, bits) != 0 || samples_init(&r->connect, r->n) != 0) {
        fprintf(stderr, "tick_load: out of memory\n");
        return -1;
    }
    for (uint32_t i = 0; i < r->n; i++) {
        r->clients[i].fd = -1;
        r->clients[i].index = i;
    }
    make_pattern(r->pattern, sizeof r->pattern);
    memcpy(r->tx, r->pattern, sizeof r->tx);
    return 0;
}

static void free_run(struct run *r)
{
    if (r->tfd >= 0)
        close(r->tfd);
    if (r->ep >= 0)
        close(r->ep);
    free(r->clients);
    free(r->active);
    free(r->seen);
    free(r->rtt.v);
    free(r->connect.v);
}

/* Sets up and connects the clients; the schedule runs over those that connected. */
static int connect_phase(struct run *r)
{
    r->ep = epoll_create1(EPOLL_CLOEXEC);
    if (r->ep < 0) {
        fprintf(stderr, "tick_load: epoll_create1: %s\n", strerror(errno));
        return -1;
    }
    r->phase = PH_CONNECT;
    if (r->o->proto == PROTO_ENET) {
        if (raise_nofile(FD_HEADROOM + r->n / r->o->peers_per_host + 1) != 0 ||
            enet_setup(r) != 0)
            return -1;
        enet_connect_all(r);
    } else if (udp_setup(r) != 0) {
        return -1;
    }
    for (uint32_t i = 0; i < r->n; i++)
        if (r->clients[i].state == C_CONNECTED)
            r->active[r->nactive++] = i;
    if (r->nactive == 0) {
        fprintf(stderr, "tick_load: no client connected to %s (%s)\n", r->o->server_arg,
                r->connect_failure[0] ? r->connect_failure : "no reason recorded");
        return -1;
    }
    r->m.scheduled = (uint64_t)r->nactive * r->per_client;
    return 0;
}

static int measure(struct run *r)
{
    struct window w = { 0 };

    r->t0 = now_ns();
    w.self_cpu0 = self_cpu_ns();
    if (r->o->server_pid != 0 && proc_cpu_ns(r->o->server_pid, &w.srv_cpu0) != 0) {
        fprintf(stderr, "tick_load: cannot read /proc/%ld/stat\n", r->o->server_pid);
        return -1;
    }
    run_schedule(r);
    w.self_cpu1 = self_cpu_ns();
    w.srv_ok = r->o->server_pid != 0 && proc_cpu_ns(r->o->server_pid, &w.srv_cpu1) == 0;
    if (r->o->server_pid != 0 && !w.srv_ok)
        fprintf(stderr, "tick_load: warning: server pid %ld gone by the end\n",
                r->o->server_pid);
    run_drain(r);
    if (r->o->proto == PROTO_ENET)
        enet_close_all(r);
    else
        udp_close_all(r);
    if (r->socket_errors > 0)
        fprintf(stderr, "tick_load: %" PRIu64 " socket errors (first: %s)\n", r->socket_errors,
                strerror(r->first_errno));
    print_report(r, &w);
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    static struct run r;
    int rc = 1;

    parse_args(argc, argv, &o);
    if (pin_core(o.core) != 0)
        return 1;
    /* Timer slack 1 ns: wake-ups at the scheduled send, not up to 50 µs after it. */
    if (prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL) != 0)
        fprintf(stderr, "tick_load: warning: PR_SET_TIMERSLACK: %s\n", strerror(errno));
    if (o.proto == PROTO_ENET && enet_initialize() != 0) {
        fprintf(stderr, "tick_load: enet_initialize failed\n");
        return 1;
    }
    if (alloc_run(&r, &o) == 0) {
        r.t_origin = now_ns();
        if (connect_phase(&r) == 0 && measure(&r) == 0)
            rc = 0;
        else if (o.proto == PROTO_ENET && r.hosts != NULL)
            enet_close_all(&r);
        else if (o.proto == PROTO_UDP)
            udp_close_all(&r);
    }
    free_run(&r);
    if (o.proto == PROTO_ENET)
        enet_deinitialize();
    return rc;
}
