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
    collections::HashSet,
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
///
/// An engine that was killed (SIGKILL, the OOM killer) leaves its files behind; its lock
/// is no longer held, so they are skipped here (not removed: only an engine claiming the
/// interface may do that without racing another one starting).
#[must_use]
pub fn all_engines() -> Vec<(String, String, PathBuf)> {
    let held = fs::read_to_string("/proc/locks")
        .ok()
        .map(|s| flocked_files(&s));
    engines_in(&base_dir(), held.as_ref())
}

/// The `.sock` files under `base`'s namespace directories whose `.lock` is in `held`
/// (all of them when `held` is `None`: lock state unknown).
fn engines_in(base: &Path, held: Option<&HashSet<FileId>>) -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(dirs) = fs::read_dir(base) else {
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
                && held.is_none_or(|h| {
                    fs::metadata(p.with_extension("lock")).is_ok_and(|m| h.contains(&file_id(&m)))
                })
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

/// A file as /proc/locks names it: device major, minor and inode.
type FileId = (u64, u64, u64);

fn file_id(m: &fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt as _;
    let dev = m.dev();
    (
        u64::from(libc::major(dev)),
        u64::from(libc::minor(dev)),
        m.ino(),
    )
}

/// Files some process holds a `flock` on, from the text of /proc/locks: lines such as
/// `1: FLOCK  ADVISORY  WRITE 4242 00:1a:1234 0 EOF` (major and minor in hex, inode in
/// decimal; a waiter's line has `->` before `FLOCK` and is not a holder).
fn flocked_files(proc_locks: &str) -> HashSet<FileId> {
    proc_locks
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip(1);
            if f.next()? != "FLOCK" {
                return None;
            }
            let id = f.nth(3)?;
            let mut parts = id.split(':');
            let major = u64::from_str_radix(parts.next()?, 16).ok()?;
            let minor = u64::from_str_radix(parts.next()?, 16).ok()?;
            let ino = parts.next()?.parse().ok()?;
            Some((major, minor, ino))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_are_parsed_and_waiters_ignored() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 00:1a:1234 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 4243 00:1a:1234 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 77 fe:01:99 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 5 fe:1f:4026531840 0 EOF\n\
                    garbage\n";
        let held = flocked_files(text);
        assert_eq!(
            held,
            HashSet::from([(0, 0x1a, 1234), (0xfe, 0x1f, 4_026_531_840)])
        );
    }

    #[test]
    fn a_killed_engines_files_are_skipped() {
        let base = std::env::temp_dir().join(format!("xrudp-runtime-{}", std::process::id()));
        let ns = base.join("net-1");
        fs::create_dir_all(&ns).expect("dir");
        for iface in ["live0", "dead0"] {
            fs::write(ns.join(format!("{iface}.sock")), "").expect("sock");
            fs::write(ns.join(format!("{iface}.lock")), "1\n").expect("lock");
        }
        let live = File::open(ns.join("live0.lock")).expect("open");
        assert!(sys::try_lock_exclusive(&live).expect("flock"));
        let proc_locks = fs::read_to_string("/proc/locks").expect("/proc/locks");
        let found = engines_in(&base, Some(&flocked_files(&proc_locks)));
        let unknown = engines_in(&base, None);
        drop(live);
        fs::remove_dir_all(&base).expect("clean up");
        let names: Vec<_> = found.iter().map(|(_, i, _)| i.as_str()).collect();
        assert_eq!(names, ["live0"]);
        assert_eq!(
            unknown.len(),
            2,
            "without lock state every socket is listed"
        );
    }
}
