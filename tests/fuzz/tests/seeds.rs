//! The seed corpora: generated from real exchanges, committed under `seeds/<target>/`, and
//! replayed through the harnesses here on stable (`cargo test`), so a seed that stops
//! being valid, or a harness that panics on one, fails without the fuzzer.
//!
//! Rewrite the committed seeds after a protocol change:
//! `XRUDP_FUZZ_WRITE_SEEDS=1 cargo test --manifest-path tests/fuzz/Cargo.toml --test seeds`.

use std::fs;
use std::path::{Path, PathBuf};

use xrudp_fuzz::seeds;

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

#[test]
fn generated_seeds_pass_their_harness() {
    let all = seeds::all();
    for (target, _) in seeds::TARGETS {
        assert!(
            all.iter().filter(|s| s.0 == target).count() >= 3,
            "{target} has at least three seeds"
        );
    }
    for (target, name, input) in &all {
        let ran = seeds::run(target, input);
        assert_eq!(
            ran,
            seeds::TARGETS.iter().any(|t| t.0 == *target),
            "{target}/{name}"
        );
    }
}

#[test]
fn committed_seeds_pass_their_harness() {
    if std::env::var_os("XRUDP_FUZZ_WRITE_SEEDS").is_some() {
        for (target, name, input) in seeds::all() {
            let dir = seeds_dir().join(target);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(name), input).unwrap();
        }
    }
    for (target, _) in seeds::TARGETS {
        let dir = seeds_dir().join(target);
        let mut n = 0;
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let input = fs::read(entry.unwrap().path()).unwrap();
            assert!(seeds::run(target, &input));
            n += 1;
        }
        assert!(n >= 3, "{target}: {n} committed seeds");
    }
}

#[test]
fn every_target_has_committed_seeds() {
    for target in [
        "parse_reply",
        "checksum_kernels",
        "rudp_crc",
        "steer",
        "rudp_decode",
        "server_sequence",
        "client_sequence",
        "reassembly",
        "token",
        "protected",
    ] {
        let dir = seeds_dir().join(target);
        let n = fs::read_dir(&dir).map_or(0, Iterator::count);
        assert!(n > 0, "{} is empty or missing", dir.display());
    }
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    seeds::all()
        .into_iter()
        .find(|s| s.0 == target && s.1 == name)
        .unwrap_or_else(|| panic!("{target}/{name}"))
        .2
}

/// The recorded sessions reach deep states, not just the first decode error.
#[test]
fn sessions_reach_connections_and_messages() {
    let rig = xrudp_fuzz::server::run_rig(&seed("server_sequence", "session"));
    let s = rig.server.stats();
    assert_eq!(s.accepted, 1);
    assert!(s.messages_in >= 3, "{s:?}");
    let rig = xrudp_fuzz::server::run_rig(&seed("server_sequence", "full_server"));
    let s = rig.server.stats();
    assert_eq!(s.accepted, 2, "{s:?}");
    assert_eq!(
        s.rejected_for(xrudp_proto::RejectReason::ServerFull),
        1,
        "{s:?}"
    );
    assert_eq!(s.version_mismatches, 1, "{s:?}");

    let rig = xrudp_fuzz::client::run_rig(&seed("client_sequence", "session"));
    assert!(
        rig.client.stats().messages_in >= 3,
        "{:?}",
        rig.client.stats()
    );
    let rig = xrudp_fuzz::client::run_rig(&seed("client_sequence", "forged_handshake"));
    assert_eq!(rig.client.state(), xrudp_proto::ClientState::Connected);

    let rig = xrudp_fuzz::reassembly::run_rig(&seed("reassembly", "clean"));
    assert_eq!(rig.delivered(), (1, 1));
    let rig = xrudp_fuzz::reassembly::run_rig(&seed("reassembly", "hostile"));
    assert_eq!(rig.delivered().0, 1);
}

/// The token seeds open at the harness's server (or fail for the reason they were made
/// for), so the fuzzer starts past authentication.
#[test]
fn token_seeds_reach_an_opened_token() {
    use xrudp_fuzz::token::{KEY, NOW, server};
    use xrudp_proto::token::{self, MAX_PRIVATE_LEN, PublicToken, TokenError};

    let mut scratch = [0u8; MAX_PRIVATE_LEN];
    for (name, want) in [
        ("one_server", Ok(())),
        ("ipv6_first", Ok(())),
        ("largest", Ok(())),
        ("other_servers", Err(TokenError::WrongServer)),
        ("expired", Err(TokenError::Expired)),
    ] {
        let t = PublicToken::decode(&seed("token", name)).expect(name);
        let opened = token::open(&KEY, t.private_bytes(), NOW, server(), &mut scratch);
        if let Ok(o) = &opened {
            assert_eq!((o.c2s_key, o.s2c_key), (t.c2s_key, t.s2c_key), "{name}");
        }
        assert_eq!(opened.map(|_| ()), want, "{name}");
    }
    let private = seed("token", "private_only");
    assert!(token::open(&KEY, &private, NOW, server(), &mut scratch).is_ok());
}

/// Committed regression seeds (minimised inputs of fixed bugs, `seeds/<target>/regression-*`)
/// still reach the state that exposed their bug, not just pass the harness.
#[test]
fn regression_seeds_reach_their_bug() {
    // Reassembly: a message the server sends after a keepalive interval of idleness, while
    // its keepalive ping is in flight (a proto bug left it unacknowledged forever). The
    // harness's liveness check asserts the server drains; here, that all three arrive.
    let input = fs::read(seeds_dir().join("reassembly/regression-idle-then-send-never-acked"))
        .expect("committed regression seed");
    let rig = xrudp_fuzz::reassembly::run_rig(&input);
    assert_eq!(rig.delivered(), (1, 2));
}
