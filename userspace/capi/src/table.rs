//! The handle table and the operations behind every entry point, in safe Rust: the
//! [`crate::abi`] layer only turns pointers into references and back.
//!
//! A handle is `generation << 32 | (slot + 1)`: never 0, and a freed slot's next
//! occupant has another generation, so a stale handle (double free, use after free)
//! finds nothing instead of someone else's connection.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use xrudp_client::{
    ClientConfig, ClientEvent, ClientState, Connection, DisconnectReason, Protection, PublicToken,
};

use crate::status::Status;

/// `XrudpConnectOptions.protection`: X25519 with the server, server not authenticated
/// (the default).
pub const XRUDP_PROTECTION_ANONYMOUS: u32 = 0;
/// `XrudpConnectOptions.protection`: X25519 with the server's public key pinned; `key`
/// holds its 32 bytes (`xrudp attach` prints it).
pub const XRUDP_PROTECTION_PINNED: u32 = 1;
/// `XrudpConnectOptions.protection`: a connect token from the game's backend; `key` holds
/// its encoded bytes.
pub const XRUDP_PROTECTION_TOKEN: u32 = 2;
/// `XrudpConnectOptions.protection`: no encryption; only servers run with
/// `--encryption off` accept it.
pub const XRUDP_PROTECTION_OFF: u32 = 3;

/// `XrudpConnectOptions.pmtud`: path MTU discovery on (the default): the connection
/// starts at 1200 bytes and probes up to `mtu` (docs/PROTOCOL.md §5.5).
pub const XRUDP_PMTUD_ON: u32 = 0;
/// `XrudpConnectOptions.pmtud`: path MTU discovery off: every packet may be `mtu` bytes
/// from the start (only for a path known to carry them).
pub const XRUDP_PMTUD_OFF: u32 = 1;

/// Connection options for `xrudp_connect`. A null pointer means all defaults (anonymous
/// protection, 1200-byte datagrams); so does a zeroed struct. Fields are only ever
/// appended, and 0 always means the default.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XrudpConnectOptions {
    /// One of `XRUDP_PROTECTION_*`.
    pub protection: u32,
    /// Length of `key` in bytes (32 for `XRUDP_PROTECTION_PINNED`).
    pub key_len: u32,
    /// The pinned server key or the connect token; may be null when `key_len` is 0.
    /// Borrowed for the call only: the library copies it.
    pub key: *const u8,
    /// Largest UDP payload to send, 1200..=1472 bytes, or 0 for the default (1200). With
    /// path MTU discovery on it is the ceiling of the search (the server's own MTU caps
    /// it too); `XrudpStats.mtu` says what the path carries. Anything else is
    /// `XRUDP_STATUS_INVALID_ARGUMENT`.
    pub mtu: u32,
    /// `XRUDP_PMTUD_ON` (0, the default) or `XRUDP_PMTUD_OFF`. With `mtu` 1200 there is
    /// nothing to discover either way.
    pub pmtud: u32,
}

/// What happened on a connection (`XRUDP_EVENT_KIND_*`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XrudpEventKind {
    /// No event (the value after `XRUDP_STATUS_NO_EVENT`).
    None = 0,
    /// The server admitted the client: messages may be sent.
    Connected = 1,
    /// A message arrived; its bytes are in the caller's buffer.
    Message = 2,
    /// The connection is over; `reason` and `reason_code` say why. Free the handle.
    Disconnected = 3,
    /// The server is draining: it admits no one new and will go away; reconnect. The
    /// buffer holds the address it asks clients to reconnect to, as text
    /// (`198.18.0.1:7777`, `[2001:db8::1]:7777`; not NUL-terminated), and `len` is its
    /// length: 0 when the server named none. The connection stays open meanwhile.
    Draining = 4,
}

/// Why a connection ended (`XRUDP_REASON_*`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XrudpReason {
    /// Not a disconnect.
    None = 0,
    /// This client called `xrudp_disconnect`; `reason_code` is its code.
    Local = 1,
    /// The server closed it (a kick); `reason_code` is the server's code.
    Peer = 2,
    /// Nothing was heard from the server for the idle timeout.
    TimedOut = 3,
    /// The server broke the protocol; `reason_code` is the violation.
    Violation = 4,
    /// The server reported that this client broke the protocol; `reason_code` is its code.
    PeerViolation = 5,
    /// The server is shutting down.
    ServerShutdown = 6,
    /// No answer to the handshake in time: wrong address, server down, UDP blocked.
    HandshakeTimedOut = 7,
    /// The server refused to admit the client; `reason_code` is the reject reason
    /// (1 server full, 2 token required, 3 token invalid, 4 token expired, 5 token reused,
    /// 6 security mode mismatch).
    Rejected = 8,
    /// The server speaks another protocol version.
    VersionMismatch = 9,
    /// Any reason this library version does not know.
    Other = 10,
}

