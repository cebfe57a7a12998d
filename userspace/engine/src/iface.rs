//! Network interfaces: index, active receive queues, NUMA node, driver.

use std::{fs, path::Path};

use crate::sys;

/// An interface the engine can attach to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Interface {
    /// Name, e.g. `eth0`.
    pub name: String,
    /// Kernel interface index.
    pub index: u32,
    /// Number of active receive queues (queue ids `0..rx_queues`).
    pub rx_queues: u32,
    /// NUMA node of the device, when the system reports one.
    pub numa_node: Option<u32>,
    /// Driver name, when known (`veth`, `ice`, `mlx5_core`, ...).
    pub driver: Option<String>,
}

/// Why an interface cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IfaceError {
    /// No interface of that name in this network namespace.
    #[error(
        "no network interface named {name:?} in this network namespace; \
         list them with `ip -br link` (inside a namespace: `ip netns exec NS ip -br link`)"
    )]
    NotFound {
        /// The name asked for.
        name: String,
    },
}

impl Interface {
    /// Looks up `name` in the calling thread's network namespace.
    pub(crate) fn lookup(name: &str) -> Result<Self, IfaceError> {
        let index = sys::if_index(name).ok_or_else(|| IfaceError::NotFound {
            name: name.to_owned(),
        })?;
        Ok(Self {
            name: name.to_owned(),
            index,
            rx_queues: active_rx_queues(name),
            numa_node: numa_node(name),
            driver: driver(name),
        })
    }
}

/// Active receive queues: what the driver reports through ethtool (combined + rx
/// channels), else the `rx-N` directories in sysfs (the kernel's `real_num_rx_queues`,
/// which is also right for veth created with `numrxqueues`), else 1.
fn active_rx_queues(name: &str) -> u32 {
    let sysfs = sysfs_rx_queues(name);
    match sys::ethtool_channels(name) {
        // veth reports rx_count = real_num_rx_queues; NICs report combined channels.
        Some(ch) if ch.combined + ch.rx > 0 => {
            let n = ch.combined.max(ch.rx);
            // A driver's channel count can exceed what sysfs shows only transiently;
            // prefer the smaller, both are queue ids the kernel accepts.
            sysfs.map_or(n, |s| s.min(n).max(1))
        }
        _ => sysfs.unwrap_or(1),
    }
}

fn sysfs_rx_queues(name: &str) -> Option<u32> {
    let dir = Path::new("/sys/class/net").join(name).join("queues");
    let n = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok().filter(|&n| n > 0)
}

fn numa_node(name: &str) -> Option<u32> {
    let s = fs::read_to_string(
        Path::new("/sys/class/net")
            .join(name)
            .join("device/numa_node"),
    )
    .ok()?;
    // -1 means "no NUMA information".
    s.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

fn driver(name: &str) -> Option<String> {
    let link = fs::read_link(Path::new("/sys/class/net").join(name).join("device/driver")).ok();
    if let Some(l) = link {
        return l.file_name().map(|f| f.to_string_lossy().into_owned());
    }
    // Virtual devices have no `device/`; uevent's DEVTYPE names veth, bridge, ...
    let uevent = fs::read_to_string(Path::new("/sys/class/net").join(name).join("uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVTYPE=").map(str::to_owned))
}
