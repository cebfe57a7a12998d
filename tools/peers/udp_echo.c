/*
 * udp_echo — the plain kernel UDP echo path, the floor of the comparison.
 *
 * One UDP socket, one thread: a blocking recvmmsg (up to 64 datagrams per call) and a
 * sendmmsg of each datagram back to its sender, unchanged. No protocol, no reliability,
 * no per-connection state: this is what the kernel's UDP stack costs per message, the
 * figure an AF_XDP engine (`xrudp attach --app echo`) and ENet (enet_echo) are compared
 * against in scripts/bench.sh. The load comes from tick_load --proto udp (or any client
 * that sends datagrams and waits for them back).
 *
 *   udp_echo --bind IP:PORT [--core C] [--seconds S]
 *
 * Port 0 lets the kernel pick one. Once bound it prints "udp_echo: listening on IP:PORT"
 * to stderr (the address actually bound, so scripts can use port 0 without races). It
 * runs until SIGINT/SIGTERM or for S seconds, then prints one JSON line to stdout:
 *   {"received":N,"sent":N}
 * received = datagrams read; sent = datagrams the kernel accepted back. Anything else
 * (truncated datagrams, send errors) is reported on stderr.
 */
#include <arpa/inet.h>
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
#include <unistd.h>

#define BATCH 64
#define DGRAM_MAX 2048 /* tick_load sends at most 1200 B; larger datagrams are dropped */
#define SOCK_BUF_BYTES (4 * 1024 * 1024)
#define MAX_SECONDS 86400UL

static volatile sig_atomic_t g_stop;

struct opts {
    struct sockaddr_in bind;
    long core; /* -1: not pinned */
    unsigned long seconds; /* 0: until a signal */
};

struct counters {
    uint64_t received;
    uint64_t sent;
    uint64_t truncated;
    uint64_t send_errors;
    int first_send_errno;
};

/* The receive batch: each slot's buffer, address and header. Static: 130 KiB. */
static unsigned char g_buf[BATCH][DGRAM_MAX];
static struct sockaddr_in g_peer[BATCH];
static struct iovec g_iov[BATCH];
static struct mmsghdr g_rx[BATCH];
static struct iovec g_txiov[BATCH];
static struct mmsghdr g_tx[BATCH];

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(const char *why)
{
    if (why != NULL)
        fprintf(stderr, "udp_echo: %s\n", why);
    fprintf(stderr,
            "usage: udp_echo --bind IP:PORT [--core C] [--seconds S]\n"
            "  --bind IP:PORT  IPv4 address and port to serve (port 0: the kernel picks)\n"
            "  --core C        pin to CPU C (sched_setaffinity)\n"
            "  --seconds S     exit after S s (1..%lu); default: until SIGINT/SIGTERM\n",
            MAX_SECONDS);
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

static void parse_args(int argc, char **argv, struct opts *o)
{
    int have_bind = 0;
    unsigned long v;

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
        fprintf(stderr, "udp_echo: cannot pin to core %ld: %s\n", core, strerror(errno));
        return -1;
    }
    return 0;
}

