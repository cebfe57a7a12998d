//! AF_XDP sockets on xsk-rs: one UMEM, fill/completion/RX/TX rings and a frame pool per
//! queue, with frame ownership expressed in types.
//!
//! A [`Frame`] is neither `Copy` nor `Clone`. It moves into the fill ring
//! ([`Xsk::refill`]) or the TX ring ([`Xsk::transmit`]) and only comes back out of the RX
//! ring ([`Xsk::recv`]) or the completion ring ([`Xsk::complete`]), so a frame the kernel
//! owns cannot be read or written: the compiler refuses it. The raw descriptors that
//! xsk-rs works with never leave this module.

use std::{
    io,
    num::NonZeroU32,
    os::fd::RawFd,
    thread,
    time::{Duration, Instant},
};

use crate::ring::{Descriptor, Frames, Rings};

use xsk_rs::{
    CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem,
    config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig},
    socket::Socket,
};

/// A UMEM frame owned by userspace (see [`crate::ring::Frame`]).
pub type Frame = crate::ring::Frame<FrameDesc>;

impl Descriptor for FrameDesc {
    fn addr(&self) -> usize {
        FrameDesc::addr(self)
    }
    fn len(&self) -> usize {
        self.lengths().data()
    }
}

/// Zero-copy preference for binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Zero-copy if the driver supports it, else copy mode.
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode.
    Off,
}

impl ZeroCopy {
    /// The preference to bind with when the XDP program that redirects into the socket
    /// runs in `program` mode. Generic (SKB) XDP hands AF_XDP copies of the skb only, so
    /// a zero-copy bind there cannot work: [`ZeroCopy::Auto`] becomes copy mode at once.
    /// [`ZeroCopy::On`] stays on and fails, so that the user learns why.
    #[must_use]
    pub fn under(self, program: ProgramMode) -> Self {
        match (self, program) {
            (Self::Auto, ProgramMode::Skb) => Self::Off,
            (pref, _) => pref,
        }
    }
}

/// Where the XDP program that redirects into the socket runs; it decides which bind
/// modes can work ([`ZeroCopy::under`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramMode {
    /// In the driver (native XDP): zero-copy if the driver supports it.
    Native,
    /// In the kernel's generic receive path (SKB mode): copy mode only.
    Skb,
}

/// How long [`Xsk::bind`] retries a bind that fails with EBUSY.
pub const BUSY_RETRY: Duration = Duration::from_secs(2);

/// Socket and UMEM sizing.
#[derive(Clone, Copy, Debug)]
pub struct XskConfig {
    /// Frames in the UMEM.
    pub frames: u32,
    /// Bytes per frame (2048 or 4096).
    pub frame_size: u32,
    /// Entries in each of the four rings (power of two).
    pub ring_size: u32,
    /// Zero-copy preference.
    pub zero_copy: ZeroCopy,
    /// Bind with `XDP_USE_NEED_WAKEUP` (sleeping driver; near-zero idle CPU).
    pub need_wakeup: bool,
    /// Back the UMEM with huge pages (`MAP_HUGETLB`; fewer TLB misses). The pages must
    /// be reserved (`vm.nr_hugepages`) and the UMEM a whole number of them.
    pub huge_pages: bool,
}

/// Why a socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XskError {
    /// The configuration is out of range.
    #[error("invalid AF_XDP configuration: {0}")]
    Config(String),
    /// The UMEM could not be created.
    #[error("creating the UMEM ({frames} frames of {frame_size} B) failed: {source}")]
    Umem {
        /// Frames requested.
        frames: u32,
        /// Frame size requested.
        frame_size: u32,
        /// Kernel or libxdp error.
        #[source]
        source: io::Error,
    },
    /// Binding the socket to the queue failed.
    #[error("binding an AF_XDP socket to {iface} queue {queue} ({mode}) failed: {source}")]
    Bind {
        /// Interface name.
        iface: String,
        /// Queue index.
        queue: u32,
        /// "zero-copy" or "copy".
        mode: &'static str,
        /// Kernel error.
        #[source]
        source: io::Error,
    },
}

impl XskError {
    /// Whether the queue already had an AF_XDP socket bound (EBUSY).
    #[must_use]
    pub fn is_busy(&self) -> bool {
        self.raw_os_error() == Some(libc::EBUSY)
    }

