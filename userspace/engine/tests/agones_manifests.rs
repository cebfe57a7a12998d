//! deploy/agones/gameserver.yaml and fleet.yaml against the engine itself (there is no
//! kubectl or cluster on the test machine, so the manifests are read as YAML): the
//! capabilities they grant are exactly the engine's list (`xrudp::privileges`), nothing
//! runs privileged, the pod uses the host's network, the container's arguments are a
//! valid `xrudp attach --agones` command line serving the declared port, the connection
//! counter is declared under the engine's name for it, the health settings leave room
//! for the engine's once-a-second pings, and the grace period outlasts the drain.

use std::{collections::BTreeSet, path::Path};

use clap::Parser as _;
use serde_yaml::Value;
use xrudp::cli::{Cli, Command};

fn manifest(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/agones")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"))
}

/// `v[a][b]...`, failing with the path when a key is missing.
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| {
        v.get(*k)
            .unwrap_or_else(|| panic!("no `{}` in the manifest", path.join(".")))
    })
}

fn int(v: &Value, path: &[&str]) -> u64 {
    at(v, path)
        .as_u64()
        .unwrap_or_else(|| panic!("`{}` is not a whole number", path.join(".")))
}

/// The GameServer specs the two manifests describe.
fn specs() -> Vec<(&'static str, Value)> {
    let gs = manifest("gameserver.yaml");
    assert_eq!(at(&gs, &["apiVersion"]).as_str(), Some("agones.dev/v1"));
    assert_eq!(at(&gs, &["kind"]).as_str(), Some("GameServer"));
    let fleet = manifest("fleet.yaml");
    assert_eq!(at(&fleet, &["apiVersion"]).as_str(), Some("agones.dev/v1"));
    assert_eq!(at(&fleet, &["kind"]).as_str(), Some("Fleet"));
    vec![
        ("gameserver.yaml", at(&gs, &["spec"]).clone()),
        (
            "fleet.yaml",
            at(&fleet, &["spec", "template", "spec"]).clone(),
        ),
    ]
}

#[test]
fn the_fleet_runs_the_gameserver_spec_word_for_word() {
    let specs = specs();
    assert_eq!(
        specs[0].1, specs[1].1,
        "fleet.yaml's template must be gameserver.yaml's spec"
    );
}

#[test]
fn the_pod_has_the_engines_capabilities_and_no_more_and_is_not_privileged() {
    let engine: BTreeSet<String> = xrudp::privileges::XDP
        .iter()
        .chain([&xrudp::privileges::IPC_LOCK])
        .map(|n| n.cap.to_string())
        .collect();
    assert_eq!(engine.len(), 5, "{engine:?}");
    for (name, spec) in specs() {
        let pod = at(&spec, &["template", "spec"]);
        assert_eq!(
            at(pod, &["hostNetwork"]).as_bool(),
            Some(true),
            "{name}: AF_XDP binds the host NIC's queues"
        );
        for key in ["hostPID", "hostIPC"] {
            assert!(
                pod.get(key).is_none_or(|v| v.as_bool() == Some(false)),
                "{name}: {key}"
            );
        }
        let containers = at(pod, &["containers"])
            .as_sequence()
            .expect("containers is a list");
        assert_eq!(containers.len(), 1, "{name}: one container, the engine");
        let sc = at(&containers[0], &["securityContext"]);
        assert!(
            sc.get("privileged")
                .is_none_or(|v| v.as_bool() == Some(false)),
            "{name}: no privileged mode"
        );
        assert_eq!(
            at(sc, &["allowPrivilegeEscalation"]).as_bool(),
            Some(false),
            "{name}"
        );
        let list = |key: &str| -> BTreeSet<String> {
            at(sc, &["capabilities", key])
                .as_sequence()
                .unwrap_or_else(|| panic!("{name}: capabilities.{key} is a list"))
                .iter()
                .map(|c| {
                    let c = c.as_str().expect("a capability name");
                    // Kubernetes names them without the prefix.
                    format!("CAP_{}", c.trim_start_matches("CAP_"))
                })
                .collect()
        };
        assert_eq!(
            list("drop"),
            BTreeSet::from(["CAP_ALL".to_owned()]),
            "{name}"
        );
        assert_eq!(list("add"), engine, "{name}: exactly the engine's list");
    }
}

#[test]
fn the_container_runs_a_valid_attach_agones_on_the_declared_port() {
    for (name, spec) in specs() {
        let container = &at(&spec, &["template", "spec", "containers"])[0];
        let command_line: Vec<String> = std::iter::once("xrudp".to_owned())
            .chain(
                at(container, &["args"])
                    .as_sequence()
                    .expect("args is a list")
                    .iter()
                    .map(|a| a.as_str().expect("every argument is a string").to_owned()),
            )
            .collect();
        let cli = Cli::try_parse_from(&command_line)
            .unwrap_or_else(|e| panic!("{name}: the args are not a valid command line: {e}"));
        let Command::Attach(a) = cli.command else {
            panic!("{name}: the container must run `xrudp attach`");
        };
        assert!(a.agones, "{name}: the args include --agones");
        let ports = at(&spec, &["ports"]).as_sequence().expect("ports");
        let game: Vec<(u64, u64, &str)> = ports
            .iter()
            .map(|p| {
                (
                    int(p, &["containerPort"]),
                    int(p, &["hostPort"]),
                    at(p, &["protocol"]).as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            game,
            a.port
                .iter()
                .map(|&p| (u64::from(p), u64::from(p), "UDP"))
                .collect::<Vec<_>>(),
            "{name}: every served port declared, UDP, host port = container port"
        );
        // The grace period outlasts the drain and the 15 s `xrudp drain` allows after it.
        let drain = a
            .agones_drain_deadline
            .map_or(xrudp::agones::DRAIN_DEADLINE.as_secs(), |s| s);
        let grace = int(
            &spec,
            &["template", "spec", "terminationGracePeriodSeconds"],
        );
        assert!(
            grace >= drain + 15,
            "{name}: terminationGracePeriodSeconds {grace} < drain deadline {drain} + 15"
        );
    }
}

#[test]
fn the_counter_and_health_settings_fit_the_engine() {
    let check = xrudp::agones::CHECK_EVERY.as_secs();
    for (name, spec) in specs() {
        let counter = at(&spec, &["counters", xrudp::agones::COUNTER]);
        assert_eq!(int(counter, &["count"]), 0, "{name}");
        assert_eq!(at(&spec, &["health", "disabled"]).as_bool(), Some(false));
        let period = int(&spec, &["health", "periodSeconds"]);
        assert!(
            period >= 2 * check,
            "{name}: health.periodSeconds {period} must hold at least two of the engine's \
             checks ({check} s apart), or one late check fails a period"
        );
        assert!(int(&spec, &["health", "failureThreshold"]) >= 1, "{name}");
    }
}
