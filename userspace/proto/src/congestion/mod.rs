//! Congestion control: one [`Controller`] trait and four implementations side by side,
//! dispatched through the [`Congestion`] enum so that a connection holds its controller
//! inline (no `Box`, no vtable).
//!
//! - [`Aimd`]: the adaptive AIMD of the xrudp design — slow start, congestion avoidance,
//!   fast recovery and network probing, a window of 2..=1000 datagrams, beta 0.5, and a
//!   multiplicative decrease only when the measured loss rate exceeds 1 %, so that the
//!   random loss of wireless and consumer links does not collapse a game's window.
//! - [`NewReno`]: RFC 9002 §7 (QUIC's `NewReno`).
//! - [`Cubic`]: RFC 9438, with the recovery period of RFC 9002 §7.3.2.
//! - [`Bbr`]: model-based (BBR): paces at the measured bottleneck bandwidth and keeps
//!   about two bandwidth-delay products in flight, fed by [`delivery`] rate samples.
//!
//! All sizes are in bytes; `mss` is the configured maximum datagram payload.

pub mod aimd;
pub mod bbr;
pub mod cubic;
pub mod delivery;
pub mod new_reno;

pub use aimd::Aimd;
pub use bbr::Bbr;
pub use cubic::Cubic;
pub use delivery::RateSample;
pub use new_reno::NewReno;

use core::fmt;
use core::str::FromStr;
use std::time::Instant;

use crate::rtt::RttEstimator;

/// The events a congestion controller reacts to, in bytes (RFC 9002 §7 and Appendix B).
pub trait Controller {
    /// A datagram of `bytes` was sent at `now`; `bytes_in_flight` counts it.
    fn on_sent(&mut self, now: Instant, bytes: u64, bytes_in_flight: u64);
    /// A datagram of `bytes`, sent at `sent`, was newly acknowledged at `now`.
    /// `app_limited`: the sender did not fill the window when it sent it (RFC 9002 §7.8).
    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        rtt: &RttEstimator,
        app_limited: bool,
    );
    /// Datagrams totalling `lost_bytes` were declared lost at `now`; `sent` is the send
    /// time of the newest of them (RFC 9002 §7.3.2 keys the recovery period on it), and
    /// `persistent` says they establish persistent congestion (RFC 9002 §7.6).
    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        lost_bytes: u64,
        persistent: bool,
    );
    /// The congestion window: how many bytes may be in flight.
    fn window(&self) -> u64;

    /// Once per ACK frame that newly acknowledged datagrams, after [`Controller::on_ack`]
    /// for each and after the losses it revealed: the frame's delivery-rate `sample`
    /// (none if no acked datagram carried a stamp, or its interval was too short) and
    /// what is still in flight. Loss-based controllers ignore it.
    fn on_delivery(&mut self, now: Instant, sample: Option<&RateSample>, bytes_in_flight: u64) {
        let _ = (now, sample, bytes_in_flight);
    }

    /// The rate to pace at, bytes per second, for a controller that models one; `None`
    /// leaves the pacer its RFC 9002 §7.7 rate of 1.25 × cwnd / smoothed RTT.
    fn pacing_rate(&self) -> Option<u64> {
        None
    }
}

/// Widens a byte count kept in 32 bits where `u32::MAX` means "unbounded" (a threshold
/// not yet set) to the `u64` the [`Controller`] accessors report, keeping that meaning:
/// `u32::MAX` becomes `u64::MAX`.
#[must_use]
pub(crate) fn widen_unbounded(bytes: u32) -> u64 {
    if bytes == u32::MAX {
        u64::MAX
    } else {
        u64::from(bytes)
    }
}

/// Which congestion controller a server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// [`Aimd`]: loss-rate triggered AIMD, tolerant of random loss (the default for games).
    #[default]
    Aimd,
    /// [`NewReno`]: RFC 9002 §7.
    NewReno,
    /// [`Cubic`]: RFC 9438.
    Cubic,
    /// [`Bbr`]: model-based, paced at the measured bottleneck bandwidth.
    Bbr,
}

impl Algorithm {
    /// Every algorithm, in declaration order.
    pub const ALL: [Self; 4] = [Self::Aimd, Self::NewReno, Self::Cubic, Self::Bbr];