    /// The OS error behind a bind failure, if any.
    #[must_use]
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Bind { source, .. } | Self::Umem { source, .. } => source.raw_os_error(),
            Self::Config(_) => None,
        }
    }
}

/// One AF_XDP socket with its own UMEM and frame pool.
pub struct Xsk {
    // Field order is drop order: the rings (and socket) go before the UMEM they map.
    frames: Frames<KernelRings>,
    umem: Umem,
    frame_size: u32,
    capacity: usize,
    zero_copy: bool,
}

/// The kernel's rings of one socket, behind the [`Rings`] seam.
struct KernelRings {
    fill: FillQueue,
    comp: CompQueue,
    rx: RxQueue,
    tx: TxQueue,
    zero_copy: bool,
    need_wakeup: bool,
}

impl std::fmt::Debug for KernelRings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelRings").finish_non_exhaustive()
    }
}

impl Rings for KernelRings {
    type Desc = FrameDesc;

    fn fill_room(&mut self, want: u32) -> u32 {
        self.fill.nb_free(want)
    }

    unsafe fn fill_produce(&mut self, descs: &[FrameDesc]) -> usize {
        // SAFETY: the caller hands over frames of this socket's UMEM that userspace owned
        // and no longer references (the trait's contract).
        unsafe { self.fill.produce(descs) }
    }

    fn fill_kick(&mut self) {
        if self.need_wakeup && self.fill.needs_wakeup() {
            // A sleeping driver needs a kick to see the new fill entries. Failure only
            // delays reception until the next kick, so it is not an error here.
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
    }

    fn rx_consume(&mut self, out: &mut [FrameDesc]) -> usize {
        // SAFETY: the descriptors written into `out` are frames the kernel has finished
        // writing and hands back to userspace; the caller makes each one owned `Frame`.
        unsafe { self.rx.consume(out) }
    }

    fn tx_room(&mut self, want: u32) -> u32 {
        self.tx.nb_free(want)
    }

    unsafe fn tx_produce(&mut self, descs: &[FrameDesc]) -> usize {
        // SAFETY: as for `fill_produce`: owned frames of this UMEM, returned through the
        // completion ring.
        unsafe { self.tx.produce(descs) }
    }

    /// Copy-mode TX only progresses inside `sendto()` (TOOLCHAIN.md), and a sleeping
    /// driver asks for it through need_wakeup.
    fn tx_kick(&mut self) {
        if !self.need_wakeup || self.tx.needs_wakeup() || !self.zero_copy {
            // EAGAIN/EBUSY mean the kernel is still busy with earlier frames; the next
            // kick picks them up.
            let _ = self.tx.wakeup();
        }
    }

    fn comp_consume(&mut self, out: &mut [FrameDesc]) -> usize {
        // SAFETY: descriptors from the completion ring are frames the kernel has finished
        // sending; ownership returns to userspace.
        unsafe { self.comp.consume(out) }
    }
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk")
            .field("frames", &self.frames.frames())
            .field("frame_size", &self.frame_size)
            .field("zero_copy", &self.zero_copy)
            .field("in_use", &self.frames.in_use())
            .finish_non_exhaustive()
    }
}

