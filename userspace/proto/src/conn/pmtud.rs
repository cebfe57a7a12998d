//! Datagram packetization-layer path MTU discovery (RFC 8899, as QUIC uses it in RFC 9000
//! §14.3; docs/PROTOCOL.md §5.5): the search state machine, free of packets and clocks.
//!
//! The connection starts at [`BASE_PLPMTU`] and probes upward toward its ceiling (the
//! configured MTU) with padded packets that carry a `PING` and no data. A size is
//! confirmed when its probe is acknowledged; it has failed after [`MAX_PROBES`] probes of
//! it were lost in a row. The next size is the midpoint of the largest confirmed size and
//! the smallest failed one (the ceiling + 1 before any failed), until they are one byte
//! apart. Bisection rather than the ceiling first: a failed size costs [`MAX_PROBES`]
//! probe timers — at the start, before any RTT sample, 305 ms each with the default
//! initial RTT — while a confirmed one costs a round trip, so the search should start
//! with sizes likely to pass (a 1,472-byte path takes 8 round trips). Black-hole
//! detection (packets above the base size lost while smaller ones get through) falls back
//! to the base at once.

/// The datagram size every path must carry (docs/PROTOCOL.md §1; the handshake's padding
/// proves it, §4.5): where the search starts and where a black hole falls back to.
pub(crate) const BASE_PLPMTU: u16 = 1200;

/// RFC 8899 §5.1.2 `MAX_PROBES`: probes of one size lost in a row before it has failed.
pub(crate) const MAX_PROBES: u8 = 3;

/// Data packets larger than [`BASE_PLPMTU`] declared lost, with none acknowledged in
/// between that was as large as the smallest of them, before an acknowledgement of only
/// smaller packets confirms a black hole.
pub(crate) const BLACK_HOLE_LOSSES: u8 = 3;

/// Where the search stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Path MTU discovery is off (or the ceiling is the base): the PLPMTU is the ceiling.
    Off,
    /// A probe of [`Search::probe_size`] is wanted.
    Searching,
    /// That probe is in flight.
    Probing,
    /// Done until the raise timer restarts it (or for good if at the ceiling).
    Complete,
}

/// One connection's path MTU search, in 8 bytes (an idle connection's budget is tight,
/// docs/PROTOCOL.md §10). The ceiling is the endpoint's (`Ctx::mtu`, 1200..=1472),
/// passed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Search {
    /// The connection's path MTU timer (probe or raise timer), in milliseconds since the
    /// endpoint's epoch plus one; 0 when not armed.
    pub(crate) timer_ms: u32,
    /// Every other field, packed ([`Field`]): sizes are kept as offsets below 512 since
    /// every size lies in 1200..=1473.
    bits: u32,
}

/// A field of [`Search::bits`]: (shift, width).
#[derive(Clone, Copy)]
struct Field(u32, u32);

/// The PLPMTU, the largest size confirmed on this path, minus [`BASE_PLPMTU`].
const PLPMTU: Field = Field(0, 9);
/// The smallest failed size minus the PLPMTU (`ceiling + 1 − PLPMTU` if none failed).
const GAP: Field = Field(9, 9);
/// The [`Phase`] and, searching or probing, the probes of the current size lost in a
/// row (0..MAX_PROBES): 0 off, 1 complete, 2 + lost searching, 5 + lost probing.
const STEP: Field = Field(18, 3);
/// Data packets above the base declared lost since the count last started again,
/// saturating at [`BLACK_HOLE_LOSSES`].
const LARGE: Field = Field(21, 2);
/// The smallest of those packets' sizes minus `BASE_PLPMTU + 1` (meaningful while
/// `LARGE` is not 0).
const FLOOR: Field = Field(23, 9);

/// What the connection must do after a search event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Send a probe of this size (as soon as the connection has nothing else to send).
    Probe(u16),
    /// The search is complete: arm the raise timer if `true` (the ceiling was not reached).
    Done(bool),
}

