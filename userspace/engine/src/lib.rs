//! xrudp: an AF_XDP kernel-bypass packet engine for reliable-UDP game servers.
//!
//! The engine attaches an XDP program (`ebpf/`) that steers the game's UDP ports into
//! one AF_XDP socket per NIC queue, and runs one pinned worker per queue that receives,
//! validates and answers datagrams in the UMEM. docs/ARCHITECTURE.md draws the layers.
//! Modules, each depending only on those listed after it:
//! - [`cli`]: the `xrudp` command line (`xrudp bench` is the `xrudp-bench` crate, given
//!   the engine's XDP program to steer its AF_XDP load);
//! - [`api`]: embedding the engine in game code;
//! - [`engine`]: `xrudp attach` — build the ports (AF_XDP sockets or UDP sockets) and
//!   the jobs, start the workers, tear down;
//! - [`agones`]: `xrudp attach --agones` — the Agones SDK on its own thread: Ready,
//!   health pings driven by the workers' heartbeats, the connection counter, Allocated and
//!   Shutdown (a drain);
//! - [`stats`]: `xrudp stats` (rates, table, JSON) and the Prometheus endpoint;
//! - [`control`] and [`runtime`]: the control socket (server and client) and where a
//!   running engine announces itself;
//! - `service` (private): the protocol and its applications (echo, relay, embedded);
//! - `drive` (private): the one worker loop, its ports (AF_XDP, UDP) and the raw apps
//!   (`discard`, `udp-echo`);
//! - [`loader`]: the XDP program and its maps (aya);
//! - [`privileges`]: the capabilities the AF_XDP backend needs, checked before it
//!   starts and given up once it is attached;
//! - `iface`, `busy_poll`, `neigh` (private): interface discovery, `--busy-poll` knobs,
//!   the senders' link-layer routes;
//! - [`telemetry`]: counters, latency histograms, published figures and the snapshot
//!   schema — a leaf that the workers write and every reader reads;
//! - [`sys`]: the only module with `unsafe` — libbpf and raw syscalls; it re-exports
//!   `xrudp-xdp` (AF_XDP rings, `recvmmsg`/`sendmmsg`, epoll), the one other crate with
//!   `unsafe`.
#![deny(unsafe_code)]

pub mod agones;
pub mod api;
mod busy_poll;
pub mod cli;
pub mod control;
mod drive;
pub mod engine;
mod iface;
pub mod loader;
mod neigh;
pub mod privileges;
pub mod runtime;
mod service;
pub mod stats;
pub mod sys;
pub mod telemetry;
