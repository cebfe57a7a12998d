//! A Server fed any sequence of datagrams, timeouts, polls, sends and closes from four addresses.
//! The harness and its invariants: `src/server.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xrudp_fuzz::server::run(data));
