//! Shared by the checksum property tests: the kernels this CPU runs, never skipping one
//! in silence.

use xrudp_packet::checksum::{Kernel, Level};

/// The kernels this CPU can run (the scalar one always). A level the CPU lacks is said on
/// stderr; under `CI=true` a level whose flag /proc/cpuinfo shows but that detection
/// refused fails the test, so a CI log never claims AVX2 coverage it did not have.
pub(crate) fn kernels() -> Vec<Kernel> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut out = Vec::new();
    for level in Level::ALL {
        if let Some(k) = Kernel::forced(level) {
            out.push(k);
            continue;
        }
        eprintln!("checksum: this CPU cannot run the {level} kernel: it is NOT tested here");
        let flag = match level {
            Level::Avx2 => "avx2",
            Level::Sse41 => "sse4_1",
            Level::Scalar => continue,
        };
        let has = flags
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == flag));
        assert!(
            !(ci && has),
            "CI=true: /proc/cpuinfo lists {flag} but the {level} kernel was not tested"
        );
    }
    out
}
