//! A client whose pool was prefilled (`Client::prefill_pool`) takes no new message buffer
//! for its first messages: a server and a client connect in memory, then the client sends
//! [`FIRST`] messages of the pool's four small classes' sizes on a reliable and an
//! unreliable channel, the server echoes each, and the client takes (and recycles) the
//! echoes. A counting global allocator counts, on the test's thread, allocations shaped
//! like a pool buffer: alignment 1 and a capacity of one of the classes up to 2 KiB.
//!
//! The server is prefilled in both runs, so what is counted is the client. The control run
//! does not prefill the client and must count buffers, so the counter is known to work.
#![expect(unsafe_code, reason = "a counting global allocator is an unsafe impl")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use xrudp_proto::pool::CLASSES;
use xrudp_proto::{Client, ClientConfig, ClientEvent, Server, ServerConfig, ServerEvent};

/// Messages counted: 16 in each of the four classes up to 2 KiB.
const FIRST: usize = 64;
/// Buffers prefilled per class, on both ends.
const PREFILL: usize = 32;
/// Message lengths, one per class up to 2 KiB (the largest fits one datagram).
const SIZES: [usize; 4] = [40, 200, 900, 1_100];

const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 40_000);
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 7_777);
const HOP: Duration = Duration::from_micros(25);

/// Counts, on threads that switched [`COUNTING`] on, allocations shaped like a pool buffer.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static BUFFERS: Cell<u64> = const { Cell::new(0) };
}

fn note(layout: Layout) {
    // Const thread-locals with no destructor: reading them allocates nothing.
    if layout.align() == 1 && CLASSES[..4].contains(&layout.size()) && COUNTING.with(Cell::get) {
        BUFFERS.with(|b| b.set(b.get() + 1));
    }
}

// SAFETY: every method forwards to the system allocator unchanged; counting touches only
// const thread-locals.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` is a valid size for `layout`'s alignment.
        note(unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) });
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A server and a client exchanging datagrams through memory.
struct Link {
    server: Server,
    client: Client,
    now: Instant,
    buf: Vec<u8>,
    connected: bool,
    echoed: usize,
}

impl Link {
    fn new(prefill_client: bool) -> Self {
        let now = Instant::now();
        let mut server = Server::new(ServerConfig::default(), 1, now).expect("server config");
        server.prefill_pool(PREFILL);
        let mut client =
            Client::new(ClientConfig::default(), SERVER, 2, now, None).expect("client config");
        if prefill_client {
            client.prefill_pool(PREFILL);
        }
        let mut link = Self {
            server,
            client,
            now,
            buf: vec![0; 2048],
            connected: false,
            echoed: 0,
        };
        for _ in 0..100 {
            link.exchange();
            if link.connected {
                return link;
            }
            link.now += Duration::from_millis(1);
        }
        panic!("the in-memory handshake did not complete");
    }

    /// Moves datagrams both ways until neither end has more; the server echoes every
    /// message, the client recycles every echo.
    fn exchange(&mut self) {
        loop {
            let mut moved = false;
            if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
                self.client.handle_timeout(self.now);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
                self.server.handle_timeout(self.now);
            }
            while let Some(t) = self.client.poll_transmit(self.now, &mut self.buf) {
                self.server
                    .handle_datagram(self.now, CLIENT, &self.buf[..t.len]);
                moved = true;
            }
            while let Some(e) = self.server.poll_event() {
                if let ServerEvent::Message {
                    handle,
                    channel,
                    data,
                } = e
                {
                    self.server
                        .send(handle, channel, &data)
                        .expect("echo queued");
                    self.server.recycle(data);
                }
            }
            while let Some(t) = self.server.poll_transmit(self.now, &mut self.buf) {
                self.client
                    .handle_datagram(self.now, SERVER, &self.buf[..t.len]);
                moved = true;
            }
            while let Some(e) = self.client.poll_event() {
                match e {
                    ClientEvent::Message { data, .. } => {
                        self.echoed += 1;
                        self.client.recycle(data);
                    }
                    ClientEvent::Connected => self.connected = true,
                    ClientEvent::Disconnected { reason } => panic!("closed: {reason:?}"),
                }
            }
            if !moved {
                return;
            }
            self.now += HOP;
        }
    }
}

impl Link {
    /// Exchanges, moving time to the next deadline of either end, until `echoed` echoes
    /// have come back (within a simulated second).
    fn settle(&mut self, echoed: usize) {
        let give_up = self.now + Duration::from_secs(1);
        while self.echoed < echoed {
            assert!(
                self.now < give_up,
                "{} of {echoed} echoes came back",
                self.echoed
            );
            self.exchange();
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(self.now);
            self.now = next.max(self.now + HOP);
        }
    }
}

/// Connects, then counts pool-shaped allocations over the first [`FIRST`] messages, sent
/// in bursts of eight (reliable-ordered and unreliable in turn, every size), each burst
/// echoed before the next.
fn first_messages(prefill_client: bool) -> (u64, usize) {
    let mut link = Link::new(prefill_client);
    let payload = [0x5a; 2048];
    BUFFERS.with(|b| b.set(0));
    COUNTING.with(|c| c.set(true));
    for burst in 0..FIRST / 8 {
        for k in 0..8 {
            let channel = if k % 2 == 0 { 0 } else { 2 };
            let len = SIZES[(burst + k / 2) % SIZES.len()];
            link.client
                .send(channel, &payload[..len])
                .expect("message queued");
        }
        link.settle((burst + 1) * 8);
    }
    COUNTING.with(|c| c.set(false));
    (BUFFERS.with(Cell::get), link.echoed)
}

#[test]
fn a_prefilled_client_takes_no_new_buffer_for_its_first_messages() {
    let (buffers, echoed) = first_messages(true);
    assert_eq!(echoed, FIRST, "every message echoed");
    assert_eq!(buffers, 0, "new message buffers after prefill");
}

#[test]
fn without_prefill_the_first_messages_allocate_buffers() {
    let (buffers, echoed) = first_messages(false);
    assert_eq!(echoed, FIRST, "every message echoed");
    // At least one buffer per class the client sent from and received into.
    assert!(
        buffers >= 4,
        "only {buffers} buffers counted without prefill"
    );
}
