//! A Client fed any sequence of datagrams, forged handshake answers, timeouts, polls, sends and closes.
//! The harness and its invariants: `src/client.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xrudp_fuzz::client::run(data));
