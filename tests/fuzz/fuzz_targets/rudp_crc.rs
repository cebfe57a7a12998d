//! Any bytes as a RUDP datagram: verification never panics; sealing makes it verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrudp_packet::crc;

fuzz_target!(|data: &[u8]| {
    let _ = crc::rudp_verify(data);
    let mut d = data.to_vec();
    match crc::rudp_seal(&mut d) {
        Ok(()) => assert!(crc::rudp_verify(&d)),
        Err(_) => assert!(d.len() < xrudp_common::rudp::HEADER_LEN),
    }
});
