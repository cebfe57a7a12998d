//! A small authoritative game server on the embedding API: a fixed 30 Hz tick, player
//! inputs in, one state update broadcast to every player per tick.
//!
//! ```text
//! sudo cargo run --release -p xrudp --example game_loop -- eth0 7777 [seconds]
//! ```
//! Clients (see `userspace/client/examples/chat_client.rs`) send inputs of 8 bytes on
//! channel 2 (unreliable): two little-endian `f32`s, a movement direction. Every tick
//! each player gets the positions of all players on channel 3 (unreliable sequenced:
//! a stale update is never delivered after a newer one).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use xrudp::api::{ConnId, Event, GameServer, ServerOptions};

const TICK: Duration = Duration::from_millis(33);
const INPUT: u8 = 2;
const STATE: u8 = 3;

#[derive(Clone, Copy, Default)]
struct Player {
    x: f32,
    y: f32,
    dx: f32,
    dy: f32,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(iface), Some(port)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: game_loop IFACE PORT [SECONDS]");
    };
    let port: u16 = port.parse()?;
    let seconds: Option<u64> = args.next().map(|s| s.parse()).transpose()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let server = GameServer::start(&ServerOptions::new(&iface, port))?;
    println!(
        "serving {iface}:{port} at {} Hz; Ctrl-C to stop",
        1000 / TICK.as_millis()
    );
    let mut players: HashMap<ConnId, Player> = HashMap::new();
    let mut ids: Vec<ConnId> = Vec::new();
    let mut state = Vec::new();
    let start = Instant::now();
    let mut next = start + TICK;
    while !stop.load(Relaxed) && seconds.is_none_or(|s| start.elapsed() < Duration::from_secs(s)) {
        // Inputs and joins/leaves, as they arrived since the last tick.
        while let Some(ev) = server.poll_event() {
            match ev {
                Event::Connected { conn, addr, .. } => {
                    println!("{addr} joined");
                    players.insert(conn, Player::default());
                }
                Event::Disconnected { conn, reason } => {
                    println!("a player left: {reason:?}");
                    players.remove(&conn);
                }
                Event::Message {
                    conn,
                    channel: INPUT,
                    data,
                } if data.len() == 8 => {
                    if let Some(p) = players.get_mut(&conn) {
                        p.dx = f32::from_le_bytes([data[0], data[1], data[2], data[3]])
                            .clamp(-1.0, 1.0);
                        p.dy = f32::from_le_bytes([data[4], data[5], data[6], data[7]])
                            .clamp(-1.0, 1.0);
                    }
                }
                Event::Message { .. } => {}
            }
        }
        // Simulate one tick and fan the state out: one shared copy for everyone.
        state.clear();
        ids.clear();
        for (id, p) in &mut players {
            p.x += p.dx * TICK.as_secs_f32();
            p.y += p.dy * TICK.as_secs_f32();
            state.extend_from_slice(&p.x.to_le_bytes());
            state.extend_from_slice(&p.y.to_le_bytes());
            ids.push(*id);
        }
        if !ids.is_empty() && server.broadcast(&ids, STATE, &state).is_err() {
            eprintln!("engine backpressure: this tick's update was skipped");
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += TICK;
    }
    println!("stopping: {} players get a shutdown notice", players.len());
    server.shutdown();
    Ok(())
}
