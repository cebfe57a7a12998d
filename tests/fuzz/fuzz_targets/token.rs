//! Connect tokens v2 on any bytes: no panic, decode re-encodes exactly, what opens is
//! authentic and admits one address. The harness and its invariants: `src/token.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xrudp_fuzz::token::run(data));
