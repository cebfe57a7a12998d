//! Fragmented messages between a Client/Server pair over a lossy, duplicating, reordering, corrupting and forging network.
//! The harness and its invariants: `src/reassembly.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xrudp_fuzz::reassembly::run(data));