impl Search {
    /// A search toward `ceiling`; with `enabled` false (or a ceiling at the base) the
    /// PLPMTU is the ceiling and nothing is ever probed, as before PMTUD.
    pub(crate) fn new(ceiling: u16, enabled: bool) -> Self {
        let (plpmtu, phase) = if !enabled || ceiling <= BASE_PLPMTU {
            (ceiling, Phase::Off)
        } else {
            (BASE_PLPMTU, Phase::Searching)
        };
        let mut s = Self {
            timer_ms: 0,
            bits: 0,
        };
        s.set_plpmtu(plpmtu);
        s.set_failed(ceiling + 1);
        s.set_phase(phase);
        s
    }

    /// A fresh search toward `ceiling`, for a new path.
    pub(crate) fn restart(self, ceiling: u16) -> Self {
        Self::new(ceiling, self.enabled())
    }

    /// Whether the search runs at all (on, and a ceiling above the base).
    pub(crate) fn enabled(self) -> bool {
        self.phase() != Phase::Off
    }

    /// The largest datagram data packets may use now.
    pub(crate) fn plpmtu(self) -> u16 {
        BASE_PLPMTU + self.get(PLPMTU) as u16
    }

    /// Whether a probe is wanted and none is in flight.
    pub(crate) fn probe_wanted(self) -> bool {
        self.phase() == Phase::Searching
    }

    /// The size to probe now, if a probe is wanted and none is in flight.
    pub(crate) fn wanted(self, ceiling: u16) -> Option<u16> {
        self.probe_wanted().then(|| self.probe_size(ceiling))
    }

    /// Whether a probe is in flight.
    pub(crate) fn in_flight(self) -> bool {
        self.phase() == Phase::Probing
    }

    /// The size of the probe in flight, if one is.
    pub(crate) fn probing(self, ceiling: u16) -> Option<u16> {
        self.in_flight().then(|| self.probe_size(ceiling))
    }

    /// A probe of the wanted size left.
    pub(crate) fn on_probe_sent(&mut self) {
        if self.phase() == Phase::Searching {
            self.set_phase(Phase::Probing);
        }
    }

    /// The probe of `size` bytes was acknowledged: the size is confirmed. `None` if it
    /// is not the probe in flight (the search moved on; nothing changes).
    pub(crate) fn on_probe_acked(&mut self, size: u16, ceiling: u16) -> Option<Next> {
        if !self.in_flight() || size != self.probe_size(ceiling) {
            return None;
        }
        let failed = self.failed();
        self.set_plpmtu(self.plpmtu().max(size));
        self.set_failed(failed);
        self.set(LARGE, 0);
        self.set_lost(0);
        Some(self.step(ceiling))
    }

    /// The probe of `size` bytes was declared lost (never a congestion signal). `None`
    /// if it is not the probe in flight.
    pub(crate) fn on_probe_lost(&mut self, size: u16, ceiling: u16) -> Option<Next> {
        if !self.in_flight() || size != self.probe_size(ceiling) {
            return None;
        }
        let lost = self.lost() + 1;
        if lost < MAX_PROBES {
            self.set_lost(lost);
            self.set_phase(Phase::Searching);
            return Some(Next::Probe(size));
        }
        self.set_lost(0);
        self.set_failed(size);
        Some(self.step(ceiling))
    }

    /// A data packet of `size` bytes was acknowledged: if it is at least as large as the
    /// smallest lost packet counted, that size gets through and the count starts again.
    pub(crate) fn on_acked(&mut self, size: u16) {
        if self.large_lost() > 0 && size >= self.floor() {
            self.set(LARGE, 0);
        }
    }

    /// A data packet of `size` bytes was declared lost.
    pub(crate) fn on_lost(&mut self, size: u16) {
        if size <= BASE_PLPMTU {
            return;
        }
        let floor = if self.large_lost() == 0 {
            size
        } else {
            self.floor().min(size)
        };
        self.set(FLOOR, u32::from(floor - (BASE_PLPMTU + 1)));
        self.set(
            LARGE,
            u32::from((self.large_lost() + 1).min(BLACK_HOLE_LOSSES)),
        );
    }

