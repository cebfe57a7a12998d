//! Where to send a datagram on the wire: the link-layer path each peer's packets arrived
//! on, learnt from received frames.
//!
//! A reply must go to the MAC address the request came from — on the same subnet that is
//! the peer itself, across a router it is the router — so the engine never guesses a
//! next hop: it remembers, per peer socket address, the [`Route`] of the last frame
//! received from it (both MACs, the VLAN tag, both socket addresses, the DSCP). The table is a
//! fixed-size cache allocated once (two-choice hashing into four-way sets): learning costs no allocation,
//! and a flood of spoofed sources can only evict entries, which live peers re-learn with
//! their next packet.

use std::{
    hash::{BuildHasher, Hash as _, Hasher as _},
    net::{IpAddr, SocketAddr},
};

pub(crate) use xrudp_packet::datagram::Route;

/// One cached path. The peer it is for is `peer_key(route.peer)`: not stored twice, as
/// the table takes a slot per connection (2 × `--max-connections` + 1,024 ways, 88 bytes
/// each: 23 MiB at 100,000 connections, where a separate key would add 8 MiB).
#[derive(Clone, Copy, Debug)]
struct Entry {
    route: Route,
    /// Larger is more recent.
    stamp: u32,
}

impl Entry {
    fn is_for(&self, peer: SocketAddr) -> bool {
        peer_key(self.route.peer) == peer
    }
}

/// The key a peer is known by: its address and port, without the IPv6 flow label and
/// scope id (which may change between packets of one peer).
#[must_use]
pub(crate) fn peer_key(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(mut v6) => {
            v6.set_flowinfo(0);
            v6.set_scope_id(0);
            SocketAddr::V6(v6)
        }
        v4 @ SocketAddr::V4(_) => v4,
    }
}

/// Ways per set.
const WAYS: usize = 4;

/// A bounded peer → path cache: each peer may live in either of two sets of four ways
/// (two-choice hashing), and is learnt into the emptier one. One set per peer with two
/// ways lost live peers' paths to collisions alone (about 26 of 1,000 clients of a
/// 1,024-connection engine, in simulation), and the engine then dropped the keepalives
/// it originated for them as unanswerable. With two choices of four ways no set overflows
/// at the table's sizing (2 × connections + 1,024 ways) in simulation up to 100,000
/// peers, and a lookup reads at most eight entries.
#[derive(Debug)]
pub(crate) struct Table {
    sets: Vec<[Option<Entry>; WAYS]>,
    mask: usize,
    clock: u32,
    hasher: std::hash::RandomState,
}

