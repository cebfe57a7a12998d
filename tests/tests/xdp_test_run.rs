//! The XDP program itself, run by the kernel on crafted frames (BPF_PROG_TEST_RUN):
//! every row of the steering table must get the expected action and bump exactly the
//! expected counter. A socket bound on queue 0 of a test veth fills XSKMAP slot 0, so
//! steered frames return XDP_REDIRECT (the kernel checks the slot, test_run does not
//! deliver the frame).

use xrudp::{
    loader::Program,
    sys::xsk::{Xsk, XskConfig, ZeroCopy},
};
use xrudp_common::maps::Counter;
use xrudp_tests::{
    Topology,
    frames::{self, Expect},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

fn counter_delta(before: &[u64], after: &[u64]) -> Vec<(Counter, u64)> {
    Counter::ALL
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a != b)
        .map(|(c, (b, a))| (*c, a - b))
        .collect()
}

#[test]
fn table_through_bpf_prog_test_run() {
    let t = Topology::new(1, false);
    let iface = t.if_srv.clone();
    let (failures, rows) = Topology::in_ns(&t.ns_srv, move || {
        let mut failures = Vec::new();
        let mut rows = 0;
        // One program and one socket for both filter settings: the kernel releases an
        // AF_XDP socket asynchronously, so binding the queue again at once can see EBUSY.
        let mut prog = Program::load().expect("loading the XDP program");
        let cfg = XskConfig {
            frames: 256,
            frame_size: 2048,
            ring_size: 64,
            zero_copy: ZeroCopy::Off,
            need_wakeup: true,
            huge_pages: false,
        };
        let xsk = Xsk::open(&iface, 0, &cfg).expect("binding an AF_XDP socket on queue 0");
        prog.register_socket(0, xsk.fd())
            .expect("filling XSKMAP slot 0");
        for filter in [true, false] {
            prog.configure(&[frames::PORT], filter)
                .expect("configuring maps");
            for c in frames::table()
                .into_iter()
                .filter(|c| c.rudp_filter == filter)
            {
                rows += 1;
                let before = prog.counters().expect("reading counters");
                let action = match prog.test_run(&c.frame) {
                    Ok(a) => a,
                    Err(e) => {
                        failures.push(format!("{}: test_run failed: {e}", c.name));
                        continue;
                    }
                };
                let after = prog.counters().expect("reading counters");
                let (want_action, want_counter) = match c.expect {
                    Expect::Steer => (XDP_REDIRECT, Counter::Redirected),
                    Expect::Pass => (XDP_PASS, Counter::Passed),
                    Expect::Drop(r) => (XDP_DROP, r),
                };
                let delta = counter_delta(&before, &after);
                let want_delta = vec![(Counter::Seen, 1), (want_counter, 1)];
                let mut sorted = delta.clone();
                sorted.sort_by_key(|(c, _)| *c as u32);
                if action != want_action || sorted != want_delta {
                    failures.push(format!(
                        "{} (filter {filter}): action {action} counters {delta:?}; want action {want_action} counters {want_delta:?}",
                        c.name
                    ));
                }
            }
        }
        drop(xsk);
        (failures, rows)
    });
    assert_eq!(rows, frames::table().len(), "every row ran in the kernel");
    assert!(
        failures.is_empty(),
        "XDP program disagrees with the table:\n{}",
        failures.join("\n")
    );
}

#[test]
fn steered_frame_without_a_socket_falls_back_to_pass() {
    let t = Topology::new(1, false);
    Topology::in_ns(&t.ns_srv, || {
        let mut prog = Program::load().expect("loading the XDP program");
        prog.configure(&[frames::PORT], true)
            .expect("configuring maps");
        let frame = frames::FrameSpec::udp(
            frames::PORT,
            frames::rudp_payload(xrudp_common::rudp::PacketType::Data, 8),
        )
        .build();
        let before = prog.counters().expect("counters");
        assert_eq!(prog.test_run(&frame).expect("test_run"), XDP_PASS);
        let after = prog.counters().expect("counters");
        assert_eq!(
            counter_delta(&before, &after),
            vec![(Counter::Seen, 1), (Counter::PassedNoSocket, 1)]
        );
    });
}
