//! Admission control in the driver: the session allow-list's key and value, the source
//! address key of the per-source buckets, and the token bucket both kinds of budget use.
//!
//! The XDP program (`ebpf/`) stores and compares these; the engine's workers publish
//! a [`Session`] for every live connection, at the array index [`SessionSlots::index`]
//! gives its [`SessionKey`] (docs/SECURITY.md, "Admission control"). Addresses are kept as the four 32-bit words of an IPv6 address, each the
//! big-endian reading of the header's bytes; an IPv4 address is kept IPv4-mapped
//! (`::ffff:a.b.c.d`), so one layout serves both families.

use core::net::{IpAddr, SocketAddr};

/// Session map key: a connection id is unique within the worker (queue) that issued it,
/// so the receive queue is part of the key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// Receive queue of the worker that owns the connection.
    pub queue: u32,
    /// The connection id in the RUDP header (docs/PROTOCOL.md §2).
    pub conn_id: u32,
}

/// An IP address as four big-endian words (IPv4 mapped into IPv6).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Addr {
    /// The address's words, most significant first.
    pub words: [u32; 4],
}

impl Addr {
    /// An IPv4 address (the big-endian reading of its four bytes), mapped.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "called from the XDP program, where every helper is inlined"
    )]
    #[inline(always)]
    pub const fn v4(addr: u32) -> Self {
        Self {
            words: [0, 0, 0xffff, addr],
        }
    }

    /// An IPv6 address from its four big-endian words.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "called from the XDP program, where every helper is inlined"
    )]
    #[inline(always)]
    pub const fn v6(words: [u32; 4]) -> Self {
        Self { words }
    }

    /// The key of this address's source bucket: IPv4 whole, IPv6 by its /64 (one
    /// subscriber's allocation, RFC 6177), so that a host cannot dodge its budget by
    /// walking the addresses of its own prefix.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "called from the XDP program, where every helper is inlined"
    )]
    #[inline(always)]
    pub const fn source(self) -> Self {
        if self.words[0] == 0 && self.words[1] == 0 && self.words[2] == 0xffff {
            self
        } else {
            Self {
                words: [self.words[0], self.words[1], 0, 0],
            }
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::v4(u32::from_be_bytes(v4.octets())),
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return Self::v4(u32::from_be_bytes(v4.octets()));
                }
                let o = v6.octets();
                let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                Self::v6([w(0), w(4), w(8), w(12)])
            }
        }
    }
}

/// Where the session allow-list keeps each queue's connection slots: a flat array of
/// `slots` entries per receive queue, queue `q`'s from index `q × slots`. A connection id
/// names its slot in its low bits (docs/PROTOCOL.md §4.4: `(g << b) | i`), so a packet's
/// entry is one array read, not a hash lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionSlots {
    /// Connection slots per queue (each worker's `--max-connections`).
    pub slots: u32,
    /// The bits of a connection id that hold its slot: `2^b − 1` (`b` as in the protocol).
    pub mask: u32,
}

impl SessionSlots {
    /// The layout for `slots` connections per queue; `b` is the number of bits needed
    /// for `slots` (`32 − leading_zeros(slots − 1)`, 0 for one slot), as the server
    /// issues ids.
    #[must_use]
    pub const fn new(slots: u32) -> Self {
        let bits = if slots <= 1 {
            0
        } else {
            32 - (slots - 1).leading_zeros()
        };
        let mask = if bits >= 32 {
            u32::MAX
        } else {
            (1u32 << bits) - 1
        };
        Self { slots, mask }
    }

    /// The array index of `key`'s entry, or `None` for an id whose slot bits name no
    /// slot (so no live session) or an index beyond `u32`.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "called from the XDP program, where every helper is inlined"
    )]
    #[inline(always)]
    pub const fn index(&self, key: SessionKey) -> Option<u32> {
        let slot = key.conn_id & self.mask;
        if slot >= self.slots {
            return None;
        }
        let index = key.queue as u64 * self.slots as u64 + slot as u64;
        if index > u32::MAX as u64 {
            return None;
        }
        Some(index as u32)
    }

    /// The key of the entry at `index` that holds `conn_id` (the inverse of
    /// [`SessionSlots::index`]).
    #[must_use]
    pub const fn key(&self, index: u32, conn_id: u32) -> SessionKey {
        SessionKey {
            queue: match index.checked_div(self.slots) {
                Some(q) => q,
                None => 0,
            },
            conn_id,
        }
    }
}

/// Session map entry: the live session in this slot, or none (`conn_id` 0, an id the
/// server never issues).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// The session's connection id; 0: the slot is free.
    pub conn_id: u32,
    /// Where its packets come from.
    pub peer: Peer,
}

/// Where a live session's packets come from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The peer's address.
    pub addr: Addr,
    /// The peer's UDP port (host order).
    pub port: u16,
    /// Bit set of `Peer::MAY_MIGRATE`.
    pub flags: u16,
}

impl Peer {
    /// The session is authenticated (encrypted), so the server accepts a packet from a
    /// new address as a migration attempt (docs/PROTOCOL.md §5.4); without it a packet
    /// from another address is dropped, as the server itself would.
    pub const MAY_MIGRATE: u16 = 1;

    /// The value for a session at `addr`.
    #[must_use]
    pub fn new(addr: SocketAddr, may_migrate: bool) -> Self {
        Self {
            addr: addr.ip().into(),
            port: addr.port(),
            flags: if may_migrate { Self::MAY_MIGRATE } else { 0 },
        }
    }

    /// Whether the session may migrate.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "called from the XDP program, where every helper is inlined"
    )]
    #[inline(always)]
    pub const fn may_migrate(&self) -> bool {
        self.flags & Self::MAY_MIGRATE != 0
    }
}

