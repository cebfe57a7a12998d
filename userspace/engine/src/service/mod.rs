//! The protocol and the application, as one worker drives them.
//!
//! A [`Service`] owns a worker's [`xrudp_proto::Server`] (its connection table), the
//! application ([`app::App`]: the built-in `echo` and `relay`, or game code embedding
//! the engine through [`crate::api`]), the first-hello budget ([`hello`]) and the
//! outbox of deferred sends ([`outbox`]). It is the protocol's [`Handler`] for the one
//! drive loop ([`crate::drive`]), on every backend.
//!
//! Backpressure never loses reliable data: a message that cannot be queued because a
//! connection's send buffer is full waits in the bounded outbox and is retried every
//! round; while the outbox is full the service stops taking events from the protocol,
//! so undelivered messages stay counted against the senders' receive windows.

use std::{net::SocketAddr, time::Instant};

use xrudp_proto::{ConnHandle, Server, Transmit};

use crate::{
    drive::{Handler, Verdict},
    telemetry::{ConnRow, Published},
};

pub(crate) mod app;
mod hello;
mod outbox;
mod sessions;

pub(crate) use app::{
    App,
    embedded::Embedded,
    relay::{Relay, RelayShared},
};
pub use app::{Command, Event, Queues, RELAY_JOIN};

/// A connection of one worker, as the application sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// The worker (queue or socket index) that owns the connection.
    pub worker: u16,
    /// The connection within that worker.
    pub handle: ConnHandle,
}

/// Where an application's sends go: the protocol, or the outbox when a connection's
/// send buffer is full.
pub(crate) struct Out<'a> {
    pub(crate) server: &'a mut Server,
    pub(crate) outbox: &'a mut outbox::Outbox,
}

impl Out<'_> {
    /// Sends `data` to `handle` on `channel`, now or after the sends deferred before it.
    pub(crate) fn send(&mut self, handle: ConnHandle, channel: u8, data: outbox::Payload) {
        self.outbox.send(self.server, handle, channel, data);
    }
}

/// One worker's protocol endpoint and application.
#[derive(Debug)]
pub(crate) struct Service {
    server: Server,
    app: App,
    worker: u16,
    outbox: outbox::Outbox,
    /// Budget of first hellos answered per second.
    hellos: hello::HelloBudget,
    /// First hellos dropped because the budget was spent.
    hellos_shed: u64,
    /// Rounds in which the application could not keep up (outbox or event queue full),
    /// so the service left events inside the protocol.
    backpressure_rounds: u64,
    /// With admission control: where this worker publishes its live sessions.
    sessions: Option<sessions::Sessions>,
}

impl Service {
    /// A service around `server` running `app`, as worker number `worker`, answering at
    /// most `hello_rate` first hellos per second (0: unlimited).
    pub(crate) fn new(server: Server, app: App, worker: u16, hello_rate: u32) -> Self {
        Self {
            server,
            app,
            worker,
            outbox: outbox::Outbox::new(),
            hellos: hello::HelloBudget::new(hello_rate),
            hellos_shed: 0,
            backpressure_rounds: 0,
            sessions: None,
        }
    }

    /// Admission control: publish this worker's live sessions into the XDP program's
    /// allow-list `map` under receive queue `queue`. The XDP program enforces the
    /// handshake budget from then on, so the userspace one stops.
    pub(crate) fn publish_sessions(&mut self, map: crate::sys::bpf::SessionMap, queue: u32) {
        self.server.track_sessions();
        self.hellos = hello::HelloBudget::new(0);
        let mut s = sessions::Sessions::new(map, queue);
        s.sync(&mut self.server);
        self.sessions = Some(s);
    }

    /// Writes the session changes since the last call into the allow-list.
    fn sync_sessions(&mut self) {
        if let Some(s) = self.sessions.as_mut() {
            s.sync(&mut self.server);
        }
    }

    /// The protocol endpoint.
    pub(crate) fn server(&self) -> &Server {
        &self.server
    }

    /// Runs the application once: retries deferred sends, takes what the application
    /// has for this round, and takes events from the protocol while the application can
    /// accept them.
    fn run(&mut self) {
        let mut out = Out {
            server: &mut self.server,
            outbox: &mut self.outbox,
        };
        out.outbox.retry(out.server);
        self.app.on_round(self.worker, &mut out);
        loop {
            if out.outbox.is_full() || !self.app.ready() {
                self.backpressure_rounds += 1;
                return;
            }
            let Some(ev) = out.server.poll_event() else {
                return;
            };
            self.app.on_event(self.worker, ev, &mut out);
        }
    }
}