    /// After an ACK that newly acknowledged data packets, the largest of them `acked`
    /// bytes: whether the losses counted make a black hole — at least
    /// [`BLACK_HOLE_LOSSES`] of them, and what got through is smaller than any of them.
    /// If so the PLPMTU is back at the base and a new search toward `ceiling` starts
    /// (RFC 8899 §5.2: BASE, then SEARCHING); its probes go once the connection has
    /// nothing else to send, so after the resent data.
    pub(crate) fn black_hole(&mut self, acked: u16, ceiling: u16) -> bool {
        if !self.enabled()
            || self.plpmtu() <= BASE_PLPMTU
            || self.large_lost() < BLACK_HOLE_LOSSES
            || acked >= self.floor()
        {
            return false;
        }
        self.set_plpmtu(BASE_PLPMTU);
        self.set_failed(ceiling + 1);
        self.set(LARGE, 0);
        self.set_lost(0);
        self.set_phase(Phase::Searching);
        true
    }

    /// The raise timer expired (RFC 8899 §5.1.1 `PMTU_RAISE_TIMER`): search again from the
    /// current PLPMTU toward the ceiling, forgetting what failed. Returns the size to
    /// probe, if any.
    pub(crate) fn on_raise_timer(&mut self, ceiling: u16) -> Option<u16> {
        if self.phase() != Phase::Complete || self.plpmtu() >= ceiling {
            return None;
        }
        self.set_failed(ceiling + 1);
        self.set_lost(0);
        self.set_phase(Phase::Searching);
        Some(self.probe_size(ceiling))
    }

    /// The size probed next: the midpoint of the largest confirmed and the smallest
    /// failed size (`ceiling + 1` if none failed), rounded up.
    fn probe_size(self, ceiling: u16) -> u16 {
        let (plpmtu, failed) = (self.plpmtu(), self.failed().min(ceiling + 1));
        plpmtu + (failed - plpmtu).div_ceil(2)
    }

    /// Moves to the next size after a confirmation or a failure.
    fn step(&mut self, ceiling: u16) -> Next {
        let plpmtu = self.plpmtu();
        if self.failed() <= plpmtu + 1 || plpmtu >= ceiling {
            self.set_phase(Phase::Complete);
            return Next::Done(plpmtu < ceiling);
        }
        self.set_phase(Phase::Searching);
        Next::Probe(self.probe_size(ceiling))
    }

    fn get(self, Field(shift, width): Field) -> u32 {
        (self.bits >> shift) & ((1 << width) - 1)
    }

    /// Sets a field; a value wider than it saturates (never, for sizes in range).
    fn set(&mut self, Field(shift, width): Field, value: u32) {
        let mask = (1 << width) - 1;
        self.bits = (self.bits & !(mask << shift)) | (value.min(mask) << shift);
    }

    fn set_plpmtu(&mut self, plpmtu: u16) {
        debug_assert!((BASE_PLPMTU..=1472).contains(&plpmtu), "{plpmtu}");
        self.set(PLPMTU, u32::from(plpmtu.saturating_sub(BASE_PLPMTU)));
    }

    fn failed(self) -> u16 {
        self.plpmtu() + self.get(GAP) as u16
    }

    fn set_failed(&mut self, failed: u16) {
        self.set(GAP, u32::from(failed.saturating_sub(self.plpmtu())));
    }

    fn lost(self) -> u8 {
        match self.get(STEP) {
            s @ 2..=7 => ((s - 2) % 3) as u8,
            _ => 0,
        }
    }

    /// Sets the probes lost in a row; only searching or probing keeps a count.
    fn set_lost(&mut self, n: u8) {
        debug_assert!(n < MAX_PROBES);
        let base = match self.phase() {
            Phase::Searching => 2,
            Phase::Probing => 5,
            Phase::Off | Phase::Complete => return,
        };
        self.set(STEP, base + u32::from(n));
    }

    fn large_lost(self) -> u8 {
        self.get(LARGE) as u8
    }

    /// The smallest size among the lost packets counted.
    fn floor(self) -> u16 {
        BASE_PLPMTU + 1 + self.get(FLOOR) as u16
    }

    fn phase(self) -> Phase {
        match self.get(STEP) {
            0 => Phase::Off,
            1 => Phase::Complete,
            2..=4 => Phase::Searching,
            _ => Phase::Probing,
        }
    }