/// A token bucket's parameters in nanoseconds, as the generic cell rate algorithm
/// (GCRA, ITU-T I.371) uses them: one packet every `interval_ns`, and up to `burst`
/// packets at once after a quiet spell. `interval_ns == 0` means unlimited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds per packet (1e9 / rate), 0 for unlimited.
    pub interval_ns: u64,
    /// How far ahead of the clock the bucket may run: (burst − 1) × interval.
    pub tolerance_ns: u64,
}

impl Rate {
    /// `per_sec` packets per second with bursts of `burst` (0 or 1: no burst beyond one
    /// packet); `per_sec == 0` is unlimited.
    #[must_use]
    pub const fn new(per_sec: u32, burst: u32) -> Self {
        if per_sec == 0 {
            return Self {
                interval_ns: 0,
                tolerance_ns: 0,
            };
        }
        let interval_ns = 1_000_000_000 / per_sec as u64;
        let extra = if burst > 1 { burst as u64 - 1 } else { 0 };
        Self {
            interval_ns,
            tolerance_ns: extra * interval_ns,
        }
    }

    /// Whether the budget is unlimited.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "called from the XDP program, where every helper is inlined"
    )]
    #[inline(always)]
    pub const fn unlimited(&self) -> bool {
        self.interval_ns == 0
    }

    /// Takes one packet's token from a bucket whose state is `tat` (the theoretical
    /// arrival time of the next packet; 0 for a fresh bucket, which is full) at `now`:
    /// the new state if the packet conforms, `None` if the bucket is empty (the state is
    /// then left as it was).
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "called from the XDP program, where every helper is inlined"
    )]
    #[inline(always)]
    pub const fn take(&self, tat: u64, now: u64) -> Option<u64> {
        if self.interval_ns == 0 {
            return Some(tat);
        }
        if tat > now.saturating_add(self.tolerance_ns) {
            return None;
        }
        let from = if tat > now { tat } else { now };
        Some(from.saturating_add(self.interval_ns))
    }
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, `Copy`, two `u32`: no padding, every bit pattern valid.
#[allow(unsafe_code)]
unsafe impl aya::Pod for SessionKey {}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, `Copy`, four `u32` then two `u16` (20 bytes, alignment 4): no
// padding, every bit pattern valid.
#[allow(unsafe_code)]
unsafe impl aya::Pod for Peer {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_id_finds_its_queue_slot_and_nothing_else() {
        // 1,000 slots: 10 bits of slot, the generation above.
        let l = SessionSlots::new(1000);
        assert_eq!(l.mask, 0x3ff);
        let key = |queue, conn_id| SessionKey { queue, conn_id };
        let id = (7 << 10) + 999;
        assert_eq!(l.index(key(0, id)), Some(999));
        assert_eq!(l.index(key(3, id)), Some(3 * 1000 + 999));
        assert_eq!(l.key(3 * 1000 + 999, id), key(3, id));
        // Slot bits past the last slot name no session.
        assert_eq!(l.index(key(0, (7 << 10) + 1000)), None);
        assert_eq!(l.index(key(0, 1023)), None);
        // An index past u32 is refused, not wrapped onto another queue's slot.
        assert_eq!(l.index(key(u32::MAX, id)), None);
        // Powers of two use every slot value; one slot has no slot bits.
        assert_eq!(SessionSlots::new(1024).mask, 0x3ff);
        assert_eq!(SessionSlots::new(1025).mask, 0x7ff);
        assert_eq!(SessionSlots::new(2).mask, 1);
        let one = SessionSlots::new(1);
        assert_eq!((one.mask, one.index(key(2, 0xdead_beef))), (0, Some(2)));
        assert_eq!(SessionSlots::new(u32::MAX).mask, u32::MAX);
    }

    #[test]
    fn a_bucket_allows_its_burst_then_one_per_interval() {
        let r = Rate::new(10, 5); // 100 ms apart, 5 at once
        let t0 = 1_000_000_000u64;
        let mut tat = 0;
        let mut allowed = 0;
        for _ in 0..20 {
            if let Some(t) = r.take(tat, t0) {
                tat = t;
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5, "the burst");
        assert_eq!(r.take(tat, t0 + 50_000_000), None, "half an interval later");
        let t = r.take(tat, t0 + 100_000_000).expect("one interval later");
        assert_eq!(r.take(t, t0 + 100_000_000), None);
        // A long quiet spell refills to the burst, not beyond.
        let later = t0 + 3_600_000_000_000;
        let mut tat = t;
        let mut allowed = 0;
        for _ in 0..20 {
            if let Some(t) = r.take(tat, later) {
                tat = t;
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5);
    }

    #[test]
    fn rate_zero_is_unlimited_and_burst_zero_is_one() {
        let r = Rate::new(0, 0);
        assert!(r.unlimited());
        assert_eq!(r.take(7, 0), Some(7));
        let r = Rate::new(1, 0);
        let t = r.take(0, 10).expect("first");
        assert_eq!(r.take(t, 10), None);
    }

    #[test]
    fn ipv6_sources_share_a_bucket_per_64_and_ipv4_sources_do_not() {
        let host_a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let host_b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Addr::from(host_a).source(), Addr::from(host_b).source());
        assert_ne!(Addr::from(host_a).source(), Addr::from(other_64).source());
        let v4_a: IpAddr = "10.0.0.1".parse().unwrap();
        let v4_b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_ne!(Addr::from(v4_a).source(), Addr::from(v4_b).source());
        assert_eq!(Addr::from(v4_a).words, [0, 0, 0xffff, 0x0a00_0001]);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Addr::from(mapped), Addr::from(v4_a));
    }
}
