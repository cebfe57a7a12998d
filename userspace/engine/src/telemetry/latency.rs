//! Processing latency inside a worker: per batch, the time from taking the batch off
//! the RX ring (or out of `recvmmsg`) to handing the replies to TX, recorded once per
//! batch and weighted by the batch's packet count (every packet of a batch is counted
//! with the batch's latency).
//!
//! The worker records into its own [`Recorder`] (no lock, no allocation: the histogram's
//! bounds are fixed and auto-resize is off) and merges it into the queue's [`Shared`]
//! histogram every publication (100 ms) with a `try_lock`, so the reader can never stall
//! the worker: a round the reader holds the lock is simply merged the next time.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Lowest latency the histogram tells apart, nanoseconds.
const LOWEST_NS: u64 = 1;
/// Highest latency recorded, nanoseconds (larger values are clamped to it).
const HIGHEST_NS: u64 = 10_000_000_000;
/// Significant decimal digits kept: values within 1 % (0.8 %, 128 sub-buckets per power
/// of two). Three digits would cost 200 KiB per histogram (25,600 counters) against 28 KiB
/// (3,584), and every queue holds two plus the reader's merge: ~0.5 MiB of the engine's
/// resident memory per queue, for a precision no operator reads a latency to.
const SIGFIG: u8 = 2;

/// Upper bounds of the Prometheus histogram buckets, seconds (`+Inf` is implied).
pub const BUCKETS_SECONDS: [f64; 16] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    1e-1, 1.0,
];

fn histogram() -> Histogram<u64> {
    // INVARIANT: constant bounds that hdrhistogram accepts (1 <= low, high >= 2 * low,
    // sigfig <= 5); a failure here is a programming error caught by the unit tests.
    let mut h =
        Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGFIG).expect("valid histogram bounds");
    h.auto(false);
    h
}

/// A worker's own histogram, merged into [`Shared`] by [`Recorder::flush`].
#[derive(Debug)]
pub struct Recorder {
    local: Histogram<u64>,
    sum_ns: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            local: histogram(),
            sum_ns: 0,
        }
    }
}

impl Recorder {
    /// Records one batch of `packets` packets that took `elapsed` from RX to TX.
    #[inline]
    pub fn record(&mut self, elapsed: Duration, packets: u64) {
        if packets == 0 {
            return;
        }
        let ns = u64::try_from(elapsed.as_nanos())
            .unwrap_or(HIGHEST_NS)
            .clamp(LOWEST_NS, HIGHEST_NS);
        self.local.saturating_record_n(ns, packets);
        self.sum_ns = self.sum_ns.saturating_add(ns.saturating_mul(packets));
    }

    /// Merges what was recorded since the last flush into `shared`, unless the reader
    /// holds it right now (then it stays here for the next flush). Allocates nothing:
    /// both histograms have the same bounds.
    pub fn flush(&mut self, shared: &Shared) {
        if self.local.is_empty() {
            return;
        }
        let Ok(mut s) = shared.inner.try_lock() else {
            return;
        };
        if s.hist.add(&self.local).is_ok() {
            s.sum_ns = s.sum_ns.saturating_add(self.sum_ns);
            self.local.reset();
            self.sum_ns = 0;
        }
    }
}

/// One queue's processing-latency histogram since the engine started.
#[derive(Debug)]
pub struct Shared {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    hist: Histogram<u64>,
    sum_ns: u64,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                hist: histogram(),
                sum_ns: 0,
            }),
        }
    }
}

impl Shared {
    /// Percentiles and buckets of everything recorded so far; `None` before the first
    /// batch.
    #[must_use]
    pub fn summary(&self) -> Option<Summary> {
        let s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        summarize(&s.hist, s.sum_ns)
    }
}

/// One summary over several queues' histograms, merged bucket by bucket (so its
/// percentiles are those of every packet of every queue, not the worst queue's); `None`
/// before the first batch. Locks one queue at a time, on the reader's thread.
#[must_use]
pub fn merged<'a>(queues: impl IntoIterator<Item = &'a Shared>) -> Option<Summary> {
    let mut all = histogram();
    let mut sum_ns = 0u64;
    for q in queues {
        let s = q.inner.lock().unwrap_or_else(PoisonError::into_inner);
        // Same bounds on both sides: adding cannot fail.
        if all.add(&s.hist).is_ok() {
            sum_ns = sum_ns.saturating_add(s.sum_ns);
        }
    }
    summarize(&all, sum_ns)
}

