//! xrudp: an AF_XDP kernel-bypass packet engine for reliable-UDP game servers.
//!
//! The engine attaches an XDP program (`ebpf/`) that steers the game's UDP ports into
//! one AF_XDP socket per NIC queue, and runs one pinned worker per queue that receives,
//! validates and answers datagrams in the UMEM. Modules:
//! - [`cli`]: the `xrudp` command line;
//! - [`engine`]: `xrudp attach` — load, attach, bind, run workers, tear down;
//! - [`loader`]: the XDP program and its maps (aya);
//! - [`iface`]: interface discovery (active queues, NUMA node, driver);
//! - [`worker`]: the per-queue loop (apps `discard` and `udp-echo`);
//! - [`busy_poll`]: `--busy-poll` socket options and interface knobs, restored on exit;
//! - [`control`] and [`runtime`]: how a running engine publishes its figures;
//! - [`stats`]: `xrudp stats` (rates, table, JSON) and the Prometheus endpoint;
//! - [`sys`]: the only module with `unsafe` — AF_XDP rings, libbpf, raw syscalls.
#![deny(unsafe_code)]

pub mod api;
pub mod bench;
pub mod busy_poll;
pub mod cli;
pub mod control;
pub mod engine;
pub mod iface;
pub mod loader;
mod neigh;
pub mod runtime;
pub mod service;
mod socket_backend;
pub mod stats;
pub mod sys;
pub mod telemetry;
pub mod worker;
mod xdp_service;
