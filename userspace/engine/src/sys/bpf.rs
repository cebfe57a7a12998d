//! XDP attachment queries and forced detach through libbpf (already linked through
//! xsk-rs): what program is attached to an interface, in which mode, what the driver
//! supports, and removal of a stale attachment.

use std::io;

use libbpf_sys as bpf;

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