/// One event, filled by `xrudp_next_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XrudpEvent {
    /// What happened.
    pub kind: XrudpEventKind,
    /// The message's channel (`XRUDP_EVENT_KIND_MESSAGE`).
    pub channel: u32,
    /// Why the connection ended (`XRUDP_EVENT_KIND_DISCONNECTED`).
    pub reason: XrudpReason,
    /// The code that goes with `reason` (application code, violation, reject reason).
    pub reason_code: u32,
    /// The message's length in bytes: written to the buffer, or, with
    /// `XRUDP_STATUS_BUFFER_TOO_SMALL`, the buffer size it needs.
    pub len: u64,
}

impl XrudpEvent {
    const EMPTY: Self = Self {
        kind: XrudpEventKind::None,
        channel: 0,
        reason: XrudpReason::None,
        reason_code: 0,
        len: 0,
    };
}

/// Connection state (`XRUDP_STATE_*`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XrudpState {
    /// Handshaking.
    Connecting = 0,
    /// Established.
    Connected = 1,
    /// Sending its `Disconnect`.
    Disconnecting = 2,
    /// Over.
    Disconnected = 3,
}

/// Connection quality, filled by `xrudp_stats`: what a game shows as ping and loss.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XrudpStats {
    /// `XRUDP_STATE_*`.
    pub state: i32,
    /// 1 when everything sent was acknowledged and nothing is queued: the moment to
    /// disconnect without losing reliable messages.
    pub quiet: u32,
    /// Smoothed round-trip time, microseconds (0 until connected).
    pub rtt_us: u64,
    /// Round-trip time variation, microseconds (0 until connected).
    pub rtt_var_us: u64,
    /// Congestion window, bytes (0 until connected).
    pub cwnd: u64,
    /// Bytes sent and not yet acknowledged (0 until connected).
    pub bytes_in_flight: u64,
    /// Bytes queued or unacknowledged (0 until connected).
    pub send_buffered: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Packets that carried retransmitted messages.
    pub retransmitted_packets: u64,
    /// `lost_packets / packets_out`, 0 to 1 (0 before anything was sent).
    pub loss: f64,
    /// The smallest round-trip time seen: the path's ping without any delay of the
    /// server's acks, microseconds (0 until connected).
    pub min_rtt_us: u64,
    /// Round-trip jitter: the smoothed step between consecutive RTT samples,
    /// microseconds (0 until connected).
    pub jitter_us: u64,
    /// The largest datagram the connection sends now, bytes: the path MTU that
    /// discovery confirmed so far, or the MTU agreed with the server with discovery off
    /// (0 until connected).
    pub mtu: u64,
    /// Path MTU probes sent (padded packets that carry no messages).
    pub pmtu_probes: u64,
    /// Path MTU black holes detected: times the connection fell back to 1200 bytes
    /// because larger packets stopped arriving.
    pub pmtu_black_holes: u64,
}

/// One connection and the event that did not fit the caller's buffer.
#[derive(Debug)]
struct Entry {
    conn: Connection,
    pending: Option<ClientEvent>,
}

type Shared = Arc<Mutex<Entry>>;

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    entry: Option<Shared>,
}

/// Connections by handle. Calls on one connection hold its own lock only, so a
/// blocking `xrudp_wait` on one does not stall calls on another.
#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<usize>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    slots: Vec::new(),
    free: Vec::new(),
});

fn table() -> MutexGuard<'static, Table> {
    // The table's own code cannot panic midway through an update (it pushes and takes
    // Options), so a poisoned lock still guards consistent data.
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Table {
    fn insert(&mut self, entry: Entry) -> u64 {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        });
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1).max(1);
        slot.entry = Some(Arc::new(Mutex::new(entry)));
        (u64::from(slot.generation) << 32) | (index as u64 + 1)
    }

    fn slot(&mut self, handle: u64) -> Option<&mut Slot> {
        let index = usize::try_from(handle & 0xffff_ffff).ok()?.checked_sub(1)?;
        let generation = (handle >> 32) as u32;
        self.slots
            .get_mut(index)
            .filter(|s| s.generation == generation && s.entry.is_some())
    }

    fn remove(&mut self, handle: u64) -> Option<Shared> {
        let entry = self.slot(handle)?.entry.take();
        // `slot` found it, so the low half is a valid slot number + 1.
        self.free.push((handle & 0xffff_ffff) as usize - 1);
        entry
    }
}