    /// The lower-case name that [`FromStr`] accepts.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Aimd => "aimd",
            Self::NewReno => "newreno",
            Self::Cubic => "cubic",
            Self::Bbr => "bbr",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An algorithm name that is not one of "aimd", "newreno", "cubic" or "bbr".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownAlgorithm(pub String);

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown congestion control algorithm {:?}; use one of \"aimd\", \"newreno\", \"cubic\", \"bbr\"",
            self.0
        )
    }
}

impl std::error::Error for UnknownAlgorithm {}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// One connection's congestion controller, whichever the server selected.
#[derive(Clone, Debug, PartialEq)]
pub enum Congestion {
    /// See [`Aimd`].
    Aimd(Aimd),
    /// See [`NewReno`].
    NewReno(NewReno),
    /// See [`Cubic`].
    Cubic(Cubic),
    /// See [`Bbr`].
    Bbr(Bbr),
}

const _: () = assert!(size_of::<Aimd>() <= 64);
const _: () = assert!(size_of::<NewReno>() <= 64);
const _: () = assert!(size_of::<Cubic>() <= 64);
const _: () = assert!(size_of::<Bbr>() <= 64);
const _: () = assert!(size_of::<Congestion>() <= 72);

impl Congestion {
    /// A controller of `algorithm` for datagrams of at most `mss` bytes, created at `now`
    /// (BBR keeps its instants relative to it).
    #[must_use]
    pub fn new(algorithm: Algorithm, mss: u64, now: Instant) -> Self {
        match algorithm {
            Algorithm::Aimd => Self::Aimd(Aimd::new(mss)),
            Algorithm::NewReno => Self::NewReno(NewReno::new(mss)),
            Algorithm::Cubic => Self::Cubic(Cubic::new(mss)),
            Algorithm::Bbr => Self::Bbr(Bbr::new(mss, now)),
        }
    }

    /// Which algorithm this is.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Aimd(_) => Algorithm::Aimd,
            Self::NewReno(_) => Algorithm::NewReno,
            Self::Cubic(_) => Algorithm::Cubic,
            Self::Bbr(_) => Algorithm::Bbr,
        }
    }

    /// The slow start threshold in bytes (`u64::MAX` before the first reduction).
    #[must_use]
    pub fn ssthresh(&self) -> u64 {
        match self {
            Self::Aimd(c) => c.ssthresh(),
            Self::NewReno(c) => c.ssthresh(),
            Self::Cubic(c) => c.ssthresh(),
            Self::Bbr(c) => c.ssthresh(),
        }
    }

    /// Whether this controller learns from delivery-rate samples, so that the sender must
    /// stamp what it sends ([`delivery::Estimator`]); the loss-based ones do not, and
    /// their connections keep no stamps.
    #[must_use]
    pub fn uses_delivery_rate(&self) -> bool {
        matches!(self, Self::Bbr(_))
    }

    /// Whether `sent` falls in the current recovery period (RFC 9002 §7.3.2).
    #[must_use]
    pub fn in_recovery(&self, sent: Instant) -> bool {
        match self {
            Self::Aimd(c) => c.in_recovery(sent),
            Self::NewReno(c) => c.in_recovery(sent),
            Self::Cubic(c) => c.in_recovery(sent),
            Self::Bbr(c) => c.in_recovery(sent),
        }
    }
}

impl Controller for Congestion {
    fn on_sent(&mut self, now: Instant, bytes: u64, bytes_in_flight: u64) {
        match self {
            Self::Aimd(c) => c.on_sent(now, bytes, bytes_in_flight),
            Self::NewReno(c) => c.on_sent(now, bytes, bytes_in_flight),
            Self::Cubic(c) => c.on_sent(now, bytes, bytes_in_flight),
            Self::Bbr(c) => c.on_sent(now, bytes, bytes_in_flight),
        }
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        rtt: &RttEstimator,
        app_limited: bool,
    ) {
        match self {
            Self::Aimd(c) => c.on_ack(now, sent, bytes, rtt, app_limited),
            Self::NewReno(c) => c.on_ack(now, sent, bytes, rtt, app_limited),
            Self::Cubic(c) => c.on_ack(now, sent, bytes, rtt, app_limited),
            Self::Bbr(c) => c.on_ack(now, sent, bytes, rtt, app_limited),
        }
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        lost_bytes: u64,
        persistent: bool,
    ) {
        match self {
            Self::Aimd(c) => c.on_congestion_event(now, sent, lost_bytes, persistent),
            Self::NewReno(c) => c.on_congestion_event(now, sent, lost_bytes, persistent),
            Self::Cubic(c) => c.on_congestion_event(now, sent, lost_bytes, persistent),
            Self::Bbr(c) => c.on_congestion_event(now, sent, lost_bytes, persistent),
        }
    }