impl Table {
    /// A table with room for about `capacity` peers (rounded up to a power of two of sets).
    #[must_use]
    pub(crate) fn new(capacity: usize) -> Self {
        let sets = capacity.div_ceil(WAYS).max(2).next_power_of_two();
        Self {
            sets: vec![[None; WAYS]; sets],
            mask: sets - 1,
            clock: 0,
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Remembers the path of a frame received from `route.peer`.
    pub(crate) fn learn(&mut self, route: Route) {
        self.clock = self.clock.wrapping_add(1);
        let stamp = self.clock;
        let peer = peer_key(route.peer);
        let (a, b) = indices(&self.hasher, peer, self.mask);
        for i in [a, b] {
            for e in self.sets[i].iter_mut().flatten() {
                if e.is_for(peer) {
                    e.route = route;
                    e.stamp = stamp;
                    return;
                }
            }
        }
        // Fill an empty way of the emptier set, else evict the least recently used of
        // both sets' ways.
        let used = |i: usize| self.sets[i].iter().flatten().count();
        let set = if used(b) < used(a) { b } else { a };
        let (set, way) = match self.sets[set].iter().position(Option::is_none) {
            Some(way) => (set, way),
            None => [a, b]
                .into_iter()
                .flat_map(|i| (0..WAYS).map(move |w| (i, w)))
                .max_by_key(|&(i, w)| {
                    self.sets[i][w].map_or(u32::MAX, |e| stamp.wrapping_sub(e.stamp))
                })
                .unwrap_or((a, 0)),
        };
        self.sets[set][way] = Some(Entry { route, stamp });
    }

    /// The route to `peer` (a [`peer_key`]), if one was learnt and not evicted.
    #[must_use]
    pub(crate) fn lookup(&self, peer: SocketAddr) -> Option<Route> {
        let (a, b) = indices(&self.hasher, peer, self.mask);
        self.sets[a]
            .iter()
            .chain(&self.sets[b])
            .flatten()
            .find(|e| e.is_for(peer))
            .map(|e| e.route)
    }
}

/// The two sets `peer` may live in (distinct: the table has at least two sets).
fn indices(hasher: &std::hash::RandomState, peer: SocketAddr, mask: usize) -> (usize, usize) {
    let mut h = hasher.build_hasher();
    match peer.ip() {
        IpAddr::V4(a) => a.hash(&mut h),
        IpAddr::V6(a) => a.hash(&mut h),
    }
    peer.port().hash(&mut h);
    let h = h.finish();
    let a = (h as usize) & mask;
    let b = ((h >> 32) as usize) & mask;
    (a, if b == a { a ^ 1 } else { b })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route to `peer` through next-hop MAC `n`.
    fn path(peer: SocketAddr, n: u8) -> Route {
        Route {
            local_mac: xrudp_packet::ethernet::Address([0xaa; 6]),
            peer_mac: xrudp_packet::ethernet::Address([n; 6]),
            vlan: None,
            local: "198.18.0.1:7777".parse().unwrap(),
            peer,
            dscp: 0,
        }
    }

    #[test]
    fn learns_updates_and_looks_up() {
        let mut t = Table::new(64);
        let a: SocketAddr = "198.18.0.2:1000".parse().unwrap();
        assert_eq!(t.lookup(a), None);
        t.learn(path(a, 1));
        assert_eq!(t.lookup(a), Some(path(a, 1)));
        t.learn(path(a, 2));
        assert_eq!(t.lookup(a), Some(path(a, 2)));
    }

    #[test]
    fn a_flood_evicts_but_never_grows_and_live_peers_relearn() {
        let mut t = Table::new(8);
        let live: SocketAddr = "198.18.0.2:1000".parse().unwrap();
        let sets = t.sets.len();
        for i in 0..10_000u16 {
            t.learn(path(
                SocketAddr::from(([203, 0, 113, (i % 250) as u8], i)),
                9,
            ));
            if i % 3 == 0 {
                t.learn(path(live, 1));
            }
        }
        assert_eq!(t.sets.len(), sets, "the table never grows");
        t.learn(path(live, 1));
        assert_eq!(t.lookup(live), Some(path(live, 1)));
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used() {
        let mut t = Table::new(8); // two sets of four ways: every peer may use both
        assert_eq!(t.sets.len(), 2);
        let peer = |i: u16| SocketAddr::from(([198, 18, 0, 2], 1000 + i));
        for i in 0..8 {
            t.learn(path(peer(i), 1));
        }
        for i in 0..8 {
            assert_eq!(t.lookup(peer(i)), Some(path(peer(i), 1)), "peer {i}");
        }
        // Refresh peer 0; a ninth then evicts the least recently used (peer 1).
        t.learn(path(peer(0), 2));
        t.learn(path(peer(8), 1));
        assert_eq!(t.lookup(peer(0)), Some(path(peer(0), 2)));
        assert_eq!(t.lookup(peer(1)), None);
        for i in 2..9 {
            assert!(t.lookup(peer(i)).is_some(), "peer {i}");
        }
    }

    /// The sizing the engine uses (2 × connections + 1,024) keeps every one of a full
    /// server's peers, learnt in any order: the regression the two choices fixed.
    #[test]
    fn every_peer_of_a_full_server_keeps_its_path() {
        for connections in [1_024usize, 10_000] {
            let mut t = Table::new(2 * connections + 1_024);
            let peer = |i: usize| {
                SocketAddr::from((
                    [198, 18, (i / 250) as u8, (i % 250) as u8 + 2],
                    40_000 + (i % 997) as u16,
                ))
            };
            for i in 0..connections {
                t.learn(path(peer(i), 1));
            }
            let lost = (0..connections)
                .filter(|&i| t.lookup(peer(i)).is_none())
                .count();
            assert_eq!(lost, 0, "{connections} peers: {lost} evicted");
        }
    }

    #[test]
    fn an_ipv6_peer_is_found_whatever_its_flow_label() {
        let mut t = Table::new(64);
        let mut sent: std::net::SocketAddrV6 = "[2001:db8::2]:4000".parse().unwrap();
        sent.set_flowinfo(0x1234);
        t.learn(path(SocketAddr::V6(sent), 1));
        let key = peer_key(SocketAddr::V6(sent));
        assert_ne!(key, SocketAddr::V6(sent));
        assert_eq!(t.lookup(key), Some(path(SocketAddr::V6(sent), 1)));
    }
}
