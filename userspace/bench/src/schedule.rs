//! Open-loop pacing: message `k` of a thread is due at `t0 + k / rate`, whatever happened
//! to the messages before it, and its latency is measured from that scheduled time — so a
//! stall of the server (or of the load generator) shows in the figures instead of quietly
//! slowing the load down (no coordinated omission).

/// Nanoseconds per second.
const NS: u128 = 1_000_000_000;

/// One thread's send schedule: `rate` messages per second for `duration_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    rate: u64,
    total: u64,
}

impl Schedule {
    /// `rate` messages per second over `duration_ns` nanoseconds (the messages whose
    /// scheduled time falls before the end).
    #[must_use]
    pub fn new(rate: u64, duration_ns: u64) -> Self {
        let total = if rate == 0 {
            0
        } else {
            // Messages k with k * 1e9 / rate < duration: ceil(duration * rate / 1e9).
            let t = (u128::from(duration_ns) * u128::from(rate)).div_ceil(NS);
            u64::try_from(t).unwrap_or(u64::MAX)
        };
        Self { rate, total }
    }

    /// Messages in the whole schedule.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The scheduled time of message `k`, in nanoseconds after `t0`: `floor(k * 1e9 / rate)`.
    #[must_use]
    pub fn scheduled_ns(&self, k: u64) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        u64::try_from(u128::from(k) * NS / u128::from(self.rate)).unwrap_or(u64::MAX)
    }

    /// Messages due by `elapsed_ns` after `t0`: the count of `k` with
    /// `scheduled_ns(k) <= elapsed_ns`, capped at [`Schedule::total`].
    #[must_use]
    pub fn due(&self, elapsed_ns: u64) -> u64 {
        // floor(k * 1e9 / rate) <= e  <=>  k * 1e9 < (e + 1) * rate  <=>  k < (e+1)*rate/1e9,
        // so the count is ceil((e + 1) * rate / 1e9).
        let n = ((u128::from(elapsed_ns) + 1) * u128::from(self.rate)).div_ceil(NS);
        u64::try_from(n).unwrap_or(u64::MAX).min(self.total)
    }
}

/// Splits `total` over `parts` as evenly as possible (the first ones get the remainder).
#[must_use]
pub fn split(total: u64, parts: usize, index: usize) -> u64 {
    let parts = parts.max(1) as u64;
    let index = index as u64;
    total / parts + u64::from(index < total % parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_counts_match_scheduled_times() {
        for rate in [1u64, 3, 7, 1000, 20_000, 333_333, 1_000_000_007] {
            let s = Schedule::new(rate, 5_000_000_000);
            let mut k = 0;
            while k < s.total().min(5000) {
                let t = s.scheduled_ns(k);
                assert!(
                    s.due(t) > k,
                    "rate {rate}: message {k} not due at its time {t}"
                );
                if t > 0 {
                    assert!(s.due(t - 1) <= k, "rate {rate}: message {k} due before {t}");
                }
                k += 1 + k / 7;
            }
        }
    }

    #[test]
    fn totals_and_endpoints() {
        let s = Schedule::new(1000, 2_000_000_000);
        assert_eq!(s.total(), 2000);
        assert_eq!(s.due(0), 1, "message 0 is due at t0");
        assert_eq!(s.due(999_999), 1);
        assert_eq!(s.due(1_000_000), 2);
        assert_eq!(s.due(1_999_999_999), 2000);
        assert_eq!(s.due(u64::MAX), 2000, "capped at the total");
        assert_eq!(s.scheduled_ns(1999), 1_999_000_000);
        // A duration that is not a whole number of intervals keeps the partial one.
        assert_eq!(Schedule::new(3, 1_000_000_000).total(), 3);
        assert_eq!(Schedule::new(3, 1_000_000_001).total(), 4);
        let idle = Schedule::new(0, 5_000_000_000);
        assert_eq!((idle.total(), idle.due(u64::MAX)), (0, 0));
    }

    #[test]
    fn split_is_exhaustive() {
        for (total, parts) in [(10u64, 3usize), (2, 5), (0, 2), (20_000, 1), (7, 7)] {
            let sum: u64 = (0..parts).map(|i| split(total, parts, i)).sum();
            assert_eq!(sum, total);
            let max = (0..parts).map(|i| split(total, parts, i)).max().unwrap();
            let min = (0..parts).map(|i| split(total, parts, i)).min().unwrap();
            assert!(max - min <= 1);
        }
    }
}
