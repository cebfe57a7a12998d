//! A line chat over xrudp: connects to ADDR, sends each stdin line on the server's first
//! reliable-ordered channel, and prints every message that arrives. End with Ctrl-D.
//!
//! ```text
//! cargo run -p xrudp-client --example chat_client -- 127.0.0.1:7777
//! ```

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::mpsc::{self, TryRecvError};
use std::time::Duration;

use xrudp_client::{ChannelKind, ClientConfig, ClientEvent, Connection, SendError};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: chat_client ADDR   (for example 127.0.0.1:7777)");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not an address like 127.0.0.1:7777: {e}"))?;
    let mut conn = Connection::connect_blocking(
        addr,
        ClientConfig::default(),
        &xrudp_client::Protection::default(),
        Duration::from_secs(10),
    )?;
    let channel = conn
        .channels()
        .iter()
        .position(|k| *k == ChannelKind::ReliableOrdered)
        .ok_or("the server offers no reliable-ordered channel")? as u8;
    eprintln!(
        "connected to {addr} from {}; type lines, Ctrl-D to quit",
        conn.local_addr()?
    );

    // Stdin blocks, so a thread reads it and hands lines over.
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut outbox: Option<String> = None;
    let mut stdin_open = true;
    // Rounds of 20 ms to wait for the last lines to be acknowledged after stdin ends.
    let mut linger = 250;
    loop {
        conn.wait(Duration::from_millis(20))?;
        while let Some(event) = conn.next_event() {
            match event {
                ClientEvent::Message { channel, data } => {
                    println!("[{channel}] {}", String::from_utf8_lossy(&data));
                    conn.recycle(data);
                }
                ClientEvent::Disconnected { reason } => {
                    eprintln!("disconnected: {reason:?}");
                    return Ok(());
                }
                ClientEvent::Draining { redirect } => match redirect {
                    Some(addr) => eprintln!("the server is going away; reconnect to {addr}"),
                    None => eprintln!("the server is going away; reconnect later"),
                },
                ClientEvent::Connected => {}
            }
        }
        if !stdin_open {
            linger -= 1;
            if (outbox.is_none() && conn.is_quiet()) || linger == 0 {
                conn.disconnect(0)?;
                return Ok(());
            }
        }
        while stdin_open || outbox.is_some() {
            let line = match outbox.take() {
                Some(line) => line,
                None => match lines.try_recv() {
                    Ok(line) => line,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        stdin_open = false;
                        break;
                    }
                },
            };
            match conn.send(channel, line.as_bytes()) {
                Ok(()) => {}
                Err(SendError::QueueFull) => {
                    outbox = Some(line);
                    break;
                }
                Err(e) => eprintln!("not sent: {e}"),
            }
        }
    }
}
