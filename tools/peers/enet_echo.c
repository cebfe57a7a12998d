/*
 * enet_echo — an ENet echo server, the library a game studio would otherwise pick.
 *
 * The counterpart of `xrudp attach --app echo` in the side-by-side comparison of
 * scripts/bench.sh: every packet a peer sends comes back to that peer on the same
 * channel with the same reliability (reliable packets back reliable, unreliable back
 * unreliable, unsequenced back unsequenced). The load comes from tick_load --proto enet,
 * which sends reliable packets on channel 0, the counterpart of xrudp's reliable-ordered
 * channel 0.
 *
 *   enet_echo --bind IP:PORT [--max-peers N] [--core C] [--seconds S]
 *
 * --max-peers is the size of ENet's peer table (default and maximum 4095, ENet's
 * protocol limit). ENet walks the whole table on every service pass, so the server's
 * CPU per message depends on it: give the number of clients plus some headroom when
 * comparing CPU figures. Port 0 lets the kernel pick one; once bound it prints
 * "enet_echo: listening on IP:PORT" to stderr. It runs until SIGINT/SIGTERM or for S
 * seconds, then prints one JSON line to stdout:
 *   {"received":N,"sent":N,"connects":N,"disconnects":N}
 * received = packets delivered by ENet; sent = packets ENet accepted back
 * (enet_peer_send succeeded); connects/disconnects = ENet connect/disconnect events.
 */
#include <arpa/inet.h>
#include <enet/enet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define CHANNELS 2
#define SOCK_BUF_BYTES (4 * 1024 * 1024)
#define MAX_SECONDS 86400UL
/*
 * One receive pass reads at most 256 datagrams of at most 32 commands each, so the
 * dispatch queue holds fewer events than this; the bound only guards the loop.
 */
#define DRAIN_MAX 65536

static volatile sig_atomic_t g_stop;

struct opts {
    struct sockaddr_in bind;
    unsigned long max_peers;
    long core; /* -1: not pinned */
    unsigned long seconds; /* 0: until a signal */
};

struct counters {
    uint64_t received;
    uint64_t sent;
    uint64_t connects;
    uint64_t disconnects;
    uint64_t send_errors;
};

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(const char *why)
{
    if (why != NULL)
        fprintf(stderr, "enet_echo: %s\n", why);
    fprintf(stderr,
            "usage: enet_echo --bind IP:PORT [--max-peers N] [--core C] [--seconds S]\n"
            "  --bind IP:PORT   IPv4 address and port to serve (port 0: the kernel picks)\n"
            "  --max-peers N    ENet peer slots, 1..%d (default %d)\n"
            "  --core C         pin to CPU C (sched_setaffinity)\n"
            "  --seconds S      exit after S s (1..%lu); default: until SIGINT/SIGTERM\n",
            ENET_PROTOCOL_MAXIMUM_PEER_ID, ENET_PROTOCOL_MAXIMUM_PEER_ID, MAX_SECONDS);
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

/* "a.b.c.d:port" into an IPv4 socket address. */
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
    if (parse_ulong(colon + 1, 0, 65535, &port) != 0)
        return -1;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &out->sin_addr) != 1)
        return -1;
    return 0;
}

