//! BPF map names and the plain-old-data types stored in them.
//!
//! The XDP program declares maps with these names; the loader finds them by name.

/// XSKMAP: receive queue index → AF_XDP socket.
pub const XSKS: &str = "XRUDP_XSKS";
/// Array of [`PORT_WORDS`] `u64`: a bitmap of the UDP destination ports to steer.
pub const PORTS: &str = "XRUDP_PORTS";
/// Array of one [`Config`].
pub const CONFIG: &str = "XRUDP_CONFIG";
/// Per-CPU array of `u64` counters indexed by [`Counter`].
pub const COUNTERS: &str = "XRUDP_COUNTERS";
/// Array of [`crate::admit::Session`]: the live sessions the workers publish (the
/// session allow-list), one entry per connection slot of each queue, laid out as
/// [`Config::sessions`] says ([`crate::admit::SessionSlots`]). Sized at load from
/// `--max-connections` × (highest queue id + 1), so its memory is committed when the
/// engine starts.
pub const SESSIONS: &str = "XRUDP_SESSIONS";
/// LRU per-CPU hash [`crate::admit::Addr`] (IPv6 cut to its /64) → `u64` GCRA state:
/// the per-source token buckets, [`SOURCE_ENTRIES`] sources.
pub const SOURCES: &str = "XRUDP_SOURCES";
/// Per-CPU array of [`BUDGET_SLOTS`] `u64` GCRA states: the handshake budget
/// ([`BUDGET_HELLO`]) and the migration budget ([`BUDGET_MIGRATION`]) of each CPU.
pub const HELLO_BUDGET: &str = "XRUDP_HELLO_BUDGET";
/// Entries of [`HELLO_BUDGET`].
pub const BUDGET_SLOTS: u32 = 2;
/// The slot of [`HELLO_BUDGET`] that holds the handshake budget.
pub const BUDGET_HELLO: u32 = 0;
/// The slot of [`HELLO_BUDGET`] that holds the migration budget.
pub const BUDGET_MIGRATION: u32 = 1;

/// Whether two map names are equal, in a `const` context: the eBPF crate asserts at
/// compile time that each map's identifier equals its constant here.
#[must_use]
pub const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Largest number of receive queues the XSKMAP holds.
pub const MAX_QUEUES: u32 = 256;
/// Number of `u64` words in the port bitmap (65536 ports / 64).
pub const PORT_WORDS: u32 = 1024;
/// Sources tracked by the per-source buckets (least recently seen evicted first).
pub const SOURCE_ENTRIES: u32 = 65_536;
/// Session map size compiled into the object; the loader sets the real size.
pub const DEFAULT_SESSIONS: u32 = 1024;

/// Returns the bitmap word index and bit mask for `port`.
#[must_use]
pub const fn port_slot(port: u16) -> (u32, u64) {
    ((port >> 6) as u32, 1u64 << (port & 63))
}

/// Run-time settings of the XDP program, written by the loader before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Bit set of `FLAG_*`.
    pub flags: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// The session allow-list's layout.
    pub sessions: crate::admit::SessionSlots,
    /// Per-source bucket ([`crate::admit::Rate`]): handshakes and migration attempts.
    pub source: crate::admit::Rate,
    /// Handshake budget of each CPU ([`crate::admit::Rate`]): first hellos.
    pub hello: crate::admit::Rate,
    /// Migration budget of each CPU ([`crate::admit::Rate`]): packets of a live encrypted
    /// session from an address it does not have, whatever their source.
    pub migration: crate::admit::Rate,
}

impl Config {
    /// Drop port-matched datagrams that cannot be RUDP (short, bad magic/version/type).
    /// Off for raw-UDP applications such as `--app udp-echo`.
    pub const FLAG_RUDP_FILTER: u32 = 1;
    /// Admission control (with the RUDP pre-filter): the session allow-list, the
    /// per-source buckets, the handshake budget and the migration budget
    /// (`--admission on`).
    pub const FLAG_ADMISSION: u32 = 2;

    /// Whether the RUDP pre-filter is on.
    #[must_use]
    pub const fn rudp_filter(&self) -> bool {
        self.flags & Self::FLAG_RUDP_FILTER != 0
    }

    /// Whether admission control is on (it needs the RUDP pre-filter too).
    #[must_use]
    pub const fn admission(&self) -> bool {
        let both = Self::FLAG_RUDP_FILTER | Self::FLAG_ADMISSION;
        self.flags & both == both
    }
}

#[cfg(feature = "user")]
// SAFETY: `Config` is `#[repr(C)]`, `Copy`, four `u32` then six `u64` (8-byte aligned
// at offset 16: no padding), and every bit pattern is a valid value.
#[allow(unsafe_code)]
unsafe impl aya::Pod for Config {}

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident = $label:literal, )*) => {
        /// Per-CPU counters kept by the XDP program; the value is the index in [`COUNTERS`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum Counter { $( $(#[$doc])* $name, )* }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[ $( Counter::$name, )* ];

            /// The counter's stable snake_case name, as shown by `xrudp stats`.
            #[must_use]
            pub const fn label(self) -> &'static str {
                match self { $( Counter::$name => $label, )* }
            }
        }
    };
}

counters! {
    /// Every frame the program ran on.
    Seen = "seen",
    /// Port-matched frames redirected to an AF_XDP socket.
    Redirected = "redirected",
    /// Frames passed to the kernel: not for a steered port (ARP, ICMP, TCP, other ports, fragments).
    Passed = "passed",
    /// Port-matched frames passed to the kernel because no socket is bound on their queue.
    PassedNoSocket = "passed_no_socket",
    /// Dropped: headers truncated (Ethernet, VLAN, IP or UDP shorter than its fixed size).
    DropTruncated = "drop_truncated",
    /// Dropped: UDP length field smaller than 8 or larger than the bytes present.
    DropBadUdpLength = "drop_bad_udp_length",
    /// Dropped: UDP payload shorter than the RUDP header.
    DropShort = "drop_short",
    /// Dropped: RUDP magic wrong.
    DropBadMagic = "drop_bad_magic",
    /// Dropped: RUDP version not spoken (and not a hello).
    DropBadVersion = "drop_bad_version",
    /// Dropped: RUDP packet type undefined.
    DropBadType = "drop_bad_type",
    /// Admission: dropped, a non-handshake packet whose connection id is not live on
    /// its queue.
    DropUnknownSession = "drop_unknown_session",
    /// Admission: dropped, a live session's packet from another address, and the
    /// session cannot migrate (unencrypted).
    DropWrongAddress = "drop_wrong_address",
    /// Admission: dropped, the source's bucket (`--source-rate`, `--source-burst`) was
    /// empty (handshakes and migration attempts).
    DropRateLimited = "drop_rate_limited",
    /// Admission: dropped, a first hello past this CPU's handshake budget (`--hello-rate`).
    DropHelloBudget = "drop_hello_budget",
    /// Admission: dropped, a migration attempt past this CPU's migration budget
    /// (`--migration-rate`): spoofed packets carrying guessed live connection ids.
    DropMigrationBudget = "drop_migration_budget",
    /// Admission: a live encrypted session's packet from a new address, let through
    /// (within its source's budget) so that the server can validate the new path.
    MigrationAttempts = "migration_attempts",
}

impl Counter {
    /// Number of counters, the size of the per-CPU array.
    pub const COUNT: u32 = Self::ALL.len() as u32;
}
