//! The steering table run through the classifier on the host (`steer::classify` on a
//! slice): the same code the XDP program runs, and the same frames the kernel test uses.

use xrudp_common::steer::{self, Verdict};
use xrudp_tests::frames::{self, Expect};

#[test]
fn table_on_the_host_classifier() {
    let mut failures = Vec::new();
    for c in frames::table() {
        let got = steer::classify(c.frame.as_slice(), |p| p == frames::PORT, c.rudp_filter);
        let want = match c.expect {
            Expect::Steer => Verdict::Steer,
            Expect::Pass => Verdict::Pass,
            Expect::Drop(r) => Verdict::Drop(r),
        };
        if got != want {
            failures.push(format!("{}: got {got:?}, want {want:?}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "misclassified:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_truncation_of_every_frame_is_classified_without_panic() {
    for c in frames::table() {
        for n in 0..=c.frame.len() {
            let _ = steer::classify(&c.frame[..n], |p| p == frames::PORT, true);
        }
    }
}
