//! Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation-02): what a
//! model-based controller such as [`super::Bbr`] learns the path's bandwidth from.
//!
//! The sender stamps every datagram it sends with the connection's delivery state
//! ([`Estimator::on_sent`], §3.2); each acknowledged datagram hands its stamp back
//! ([`Estimator::on_acked`], §3.3), and once per ACK frame [`Estimator::sample`] turns the
//! most recently sent of them into a [`RateSample`]: the bytes delivered between that
//! datagram's send and its ack, over the longer of the send and the ack intervals.
//!
//! Stamps keep their instants as microsecond ages relative to the datagram's own send
//! time, so that a stamp is 24 bytes however long the connection lives.

use core::time::Duration;
use std::time::Instant;

/// The connection's delivery state at the moment one datagram was sent (the draft's
/// `P.delivered`, `P.delivered_time`, `P.first_sent_time`, `P.is_app_limited`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Bytes delivered (acknowledged) on the connection before this datagram was sent.
    delivered: u64,
    /// `sent - delivered_time`, microseconds, saturating (71 minutes).
    delivered_age_us: u32,
    /// `sent - first_sent_time`, microseconds, saturating.
    first_sent_age_us: u32,
    /// The application, not the window, limited the sender when this was sent.
    app_limited: bool,
}

/// One delivery-rate sample (the draft's `rs`), taken once per ACK frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSample {
    /// Bytes delivered over [`RateSample::interval`].
    pub delivered: u64,
    /// The longer of the send and ack intervals of the sample (draft §3.3).
    pub interval: Duration,
    /// Bytes delivered on the connection before the sampled datagram was sent.
    pub prior_delivered: u64,
    /// The round trip of the sampled datagram: its ack time minus its send time.
    pub rtt: Duration,
    /// The sampled datagram was sent while the application limited the sender, so the
    /// rate may be below what the path carries (draft §3.4).
    pub app_limited: bool,
}

impl RateSample {
    /// The delivery rate in bytes per second (saturating; 0 for an empty interval).
    #[must_use]
    pub fn rate(&self) -> u64 {
        let nanos = self.interval.as_nanos();
        if nanos == 0 {
            return 0;
        }
        u64::try_from(u128::from(self.delivered) * 1_000_000_000 / nanos).unwrap_or(u64::MAX)
    }
}

/// The connection-wide delivery state of the draft (`C.delivered`, `C.delivered_time`,
/// `C.first_sent_time`, `C.app_limited`) and the sample being built from one ACK frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimator {
    /// Bytes acknowledged so far.
    delivered: u64,
    /// When `delivered` last grew; `None` before the first ack.
    delivered_time: Option<Instant>,
    /// Send time of the datagram the current send interval starts at (draft §3.2).
    first_sent_time: Option<Instant>,
    /// While the application limits the sender: the `delivered` count past which the
    /// datagrams sent in that state are all acknowledged (draft §3.4: `C.app_limited`).
    app_limited_until: Option<u64>,
    /// The most recently sent datagram newly acknowledged by the ACK frame in progress.
    pending: Option<Pending>,
}

/// The stamp of the most recently sent datagram of an ACK frame, with its instants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    prior_delivered: u64,
    prior_time: Instant,
    send_elapsed: Duration,
    sent: Instant,
    app_limited: bool,
}

impl Estimator {
    /// The state of a connection that has sent nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes acknowledged so far.
    #[must_use]
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Stamps a datagram sent at `now`; `bytes_in_flight` counts what was in flight before
    /// it (draft §3.2: with nothing in flight, both intervals start afresh at `now`, so an
    /// idle period is not counted as delivery time).
    pub fn on_sent(&mut self, now: Instant, bytes_in_flight: u64) -> Stamp {
        if bytes_in_flight == 0 || self.first_sent_time.is_none() {
            self.first_sent_time = Some(now);
            self.delivered_time = Some(now);
        }
        Stamp {
            delivered: self.delivered,
            delivered_age_us: age_us(now, self.delivered_time),
            first_sent_age_us: age_us(now, self.first_sent_time),
            app_limited: self.app_limited_until.is_some(),
        }
    }

    /// The sender had room in its window but nothing to send, with `bytes_in_flight`
    /// in flight: samples of datagrams sent from now until those are acknowledged are
    /// marked app-limited (draft §3.4).
    pub fn on_app_limited(&mut self, bytes_in_flight: u64) {
        // The draft's `max(delivered + inflight, 1)`: an end strictly after today's count.
        self.app_limited_until = Some(self.delivered + bytes_in_flight.max(1));
    }

    /// A datagram of `bytes`, sent at `sent` with `stamp`, was newly acknowledged at
    /// `now` (draft §3.3, `UpdateRateSample`). Call for each one of an ACK frame, then
    /// [`Estimator::sample`] once.
    pub fn on_acked(&mut self, now: Instant, sent: Instant, stamp: &Stamp, bytes: u64) {
        self.delivered = self.delivered.saturating_add(bytes);
        self.delivered_time = Some(now);
        if self
            .app_limited_until
            .is_some_and(|end| self.delivered > end)
        {
            self.app_limited_until = None;
        }
        if self
            .pending
            .is_some_and(|p| (sent, stamp.delivered) < (p.sent, p.prior_delivered))
        {
            // Sent before the one already chosen (the draft's `IsNewestPacket`): its
            // interval is older, and says less about the path now.
            return;
        }
        let prior_time = earlier(sent, stamp.delivered_age_us);
        let first_sent = earlier(sent, stamp.first_sent_age_us);
        self.pending = Some(Pending {
            prior_delivered: stamp.delivered,
            prior_time,
            send_elapsed: sent.saturating_duration_since(first_sent),
            sent,
            app_limited: stamp.app_limited,
        });
        // The next send interval starts at this datagram's send (draft §3.3).
        self.first_sent_time = Some(sent);
    }

