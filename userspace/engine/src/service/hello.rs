//! The first-hello budget: a token bucket over time passed in.

use std::time::Instant;

/// `rate` first hellos per second, bursts up to one second's worth (0: unlimited).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HelloBudget {
    rate: u32,
    tokens: f64,
    last: Option<Instant>,
}

impl HelloBudget {
    pub(crate) fn new(rate: u32) -> Self {
        Self {
            rate,
            tokens: f64::from(rate),
            last: None,
        }
    }

    /// Takes one token at `now`; `false` when the budget is spent.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let cap = f64::from(self.rate);
        if let Some(last) = self.last {
            self.tokens =
                (self.tokens + now.saturating_duration_since(last).as_secs_f64() * cap).min(cap);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_spent_budget_refills_at_its_rate_and_never_beyond_a_second() {
        let t0 = Instant::now();
        let mut b = HelloBudget::new(10);
        assert_eq!(
            (0..20).filter(|_| b.take(t0)).count(),
            10,
            "a second's burst"
        );
        assert!(!b.take(t0));
        assert!(
            b.take(t0 + Duration::from_millis(100)),
            "one token per 100 ms"
        );
        assert!(!b.take(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            (0..20).filter(|_| b.take(later)).count(),
            10,
            "capped at one second"
        );
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let mut b = HelloBudget::new(0);
        let t0 = Instant::now();
        assert!((0..100_000).all(|_| b.take(t0)));
    }
}
