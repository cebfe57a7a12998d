//! The XDP program's classifier (xrudp_common::steer) on any frame, port set and filter setting.
//! The harness and its invariants: `src/steer.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xrudp_fuzz::steer::run(data));
