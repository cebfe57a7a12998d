/* The C API misused on purpose: every call must return an error code, none may crash or
 * touch freed memory. Run under valgrind or AddressSanitizer (tests/tests/c_clients.rs
 * does, against the engine's echo server).
 *
 *   misuse SERVER_IP:PORT
 *
 * Prints `ok checks=N` and exits 0, or names the first check that failed and exits 1. */
#include <stdio.h>
#include <string.h>

#include "xrudp.h"

static int checks = 0, failed = 0;

static void expect(const char *what, XrudpStatus got, XrudpStatus want) {
  checks++;
  if (got != want) {
    fprintf(stderr, "misuse: %s returned %d (%s), expected %d (%s)\n", what, (int)got,
            xrudp_status_text(got), (int)want, xrudp_status_text(want));
    failed++;
  }
}

/* Waits for the next event of `kind`, up to 10 s; with `buf_len` 0 a message reports only
 * its size. */
static XrudpStatus wait_for(XrudpConn c, XrudpEvent *ev, uint8_t *buf, size_t buf_len) {
  for (int i = 0; i < 100; i++) {
    XrudpStatus s = xrudp_next_event(c, ev, buf, buf_len);
    if (s != XRUDP_STATUS_NO_EVENT) return s;
    s = xrudp_wait(c, 100);
    if (s != XRUDP_STATUS_OK) return s;
  }
  return XRUDP_STATUS_NO_EVENT;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s SERVER_IP:PORT\n", argv[0]);
    return 2;
  }
  XrudpConn c = 0;
  XrudpEvent ev;
  XrudpStats st;
  uint8_t small[4], big[256];
  XrudpConnectOptions bad_key = {.protection = XRUDP_PROTECTION_PINNED, .key_len = 5,
                                 .key = (const uint8_t *)"short"};
  XrudpConnectOptions null_key = {.protection = XRUDP_PROTECTION_PINNED, .key_len = 32};
  XrudpConnectOptions bad_mode = {.protection = 77};
  XrudpConnectOptions bad_mtu = {.mtu = 1500};
  XrudpConnectOptions bad_pmtud = {.mtu = 1472, .pmtud = 9};

  /* Null pointers and bad arguments. */
  expect("connect(NULL server)", xrudp_connect(NULL, NULL, &c), XRUDP_STATUS_NULL_POINTER);
  expect("connect(NULL out)", xrudp_connect(argv[1], NULL, NULL), XRUDP_STATUS_NULL_POINTER);
  expect("connect(bad address)", xrudp_connect("nowhere", NULL, &c), XRUDP_STATUS_INVALID_ARGUMENT);
  expect("connect(5-byte key)", xrudp_connect(argv[1], &bad_key, &c), XRUDP_STATUS_INVALID_ARGUMENT);
  expect("connect(NULL key)", xrudp_connect(argv[1], &null_key, &c), XRUDP_STATUS_NULL_POINTER);
  expect("connect(mode 77)", xrudp_connect(argv[1], &bad_mode, &c), XRUDP_STATUS_INVALID_ARGUMENT);
  expect("connect(mtu 1500)", xrudp_connect(argv[1], &bad_mtu, &c), XRUDP_STATUS_INVALID_ARGUMENT);
  expect("connect(pmtud 9)", xrudp_connect(argv[1], &bad_pmtud, &c), XRUDP_STATUS_INVALID_ARGUMENT);
  checks++;
  if (c != 0) { fprintf(stderr, "misuse: a failed connect wrote a handle\n"); failed++; }

  /* Handle 0 and a forged handle. */
  expect("poll(0)", xrudp_poll(0), XRUDP_STATUS_INVALID_HANDLE);
  expect("free(0)", xrudp_free(0), XRUDP_STATUS_INVALID_HANDLE);
  expect("send(forged)", xrudp_send(0xdeadbeef00000007ull, 0, big, 1), XRUDP_STATUS_INVALID_HANDLE);

  /* A live connection: null out-pointers, then a message that does not fit. */
  expect("connect", xrudp_connect(argv[1], NULL, &c), XRUDP_STATUS_OK);
  expect("next_event(NULL event)", xrudp_next_event(c, NULL, big, sizeof big), XRUDP_STATUS_NULL_POINTER);
  expect("next_event(NULL buf, len 8)", xrudp_next_event(c, &ev, NULL, 8), XRUDP_STATUS_NULL_POINTER);
  expect("stats(NULL)", xrudp_stats(c, NULL), XRUDP_STATUS_NULL_POINTER);
  expect("send(NULL data, len 3)", xrudp_send(c, 0, NULL, 3), XRUDP_STATUS_NULL_POINTER);
  expect("send before connected", xrudp_send(c, 0, big, 3), XRUDP_STATUS_NOT_CONNECTED);
  expect("wait for connected", wait_for(c, &ev, big, sizeof big), XRUDP_STATUS_OK);
  checks++;
  if (ev.kind != XRUDP_EVENT_KIND_CONNECTED) { fprintf(stderr, "misuse: no connected event\n"); failed++; }
  expect("send(bad channel)", xrudp_send(c, 200, big, 3), XRUDP_STATUS_BAD_CHANNEL);
  memset(big, 0xab, sizeof big);
  expect("send 100 bytes", xrudp_send(c, 0, big, 100), XRUDP_STATUS_OK);
  expect("echo into 4 bytes", wait_for(c, &ev, small, sizeof small), XRUDP_STATUS_BUFFER_TOO_SMALL);
  checks++;
  if (ev.kind != XRUDP_EVENT_KIND_MESSAGE || ev.len != 100) {
    fprintf(stderr, "misuse: too-small buffer: kind %d len %llu, expected a 100-byte message\n",
            (int)ev.kind, (unsigned long long)ev.len);
    failed++;
  }
  expect("echo size query (no buffer)", xrudp_next_event(c, &ev, NULL, 0), XRUDP_STATUS_BUFFER_TOO_SMALL);
  memset(big, 0, sizeof big);
  expect("echo into 256 bytes", xrudp_next_event(c, &ev, big, sizeof big), XRUDP_STATUS_OK);
  checks++;
  if (ev.len != 100 || big[0] != 0xab || big[99] != 0xab || big[100] != 0) {
    fprintf(stderr, "misuse: the retried message is not the 100 bytes sent\n");
    failed++;
  }
  expect("stats", xrudp_stats(c, &st), XRUDP_STATUS_OK);

  /* A closed connection's handle: usable for events until freed, then dead. */
  expect("disconnect", xrudp_disconnect(c, 7), XRUDP_STATUS_OK);
  expect("send after disconnect", xrudp_send(c, 0, big, 3), XRUDP_STATUS_NOT_CONNECTED);
  expect("wait for disconnected", wait_for(c, &ev, big, sizeof big), XRUDP_STATUS_OK);
  checks++;
  if (ev.kind != XRUDP_EVENT_KIND_DISCONNECTED || ev.reason != XRUDP_REASON_LOCAL || ev.reason_code != 7) {
    fprintf(stderr, "misuse: expected a local disconnect with code 7\n");
    failed++;
  }
  expect("disconnect twice", xrudp_disconnect(c, 7), XRUDP_STATUS_NOT_CONNECTED);
  expect("free", xrudp_free(c), XRUDP_STATUS_OK);

  /* Freed: every call refuses the handle (a double free included). */
  expect("free twice", xrudp_free(c), XRUDP_STATUS_INVALID_HANDLE);
  expect("poll after free", xrudp_poll(c), XRUDP_STATUS_INVALID_HANDLE);
  expect("wait after free", xrudp_wait(c, 1), XRUDP_STATUS_INVALID_HANDLE);
  expect("send after free", xrudp_send(c, 0, big, 3), XRUDP_STATUS_INVALID_HANDLE);
  expect("next_event after free", xrudp_next_event(c, &ev, big, sizeof big), XRUDP_STATUS_INVALID_HANDLE);
  expect("stats after free", xrudp_stats(c, &st), XRUDP_STATUS_INVALID_HANDLE);
  expect("disconnect after free", xrudp_disconnect(c, 1), XRUDP_STATUS_INVALID_HANDLE);

  /* A new connection takes the freed slot: the old handle still does not reach it. */
  XrudpConn c2 = 0;
  expect("connect again", xrudp_connect(argv[1], NULL, &c2), XRUDP_STATUS_OK);
  checks++;
  if (c2 == c) { fprintf(stderr, "misuse: a freed handle value was handed out again\n"); failed++; }
  expect("free(old) with the slot reused", xrudp_free(c), XRUDP_STATUS_INVALID_HANDLE);
  expect("poll(new)", xrudp_poll(c2), XRUDP_STATUS_OK);
  expect("free(new)", xrudp_free(c2), XRUDP_STATUS_OK);

  checks++;
  if (strcmp(xrudp_status_text(12345), "unknown status code")) { fprintf(stderr, "misuse: status text\n"); failed++; }

  if (failed) {
    fprintf(stderr, "misuse: %d of %d checks failed\n", failed, checks);
    return 1;
  }
  printf("ok checks=%d\n", checks);
  return 0;
}
