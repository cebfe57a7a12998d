//! XDP attachment queries and forced detach through libbpf (already linked through
//! xsk-rs): what program is attached to an interface, in which mode, what the driver
//! supports, and removal of a stale attachment.

use std::io;

use libbpf_sys as bpf;
use xrudp_common::admit::{Peer, Session, SessionKey, SessionSlots};

/// Mode an XDP program is attached in (`XDP_ATTACHED_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native, in the driver.
    Driver,
    /// Generic, in the kernel's receive path (SKB mode).
    Skb,
    /// Offloaded to the NIC.
    Hardware,
    /// Several programs in several modes.
    Multi,
}

/// What `bpf_xdp_query` reports for an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpQuery {
    /// The attached program's id, 0 when none.
    pub prog_id: u32,
    /// The attach mode, `None` when nothing is attached.
    pub mode: Option<AttachMode>,
    /// `NETDEV_XDP_ACT_*` feature bits the driver advertises (kernel 6.3+; 0 if unknown).
    pub features: u64,
}

/// `NETDEV_XDP_ACT_XSK_ZEROCOPY`: the driver supports AF_XDP zero-copy.
pub const XDP_ACT_XSK_ZEROCOPY: u64 = 1 << 5;
/// `NETDEV_XDP_ACT_NDO_XMIT`: the driver implements native XDP.
pub const XDP_ACT_BASIC: u64 = 1 << 0;

/// Queries the XDP attachment and driver features of `ifindex`.
pub fn xdp_query(ifindex: u32) -> io::Result<XdpQuery> {
    let mut opts = bpf::bpf_xdp_query_opts {
        sz: size_of::<bpf::bpf_xdp_query_opts>() as _,
        ..Default::default()
    };
    let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    // SAFETY: `opts` is a properly sized, initialised opts struct that outlives the call.
    let rc = unsafe { bpf::bpf_xdp_query(ifindex, 0, &raw mut opts) };
    if rc < 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    let mode = match u32::from(opts.attach_mode) {
        bpf::XDP_ATTACHED_DRV => Some(AttachMode::Driver),
        bpf::XDP_ATTACHED_SKB => Some(AttachMode::Skb),
        bpf::XDP_ATTACHED_HW => Some(AttachMode::Hardware),
        bpf::XDP_ATTACHED_MULTI => Some(AttachMode::Multi),
        _ => None,
    };
    Ok(XdpQuery {
        prog_id: opts.prog_id,
        mode,
        features: opts.feature_flags,
    })
}

/// Removes whatever XDP program is attached to `ifindex`: first a bpf_link owning the
/// attachment (found by walking the kernel's links), then any netlink attachment in
/// every mode. Returns how many attachments were removed.
pub fn xdp_force_detach(ifindex: u32) -> io::Result<u32> {
    let mut removed = 0;
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: `next` is a valid out-pointer for the call.
        if unsafe { bpf::bpf_link_get_next_id(id, &raw mut next) } != 0 {
            break;
        }
        id = next;
        // SAFETY: plain syscall wrapper; a negative return is an error, else an owned fd.
        let fd = unsafe { bpf::bpf_link_get_fd_by_id(id) };
        if fd < 0 {
            continue;
        }
        // SAFETY: `fd` was just returned to us and is owned here.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let mut info = bpf::bpf_link_info::default();
        let mut len = size_of::<bpf::bpf_link_info>() as u32;
        // SAFETY: `info` is a zeroed bpf_link_info of `len` bytes that the kernel fills.
        let rc = unsafe { bpf::bpf_obj_get_info_by_fd(raw, (&raw mut info).cast(), &raw mut len) };
        if rc != 0 || info.type_ != bpf::BPF_LINK_TYPE_XDP {
            continue;
        }
        // SAFETY: for a link of type XDP the kernel filled the `xdp` member of the union.
        let link_if = unsafe { info.__bindgen_anon_1.xdp.ifindex };
        if link_if == ifindex {
            // SAFETY: `raw` is a valid link fd owned by `fd`.
            let rc = unsafe { bpf::bpf_link_detach(raw) };
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(-rc));
            }
            removed += 1;
        }
    }
    let ifindex_c =
        i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    for flags in [
        bpf::XDP_FLAGS_DRV_MODE,
        bpf::XDP_FLAGS_SKB_MODE,
        bpf::XDP_FLAGS_HW_MODE,
    ] {
        if xdp_query(ifindex)?.prog_id == 0 {
            break;
        }
        // SAFETY: a null opts pointer is allowed by bpf_xdp_detach.
        let rc = unsafe { bpf::bpf_xdp_detach(ifindex_c, flags, std::ptr::null()) };
        if rc == 0 {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The XDP program's session allow-list (`XRUDP_SESSIONS`), as a worker updates it: one
/// `bpf()` syscall per connection event (admitted, migrated, closed), never per packet.
/// Each session has the array entry its id names ([`SessionSlots`]).
#[derive(Debug)]
pub struct SessionMap {
    fd: std::os::fd::OwnedFd,
    slots: SessionSlots,
}

impl SessionMap {
    /// The map behind `fd` (a descriptor of the `XRUDP_SESSIONS` array), laid out as
    /// `slots` says.
    #[must_use]
    pub fn new(fd: std::os::fd::OwnedFd, slots: SessionSlots) -> Self {
        Self { fd, slots }
    }

    /// The entry index of `key`, or an error naming why it has none.
    fn index(&self, key: SessionKey) -> io::Result<u32> {
        self.slots.index(key).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "connection id {:#x} of queue {} names no slot of the session allow-list \
                     ({} slots per queue)",
                    key.conn_id, key.queue, self.slots.slots
                ),
            )
        })
    }

    /// Publishes (or moves) a live session.
    pub fn insert(&self, key: &SessionKey, peer: &Peer) -> io::Result<()> {
        if key.conn_id == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "connection id 0 marks a free slot; the server never issues it",
            ));
        }
        self.write(
            self.index(*key)?,
            &Session {
                conn_id: key.conn_id,
                peer: *peer,
            },
        )
    }

    /// Withdraws a session; one that is not there (its slot free, or holding another
    /// id by now) is not an error, and the slot is left as it is.
    pub fn remove(&self, key: &SessionKey) -> io::Result<()> {
        let Ok(index) = self.index(*key) else {
            return Ok(());
        };
        if self.read(index)?.conn_id != key.conn_id {
            return Ok(());
        }
        self.write(index, &Session::default())
    }

    fn read(&self, index: u32) -> io::Result<Session> {
        use std::os::fd::AsRawFd as _;
        let mut out = Session::default();
        // SAFETY: `index` is a `u32` (the array's key) and `out` a `#[repr(C)]` value of
        // exactly the map's value size; both outlive the call.
        let rc = unsafe {
            bpf::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                (&raw const index).cast(),
                (&raw mut out).cast(),
            )
        };
        if rc < 0 {
            return Err(io::Error::from_raw_os_error(-rc));
        }
        Ok(out)
    }

    fn write(&self, index: u32, entry: &Session) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: `index` is a `u32` (the array's key) and `entry` a `#[repr(C)]` value
        // of exactly the map's value size, alive for the call; the fd is owned by `self`.
        let rc = unsafe {
            bpf::bpf_map_update_elem(
                self.fd.as_raw_fd(),
                (&raw const index).cast(),
                std::ptr::from_ref(entry).cast(),
                u64::from(bpf::BPF_ANY),
            )
        };
        if rc < 0 {
            return Err(io::Error::from_raw_os_error(-rc));
        }
        Ok(())
    }
}