    /// The sample of the ACK frame just processed, if it acknowledged any stamped
    /// datagram and its interval is at least `min_rtt` (draft §3.3: a shorter interval
    /// comes from ack compression and would overestimate the rate).
    pub fn sample(&mut self, now: Instant, min_rtt: Duration) -> Option<RateSample> {
        let p = self.pending.take()?;
        let ack_elapsed = now.saturating_duration_since(p.prior_time);
        let interval = p.send_elapsed.max(ack_elapsed);
        if interval.is_zero() || interval < min_rtt {
            return None;
        }
        Some(RateSample {
            delivered: self.delivered - p.prior_delivered,
            interval,
            prior_delivered: p.prior_delivered,
            rtt: now.saturating_duration_since(p.sent),
            app_limited: p.app_limited,
        })
    }
}

/// Microseconds from `then` to `now`, saturating; 0 if unknown.
fn age_us(now: Instant, then: Option<Instant>) -> u32 {
    then.map_or(0, |t| {
        u32::try_from(now.saturating_duration_since(t).as_micros()).unwrap_or(u32::MAX)
    })
}

/// `at` minus `age_us` microseconds, or `at` if the platform's clock starts later.
fn earlier(at: Instant, age_us: u32) -> Instant {
    at.checked_sub(Duration::from_micros(u64::from(age_us)))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_paced_flow_samples_its_sending_rate() {
        // One 1,000-byte datagram every 10 ms, each acked 50 ms after it is sent (acks
        // handled before the send of the same instant). Samples start low, the first
        // flight's delivery times counting from the first send, and reach the sending
        // rate, 1,000 bytes per 10 ms = 100 kB/s, once the datagrams sent after the first
        // ack are acknowledged.
        let t0 = Instant::now();
        let mut e = Estimator::new();
        let mut in_flight = std::collections::VecDeque::new();
        let mut rates = Vec::new();
        for i in 0..40u32 {
            let now = t0 + MS * 10 * i;
            while let Some(&(sent, stamp)) = in_flight.front() {
                if sent + MS * 50 > now {
                    break;
                }
                in_flight.pop_front();
                e.on_acked(now, sent, &stamp, 1_000);
                let s = e
                    .sample(now, MS * 40)
                    .expect("intervals are at least 50 ms");
                assert_eq!(s.rtt, MS * 50);
                rates.push(s.rate());
            }
            let stamp = e.on_sent(now, 1_000 * in_flight.len() as u64);
            in_flight.push_back((now, stamp));
        }
        assert_eq!(rates[0], 20_000, "1,000 bytes over the first 50 ms");
        assert!(rates.windows(2).all(|w| w[0] <= w[1]), "{rates:?}");
        assert!(rates[5..].iter().all(|&r| r == 100_000), "{rates:?}");
        assert_eq!(e.delivered(), 1_000 * rates.len() as u64);
    }

    #[test]
    fn the_newest_datagram_of_an_ack_frame_is_sampled() {
        let t0 = Instant::now();
        let mut e = Estimator::new();
        let a = e.on_sent(t0, 0);
        let b = e.on_sent(t0 + MS, 1_000);
        let now = t0 + MS * 100;
        // Acked newest first, as the protocol walks its ack bitmap.
        e.on_acked(now, t0 + MS, &b, 1_000);
        e.on_acked(now, t0, &a, 1_000);
        let s = e.sample(now, MS).expect("a sample");
        assert_eq!((s.prior_delivered, s.delivered), (0, 2_000));
        assert_eq!(s.rtt, MS * 99);
        assert_eq!(s.interval, MS * 100);
        assert!(e.sample(now, MS).is_none(), "one sample per ACK frame");
    }

    #[test]
    fn app_limited_marks_last_until_its_flight_is_delivered() {
        let t0 = Instant::now();
        let mut est = Estimator::new();
        est.on_app_limited(2_000);
        let first = est.on_sent(t0, 0);
        let second = est.on_sent(t0 + MS, 1_000);
        est.on_acked(t0 + MS * 50, t0, &first, 1_000);
        assert!(est.sample(t0 + MS * 50, MS).is_some_and(|s| s.app_limited));
        est.on_acked(t0 + MS * 51, t0 + MS, &second, 1_000);
        assert!(est.sample(t0 + MS * 51, MS).is_some_and(|s| s.app_limited));
        // 2,000 bytes delivered is not past the mark; one more datagram is.
        let third = est.on_sent(t0 + MS * 52, 0);
        assert!(third.app_limited);
        est.on_acked(t0 + MS * 100, t0 + MS * 52, &third, 1_000);
        let fourth = est.on_sent(t0 + MS * 101, 0);
        assert!(!fourth.app_limited);
    }
}