static int install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked recvmmsg returns EINTR */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        fprintf(stderr, "udp_echo: sigaction: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    /* CLOCK_MONOTONIC cannot fail with a valid pointer. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/*
 * 4 MiB each way: at the rates the suite offers (100k+ datagrams/s) the default
 * ~208 KiB receive buffer holds only a couple of milliseconds of traffic, and one
 * scheduling hiccup on a 2-vCPU VM would turn into drops that are the buffer's fault,
 * not the echo path's. SO_*BUFFORCE (root) passes net.core.[rw]mem_max; plain SO_*BUF
 * is the fallback. A smaller result is only warned about.
 */
static void size_buffer(int fd, int force_opt, int opt, const char *name)
{
    int want = SOCK_BUF_BYTES;
    int got = 0;
    socklen_t len = sizeof got;

    if (setsockopt(fd, SOL_SOCKET, force_opt, &want, sizeof want) != 0 &&
        setsockopt(fd, SOL_SOCKET, opt, &want, sizeof want) != 0)
        fprintf(stderr, "udp_echo: warning: %s: %s\n", name, strerror(errno));
    /* The kernel reports twice the size asked for (it counts its overhead). */
    if (getsockopt(fd, SOL_SOCKET, opt, &got, &len) == 0 && got / 2 < want)
        fprintf(stderr, "udp_echo: warning: %s is %d B, not %d B\n", name, got / 2, want);
}

static int open_socket(const struct sockaddr_in *bind_addr)
{
    struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };
    struct sockaddr_in local;
    socklen_t len = sizeof local;
    char ip[INET_ADDRSTRLEN];
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        fprintf(stderr, "udp_echo: socket: %s\n", strerror(errno));
        return -1;
    }
    size_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, "SO_RCVBUF");
    size_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, "SO_SNDBUF");
    /*
     * The receive timeout bounds each blocking wait to 100 ms so the loop re-checks the
     * stop flag and the deadline even if a signal lands just before recvmmsg blocks
     * (recvmmsg's own timeout argument is only checked between datagrams). The send
     * timeout keeps a full send buffer from blocking forever.
     */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
        fprintf(stderr, "udp_echo: SO_RCVTIMEO/SO_SNDTIMEO: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    if (bind(fd, (const struct sockaddr *)bind_addr, sizeof *bind_addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&local, &len) != 0) {
        fprintf(stderr, "udp_echo: bind: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    if (inet_ntop(AF_INET, &local.sin_addr, ip, sizeof ip) == NULL) {
        fprintf(stderr, "udp_echo: inet_ntop: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    fprintf(stderr, "udp_echo: listening on %s:%u\n", ip, (unsigned)ntohs(local.sin_port));
    fflush(stderr);
    return fd;
}

/* Re-arms the receive slots (recvmmsg overwrites msg_namelen, msg_len and msg_flags). */
static void arm_rx(void)
{
    for (int i = 0; i < BATCH; i++) {
        g_iov[i].iov_base = g_buf[i];
        g_iov[i].iov_len = DGRAM_MAX;
        memset(&g_rx[i], 0, sizeof g_rx[i]);
        g_rx[i].msg_hdr.msg_name = &g_peer[i];
        g_rx[i].msg_hdr.msg_namelen = sizeof g_peer[i];
        g_rx[i].msg_hdr.msg_iov = &g_iov[i];
        g_rx[i].msg_hdr.msg_iovlen = 1;
    }
}

/* Builds the replies for the n datagrams just received; returns how many. */
static int build_tx(int n, struct counters *c)
{
    int k = 0;

    for (int i = 0; i < n; i++) {
        if (g_rx[i].msg_hdr.msg_flags & MSG_TRUNC) {
            c->truncated++;
            continue;
        }
        g_txiov[k].iov_base = g_buf[i];
        g_txiov[k].iov_len = g_rx[i].msg_len;
        memset(&g_tx[k], 0, sizeof g_tx[k]);
        g_tx[k].msg_hdr.msg_name = &g_peer[i];
        g_tx[k].msg_hdr.msg_namelen = g_rx[i].msg_hdr.msg_namelen;
        g_tx[k].msg_hdr.msg_iov = &g_txiov[k];
        g_tx[k].msg_hdr.msg_iovlen = 1;
        k++;
    }
    return k;
}

/*
 * Sends the k replies. A failed message is counted and skipped, so every pass makes
 * progress; the pass count is bounded anyway (EINTR makes no progress).
 */
static void send_all(int fd, int k, struct counters *c)
{
    int off = 0;

    for (int pass = 0; off < k && pass < 4 * BATCH; pass++) {
        int r = sendmmsg(fd, &g_tx[off], (unsigned)(k - off), 0);

        if (r > 0) {
            c->sent += (uint64_t)r;
            off += r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            if (c->send_errors++ == 0)
                c->first_send_errno = r < 0 ? errno : EIO;
            off++;
        }
    }
    if (off < k) /* only after 256 interrupted passes */
        c->send_errors += (uint64_t)(k - off);
}

static int serve(int fd, uint64_t deadline, struct counters *c)
{
    while (!g_stop && (deadline == 0 || now_ns() < deadline)) {
        int n;

        arm_rx();
        n = recvmmsg(fd, g_rx, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            fprintf(stderr, "udp_echo: recvmmsg: %s\n", strerror(errno));
            return -1;
        }
        c->received += (uint64_t)n;
        send_all(fd, build_tx(n, c), c);
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    struct counters c = { 0 };
    uint64_t deadline = 0;
    int fd, rc;

    parse_args(argc, argv, &o);
    if (pin_core(o.core) != 0 || install_signals() != 0)
        return 1;
    fd = open_socket(&o.bind);
    if (fd < 0)
        return 1;
    if (o.seconds > 0)
        deadline = now_ns() + (uint64_t)o.seconds * 1000000000ULL;
    rc = serve(fd, deadline, &c);
    if (close(fd) != 0)
        fprintf(stderr, "udp_echo: close: %s\n", strerror(errno));
    if (c.truncated > 0)
        fprintf(stderr, "udp_echo: %" PRIu64 " datagrams over %d B dropped\n", c.truncated,
                DGRAM_MAX);
    if (c.send_errors > 0)
        fprintf(stderr, "udp_echo: %" PRIu64 " replies not sent (first: %s)\n", c.send_errors,
                strerror(c.first_send_errno));
    printf("{\"received\":%" PRIu64 ",\"sent\":%" PRIu64 "}\n", c.received, c.sent);
    fflush(stdout);
    return rc == 0 ? 0 : 1;
}