/// Runs `f` with the connection behind `handle` locked.
fn with<T>(handle: u64, f: impl FnOnce(&mut Entry) -> Result<T, Status>) -> Result<T, Status> {
    let shared = table()
        .slot(handle)
        .and_then(|s| s.entry.clone())
        .ok_or(Status::InvalidHandle)?;
    // A poisoned lock means a panic inside this connection's code: its state may be
    // half-updated, so it is unusable (free it).
    let mut entry = shared.lock().map_err(|_| Status::Internal)?;
    f(&mut entry)
}

/// Runs `f`, turning a panic into [`Status::Internal`] so that it never unwinds into
/// the caller.
pub fn guard(f: impl FnOnce() -> Result<(), Status>) -> Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Status::Ok,
        Ok(Err(s)) => s,
        Err(_) => Status::Internal,
    }
}

/// Transport options beside protection: what `XrudpConnectOptions` carries after `key`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathOptions {
    /// `XrudpConnectOptions.mtu` (0: the default).
    pub mtu: u32,
    /// `XrudpConnectOptions.pmtud`.
    pub pmtud: u32,
}

impl PathOptions {
    /// The client configuration these options ask for.
    fn config(self) -> Result<ClientConfig, Status> {
        let mut config = ClientConfig::default();
        if self.mtu != 0 {
            config.transport.mtu =
                usize::try_from(self.mtu).map_err(|_| Status::InvalidArgument)?;
        }
        config.transport.pmtud = match self.pmtud {
            XRUDP_PMTUD_ON => true,
            XRUDP_PMTUD_OFF => false,
            _ => return Err(Status::InvalidArgument),
        };
        config.validate().map_err(|_| Status::InvalidArgument)?;
        Ok(config)
    }
}

/// Starts connecting to `server` ("ip:port"); returns the new handle.
pub fn connect(
    server: &str,
    protection: u32,
    key: &[u8],
    path: PathOptions,
) -> Result<u64, Status> {
    let server: SocketAddr = server.parse().map_err(|_| Status::InvalidArgument)?;
    let config = path.config()?;
    let protection = match protection {
        XRUDP_PROTECTION_ANONYMOUS => Protection::anonymous(),
        XRUDP_PROTECTION_PINNED => {
            Protection::pinned(key.try_into().map_err(|_| Status::InvalidArgument)?)
        }
        XRUDP_PROTECTION_TOKEN => Protection::Token(Box::new(
            PublicToken::decode(key).map_err(|_| Status::InvalidArgument)?,
        )),
        XRUDP_PROTECTION_OFF => Protection::Off,
        _ => return Err(Status::InvalidArgument),
    };
    let conn = Connection::connect(server, config, &protection).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => Status::InvalidArgument,
        _ => Status::Io,
    })?;
    Ok(table().insert(Entry {
        conn,
        pending: None,
    }))
}

/// Does pending work without blocking.
pub fn poll(handle: u64) -> Result<(), Status> {
    with(handle, |e| e.conn.poll().map_err(|_| Status::Io))
}

/// Sends what is queued, then blocks up to `timeout_ms` for a datagram or a timer and
/// polls; returns at once when an event is waiting.
pub fn wait(handle: u64, timeout_ms: u32) -> Result<(), Status> {
    with(handle, |e| {
        if e.pending.is_some() {
            return Ok(());
        }
        // `Connection::wait` sends what is queued only after it has waited: poll first so
        // that a message sent just before the wait leaves now, not at the next timer.
        e.conn.poll().map_err(|_| Status::Io)?;
        e.conn
            .wait(Duration::from_millis(timeout_ms.into()))
            .map_err(|_| Status::Io)
    })
}

