//! The engine's control socket: a Unix stream socket that reads one request line from
//! each connection and answers it with one JSON document, taken on this thread by the
//! functions it was started with (the workers never block on it): `snapshot` (or an empty
//! request) gets the engine's [`Snapshot`], `connections` every connection's row
//! ([`Connections`]), `drain SECS ADDR|-` starts a drain ([`Drained`]). [`query`],
//! [`query_connections`] and [`drain`] are its clients.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::SocketAddr,
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::telemetry::{Connections, Snapshot};

/// The request for a [`Snapshot`].
const SNAPSHOT: &str = "snapshot";
/// The request for [`Connections`].
const CONNECTIONS: &str = "connections";
/// The request that starts a drain: `drain <deadline in seconds> <redirect address or ->`,
/// answered with a [`Drained`].
const DRAIN: &str = "drain";
/// The longest request line read.
const MAX_REQUEST: u64 = 64;

/// What the control socket serves: the functions that take its two documents.
pub struct Sources {
    /// Takes the engine's snapshot.
    pub snapshot: Box<dyn Fn() -> Snapshot + Send>,
    /// Starts a drain (redirect, deadline); returns the connections open.
    pub drain: Box<dyn Fn(Option<SocketAddr>, Duration) -> u64 + Send>,
    /// Reads every connection's row.
    pub connections: Box<dyn Fn() -> Connections + Send>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

/// The control socket's serving thread.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    path: PathBuf,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `path` and answers requests from `sources` until [`Server::stop`].
    pub fn start(path: &Path, sources: Sources) -> io::Result<Self> {
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("xrudp-control".into())
            .spawn(move || {
                while !s2.load(Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => serve(conn, &sources),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "control socket accept failed");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })?;
        Ok(Self {
            stop,
            path: path.to_owned(),
            handle: Some(handle),
        })
    }

    /// Stops serving and removes the socket file.
    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers one client: reads its request line (a client that sends none within a second
/// gets the snapshot) and writes the document. Failures only end this client's answer.
fn serve(mut conn: UnixStream, sources: &Sources) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    if let Ok(c) = conn.try_clone() {
        let _ = BufReader::new(c.take(MAX_REQUEST)).read_line(&mut line);
    }
    let json = match line.trim() {
        "" | SNAPSHOT => serde_json::to_vec(&(sources.snapshot)()),
        CONNECTIONS => serde_json::to_vec(&(sources.connections)()),
        other if other.starts_with(DRAIN) => {
            let Some((redirect, deadline)) = parse_drain(other) else {
                tracing::warn!(request = %other.escape_debug(), "malformed drain request");
                return;
            };
            tracing::info!(?redirect, ?deadline, "drain requested");
            serde_json::to_vec(&Drained {
                open: (sources.drain)(redirect, deadline),
            })
        }
        other => {
            tracing::warn!(request = %other.escape_debug(), "unknown control socket request");
            return;
        }
    };
    if let Ok(json) = json {
        let _ = conn.write_all(&json);
    }
}

/// Sends `request` to the control socket `path` and parses the answer.
fn ask<T: serde::de::DeserializeOwned>(path: &Path, request: &str) -> io::Result<T> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    if buf.is_empty() {
        return Err(io::Error::other(format!(
            "the engine answered `{request}` with nothing (an older engine? restart it with this xrudp)"
        )));
    }
    serde_json::from_slice(&buf).map_err(io::Error::other)
}

/// The engine's answer to a drain request.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Drained {
    /// Connections open when the drain started (as last published).
    pub open: u64,
}

/// `drain <secs> <addr|->`.
fn parse_drain(line: &str) -> Option<(Option<SocketAddr>, Duration)> {
    let mut it = line.split_ascii_whitespace();
    if it.next()? != DRAIN {
        return None;
    }
    let secs: u64 = it.next()?.parse().ok()?;
    let redirect = match it.next()? {
        "-" => None,
        a => Some(a.parse().ok()?),
    };
    it.next()
        .is_none()
        .then_some((redirect, Duration::from_secs(secs)))
}

/// Asks the engine behind control socket `path` to drain: no new clients, connected ones
/// told to leave (to `redirect`), stop when the last has gone or after `deadline`.
pub fn drain(path: &Path, redirect: Option<SocketAddr>, deadline: Duration) -> io::Result<Drained> {
    let to = redirect.map_or_else(|| "-".to_owned(), |a| a.to_string());
    ask(path, &format!("{DRAIN} {} {to}", deadline.as_secs()))
}

/// Asks the engine behind control socket `path` for a snapshot.
pub fn query(path: &Path) -> io::Result<Snapshot> {
    ask(path, SNAPSHOT)
}

/// Asks the engine behind control socket `path` for every connection's row.
pub fn query_connections(path: &Path) -> io::Result<Connections> {
    ask(path, CONNECTIONS)
}
