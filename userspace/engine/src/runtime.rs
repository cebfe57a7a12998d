//! Where a running engine announces itself: `/run/xrudp/net-<netns inode>/<iface>.*`.
//!
//! - `<iface>.lock` holds an exclusive `flock` for the engine's lifetime and its pid, so
//!   a second `attach` on the same interface can name the engine that runs there;
//! - `<iface>.sock` is the engine's control socket (figures for `xrudp stats`).
//!
//! Keyed by network namespace because interface names repeat across namespaces. Unix
//! sockets under /run are reachable from any namespace, so `xrudp stats` works from the
//! root namespace as well as from inside the engine's.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Write as _},
    path::{Path, PathBuf},
};

use crate::sys;

/// The base directory; `XRUDP_RUN_DIR` overrides it (tests, unprivileged experiments).
#[must_use]
pub fn base_dir() -> PathBuf {
    std::env::var_os("XRUDP_RUN_DIR").map_or_else(|| PathBuf::from("/run/xrudp"), PathBuf::from)
}

/// This namespace's directory under [`base_dir`].
pub fn ns_dir() -> io::Result<PathBuf> {
    Ok(base_dir().join(format!("net-{}", sys::netns_inode()?)))
}

/// Paths of one engine's files.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The lock file.
    pub lock: PathBuf,
    /// The control socket.
    pub control: PathBuf,
}

impl Paths {
    /// Paths for `iface` in directory `dir`.
    #[must_use]
    pub fn new(dir: &Path, iface: &str) -> Self {
        Self {
            lock: dir.join(format!("{iface}.lock")),
            control: dir.join(format!("{iface}.sock")),
        }
    }
}

/// Held for the engine's lifetime; removes its files when dropped.
#[derive(Debug)]
pub struct Claim {
    _file: File,
    paths: Paths,
}

/// Another live engine owns the interface.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// A live engine holds the lock.
    #[error(
        "xrudp is already attached to {iface} (engine pid {pid}); stop it first \
         (`kill -TERM {pid}`), or pick another interface"
    )]
    Busy {
        /// Interface.
        iface: String,
        /// The running engine's pid (0 if unreadable).
        pid: u32,
    },
    /// The runtime directory is unusable.
    #[error(
        "cannot use runtime directory {dir}: {source}; xrudp needs root (or set XRUDP_RUN_DIR)"
    )]
    Io {
        /// Directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

impl Claim {
    /// Claims `iface` in this namespace.
    pub fn acquire(iface: &str) -> Result<Self, ClaimError> {
        let dir = ns_dir().map_err(|source| ClaimError::Io {
            dir: base_dir(),
            source,
        })?;
        fs::create_dir_all(&dir).map_err(|source| ClaimError::Io {
            dir: dir.clone(),
            source,
        })?;
        let paths = Paths::new(&dir, iface);
        let io_err = |source| ClaimError::Io {
            dir: dir.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&paths.lock)
            .map_err(io_err)?;
        if !sys::try_lock_exclusive(&file).map_err(io_err)? {
            let mut s = String::new();
            let _ = file.read_to_string(&mut s);
            return Err(ClaimError::Busy {
                iface: iface.to_owned(),
                pid: s.trim().parse().unwrap_or(0),
            });
        }
        file.set_len(0).map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        // A stale socket from an engine that died is ours to replace.
        let _ = fs::remove_file(&paths.control);
        Ok(Self { _file: file, paths })
    }

    /// This engine's paths.
    #[must_use]
    pub fn paths(&self) -> &Paths {
        &self.paths
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.paths.control);
        let _ = fs::remove_file(&self.paths.lock);
    }
}

/// Whether a live engine holds `iface`'s lock in this namespace; its pid if so.
pub fn live_engine(iface: &str) -> io::Result<Option<u32>> {
    let paths = Paths::new(&ns_dir()?, iface);
    let mut file = match File::open(&paths.lock) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if sys::try_lock_exclusive(&file)? {
        // Nobody holds it: a leftover from an engine that died. Clean it up.
        let _ = fs::remove_file(&paths.lock);
        let _ = fs::remove_file(&paths.control);
        return Ok(None);
    }
    let mut s = String::new();
    file.read_to_string(&mut s)?;
    Ok(Some(s.trim().parse().unwrap_or(0)))
}

/// Control sockets of every running engine, in every namespace: `(netns dir name, iface, path)`.
#[must_use]
pub fn all_engines() -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(dirs) = fs::read_dir(base_dir()) else {
        return out;
    };
    for d in dirs.filter_map(Result::ok) {
        let Ok(files) = fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.filter_map(Result::ok) {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "sock")
                && let Some(stem) = p.file_stem()
            {
                out.push((
                    d.file_name().to_string_lossy().into_owned(),
                    stem.to_string_lossy().into_owned(),
                    p,
                ));
            }
        }
    }
    out.sort();
    out
}