/// Every entry of the session allow-list of the xrudp program attached to `ifindex` (in
/// the caller's network namespace), read from the kernel: for tests and diagnostics.
pub fn attached_sessions(ifindex: u32) -> io::Result<Vec<(SessionKey, Peer)>> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    let prog_id = xdp_query(ifindex)?.prog_id;
    if prog_id == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    // SAFETY: plain syscall wrapper; a negative return is an error, else an owned fd.
    let prog = unsafe { bpf::bpf_prog_get_fd_by_id(prog_id) };
    if prog < 0 {
        return Err(io::Error::from_raw_os_error(-prog));
    }
    // SAFETY: `prog` was just returned to us and is owned here.
    let prog = unsafe { OwnedFd::from_raw_fd(prog) };
    let mut ids = [0u32; 16];
    let mut info = bpf::bpf_prog_info {
        nr_map_ids: ids.len() as u32,
        map_ids: ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut len = size_of::<bpf::bpf_prog_info>() as u32;
    // SAFETY: `info` is a bpf_prog_info of `len` bytes whose `map_ids` points at `ids`,
    // room for `nr_map_ids` ids; both outlive the call.
    let rc = unsafe {
        bpf::bpf_obj_get_info_by_fd(prog.as_raw_fd(), (&raw mut info).cast(), &raw mut len)
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    let n = (info.nr_map_ids as usize).min(ids.len());
    let (mut sessions, mut config) = (None, None);
    for &id in &ids[..n] {
        // SAFETY: plain syscall wrapper; a negative return is an error, else an owned fd.
        let fd = unsafe { bpf::bpf_map_get_fd_by_id(id) };
        if fd < 0 {
            continue;
        }
        // SAFETY: `fd` was just returned to us and is owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut minfo = bpf::bpf_map_info::default();
        let mut mlen = size_of::<bpf::bpf_map_info>() as u32;
        // SAFETY: `minfo` is a zeroed bpf_map_info of `mlen` bytes that the kernel fills.
        let rc = unsafe {
            bpf::bpf_obj_get_info_by_fd(fd.as_raw_fd(), (&raw mut minfo).cast(), &raw mut mlen)
        };
        if rc != 0 {
            continue;
        }
        let name: Vec<u8> = minfo
            .name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c.cast_unsigned())
            .collect();
        if name == xrudp_common::maps::SESSIONS.as_bytes() {
            sessions = Some((fd, minfo.max_entries));
        } else if name == xrudp_common::maps::CONFIG.as_bytes() {
            config = Some(fd);
        }
    }
    let (Some((sessions, entries)), Some(config)) = (sessions, config) else {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    };
    let mut cfg = xrudp_common::maps::Config::default();
    let zero = 0u32;
    // SAFETY: `zero` is the array's `u32` key and `cfg` a `#[repr(C)]` value of exactly
    // the config map's value size; both outlive the call.
    let rc = unsafe {
        bpf::bpf_map_lookup_elem(
            config.as_raw_fd(),
            (&raw const zero).cast(),
            (&raw mut cfg).cast(),
        )
    };
    if rc < 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    let map = SessionMap::new(sessions, cfg.sessions);
    let mut out = Vec::new();
    for index in 0..entries {
        let s = map.read(index)?;
        if s.conn_id != 0 {
            out.push((map.slots.key(index, s.conn_id), s.peer));
        }
    }
    Ok(out)
}
