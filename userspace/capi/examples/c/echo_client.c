/* A console echo client over the xrudp C API: connects, sends COUNT reliable-ordered
 * messages on channel 0 (up to WINDOW in flight), checks that each comes back once, in
 * order and byte-exact, measures each round trip, then disconnects with CODE.
 *
 *   echo_client SERVER_IP:PORT [--count N] [--size BYTES] [--window W] [--code C]
 *                              [--protection anonymous|off] [--mtu BYTES] [--pmtud on|off]
 *
 * --mtu is the largest datagram to send (1200..1472; path MTU discovery finds what the
 * path carries up to it unless --pmtud off). Prints one line,
 * `ok count=.. round_trips_per_s=.. rtt_p50_us=.. rtt_p90_us=.. .. mtu=..`, and
 * exits 0; on any failure prints why and exits 1. docs/CLIENTS.md walks through it. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xrudp.h"

#define CHANNEL_RELIABLE_ORDERED 0
#define MAX_SIZE 1024

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int fail(const char *what, XrudpStatus s) {
  fprintf(stderr, "echo_client: %s: %s (%d)\n", what, xrudp_status_text(s), (int)s);
  return 1;
}

/* Message `seq`: its number in the first 4 bytes (big-endian), then a pattern that
 * depends on it, so a corrupted or misplaced byte is seen. */
