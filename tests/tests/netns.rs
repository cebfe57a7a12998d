//! scripts/netns.sh's ownership records: a topology belongs to a process, `down --all`
//! (scripts/test.sh's pre-clean) removes the topologies of exited owners — what crashed
//! runs left — and keeps those of running ones (a suite running beside it), and a
//! [`Topology`] removes its own namespaces and record on drop. Run as root.

use std::{collections::HashMap, path::Path, process::Command};

use xrudp_tests::{Topology, repo_root, require_root};

/// Runs in a private mount namespace with its own (empty) /run/netns and
/// /run/xrudp-netns, so `down --all` sees only the topologies made here and never the
/// host's. Owners: a running process, one that exits after `up`, this shell by default
/// (`$PPID` of the script), a live pid recorded with another start time (a recycled
/// pid); plus a namespace with no record (left by a run before records existed).
const WORLD: &str = r#"
set -euo pipefail
S=$1
mkdir -p /run/netns /run/xrudp-netns
mount -t tmpfs xrudp-test /run/netns
mount -t tmpfs xrudp-test /run/xrudp-netns
id_of() { sed -n 's/^XR_ID=//p'; }
sleep 600 & live=$!
sleep 600 & gone=$!
echo "live=$(bash "$S" up --queues 1 --owner "$live" | id_of)"
echo "gone=$(bash "$S" up --queues 1 --owner "$gone" | id_of)"
bash "$S" up --queues 1 >"$2"
echo "shell=$(id_of <"$2")"
recycled=$(bash "$S" up --queues 1 --owner "$live" | id_of)
echo "$live 1" >"/run/xrudp-netns/$recycled"
echo "recycled=$recycled"
ip netns add xrudp-0000beef-srv
kill "$gone"
wait "$gone" || true
bash "$S" down --all
echo "kept=$(ip netns list | awk '{print $1}' | sort | tr '\n' ' ')"
echo "records=$(ls /run/xrudp-netns | sort | tr '\n' ' ')"
bash "$S" down --all --force
echo "forced=$(ip netns list | wc -l) $(ls /run/xrudp-netns | wc -l)"
kill "$live"
"#;

#[test]
fn down_all_removes_only_topologies_whose_owner_exited() {
    require_root();
    let scratch = std::env::temp_dir().join(format!("xrudp-netns-test-{}", std::process::id()));
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            WORLD,
            "world",
        ])
        .arg(repo_root().join("scripts/netns.sh"))
        .arg(&scratch)
        .output()
        .expect("running unshare (util-linux)");
    let _ = std::fs::remove_file(&scratch);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the scenario failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let (live, shell) = (seen["live"], seen["shell"]);
    let mut kept: Vec<String> = [live, shell]
        .iter()
        .flat_map(|id| [format!("xrudp-{id}-cli"), format!("xrudp-{id}-srv")])
        .collect();
    kept.sort();
    assert_eq!(
        seen["kept"].split_whitespace().collect::<Vec<_>>(),
        kept,
        "only the topologies of running owners are kept (gone={}, recycled={})",
        seen["gone"],
        seen["recycled"]
    );
    let mut records = vec![live, shell];
    records.sort_unstable();
    assert_eq!(
        seen["records"].split_whitespace().collect::<Vec<_>>(),
        records,
        "the removed topologies' records go with them"
    );
    assert_eq!(seen["forced"], "0 0", "--force removes every topology");
}

#[test]
fn a_topology_is_owned_by_its_test_process_and_cleans_up_on_drop() {
    let t = Topology::new(1, false);
    let record = Path::new("/run/xrudp-netns").join(&t.id);
    let owner = std::fs::read_to_string(&record).expect("the topology's owner record");
    assert_eq!(
        owner.split_whitespace().next(),
        Some(std::process::id().to_string().as_str()),
        "the owner is this test process"
    );
    let (srv, cli) = (t.ns_srv.clone(), t.ns_cli.clone());
    let ns = |name: &str| Path::new("/run/netns").join(name).exists();
    assert!(ns(&srv) && ns(&cli));
    drop(t);
    assert!(!ns(&srv) && !ns(&cli), "namespaces removed on drop");
    assert!(!record.exists(), "owner record removed on drop");
}