    /// Sets the phase, keeping the probes lost in a row while searching or probing.
    fn set_phase(&mut self, p: Phase) {
        let lost = u32::from(self.lost());
        let step = match p {
            Phase::Off => 0,
            Phase::Complete => 1,
            Phase::Searching => 2 + lost,
            Phase::Probing => 5 + lost,
        };
        self.set(STEP, step);
    }
}

const _: () = assert!(size_of::<Search>() == 8);
const _: () = assert!(MAX_PROBES == 3, "STEP holds 0..3 lost probes per phase");
const _: () = assert!(BLACK_HOLE_LOSSES <= 3, "LARGE is two bits");
const _: () = assert!(FLOOR.0 + FLOOR.1 == 32, "the fields fill the 32 bits");

#[cfg(test)]
mod tests {
    use super::{BASE_PLPMTU, MAX_PROBES, Next, Search};

    /// Drives a search against a path that carries `path` bytes; returns the probes sent.
    fn run(ceiling: u16, path: u16) -> (Search, Vec<u16>) {
        let mut s = Search::new(ceiling, true);
        let mut probes = Vec::new();
        while let Some(size) = s.wanted(ceiling) {
            probes.push(size);
            s.on_probe_sent();
            if size <= path {
                s.on_probe_acked(size, ceiling);
            } else {
                s.on_probe_lost(size, ceiling);
            }
            assert!(probes.len() < 100, "the search does not end: {probes:?}");
        }
        (s, probes)
    }

    #[test]
    fn disabled_or_at_the_base_never_probes() {
        let s = Search::new(1472, false);
        assert_eq!((s.plpmtu(), s.wanted(1472)), (1472, None));
        let mut s = Search::new(BASE_PLPMTU, true);
        assert_eq!((s.plpmtu(), s.wanted(1472)), (BASE_PLPMTU, None));
        // Off, large losses never make a black hole.
        let mut off = Search::new(1472, false);
        for _ in 0..5 {
            off.on_lost(1472);
            s.on_lost(1472);
        }
        assert!(!off.black_hole(1100, 1472) && !s.black_hole(1100, 1200));
        assert_eq!(off.plpmtu(), 1472);
    }

    #[test]
    fn a_path_at_the_ceiling_takes_eight_probes() {
        let (s, probes) = run(1472, 1500);
        assert_eq!(probes, [1337, 1405, 1439, 1456, 1465, 1469, 1471, 1472]);
        assert_eq!(s.plpmtu(), 1472);
    }

    #[test]
    fn a_1400_byte_path_is_found_in_twelve_probes() {
        let (s, probes) = run(1472, 1400);
        // 1405 and 1401 fail, MAX_PROBES each.
        assert_eq!(
            probes,
            [
                1337, 1405, 1405, 1405, 1371, 1388, 1397, 1401, 1401, 1401, 1399, 1400
            ]
        );
        assert_eq!(s.plpmtu(), 1400);
    }

    #[test]
    fn bisects_to_the_exact_path_mtu() {
        for path in [1200, 1201, 1280, 1399, 1400, 1471] {
            let (s, probes) = run(1472, path);
            assert_eq!(s.plpmtu(), path, "probes {probes:?}");
            // At most ⌈log2(273)⌉ = 9 sizes; a failed size costs MAX_PROBES probes.
            let sizes = {
                let mut v = probes.clone();
                v.dedup();
                v.len()
            };
            assert!(sizes <= 9, "{path}: {probes:?}");
            let failed = probes.iter().filter(|&&p| p > path).count();
            assert_eq!(failed % usize::from(MAX_PROBES), 0, "{probes:?}");
        }
    }

    #[test]
    fn a_size_fails_only_after_max_probes_losses_in_a_row() {
        let mut s = Search::new(1472, true);
        assert_eq!(s.wanted(1472), Some(1337));
        s.on_probe_sent();
        assert_eq!(s.on_probe_lost(1337, 1472), Some(Next::Probe(1337)));
        s.on_probe_sent();
        assert_eq!(s.on_probe_lost(1337, 1472), Some(Next::Probe(1337)));
        s.on_probe_sent();
        // The third loss: 1337 failed, bisect between 1200 and 1337.
        assert_eq!(s.on_probe_lost(1337, 1472), Some(Next::Probe(1269)));
        // One acknowledged probe among losses confirms its size.
        let mut s = Search::new(1472, true);
        s.on_probe_sent();
        s.on_probe_lost(1337, 1472);
        s.on_probe_sent();
        assert_eq!(s.on_probe_acked(1337, 1472), Some(Next::Probe(1405)));
        assert_eq!(s.plpmtu(), 1337);
        // A ceiling one above the base: one probe.
        let mut s = Search::new(1201, true);
        assert_eq!(s.wanted(1201), Some(1201));
        s.on_probe_sent();
        assert_eq!(s.on_probe_acked(1201, 1201), Some(Next::Done(false)));
    }