static void fill(uint8_t *m, size_t size, uint32_t seq) {
  for (size_t i = 0; i < size; i++) m[i] = (uint8_t)(seq * 31u + i * 7u);
  m[0] = (uint8_t)(seq >> 24); m[1] = (uint8_t)(seq >> 16);
  m[2] = (uint8_t)(seq >> 8);  m[3] = (uint8_t)seq;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s SERVER_IP:PORT [--count N] [--size BYTES] [--window W] "
                    "[--code C] [--protection anonymous|off] [--mtu BYTES] [--pmtud on|off]\n", argv[0]);
    return 2;
  }
  const char *server = argv[1];
  uint32_t count = 1000, window = 1;
  size_t size = 64;
  uint16_t code = 42;
  /* Fields left out are 0: the defaults (mtu 1200, path MTU discovery on). */
  XrudpConnectOptions opts = {.protection = XRUDP_PROTECTION_ANONYMOUS};
  XrudpStats live = {0};
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--count")) count = (uint32_t)strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--size")) size = strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--window")) window = (uint32_t)strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--code")) code = (uint16_t)strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--protection"))
      opts.protection = strcmp(argv[i + 1], "off") ? XRUDP_PROTECTION_ANONYMOUS : XRUDP_PROTECTION_OFF;
    else if (!strcmp(argv[i], "--mtu")) opts.mtu = (uint32_t)strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--pmtud"))
      opts.pmtud = strcmp(argv[i + 1], "off") ? XRUDP_PMTUD_ON : XRUDP_PMTUD_OFF;
    else { fprintf(stderr, "echo_client: unknown option %s\n", argv[i]); return 2; }
  }
  if (size < 4 || size > MAX_SIZE || window == 0 || count == 0) {
    fprintf(stderr, "echo_client: need 4 <= size <= %d, window >= 1, count >= 1\n", MAX_SIZE);
    return 2;
  }

  XrudpConn conn = 0;
  XrudpStatus s = xrudp_connect(server, &opts, &conn);
  if (s != XRUDP_STATUS_OK) return fail("connect", s);

  /* The game loop: wait (or poll once per frame), then drain events. */
  uint8_t buf[MAX_SIZE], want[MAX_SIZE], msg[MAX_SIZE];
  uint64_t *sent_at = calloc(count, sizeof *sent_at), *rtt = calloc(count, sizeof *rtt);
  if (!sent_at || !rtt) return 1;
  uint32_t next_send = 0, next_recv = 0;
  int connected = 0, closed = 0, disconnecting = 0;
  uint64_t start = 0, end = 0, deadline = now_us() + 60u * 1000000u;
  XrudpEvent ev;
  while (!closed) {
    if (now_us() > deadline) {
      fprintf(stderr, "echo_client: timed out (connected=%d, %u/%u echoes)\n", connected,
              next_recv, count);
      return 1;
    }
    while (connected && !disconnecting && next_send < count && next_send - next_recv < window) {
      fill(msg, size, next_send);
      s = xrudp_send(conn, CHANNEL_RELIABLE_ORDERED, msg, size);
      if (s == XRUDP_STATUS_QUEUE_FULL) break; /* backpressure: poll, then retry */
      if (s != XRUDP_STATUS_OK) return fail("send", s);
      sent_at[next_send++] = now_us();
    }
    s = xrudp_wait(conn, 100);
    if (s != XRUDP_STATUS_OK) return fail("wait", s);
    while ((s = xrudp_next_event(conn, &ev, buf, sizeof buf)) == XRUDP_STATUS_OK) {
      if (ev.kind == XRUDP_EVENT_KIND_CONNECTED) {
        connected = 1;
        start = now_us();
      } else if (ev.kind == XRUDP_EVENT_KIND_MESSAGE) {
        uint64_t t = now_us();
        if (next_recv >= next_send) {
          fprintf(stderr, "echo_client: an echo nobody asked for (after %u)\n", next_recv);
          return 1;
        }
        fill(want, size, next_recv);
        if (ev.channel != CHANNEL_RELIABLE_ORDERED || ev.len != size || memcmp(buf, want, size)) {
          fprintf(stderr, "echo_client: echo %u differs (channel %u, %llu bytes)\n", next_recv,
                  ev.channel, (unsigned long long)ev.len);
          return 1;
        }
        rtt[next_recv] = t - sent_at[next_recv];
        if (++next_recv == count) {
          end = t;
          /* The connection's quality while it is up (RTT figures are 0 once closed). */
          s = xrudp_stats(conn, &live);
          if (s != XRUDP_STATUS_OK) return fail("stats", s);
          s = xrudp_disconnect(conn, code);
          if (s != XRUDP_STATUS_OK) return fail("disconnect", s);
          disconnecting = 1;
        }
      } else if (ev.kind == XRUDP_EVENT_KIND_DISCONNECTED) {
        if (ev.reason != XRUDP_REASON_LOCAL || ev.reason_code != code || next_recv != count) {
          fprintf(stderr, "echo_client: disconnected early: reason %d code %u after %u/%u\n",
                  (int)ev.reason, ev.reason_code, next_recv, count);
          return 1;
        }
        closed = 1;
      }
    }
    if (s != XRUDP_STATUS_NO_EVENT) return fail("next_event", s);
  }

  XrudpStats st;
  s = xrudp_stats(conn, &st);
  if (s != XRUDP_STATUS_OK) return fail("stats", s);
  s = xrudp_free(conn);
  if (s != XRUDP_STATUS_OK) return fail("free", s);
  qsort(rtt, count, sizeof *rtt, cmp_u64);
  double secs = (double)(end - start) / 1e6;
  printf("ok count=%u round_trips_per_s=%.0f rtt_p50_us=%llu rtt_p90_us=%llu "
         "packets_out=%llu lost=%llu min_rtt_us=%llu jitter_us=%llu mtu=%llu pmtu_probes=%llu\n",
         count, secs > 0 ? count / secs : 0.0, (unsigned long long)rtt[(count * 50 + 99) / 100 - 1],
         (unsigned long long)rtt[(count * 90 + 99) / 100 - 1], (unsigned long long)st.packets_out,
         (unsigned long long)st.lost_packets, (unsigned long long)live.min_rtt_us,
         (unsigned long long)live.jitter_us, (unsigned long long)live.mtu,
         (unsigned long long)st.pmtu_probes);
  free(sent_at);
  free(rtt);
  return 0;
}
