//! The engine's control socket: a Unix stream socket that answers each connection with
//! one JSON [`Snapshot`] of the engine's figures, taken on this thread by the function it
//! was started with (the workers never block on it); and [`query`], its client.

use std::{
    io::{self, Read as _, Write as _},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::telemetry::Snapshot;

/// The control socket's serving thread.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    path: PathBuf,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `path` and serves the snapshots `snapshot` takes until [`Server::stop`].
    pub fn start(
        path: &Path,
        snapshot: impl Fn() -> Snapshot + Send + 'static,
    ) -> io::Result<Self> {
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("xrudp-control".into())
            .spawn(move || {
                while !s2.load(Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                            let snap = snapshot();
                            if let Ok(json) = serde_json::to_vec(&snap) {
                                let _ = conn.write_all(&json);
                            }
                        }
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

/// Asks the engine behind control socket `path` for a snapshot.
pub fn query(path: &Path) -> io::Result<Snapshot> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    serde_json::from_slice(&buf).map_err(io::Error::other)
}