impl Xsk {
    /// Opens the socket of `iface` queue `queue` that an XDP program running in
    /// `program` mode redirects into: the one way the engine and the load generator
    /// bind. The zero-copy preference is first narrowed to what the program's mode
    /// allows ([`ZeroCopy::under`]), then [`Xsk::open`] tries zero-copy before copy
    /// mode. A bind refused with EBUSY is retried every 50 ms for [`BUSY_RETRY`]: the
    /// kernel releases an earlier AF_XDP socket on the queue asynchronously (a process
    /// restarted right after a crash, or a quick stop and start), and the queue frees
    /// itself shortly after.
    pub fn bind(
        iface: &str,
        queue: u32,
        cfg: &XskConfig,
        program: ProgramMode,
    ) -> Result<Self, XskError> {
        let cfg = XskConfig {
            zero_copy: cfg.zero_copy.under(program),
            ..*cfg
        };
        let deadline = Instant::now() + BUSY_RETRY;
        loop {
            match Self::open(iface, queue, &cfg) {
                Err(e) if e.is_busy() && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// Creates a UMEM and binds a socket to `iface` queue `queue`. With
    /// [`ZeroCopy::Auto`], zero-copy is tried first and copy mode used when the driver
    /// refuses it. The XDP program is never loaded by libxdp: the engine's own program
    /// redirects into the socket once [`Xsk::fd`] is put in its XSKMAP. One attempt,
    /// as asked: [`Xsk::bind`] is the entry point that applies the mode rule and the
    /// EBUSY retry.
    pub fn open(iface: &str, queue: u32, cfg: &XskConfig) -> Result<Self, XskError> {
        let frame_size = FrameSize::new(cfg.frame_size)
            .map_err(|e| XskError::Config(format!("frame size {}: {e}", cfg.frame_size)))?;
        let ring = QueueSize::new(cfg.ring_size)
            .map_err(|e| XskError::Config(format!("ring size {}: {e}", cfg.ring_size)))?;
        let frames = NonZeroU32::new(cfg.frames)
            .ok_or_else(|| XskError::Config("the UMEM needs at least one frame".into()))?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(frame_size)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| XskError::Config(e.to_string()))?;
        let (umem, descs) =
            Umem::new(umem_cfg, frames, cfg.huge_pages).map_err(|e| XskError::Umem {
                frames: cfg.frames,
                frame_size: cfg.frame_size,
                source: io::Error::other(e.to_string()),
            })?;
        let name: Interface = iface
            .parse()
            .map_err(|_| XskError::Config(format!("bad interface name {iface:?}")))?;
        let attempts: &[bool] = match cfg.zero_copy {
            ZeroCopy::Auto => &[true, false],
            ZeroCopy::On => &[true],
            ZeroCopy::Off => &[false],
        };
        let mut last_err = XskError::Config("no bind attempt was made".into());
        for &zc in attempts {
            let mut bind = if zc {
                BindFlags::XDP_ZEROCOPY
            } else {
                BindFlags::XDP_COPY
            };
            if cfg.need_wakeup {
                bind |= BindFlags::XDP_USE_NEED_WAKEUP;
            }
            let sock_cfg = SocketConfig::builder()
                .rx_queue_size(ring)
                .tx_queue_size(ring)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(bind)
                .build();
            // SAFETY: each (interface, queue) pair is bound once per engine: the caller
            // opens one socket per queue, and this UMEM is not shared with another socket.
            match unsafe { Socket::new(sock_cfg, &umem, &name, queue) } {
                Ok((tx, rx, Some((fill, comp)))) => {
                    let rings = KernelRings {
                        fill,
                        comp,
                        rx,
                        tx,
                        zero_copy: zc,
                        need_wakeup: cfg.need_wakeup,
                    };
                    return Ok(Self {
                        frames: Frames::new(rings, descs, cfg.ring_size as usize),
                        umem,
                        frame_size: cfg.frame_size,
                        capacity: umem_cfg.mtu() as usize,
                        zero_copy: zc,
                    });
                }
                Ok((_, _, None)) => {
                    return Err(XskError::Config(
                        "libxdp returned no fill/completion rings".into(),
                    ));
                }
                Err(e) => {
                    let source = std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<io::Error>())
                        .and_then(io::Error::raw_os_error)
                        .map_or_else(
                            || io::Error::other(e.to_string()),
                            io::Error::from_raw_os_error,
                        );
                    last_err = XskError::Bind {
                        iface: iface.to_owned(),
                        queue,
                        mode: if zc { "zero-copy" } else { "copy" },
                        source,
                    };
                }
            }
        }
        Err(last_err)
    }

    /// The socket's file descriptor, for the XSKMAP and for `poll`.
    #[must_use]
    pub fn fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self.frames.rings().rx.fd())
    }

    /// The socket's `SO_INCOMING_NAPI_ID`: the NAPI context its packets came through
    /// (0 before any packet, or when the driver's queue has no id).
    pub fn napi_id(&self) -> io::Result<i32> {
        let mut value: i32 = 0;
        let mut len = size_of::<i32>() as libc::socklen_t;
        // SAFETY: `value` and `len` live for the call; `len` holds `value`'s size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_INCOMING_NAPI_ID,
                (&raw mut value).cast(),
                &raw mut len,
            )
        };
        if rc == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// A duplicate of the socket's descriptor (for reading statistics from another thread).
    pub fn try_clone_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        // SAFETY: the descriptor belongs to this live socket for the whole borrow, which
        // ends as soon as it is duplicated.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd()) };
        fd.try_clone_to_owned()
    }

    /// Whether the socket is bound in zero-copy mode.
    #[must_use]
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Frames in the UMEM.
    #[must_use]
    pub fn frames(&self) -> u32 {
        self.frames.frames()
    }

    /// Frames currently out of the pool (in rings, in the kernel, or held by userspace).
    #[must_use]
    pub fn frames_in_use(&self) -> u32 {
        self.frames.in_use()
    }

    /// Highest [`Xsk::frames_in_use`] seen.
    #[must_use]
    pub fn high_water(&self) -> u32 {
        self.frames.high_water()
    }

    /// Descriptors on the fill ring right now (frames the kernel can receive into).
    pub fn fill_level(&mut self) -> u32 {
        let size = self.frames.ring_size();
        size.saturating_sub(self.frames.rings_mut().fill.nb_free_exact())
    }

    /// Descriptors on the TX ring that the kernel has not taken yet (copy mode takes
    /// them only inside a kick, at most 32 per kick).
    pub fn tx_ring_level(&mut self) -> u32 {
        let size = self.frames.ring_size();
        size.saturating_sub(self.frames.rings_mut().tx.nb_free_exact())
    }

    /// Frames in the TX path not yet completed.
    #[must_use]
    pub fn tx_outstanding(&self) -> u32 {
        self.frames.tx_outstanding()
    }

    /// Moves as many pool frames into the fill ring as it has room for, keeping
    /// `reserve` frames in the pool for transmissions the worker originates. Returns how
    /// many were given to the kernel.
    pub fn refill(&mut self, reserve: usize) -> usize {
        self.frames.refill(reserve)
    }

    /// Takes up to `max` received frames out of the RX ring into `out`.
    pub fn recv(&mut self, out: &mut Vec<Frame>, max: usize) -> usize {
        self.frames.recv(out, max)
    }

    /// Read access to a frame's packet bytes.
    #[must_use]
    pub fn data(&self, frame: &Frame) -> &[u8] {
        // SAFETY: `frame` is owned by userspace (the type guarantees the kernel does not
        // hold it) and belongs to this UMEM (frames never move between sockets).
        unsafe { self.umem.data(&frame.desc) }.contents()
    }

    /// Write access to a frame's whole data area (its capacity, not just the current
    /// packet) and its length: `f(buffer, len)` returns the new packet length.
    pub fn with_buffer<R>(
        &self,
        frame: &mut Frame,
        f: impl FnOnce(&mut [u8], usize) -> (usize, R),
    ) -> R {
        let len = frame.len();
        // SAFETY: as in `data`; `&mut Frame` guarantees this is the only access to it.
        let mut data = unsafe { self.umem.data_mut(&mut frame.desc) };
        let mut cursor = data.cursor();
        let cap = cursor.buf_len();
        cursor.set_pos(cap);
        let (buf_len, out) = {
            let buf = data.contents_mut();
            let (new_len, out) = f(buf, len);
            (new_len, out)
        };
        data.cursor().set_pos(buf_len.min(cap));
        out
    }

    /// Bytes a frame's data segment can hold (frame size less `XDP_PACKET_HEADROOM`).
    #[must_use]
    pub fn frame_capacity(&self) -> usize {
        self.capacity
    }

    /// Puts frames on the TX ring (as many as fit) and kicks the kernel. Frames that did
    /// not fit stay in `frames` (front first) for the next call.
    pub fn transmit(&mut self, frames: &mut Vec<Frame>) -> usize {
        self.frames.transmit(frames)
    }

    /// Reaps the completion ring, returning sent frames to the pool.
    pub fn complete(&mut self) -> usize {
        self.frames.complete()
    }

    /// Kicks TX again while frames are outstanding (see [`Frames::kick`]).
    pub fn kick_tx(&mut self) {
        self.frames.kick();
    }

    /// Returns a frame to the pool.
    pub fn release(&mut self, frame: Frame) {
        self.frames.release(frame);
    }

    /// Takes a free frame from the pool, to originate a packet.
    pub fn alloc(&mut self) -> Option<Frame> {
        self.frames.alloc()
    }

    /// Sleeps until the RX ring has frames or `timeout_ms` passes (`poll(2)`). With
    /// busy polling set on the socket, a zero timeout runs one busy-poll round.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<bool> {
        self.frames.rings_mut().rx.poll(timeout_ms)
    }

    /// The kernel's `XDP_STATISTICS` for this socket.
    pub fn statistics(&self) -> io::Result<xsk_rs::socket::XdpStatistics> {
        self.frames.rings().rx.fd().xdp_statistics()
    }
}
