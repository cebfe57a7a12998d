//! A protected session's receive path on hostile bytes: nothing forged is delivered or
//! closes the session, a replay is dropped. The harness and its invariants:
//! `src/protected.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xrudp_fuzz::protected::run(data));