/// Takes the next event; a message's bytes go to `buf`. With [`Status::BufferTooSmall`]
/// the message stays queued and `out.len` is the size it needs.
pub fn next_event(handle: u64, out: &mut XrudpEvent, buf: &mut [u8]) -> Status {
    *out = XrudpEvent::EMPTY;
    let r = with(handle, |e| {
        let Some(ev) = e.pending.take().or_else(|| e.conn.next_event()) else {
            return Ok(Status::NoEvent);
        };
        Ok(match ev {
            ClientEvent::Connected => {
                out.kind = XrudpEventKind::Connected;
                Status::Ok
            }
            ClientEvent::Message { channel, data } => {
                out.kind = XrudpEventKind::Message;
                out.channel = channel.into();
                out.len = data.len() as u64;
                if let Some(dst) = buf.get_mut(..data.len()) {
                    dst.copy_from_slice(&data);
                    e.conn.recycle(data);
                    Status::Ok
                } else {
                    e.pending = Some(ClientEvent::Message { channel, data });
                    Status::BufferTooSmall
                }
            }
            ClientEvent::Draining { redirect } => {
                let text = redirect.map(|a| a.to_string()).unwrap_or_default();
                out.kind = XrudpEventKind::Draining;
                out.len = text.len() as u64;
                if let Some(dst) = buf.get_mut(..text.len()) {
                    dst.copy_from_slice(text.as_bytes());
                    Status::Ok
                } else {
                    e.pending = Some(ClientEvent::Draining { redirect });
                    Status::BufferTooSmall
                }
            }
            ClientEvent::Disconnected { reason } => {
                out.kind = XrudpEventKind::Disconnected;
                (out.reason, out.reason_code) = reason_of(reason);
                Status::Ok
            }
        })
    });
    r.unwrap_or_else(|s| s)
}

fn reason_of(r: DisconnectReason) -> (XrudpReason, u32) {
    match r {
        DisconnectReason::Local { code } => (XrudpReason::Local, code.into()),
        DisconnectReason::Peer { code } => (XrudpReason::Peer, code.into()),
        DisconnectReason::TimedOut => (XrudpReason::TimedOut, 0),
        DisconnectReason::Violation(v) => (XrudpReason::Violation, v as u32),
        DisconnectReason::PeerViolation(code) => (XrudpReason::PeerViolation, code.into()),
        DisconnectReason::ServerShutdown => (XrudpReason::ServerShutdown, 0),
        DisconnectReason::HandshakeTimedOut => (XrudpReason::HandshakeTimedOut, 0),
        DisconnectReason::Rejected(r) => (XrudpReason::Rejected, r as u32),
        DisconnectReason::VersionMismatch => (XrudpReason::VersionMismatch, 0),
        _ => (XrudpReason::Other, 0),
    }
}

/// Queues a message on `channel`.
pub fn send(handle: u64, channel: u8, data: &[u8]) -> Result<(), Status> {
    with(handle, |e| e.conn.send(channel, data).map_err(Status::from))
}

/// The connection's quality figures.
pub fn stats(handle: u64) -> Result<XrudpStats, Status> {
    with(handle, |e| {
        let c = e.conn.stats();
        let mut s = XrudpStats {
            state: match e.conn.state() {
                ClientState::Connecting => XrudpState::Connecting,
                ClientState::Connected => XrudpState::Connected,
                ClientState::Disconnecting => XrudpState::Disconnecting,
                ClientState::Disconnected => XrudpState::Disconnected,
            } as i32,
            quiet: e.conn.is_quiet().into(),
            packets_out: c.packets_out,
            packets_in: c.packets_in,
            lost_packets: c.lost_packets,
            retransmitted_packets: c.retransmitted_packets,
            loss: if c.packets_out == 0 {
                0.0
            } else {
                c.lost_packets as f64 / c.packets_out as f64
            },
            pmtu_probes: c.pmtu_probes,
            pmtu_black_holes: c.pmtu_black_holes,
            ..XrudpStats::default()
        };
        if let Some(cs) = e.conn.connection_stats() {
            s.rtt_us = cs.rtt.as_micros() as u64;
            s.rtt_var_us = cs.rtt_var.as_micros() as u64;
            s.min_rtt_us = cs.min_rtt.as_micros() as u64;
            s.jitter_us = cs.jitter.as_micros() as u64;
            s.cwnd = cs.cwnd;
            s.bytes_in_flight = cs.bytes_in_flight;
            s.send_buffered = cs.send_buffered as u64;
            s.mtu = cs.mtu.into();
        }
        Ok(s)
    })
}

/// Starts a graceful close with an application `code`.
pub fn disconnect(handle: u64, code: u16) -> Result<(), Status> {
    with(handle, |e| {
        if matches!(e.conn.state(), ClientState::Disconnected) {
            return Err(Status::NotConnected);
        }
        e.conn.disconnect(code).map_err(|_| Status::Io)
    })
}