    #[test]
    fn stale_probe_results_change_nothing() {
        let mut s = Search::new(1472, true);
        s.on_probe_sent();
        // An ack for a size not in flight (a late ack of an older probe).
        assert_eq!(s.on_probe_acked(1300, 1472), None);
        assert_eq!(s.on_probe_lost(1300, 1472), None);
        assert_eq!(s.plpmtu(), BASE_PLPMTU);
        assert!(s.in_flight());
    }

    #[test]
    fn black_hole_needs_three_large_losses_without_a_large_ack() {
        let (mut s, _) = run(1472, 1400);
        assert_eq!(s.plpmtu(), 1400);
        s.on_lost(1400);
        s.on_lost(1400);
        // Small losses do not count.
        s.on_lost(1100);
        assert!(!s.black_hole(1100, 1472));
        // A packet as large as the lost ones acknowledged starts the count again.
        s.on_acked(1400);
        s.on_lost(1400);
        s.on_lost(1400);
        assert!(!s.black_hole(1100, 1472));
        s.on_lost(1400);
        // Not confirmed by an ACK of a packet that large (the losses were congestion).
        assert!(!s.black_hole(1400, 1472));
        assert!(s.black_hole(1100, 1472));
        assert_eq!(s.plpmtu(), BASE_PLPMTU);
        // A new search starts at once, between the base and the ceiling.
        assert_eq!(s.wanted(1472), Some(1337));
        let (s, _) = {
            let mut s = s;
            let mut probes = Vec::new();
            while let Some(size) = s.wanted(1472) {
                probes.push(size);
                s.on_probe_sent();
                if size <= 1280 {
                    s.on_probe_acked(size, 1472);
                } else {
                    s.on_probe_lost(size, 1472);
                }
            }
            (s, probes)
        };
        assert_eq!(s.plpmtu(), 1280);
        assert_eq!(s.wanted(1472), None);
    }

    /// The path carried 1,400 and now carries 1,256: packets of 1,201..=1,256 bytes still
    /// get through between the losses of larger ones. Their acknowledgements neither
    /// start the count again nor keep an ACK from confirming the black hole; an
    /// acknowledged packet as large as the smallest one lost does both.
    #[test]
    fn packets_between_the_base_and_the_smallest_lost_do_not_hide_a_black_hole() {
        let (mut s, _) = run(1472, 1400);
        for lost in [1340, 1400, 1376] {
            s.on_lost(lost);
            s.on_acked(1231);
        }
        assert!(!s.black_hole(1340, 1472), "1,340 bytes got through");
        let mut t = s;
        assert!(t.black_hole(1339, 1472));
        assert_eq!(t.plpmtu(), BASE_PLPMTU);
        // An ack of 1,340 (the smallest lost) starts the count again.
        s.on_acked(1340);
        assert!(!s.black_hole(1100, 1472));
        // Then the smallest lost size decides: with 1,260 lost among 1,400s, an ACK of
        // 1,259 bytes confirms.
        s.on_lost(1400);
        s.on_lost(1260);
        s.on_lost(1400);
        s.on_acked(1259);
        assert!(s.black_hole(1259, 1472));
        // Every size in range round-trips through the packed fields.
        for size in BASE_PLPMTU + 1..=1472 {
            let (mut s, _) = run(1472, 1472);
            for _ in 0..3 {
                s.on_lost(size);
            }
            assert!(
                !s.black_hole(size, 1472) && s.black_hole(size - 1, 1472),
                "{size}"
            );
        }
    }

