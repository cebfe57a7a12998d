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

pub use xrudp_packet::datagram::Route;

#[derive(Clone, Copy, Debug)]
struct Entry {
    peer: SocketAddr,
    route: Route,
    /// Larger is more recent.
    stamp: u32,
}

/// A bounded peer → path cache.
#[derive(Debug)]
pub struct Table {
    sets: Vec<[Option<Entry>; 2]>,
    mask: usize,
    clock: u32,
    hasher: std::hash::RandomState,
}

impl Table {
    /// A table with room for about `capacity` peers (rounded up to a power of two of sets).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let sets = (capacity / 2).max(1).next_power_of_two();
        Self {
            sets: vec![[None, None]; sets],
            mask: sets - 1,
            clock: 0,
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Remembers the path of a frame received from `peer`.
    pub fn learn(&mut self, peer: SocketAddr, route: Route) {
        self.clock = self.clock.wrapping_add(1);
        let stamp = self.clock;
        let set = &mut self.sets[index(&self.hasher, peer, self.mask)];
        for e in set.iter_mut().flatten() {
            if e.peer == peer {
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
        set[victim] = Some(Entry { peer, route, stamp });
    }

    /// The route to `peer`, if one was learnt and not evicted.
    #[must_use]
    pub fn lookup(&self, peer: SocketAddr) -> Option<Route> {
        self.sets[index(&self.hasher, peer, self.mask)]
            .iter()
            .flatten()
            .find(|e| e.peer == peer)
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

    fn path(n: u8) -> Route {
        Route {
            local_mac: xrudp_packet::ethernet::Address([0xaa; 6]),
            peer_mac: xrudp_packet::ethernet::Address([n; 6]),
            vlan: None,
            local: "198.18.0.1:7777".parse().unwrap(),
            peer: "198.18.0.2:1000".parse().unwrap(),
            dscp: 0,
        }
    }

    #[test]
    fn learns_updates_and_looks_up() {
        let mut t = Table::new(64);
        let a: SocketAddr = "198.18.0.2:1000".parse().unwrap();
        assert_eq!(t.lookup(a), None);
        t.learn(a, path(1));
        assert_eq!(t.lookup(a), Some(path(1)));
        t.learn(a, path(2));
        assert_eq!(t.lookup(a), Some(path(2)));
    }

    #[test]
    fn a_flood_evicts_but_never_grows_and_live_peers_relearn() {
        let mut t = Table::new(8);
        let live: SocketAddr = "198.18.0.2:1000".parse().unwrap();
        let sets = t.sets.len();
        for i in 0..10_000u16 {
            t.learn(
                SocketAddr::from(([203, 0, 113, (i % 250) as u8], i)),
                path(9),
            );
            if i % 3 == 0 {
                t.learn(live, path(1));
            }
        }
        assert_eq!(t.sets.len(), sets, "the table never grows");
        t.learn(live, path(1));
        assert_eq!(t.lookup(live), Some(path(1)));
    }

    #[test]
    fn two_peers_in_one_set_both_stay() {
        let mut t = Table::new(2); // one set of two ways
        let a: SocketAddr = "198.18.0.2:1".parse().unwrap();
        let b: SocketAddr = "198.18.0.3:2".parse().unwrap();
        t.learn(a, path(1));
        t.learn(b, path(2));
        assert_eq!(t.lookup(a), Some(path(1)));
        assert_eq!(t.lookup(b), Some(path(2)));
        // A third evicts the least recently used (a), not the fresher b.
        let c: SocketAddr = "198.18.0.4:3".parse().unwrap();
        t.learn(c, path(3));
        assert_eq!(t.lookup(a), None);
        assert_eq!(t.lookup(b), Some(path(2)));
        assert_eq!(t.lookup(c), Some(path(3)));
    }
}