/// Removes the connection from the table and closes its socket (once any call still
/// running on it has returned).
pub fn free(handle: u64) -> Result<(), Status> {
    let entry = table().remove(handle).ok_or(Status::InvalidHandle)?;
    drop(entry);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection toward loopback's discard port (nothing answers there).
    fn toward_loopback(protection: u32, key: &[u8], path: PathOptions) -> Result<u64, Status> {
        connect("127.0.0.1:9", protection, key, path)
    }

    /// An unprotected connection toward loopback with `path`; the socket must open.
    fn open(path: PathOptions) -> u64 {
        toward_loopback(XRUDP_PROTECTION_OFF, &[], path).expect("a local socket opens")
    }

    #[test]
    fn stale_and_forged_handles_are_refused() {
        let h = open(PathOptions::default());
        assert_ne!(h, 0);
        assert_eq!(free(h), Ok(()));
        assert_eq!(free(h), Err(Status::InvalidHandle), "double free");
        assert_eq!(poll(h), Err(Status::InvalidHandle), "use after free");
        let h2 = open(PathOptions::default());
        assert_eq!(h2 & 0xffff_ffff, h & 0xffff_ffff, "the slot is reused");
        assert_ne!(h2, h, "with another generation");
        assert_eq!(
            poll(h),
            Err(Status::InvalidHandle),
            "the old handle stays dead"
        );
        assert_eq!(poll(0), Err(Status::InvalidHandle));
        assert_eq!(free(0), Err(Status::InvalidHandle));
        assert_eq!(free(1 << 32), Err(Status::InvalidHandle));
        assert_eq!(poll(u64::MAX), Err(Status::InvalidHandle));
        assert_eq!(free(h2), Ok(()));
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert_eq!(
            connect(
                "not an address",
                XRUDP_PROTECTION_ANONYMOUS,
                &[],
                PathOptions::default()
            ),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            toward_loopback(XRUDP_PROTECTION_PINNED, &[0; 31], PathOptions::default()),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            toward_loopback(XRUDP_PROTECTION_TOKEN, b"junk", PathOptions::default()),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            toward_loopback(99, &[], PathOptions::default()),
            Err(Status::InvalidArgument)
        );
        for path in [
            PathOptions {
                mtu: 1199,
                pmtud: XRUDP_PMTUD_ON,
            },
            PathOptions {
                mtu: 1473,
                pmtud: XRUDP_PMTUD_ON,
            },
            PathOptions {
                mtu: u32::MAX,
                pmtud: XRUDP_PMTUD_OFF,
            },
            PathOptions {
                mtu: 1472,
                pmtud: 2,
            },
        ] {
            assert_eq!(
                toward_loopback(XRUDP_PROTECTION_OFF, &[], path),
                Err(Status::InvalidArgument),
                "{path:?}"
            );
        }
    }

    #[test]
    fn path_options_reach_the_client_configuration() {
        let c = PathOptions::default()
            .config()
            .expect("zero is the default");
        assert_eq!(c, ClientConfig::default());
        let c = PathOptions {
            mtu: 1472,
            pmtud: XRUDP_PMTUD_OFF,
        }
        .config()
        .expect("valid");
        assert_eq!((c.transport.mtu, c.transport.pmtud), (1472, false));
        let c = PathOptions {
            mtu: 1400,
            pmtud: XRUDP_PMTUD_ON,
        }
        .config()
        .expect("valid");
        assert_eq!((c.transport.mtu, c.transport.pmtud), (1400, true));
        let h = open(PathOptions {
            mtu: 1472,
            pmtud: XRUDP_PMTUD_ON,
        });
        let s = stats(h).expect("stats");
        assert_eq!(
            (s.mtu, s.pmtu_probes, s.pmtu_black_holes),
            (0, 0, 0),
            "not connected yet"
        );
        free(h).expect("free");
    }

    #[test]
    fn sending_before_connected_is_an_error() {
        let h = open(PathOptions::default());
        assert_eq!(send(h, 0, b"x"), Err(Status::NotConnected));
        let mut ev = XrudpEvent::EMPTY;
        assert_eq!(next_event(h, &mut ev, &mut []), Status::NoEvent);
        let s = stats(h).expect("stats");
        assert_eq!(s.state, XrudpState::Connecting as i32);
        free(h).expect("free");
    }
}
