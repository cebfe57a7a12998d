//! `xrudp attach --umem-hugepages`: the UMEM on reserved huge pages.
//!
//! - with the pages reserved, the engine echoes datagrams byte-exact and its UMEM is
//!   backed by them (`HugetlbPages` in the engine's /proc/PID/status is the UMEM's size);
//! - too few free pages, or a UMEM that is not a whole number of pages, is refused before
//!   anything is attached, with a message that says what to do.
//!
//! The reservation is the one host-wide change here: [`Reserve`] adds pages to
//! `vm.nr_hugepages` for the test and puts the old value back when dropped.

use std::{net::UdpSocket, time::Duration};

use xrudp_tests::{Engine, Topology};

const PORT: u16 = 7777;
/// The default UMEM: 2048 frames of 2048 bytes, two 2 MiB pages.
const DEFAULT_UMEM_KIB: u64 = 4096;

fn meminfo(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/meminfo"))
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

fn nr_hugepages() -> u64 {
    std::fs::read_to_string(NR_HUGEPAGES)
        .expect("reading vm.nr_hugepages")
        .trim()
        .parse()
        .expect("vm.nr_hugepages is a number")
}

/// Huge pages added to the pool for a test's lifetime.
struct Reserve {
    before: u64,
}

impl Reserve {
    fn add(pages: u64) -> Self {
        let before = nr_hugepages();
        let free_before = meminfo("HugePages_Free");
        std::fs::write(NR_HUGEPAGES, (before + pages).to_string())
            .expect("raising vm.nr_hugepages");
        let r = Self { before };
        let free = meminfo("HugePages_Free");
        assert!(
            free >= free_before + pages,
            "the kernel could not reserve {pages} huge pages (free {free_before} -> {free})"
        );
        r
    }
}

impl Drop for Reserve {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_HUGEPAGES, self.before.to_string());
    }
}

fn hugetlb_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("engine status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("HugetlbPages:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("HugetlbPages in /proc/PID/status")
}

#[test]
fn a_umem_on_huge_pages_echoes_and_is_backed_by_them() {
    xrudp_tests::require_root();
    let t = Topology::new(1, true);
    let _reserve = Reserve::add(DEFAULT_UMEM_KIB * 1024 / (meminfo("Hugepagesize") * 1024));
    let engine = Engine::start(
        &t,
        &[
            "--port",
            &PORT.to_string(),
            "--app",
            "udp-echo",
            "--umem-hugepages",
        ],
    );
    let pid = engine.snapshot().pid;
    assert_eq!(
        hugetlb_kib(pid),
        DEFAULT_UMEM_KIB,
        "the engine's huge pages are its UMEM"
    );
    let dst = t.srv_addr(PORT);
    let echoed = Topology::in_ns(&t.ns_cli.clone(), move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = [0u8; 2048];
        let mut ok = 0;
        for i in 0..2_000u32 {
            let len = 1 + (i as usize * 37) % 1_400;
            let sent: Vec<u8> = (0..len).map(|k| (k as u32 ^ i) as u8).collect();
            s.send_to(&sent, dst).expect("send");
            let (n, _) = s.recv_from(&mut got).expect("echo within 5 s");
            assert_eq!(&got[..n], &sent[..], "echo {i} byte-exact");
            ok += 1;
        }
        ok
    });
    assert_eq!(echoed, 2_000);
    drop(engine);
}

fn refused(t: &Topology, extra: &[&str], says: &str) {
    let port = PORT.to_string();
    let mut args = vec![
        "--port",
        port.as_str(),
        "--app",
        "udp-echo",
        "--umem-hugepages",
    ];
    args.extend_from_slice(extra);
    match Engine::try_start(t, &args) {
        Ok(_) => panic!("{args:?} started"),
        Err((why, log)) => {
            assert!(
                log.contains(says),
                "{args:?} ({why}): should say {says:?}:\n{log}"
            );
        }
    }
    assert_eq!(t.srv_xdp_prog(), 0, "{args:?}: nothing may stay attached");
}

#[test]
fn too_few_huge_pages_or_a_partial_page_is_refused_clearly() {
    xrudp_tests::require_root();
    let t = Topology::new(1, true);
    // One page more than are free: 1,024 frames of 2 KiB fill a 2 MiB page.
    let per_page = meminfo("Hugepagesize") * 1024 / 2048;
    let frames = ((meminfo("HugePages_Free") + 1) * per_page).to_string();
    refused(
        &t,
        &["--umem-frames", &frames, "--ring-size", "64"],
        "reserve more with `sysctl vm.nr_hugepages=N`",
    );
    refused(
        &t,
        &[
            "--umem-frames",
            &(per_page * 3 / 2).to_string(),
            "--ring-size",
            "64",
        ],
        &format!("use a multiple of {per_page} frames"),
    );
}