static void parse_max_peers(const char *val, struct opts *o)
{
    unsigned long v;

    if (parse_ulong(val, 1, ULONG_MAX, &v) != 0)
        usage("--max-peers wants a number >= 1");
    if (v > ENET_PROTOCOL_MAXIMUM_PEER_ID) {
        fprintf(stderr,
                "enet_echo: --max-peers %lu: one ENet host holds at most %d peers "
                "(ENET_PROTOCOL_MAXIMUM_PEER_ID)\n",
                v, ENET_PROTOCOL_MAXIMUM_PEER_ID);
        exit(2);
    }
    o->max_peers = v;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
    int have_bind = 0;
    unsigned long v;

    o->max_peers = ENET_PROTOCOL_MAXIMUM_PEER_ID;
    o->core = -1;
    o->seconds = 0;
    for (int i = 1; i < argc; i += 2) {
        const char *k = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(k, "--help") == 0 || strcmp(k, "-h") == 0)
            usage(NULL);
        if (val == NULL)
            usage("every option takes a value");
        if (strcmp(k, "--bind") == 0) {
            if (parse_addr(val, &o->bind) != 0)
                usage("--bind wants IPv4:PORT, e.g. 127.0.0.1:7777");
            have_bind = 1;
        } else if (strcmp(k, "--max-peers") == 0) {
            parse_max_peers(val, o);
        } else if (strcmp(k, "--core") == 0) {
            if (parse_ulong(val, 0, CPU_SETSIZE - 1, &v) != 0)
                usage("--core wants a CPU number");
            o->core = (long)v;
        } else if (strcmp(k, "--seconds") == 0) {
            if (parse_ulong(val, 1, MAX_SECONDS, &v) != 0)
                usage("--seconds wants a whole number of seconds >= 1");
            o->seconds = v;
        } else {
            usage("unknown option");
        }
    }
    if (!have_bind)
        usage("--bind is required");
}

static int pin_core(long core)
{
    cpu_set_t set;

    if (core < 0)
        return 0;
    CPU_ZERO(&set);
    CPU_SET((size_t)core, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        fprintf(stderr, "enet_echo: cannot pin to core %ld: %s\n", core, strerror(errno));
        return -1;
    }
    return 0;
}

