//! Every checksum kernel gives the scalar kernel's sum, at any alignment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrudp_packet::{Kernel, Level};

fuzz_target!(|data: &[u8]| {
    let off = usize::from(data.first().copied().unwrap_or(0) % 64).min(data.len());
    let slice = &data[off..];
    let want = Kernel::scalar().sum(slice);
    for k in Level::ALL.into_iter().filter_map(Kernel::forced) {
        assert_eq!(k.sum(slice), want, "{}", k.level());
    }
});