    fn window(&self) -> u64 {
        match self {
            Self::Aimd(c) => c.window(),
            Self::NewReno(c) => c.window(),
            Self::Cubic(c) => c.window(),
            Self::Bbr(c) => c.window(),
        }
    }

    fn on_delivery(&mut self, now: Instant, sample: Option<&RateSample>, bytes_in_flight: u64) {
        // Only BBR models the path; the loss-based controllers keep the default no-op.
        if let Self::Bbr(c) = self {
            c.on_delivery(now, sample, bytes_in_flight);
        }
    }

    fn pacing_rate(&self) -> Option<u64> {
        match self {
            Self::Bbr(c) => c.pacing_rate(),
            Self::Aimd(_) | Self::NewReno(_) | Self::Cubic(_) => None,
        }
    }
}

/// The largest datagram size the controllers account in: a UDP payload never exceeds it.
pub const MAX_MSS: u64 = 65_535;

/// RFC 9002 §7.2: initial window = min(10 * mss, max(2 * mss, 14720)).
#[must_use]
pub fn initial_window(mss: u64) -> u64 {
    (10 * mss).min((2 * mss).max(14_720))
}

/// RFC 9002 §7.2: kMinimumWindow = 2 * mss.
#[must_use]
pub fn minimum_window(mss: u64) -> u64 {
    2 * mss
}

/// `mss` bounded to 1..=[`MAX_MSS`], as the controllers store it.
fn clamp_mss(mss: u64) -> u64 {
    mss.clamp(1, MAX_MSS)
}

/// A byte count as `u32`, saturating: windows are kept in 32 bits to keep controllers small.
fn sat32(bytes: u64) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// RFC 9002 §7.3.2: a packet sent at or before the start of the current recovery period
/// belongs to it (`InCongestionRecovery(sent_time)`).
fn in_recovery(recovery_start: Option<Instant>, sent: Instant) -> bool {
    recovery_start.is_some_and(|start| sent <= start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn widening_keeps_unbounded_unbounded() {
        assert_eq!(widen_unbounded(u32::MAX), u64::MAX);
        assert_eq!(widen_unbounded(u32::MAX - 1), u64::from(u32::MAX - 1));
        assert_eq!(widen_unbounded(0), 0);
    }

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.to_string().parse::<Algorithm>(), Ok(a));
        }
        assert_eq!("CUBIC".parse::<Algorithm>(), Ok(Algorithm::Cubic));
        assert_eq!("BBR".parse::<Algorithm>(), Ok(Algorithm::Bbr));
        let err = "vegas".parse::<Algorithm>().unwrap_err();
        assert!(err.to_string().contains("\"bbr\""));
    }

    #[test]
    fn initial_and_minimum_windows_follow_rfc9002() {
        assert_eq!(initial_window(1_200), 12_000);
        assert_eq!(initial_window(1_472), 14_720);
        assert_eq!(initial_window(9_000), 18_000);
        assert_eq!(minimum_window(1_200), 2_400);
    }

    #[test]
    fn enum_dispatch_reaches_each_controller() {
        let t0 = Instant::now();
        let rtt = RttEstimator::new(
            Duration::from_millis(50),
            Duration::from_millis(20),
            Duration::ZERO,
        );
        for a in Algorithm::ALL {
            let mut c = Congestion::new(a, 1_200, t0);
            assert_eq!(c.algorithm(), a);
            let w0 = c.window();
            c.on_sent(t0, 1_200, 1_200);
            c.on_ack(t0 + Duration::from_millis(50), t0, 1_200, &rtt, false);
            assert_eq!(
                c.window(),
                w0 + 1_200,
                "{a}: slow start grows by the acked bytes"
            );
            c.on_congestion_event(t0 + Duration::from_millis(60), t0, 1_200, true);
            assert_eq!(
                c.window(),
                minimum_window(1_200),
                "{a}: persistent congestion"
            );
        }
    }
}