static int install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        fprintf(stderr, "enet_echo: sigaction: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/*
 * ENet sizes its socket buffers at 256 KiB; they get the same 4 MiB as udp_echo's
 * (root passes net.core.[rw]mem_max with SO_*BUFFORCE), so the comparison is between
 * the protocols, not between buffer sizes. A smaller result is only warned about.
 */
static void size_buffer(int fd, int force_opt, int opt, const char *name)
{
    int want = SOCK_BUF_BYTES;
    int got = 0;
    socklen_t len = sizeof got;

    if (setsockopt(fd, SOL_SOCKET, force_opt, &want, sizeof want) != 0 &&
        setsockopt(fd, SOL_SOCKET, opt, &want, sizeof want) != 0)
        fprintf(stderr, "enet_echo: warning: %s: %s\n", name, strerror(errno));
    if (getsockopt(fd, SOL_SOCKET, opt, &got, &len) == 0 && got / 2 < want)
        fprintf(stderr, "enet_echo: warning: %s is %d B, not %d B\n", name, got / 2, want);
}

static ENetHost *open_host(const struct opts *o)
{
    ENetAddress addr;
    ENetHost *host;
    char ip[INET_ADDRSTRLEN];

    addr.host = o->bind.sin_addr.s_addr; /* ENet keeps the address in network order */
    addr.port = ntohs(o->bind.sin_port); /* and the port in host order */
    errno = 0;
    host = enet_host_create(&addr, o->max_peers, CHANNELS, 0, 0);
    if (host == NULL) {
        fprintf(stderr, "enet_echo: enet_host_create on port %u failed: %s\n",
                (unsigned)addr.port, errno != 0 ? strerror(errno) : "out of memory?");
        return NULL;
    }
    size_buffer(host->socket, SO_RCVBUFFORCE, SO_RCVBUF, "SO_RCVBUF");
    size_buffer(host->socket, SO_SNDBUFFORCE, SO_SNDBUF, "SO_SNDBUF");
    /* enet_host_create read the bound address back, so port 0 shows the real port. */
    if (inet_ntop(AF_INET, &host->address.host, ip, sizeof ip) == NULL) {
        fprintf(stderr, "enet_echo: inet_ntop: %s\n", strerror(errno));
        enet_host_destroy(host);
        return NULL;
    }
    fprintf(stderr, "enet_echo: listening on %s:%u (%lu peer slots)\n", ip,
            (unsigned)host->address.port, o->max_peers);
    fflush(stderr);
    return host;
}

/*
 * Sends a copy of the received packet back with the same reliability bits. A fresh
 * packet rather than the received one: ENet documents packet fields as read-only, and
 * a reply built anew is what a game server does.
 */
static void echo(ENetEvent *ev, struct counters *c)
{
    ENetPacket *in = ev->packet;
    enet_uint32 keep = ENET_PACKET_FLAG_RELIABLE | ENET_PACKET_FLAG_UNSEQUENCED |
                       ENET_PACKET_FLAG_UNRELIABLE_FRAGMENT;
    ENetPacket *out = enet_packet_create(in->data, in->dataLength, in->flags & keep);

    enet_packet_destroy(in);
    if (out == NULL) {
        c->send_errors++;
        return;
    }
    /* On failure the packet was not queued and is still ours to free. */
    if (enet_peer_send(ev->peer, ev->channelID, out) != 0) {
        enet_packet_destroy(out);
        c->send_errors++;
        return;
    }
    c->sent++;
}

static void handle(ENetEvent *ev, struct counters *c)
{
    switch (ev->type) {
    case ENET_EVENT_TYPE_CONNECT:
        c->connects++;
        break;
    case ENET_EVENT_TYPE_DISCONNECT:
        c->disconnects++;
        break;
    case ENET_EVENT_TYPE_RECEIVE:
        c->received++;
        echo(ev, c);
        break;
    case ENET_EVENT_TYPE_NONE:
        break;
    }
}

/*
 * The loop: enet_host_service with a 1 ms timeout, then enet_host_check_events until the
 * queue is empty. Why both: enet_host_service returns as soon as it has ONE event, but
 * every call first runs a whole I/O pass — it walks every peer slot twice to flush
 * acknowledgements, retransmissions and queued packets (enet_protocol_send_outgoing_
 * commands iterates host->peers[0..peerCount)) and reads up to 256 datagrams. Calling it
 * once per event would pay that O(peer slots) walk per message. enet_host_check_events
 * only pops events the last pass already received, without any I/O, so the echoes of a
 * whole receive batch are queued before the next service call sends them all. The 1 ms
 * timeout (ENet's clock resolution) sleeps in poll when idle yet keeps retransmission
 * and timeout timers running. A failure while stopping (an interrupted poll) ends the
 * loop quietly; any other failure is an error.
 */
static int serve(ENetHost *host, uint64_t deadline, struct counters *c)
{
    ENetEvent ev;

    while (!g_stop && (deadline == 0 || now_ns() < deadline)) {
        int r = enet_host_service(host, &ev, 1);

        if (r < 0) {
            if (g_stop)
                break;
            fprintf(stderr, "enet_echo: enet_host_service failed: %s\n", strerror(errno));
            return -1;
        }
        if (r > 0)
            handle(&ev, c);
        for (int n = 0; r > 0 && n < DRAIN_MAX; n++) {
            r = enet_host_check_events(host, &ev);
            if (r < 0) {
                fprintf(stderr, "enet_echo: enet_host_check_events failed\n");
                return -1;
            }
            if (r > 0)
                handle(&ev, c);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    struct counters c = { 0 };
    ENetHost *host;
    uint64_t deadline = 0;
    int rc;

    parse_args(argc, argv, &o);
    if (pin_core(o.core) != 0 || install_signals() != 0)
        return 1;
    if (enet_initialize() != 0) {
        fprintf(stderr, "enet_echo: enet_initialize failed\n");
        return 1;
    }
    host = open_host(&o);
    if (host == NULL) {
        enet_deinitialize();
        return 1;
    }
    if (o.seconds > 0)
        deadline = now_ns() + (uint64_t)o.seconds * 1000000000ULL;
    rc = serve(host, deadline, &c);
    enet_host_destroy(host);
    enet_deinitialize();
    if (c.send_errors > 0)
        fprintf(stderr, "enet_echo: %" PRIu64 " replies not sent (enet_peer_send failed)\n",
                c.send_errors);
    printf("{\"received\":%" PRIu64 ",\"sent\":%" PRIu64 ",\"connects\":%" PRIu64
           ",\"disconnects\":%" PRIu64 "}\n",
           c.received, c.sent, c.connects, c.disconnects);
    fflush(stdout);
    return rc == 0 ? 0 : 1;
}
