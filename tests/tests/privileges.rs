//! Least privilege, over veth in fresh namespaces: the engine started through `setpriv`
//! as an unprivileged uid (65534) with exactly the capabilities docs/OPERATIONS.md lists
//! (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_NET_RAW, CAP_IPC_LOCK) attaches, echoes and
//! gives every capability up once attached; with any one of them taken away it refuses,
//! naming that capability. CAP_IPC_LOCK is needed only when the UMEMs exceed
//! RLIMIT_MEMLOCK, which the test pins with `prlimit` so that the outcome does not
//! depend on the CI machine's default.
//!
//! Assertions are on exit status, log contents, /proc's capability sets and echoed
//! messages; the timeouts only bound a hung run.

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf, time::Duration};

use nix::sys::signal::Signal;
use xrudp_tests::{Engine, Launch, Topology, connect_fleet, echo_rounds};

const PORT: u16 = 7777;
const NOBODY: &str = "65534";
/// RLIMIT_MEMLOCK for every run: one default UMEM (2,048 × 2,048 B = 4 MiB) fits, one of
/// 8,192 frames (16 MiB) does not.
const MEMLOCK: &str = "--memlock=8388608:8388608";
/// The capabilities the AF_XDP backend needs, in setpriv's spelling and the engine's.
const CAPS: [(&str, &str); 5] = [
    ("bpf", "CAP_BPF"),
    ("perfmon", "CAP_PERFMON"),
    ("net_admin", "CAP_NET_ADMIN"),
    ("net_raw", "CAP_NET_RAW"),
    ("ipc_lock", "CAP_IPC_LOCK"),
];

/// A runtime directory the unprivileged engine can write, removed on drop.
struct RunDir(PathBuf);

impl RunDir {
    fn new(t: &Topology) -> Self {
        let dir = std::env::temp_dir().join(format!("xrudp-run-{}", t.id));
        std::fs::create_dir_all(&dir).expect("creating the runtime directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod of the runtime directory");
        nix::unistd::chown(
            &dir,
            Some(nix::unistd::Uid::from_raw(65_534)),
            Some(nix::unistd::Gid::from_raw(65_534)),
        )
        .expect("chown of the runtime directory to nobody");
        Self(dir)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `prlimit … setpriv …` running the engine as nobody with exactly `caps` (setpriv names)
/// in its inheritable, ambient and bounding sets.
fn wrapper(caps: &[&str]) -> Vec<String> {
    let list: String = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    [
        "prlimit",
        MEMLOCK,
        "--",
        "setpriv",
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        format!("--inh-caps={list}"),
        format!("--ambient-caps={list}"),
        format!("--bounding-set={list}"),
    ])
    .collect()
}

fn start(
    t: &Topology,
    run: &RunDir,
    caps: &[&str],
    args: &[&str],
) -> Result<Engine, (String, String)> {
    let w = wrapper(caps);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    let port = PORT.to_string();
    let mut all = vec!["--port", port.as_str()];
    all.extend_from_slice(args);
    Engine::try_start_as(
        t,
        &Launch {
            wrapper: &w,
            run_dir: Some(&run.0),
        },
        &all,
    )
}

/// `CapPrm` and `CapEff` of every thread of `pid`, from /proc.
fn thread_caps(pid: u32) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the engine's threads") {
        let task = task.expect("a thread entry").path();
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        let field = |k: &str| {
            status.lines().find_map(|l| l.strip_prefix(k)).map_or_else(
                || panic!("{k} in {}", task.display()),
                |v| u64::from_str_radix(v.trim(), 16).expect("hex capability set"),
            )
        };
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        out.push((name.trim().to_owned(), field("CapPrm:"), field("CapEff:")));
    }
    out
}