fn summarize(h: &Histogram<u64>, sum_ns: u64) -> Option<Summary> {
    if h.is_empty() {
        return None;
    }
    let buckets = BUCKETS_SECONDS
        .iter()
        .map(|&le| {
            // Seconds to whole nanoseconds; the bounds are exact decimal fractions.
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "positive constants of at most 1e9"
            )]
            let le_ns = (le * 1e9).round() as u64;
            Bucket {
                le_seconds: le,
                count: h.count_between(0, le_ns),
            }
        })
        .collect();
    Some(Summary {
        count: h.len(),
        sum_ns,
        p50_ns: h.value_at_quantile(0.5),
        p99_ns: h.value_at_quantile(0.99),
        p999_ns: h.value_at_quantile(0.999),
        max_ns: h.max(),
        buckets,
    })
}

/// Processing latency of one queue, since the engine started (packet-weighted).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Packets recorded.
    pub count: u64,
    /// Sum of the recorded latencies, nanoseconds.
    pub sum_ns: u64,
    /// Median, nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile, nanoseconds.
    pub p99_ns: u64,
    /// 99.9th percentile, nanoseconds.
    pub p999_ns: u64,
    /// Highest recorded, nanoseconds.
    pub max_ns: u64,
    /// Cumulative counts at [`BUCKETS_SECONDS`] (values at most `le_seconds`, to the
    /// histogram's 2-digit precision).
    pub buckets: Vec<Bucket>,
}

/// One cumulative histogram bucket.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    /// Upper bound, seconds.
    pub le_seconds: f64,
    /// Packets whose latency was at most `le_seconds`.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_weighted_by_packets_and_flushed_once() {
        let shared = Shared::default();
        assert!(shared.summary().is_none());
        let mut r = Recorder::default();
        r.record(Duration::from_micros(2), 63);
        r.record(Duration::from_millis(3), 1);
        r.flush(&shared);
        // A second flush with nothing new adds nothing.
        r.flush(&shared);
        let s = shared.summary().expect("recorded");
        assert_eq!(s.count, 64);
        assert_eq!(s.sum_ns, 63 * 2_000 + 3_000_000);
        assert!((1_980..=2_020).contains(&s.p50_ns), "{}", s.p50_ns);
        assert!(
            (2_970_000..=3_030_000).contains(&s.p999_ns),
            "{}",
            s.p999_ns
        );
        let at = |le: f64| {
            s.buckets
                .iter()
                .find(|b| (b.le_seconds - le).abs() < 1e-12)
                .map(|b| b.count)
        };
        assert_eq!(at(1e-6), Some(0));
        assert_eq!(at(2.5e-6), Some(63));
        assert_eq!(at(2.5e-3), Some(63));
        assert_eq!(at(5e-3), Some(64));
    }

    #[test]
    fn flush_skips_while_the_reader_holds_the_lock() {
        let shared = Shared::default();
        let mut r = Recorder::default();
        r.record(Duration::from_micros(5), 10);
        {
            let _held = shared.inner.lock().expect("lock");
            r.flush(&shared);
        }
        assert!(shared.summary().is_none());
        r.flush(&shared);
        assert_eq!(shared.summary().map(|s| s.count), Some(10));
    }

    #[test]
    fn merged_percentiles_cover_every_queue_not_the_worst_one() {
        // Queue 0: 990 fast packets; queue 1: 10 slow ones. The worst queue's median is
        // slow, the merged median (1,000 packets) is fast and its p99.9 is slow.
        let (q0, q1) = (Shared::default(), Shared::default());
        let (mut r0, mut r1) = (Recorder::default(), Recorder::default());
        r0.record(Duration::from_micros(10), 990);
        r1.record(Duration::from_millis(2), 10);
        r0.flush(&q0);
        r1.flush(&q1);
        assert!(merged([]).is_none());
        let m = merged([&q0, &q1]).expect("recorded");
        assert_eq!(m.count, 1_000);
        assert_eq!(m.sum_ns, 990 * 10_000 + 10 * 2_000_000);
        assert!((9_900..=10_100).contains(&m.p50_ns), "{}", m.p50_ns);
        assert!((9_900..=10_100).contains(&m.p99_ns), "{}", m.p99_ns);
        assert!(
            (1_980_000..=2_020_000).contains(&m.p999_ns),
            "{}",
            m.p999_ns
        );
        assert_eq!(m.buckets.last().map(|b| b.count), Some(1_000));
        let worst = q1.summary().expect("recorded");
        assert!(worst.p50_ns > 1_000_000);
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let shared = Shared::default();
        let mut r = Recorder::default();
        r.record(Duration::from_secs(3600), 2);
        r.record(Duration::ZERO, 1);
        r.flush(&shared);
        let s = shared.summary().expect("recorded");
        assert_eq!(s.count, 3);
        assert!(s.max_ns >= HIGHEST_NS - HIGHEST_NS / 100);
    }
}
