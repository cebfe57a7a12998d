//! Where to send a datagram on the wire: the link-layer path each peer's packets arrived
//! on, learnt from received frames.
//!
//! A reply must go to the MAC address the request came from — on the same subnet that is
//! the peer itself, across a router it is the router — so the engine never guesses a
//! next hop: it remembers, per peer socket address, the [`Route`] of the last frame
//! received from it (both MACs, the VLAN tag, both socket addresses, the DSCP). The table is a
//! fixed-size two-way set-associative cache allocated once: learning costs no allocation,
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

/// A bounded peer → path cache.
#[derive(Debug)]
pub(crate) struct Table {
    sets: Vec<[Option<Entry>; 2]>,
    mask: usize,
    clock: u32,
    hasher: std::hash::RandomState,
}

impl Table {
    /// A table with room for about `capacity` peers (rounded up to a power of two of sets).
    #[must_use]
    pub(crate) fn new(capacity: usize) -> Self {
        let sets = (capacity / 2).max(1).next_power_of_two();
        Self {
            sets: vec![[None, None]; sets],
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
        let set = &mut self.sets[index(&self.hasher, peer, self.mask)];
        for e in set.iter_mut().flatten() {
            if e.is_for(peer) {
                e.route = route;
                e.stamp = stamp;
                return;
            }
        }
        // Fill an empty way, else evict the least recently used one.
        let victim = match set {
            [None, _] => 0,
            [_, None] => 1,
            // Evict the older way: the one whose stamp is further behind the clock.
            [Some(a), Some(b)] => {
                usize::from(stamp.wrapping_sub(b.stamp) > stamp.wrapping_sub(a.stamp))
            }
        };
        set[victim] = Some(Entry { route, stamp });
    }

    /// The route to `peer` (a [`peer_key`]), if one was learnt and not evicted.
    #[must_use]
    pub(crate) fn lookup(&self, peer: SocketAddr) -> Option<Route> {
        self.sets[index(&self.hasher, peer, self.mask)]
            .iter()
            .flatten()
            .find(|e| e.is_for(peer))
            .map(|e| e.route)
    }
}

fn index(hasher: &std::hash::RandomState, peer: SocketAddr, mask: usize) -> usize {
    let mut h = hasher.build_hasher();
    match peer.ip() {
        IpAddr::V4(a) => a.hash(&mut h),
        IpAddr::V6(a) => a.hash(&mut h),
    }
    peer.port().hash(&mut h);
    (h.finish() as usize) & mask
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
    fn two_peers_in_one_set_both_stay() {
        let mut t = Table::new(2); // one set of two ways
        let a: SocketAddr = "198.18.0.2:1".parse().unwrap();
        let b: SocketAddr = "198.18.0.3:2".parse().unwrap();
        t.learn(path(a, 1));
        t.learn(path(b, 2));
        assert_eq!(t.lookup(a), Some(path(a, 1)));
        assert_eq!(t.lookup(b), Some(path(b, 2)));
        // A third evicts the least recently used (a), not the fresher b.
        let c: SocketAddr = "198.18.0.4:3".parse().unwrap();
        t.learn(path(c, 3));
        assert_eq!(t.lookup(a), None);
        assert_eq!(t.lookup(b), Some(path(b, 2)));
        assert_eq!(t.lookup(c), Some(path(c, 3)));
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