#[test]
fn an_unprivileged_uid_with_exactly_the_listed_capabilities_attaches_echoes_and_gives_them_up() {
    let t = Topology::new(1, true);
    let run = RunDir::new(&t);
    let caps: Vec<&str> = CAPS.iter().map(|(c, _)| *c).collect();
    let mut engine = start(&t, &run, &caps, &[]).unwrap_or_else(|(e, log)| {
        panic!("the engine did not start as nobody with {caps:?}: {e}\n{log}")
    });
    assert_ne!(t.srv_xdp_prog(), 0, "the XDP program is attached");
    let uid = std::fs::read_to_string(format!("/proc/{}/status", engine.pid()))
        .expect("the engine's status")
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").map(str::to_owned))
        .expect("a Uid line");
    assert!(
        uid.split_whitespace().all(|u| u == NOBODY),
        "the engine runs as nobody: Uid {uid}"
    );
    // Every thread, the workers included, holds nothing once attached.
    let threads = thread_caps(engine.pid());
    assert!(threads.len() >= 2, "main thread and a worker: {threads:?}");
    for (name, prm, eff) in &threads {
        assert_eq!(
            (*prm, *eff),
            (0, 0),
            "thread {name} still holds capabilities (CapPrm {prm:x}, CapEff {eff:x})"
        );
    }
    assert!(
        engine
            .log_text()
            .contains("capabilities given up after attach"),
        "{}",
        engine.log_text()
    );

    // And it serves: reliable echoes come back, every one.
    let server = t.srv_addr(PORT);
    let e = Topology::in_ns(&t.ns_cli, move || {
        let mut c = connect_fleet(server, 8, Duration::from_secs(30));
        assert_eq!(c.connected(), 8, "every client connects: {:?}", c.others);
        let ids = c.ids.clone();
        echo_rounds(
            &mut c.fleet,
            &ids,
            0,
            20,
            (8, Duration::from_millis(5)),
            Duration::from_secs(30),
        )
    });
    assert!(e.errors.is_empty(), "{:?}", e.errors);
    assert_eq!(e.sent, 160);
    assert_eq!(e.echoed, e.sent, "every reliable message echoed");

    // Without capabilities it still shuts down cleanly: exit 0, program detached (the
    // bpf_link goes with its descriptor), runtime files removed.
    let status = engine.signal_and_wait(Signal::SIGTERM);
    assert!(
        status.success(),
        "exit status {status}\n{}",
        engine.log_text()
    );
    assert_eq!(t.srv_xdp_detached_within(Duration::from_secs(10)), 0);
    let left: Vec<_> = walk(&run.0);
    assert!(left.is_empty(), "runtime files left behind: {left:?}");
}

/// Files (not directories) under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn without_any_one_capability_it_refuses_naming_that_capability() {
    let t = Topology::new(1, true);
    let run = RunDir::new(&t);
    for (i, (_, name)) in CAPS.iter().enumerate() {
        let caps: Vec<&str> = CAPS
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, (c, _))| *c)
            .collect();
        // CAP_IPC_LOCK matters only past RLIMIT_MEMLOCK (8 MiB here): 16 MiB of UMEM.
        let args: &[&str] = if *name == "CAP_IPC_LOCK" {
            &["--umem-frames", "8192"]
        } else {
            &[]
        };
        match start(&t, &run, &caps, args) {
            Ok(mut e) => {
                let log = e.log_text();
                let _ = e.signal_and_wait(Signal::SIGTERM);
                panic!("the engine started without {name}:\n{log}");
            }
            Err((why, log)) => {
                assert!(why.contains("exit status: 1"), "{name}: {why}\n{log}");
                let error = log
                    .lines()
                    .find(|l| l.starts_with("error:"))
                    .unwrap_or_else(|| panic!("{name}: no error line in\n{log}"));
                assert!(
                    error.contains(&format!("needs {name} (to ")),
                    "{name}: the error names it: {error}"
                );
                let others: Vec<&str> = CAPS
                    .iter()
                    .map(|(_, n)| *n)
                    .filter(|n| n != name && error.contains(&format!("{n} (to ")))
                    .collect();
                assert!(
                    others.is_empty(),
                    "{name}: names only it, not {others:?}: {error}"
                );
            }
        }
        assert_eq!(t.srv_xdp_prog(), 0, "{name}: nothing was attached");
    }
    // CAP_IPC_LOCK is not needed while RLIMIT_MEMLOCK covers the UMEMs (4 MiB of 8 MiB).
    let without_ipc_lock: Vec<&str> = CAPS
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| *c != "ipc_lock")
        .collect();
    let mut e = start(&t, &run, &without_ipc_lock, &[]).unwrap_or_else(|(e, log)| {
        panic!("without CAP_IPC_LOCK, a UMEM inside RLIMIT_MEMLOCK: {e}\n{log}")
    });
    assert!(e.signal_and_wait(Signal::SIGTERM).success());
}
