//! The protocol codec on any bytes: no panic, and what decodes re-encodes to the same value.
//! The harness and its invariants: `src/decode.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xrudp_fuzz::decode::run(data));