impl Handler for Service {
    const ORIGINATES: bool = true;

    /// Feeds one received datagram's UDP payload to the protocol.
    fn on_datagram(&mut self, now: Instant, from: SocketAddr, payload: &[u8]) -> Verdict {
        // A first hello costs a CRC over 1,200 bytes and a keyed MAC, and anyone can
        // send one from any address: past the budget they are shed before the
        // protocol sees them, so a spoofed-hello flood cannot starve established players.
        if payload.get(3) == Some(&(xrudp_common::rudp::PacketType::Hello as u8))
            && !self.hellos.take(now)
        {
            self.hellos_shed += 1;
            return Verdict::Consumed;
        }
        self.server.handle_datagram(now, from, payload);
        // Before anything is sent: a welcomed client's first packet must find its session.
        self.sync_sessions();
        Verdict::Consumed
    }

    /// Fires protocol timers that are due, then runs the application. Called every
    /// round, due or not: it keeps the timer wheel's cursor at `now`, which keeps asking
    /// for the next deadline O(1) (`Server::poll_timeout`).
    fn on_round(&mut self, now: Instant) {
        self.server.handle_timeout(now);
        self.run();
        self.sync_sessions();
    }

    fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        self.server.poll_transmit(now, out)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    /// Closes every connection with a shutdown notice (sent on following transmits).
    fn doorbell(&self) -> Option<&crate::drive::Doorbell> {
        self.app.doorbell()
    }

    fn has_work(&self) -> bool {
        self.app.has_work()
    }

    fn shutdown(&mut self) {
        self.server.shutdown();
    }

    fn drain(&mut self, redirect: Option<SocketAddr>) {
        tracing::info!(worker = self.worker, ?redirect, "draining");
        self.server.drain(redirect);
    }

    /// Publishes this worker's protocol and application figures to `to` (skipped, never
    /// waited for, while a reader holds it).
    fn publish(&self, to: &Published) {
        to.publish(self.server.config().max_connections, |f, rows| {
            let st = self.server.stats();
            f.connections = self.server.connection_count() as u64;
            f.accepted = st.accepted;
            f.handshakes = st.handshakes;
            f.bad_cookies = st.bad_cookies;
            f.auth_failed = st.auth_failed;
            f.replayed = st.replayed;
            f.token_reused = st.token_reused;
            f.migrated = st.migrated;
            f.path_challenges = st.path_challenges;
            f.pmtu_probes = st.pmtu_probes;
            f.pmtu_black_holes = st.pmtu_black_holes;
            for r in xrudp_proto::RejectReason::ALL {
                let (name, n) = (crate::telemetry::reject_name(r), st.rejected_for(r));
                if let Some(v) = f.rejected.get_mut(name) {
                    *v = n;
                } else {
                    f.rejected.insert(name.to_owned(), n);
                }
            }
            f.version_mismatches = st.version_mismatches;
            f.timed_out = st.timed_out;
            f.violations = st.violations;
            f.packets_in = st.packets_in;
            f.packets_out = st.packets_out;
            f.retransmitted_packets = st.retransmitted_packets;
            f.lost_packets = st.lost_packets;
            f.messages_in = st.messages_in;
            f.messages_out = st.messages_out;
            f.crc_failures = st.crc_failures();
            f.decode_errors = st.decode_errors.iter().sum();
            f.unknown_connection = st.unknown_connection;
            f.backpressure_rounds = self.backpressure_rounds;
            f.sends_deferred = self.outbox.counts.deferred;
            f.relayed = self.app.relayed();
            f.hellos_shed = self.hellos_shed;
            f.session_updates_failed = self.sessions.as_ref().map_or(0, |s| s.failed);
            f.relay_members = self.app.relay_members();
            f.memory = self.server.memory() as u64;
            // Every connection the protocol holds, including those whose `Connected` the
            // application has not taken yet (a sleeping game's queue is full).
            for h in self.server.handles() {
                if let Some(cs) = self.server.connection_stats(h) {
                    rows.push(ConnRow::new(self.worker, h, &cs));
                }
            }
        });
    }
}