    #[test]
    fn no_black_hole_at_the_base() {
        let mut s = Search::new(1472, true);
        for _ in 0..5 {
            s.on_lost(1300);
        }
        assert!(!s.black_hole(1100, 1472));
        assert_eq!(s.plpmtu(), BASE_PLPMTU);
    }

    #[test]
    fn raise_timer_at_the_ceiling_does_nothing() {
        let (mut s, _) = run(1472, 1472);
        assert_eq!(s.on_raise_timer(1472), None);
        let mut s = Search::new(1472, false);
        assert_eq!(s.on_raise_timer(1472), None);
    }
}

/// The search driven through a connection: the probe on the wire, its accounting and its
/// timer.
#[cfg(test)]
mod conn_tests {
    use std::time::Duration;

    use xrudp_common::rudp::HEADER_LEN;

    use super::super::fixture::Fixture;
    use crate::congestion::Controller;
    use crate::packet::{DATA_PREFIX_LEN, Frame, Frames};

    #[test]
    fn a_probe_is_a_padded_ping_of_its_size_outside_congestion_control() {
        let mut f = Fixture::new();
        f.transport.mtu = 1472;
        let mut c = f.conn();
        let window = c.cc.window();
        let keepalive = Duration::from_secs(1);
        let mut out = [0u8; 2048];
        // `f.now` is the endpoint's epoch (`Ctx::epoch`): time moves in `now`.
        let mut now = f.now;
        for attempt in 0..3 {
            let len = c
                .poll_transmit(now, &mut out, &mut f.ctx())
                .expect("a probe");
            assert_eq!(len, 1337, "attempt {attempt}");
            // No ACK (nothing received yet): a PING, then PADDING to the end.
            let body = &out[HEADER_LEN + DATA_PREFIX_LEN..len];
            let frames: Vec<Frame<'_>> = Frames::new(body, |_| Some(true))
                .collect::<Result<_, _>>()
                .expect("decodes");
            assert_eq!(frames, [Frame::Ping]);
            assert!(body[1..].iter().all(|&b| b == 0));
            assert!(c.sent.back().is_some_and(|p| p.pmtu_probe));
            assert_eq!((c.bytes_in_flight(), c.mtu()), (0, 1200));
            // One probe at a time, and it arms no PTO.
            assert_eq!(c.poll_transmit(now, &mut out, &mut f.ctx()), None);
            assert_eq!(c.timers[super::super::Deadline::Loss as usize], None);
            // Its timer: one PTO (305 ms before any RTT sample), rounded up to the ms.
            let t = c.poll_timeout(keepalive, f.now).expect("the probe timer");
            assert_eq!(t, now + c.rtt.pto());
            now = t;
            c.handle_timeout(now, &mut f.ctx());
        }
        // Three losses: 1337 failed, the next probe bisects 1200..1337.
        let len = c
            .poll_transmit(now, &mut out, &mut f.ctx())
            .expect("a probe");
        assert_eq!(len, 1269);
        assert_eq!(f.stats.pmtu_probes, 4);
        assert_eq!((f.stats.lost_packets, f.stats.ptos), (0, 0));
        assert_eq!(c.quality().lost, 0);
        assert_eq!(c.cc.window(), window, "probe loss is not congestion");
    }

    #[test]
    fn discovery_off_sends_full_size_packets_and_never_probes() {
        let mut f = Fixture::new();
        f.transport.mtu = 1472;
        f.transport.pmtud = false;
        let mut c = f.conn();
        let mut out = [0u8; 2048];
        assert_eq!(c.poll_transmit(f.now, &mut out, &mut f.ctx()), None);
        assert_eq!((c.mtu(), c.frame_mtu()), (1472, 1472));
        c.send(0, &[7; 3000], &mut f.ctx()).expect("queued");
        let len = c
            .poll_transmit(f.now, &mut out, &mut f.ctx())
            .expect("data");
        // A fragment sized for 1472-byte packets (1472 − 12 − 2 − 9 − 10 = 1439 bytes;
        // no ACK yet) behind the header, the packet number, and the first packet's PING.
        assert_eq!(len, 12 + 2 + 10 + 1439 + 1);
        assert_eq!(f.stats.pmtu_probes, 0);
    }
}
