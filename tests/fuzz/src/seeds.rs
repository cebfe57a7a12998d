//! Seed inputs for every target, recorded from real exchanges between a [`Client`] and a
//! [`Server`](xrudp_proto::Server) with the targets' own seeds and configuration (so the recorded cookies and
//! connection ids are the ones the harness's endpoints produce), plus a few hand-built
//! frames. `tests/seeds.rs` writes them to `seeds/<target>/` and replays them.

use std::time::{Duration, Instant};

use xrudp_proto::{Client, ClientState};

use crate::ops::{Endpoint, Op};
use crate::reassembly::{self, Step};
use crate::{client, protected, server, steer, token};

/// A target's name and the runner of its inputs.
pub type Target = (&'static str, fn(&[u8]));

/// A named sequence of reassembly steps (with a forged fragment's payload each).
type Steps = (&'static str, Vec<(Step, Vec<u8>)>);

/// Every target whose harness lives in this library.
pub const TARGETS: [Target; 7] = [
    ("steer", steer::run),
    ("rudp_decode", crate::decode::run),
    ("server_sequence", server::run),
    ("client_sequence", client::run),
    ("reassembly", reassembly::run),
    ("token", token::run),
    ("protected", protected::run),
];

/// Every seed: (target, file name, bytes).
#[must_use]
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let datagrams = real_datagrams();
    for (name, input) in steer::seeds() {
        out.push(("steer", name, input));
    }
    for (i, (_, d)) in datagrams.iter().enumerate().step_by(3) {
        let mut input = vec![0b001, 0x1e, 0x61];
        input.extend(steer::udp_frame(i % 2 == 1, i % 3 == 1, 7777, d));
        out.push(("steer", format!("real_{i:02}"), input));
    }
    for (i, (label, d)) in datagrams.iter().enumerate() {
        // 70: the default channel layout, CRC left as sent (it is right).
        let mut input = vec![70];
        input.extend(d);
        out.push(("rudp_decode", format!("{i:02}_{label}"), input));
        if i < 6 {
            out.push(("rudp_crc", format!("{i:02}_{label}"), d.clone()));
            out.push(("checksum_kernels", format!("{i:02}_{label}"), d.clone()));
        }
    }
    for (name, ops) in server_seeds() {
        out.push(("server_sequence", name.into(), Op::encode_all(&ops)));
    }
    for (name, ops) in client_seeds() {
        out.push(("client_sequence", name.into(), Op::encode_all(&ops)));
    }
    for (name, steps) in reassembly_seeds() {
        let mut b = Vec::new();
        for (s, data) in steps {
            reassembly::encode(s, &data, &mut b);
        }
        out.push(("reassembly", name.into(), b));
    }
    for (name, input) in token::seeds() {
        out.push(("token", name, input));
    }
    for (name, input) in protected::seeds() {
        out.push(("protected", name, input));
    }
    out
}

/// Runs a seed through its target's harness; false for the targets whose harness lives in
/// `fuzz_targets/` itself (parse_reply, checksum_kernels, rudp_crc).
#[must_use]
pub fn run(target: &str, input: &[u8]) -> bool {
    match TARGETS.iter().find(|t| t.0 == target) {
        Some((_, f)) => {
            f(input);
            true
        }
        None => false,
    }
}

/// A real client (at address 0) against the harness's server: the ops that replay its
/// exchange, ending with messages both ways (one fragmented) and a close.
#[expect(
    clippy::too_many_lines,
    reason = "a recorded script reads best in one piece"
)]
fn server_seeds() -> Vec<(&'static str, Vec<Op>)> {
    let now = Instant::now();
    let mut rig = server::Rig::new(now);
    rig.sent = Some(Vec::new());
    let mut client = new_client(now);
    let mut ops = Vec::new();
    let mut out = vec![0u8; 2048];
    let mut step = |rig: &mut server::Rig, client: &mut Client, ops: &mut Vec<Op>| {
        while let Some(t) = client.poll_transmit(rig.now, &mut out) {
            let op = Op::Raw {
                from: 0,
                bytes: out[..t.len].to_vec(),
            };
            rig.apply(&op);
            ops.push(op);
        }
        let op = Op::Transmit { max: 255 };
        rig.apply(&op);
        ops.push(op);
        for (dst, d) in rig.sent.as_mut().map(std::mem::take).unwrap_or_default() {
            assert_eq!(dst, crate::addrs()[0]);
            // The client knows the server as address 3.
            client.handle_datagram(rig.now, crate::addrs()[3], &d);
        }
        ops.push(Op::Events);
        rig.apply(&Op::Events);
        let op = Op::Advance { ms: 20 };
        rig.apply(&op);
        client.handle_timeout(rig.now);
        ops.push(op);
    };
    for _ in 0..4 {
        step(&mut rig, &mut client, &mut ops);
    }
    assert_eq!(
        client.state(),
        ClientState::Connected,
        "seed handshake completes"
    );
    for (ch, len) in [(0u8, 40usize), (2, 100), (1, 5000)] {
        // INVARIANT: a connected client accepts messages within the configured sizes.
        client
            .send(ch, &crate::message(len as u32, len))
            .expect("queued");
    }
    for op in [
        Op::Send {
            from: 0,
            channel: 0,
            len: 3000,
        },
        Op::Send {
            from: 0,
            channel: 3,
            len: 60,
        },
    ] {
        rig.apply(&op);
        ops.push(op);
    }
    for _ in 0..4 {
        step(&mut rig, &mut client, &mut ops);
    }
    let session = ops.clone();
    let mut closing = ops;
    closing.push(Op::Close { from: 0, code: 7 });
    closing.push(Op::Transmit { max: 8 });
    closing.push(Op::Advance { ms: 11_000 });

    // Three peers (the client's hello replayed from two more addresses, answered through
    // `Respond`) at a server with two slots, and a foreign-version hello.
    let hello = session
        .iter()
        .find_map(|o| match o {
            Op::Raw { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .expect("the session starts with a hello");
    let mut full = Vec::new();
    for from in 0..3 {
        full.push(Op::Raw {
            from,
            bytes: hello.clone(),
        });
        full.push(Op::Transmit { max: 4 });
        full.push(Op::Respond {
            from,
            seq: 100 * u16::from(from),
            extra: Vec::new(),
        });
        full.push(Op::Transmit { max: 4 });
    }
    let mut foreign = hello.clone();
    foreign[2] = 9;
    full.push(Op::Sealed {
        from: 3,
        bytes: foreign,
    });
    full.push(Op::Transmit { max: 8 });
    full.push(Op::Events);
    full.push(Op::Conn {
        from: 1,
        kind: 0,
        body: vec![0, 0, 2],
    });
    vec![
        ("session", session),
        ("close_and_idle", closing),
        ("full_server", full),
    ]
}

/// A real server against the harness's client: the ops that replay its answers (all from
/// address 0), then the same through forged `Respond` answers, and datagrams from a stranger.
#[expect(
    clippy::too_many_lines,
    reason = "a recorded script reads best in one piece"
)]
fn client_seeds() -> Vec<(&'static str, Vec<Op>)> {
    let now = Instant::now();
    let mut rig = client::Rig::new(now);
    rig.sent = Some(Vec::new());
    // INVARIANT: the fixed configuration validates.
    let mut server =
        xrudp_proto::Server::new(crate::server_config(), crate::SERVER_SEED, now).expect("valid");
    let mut ops = Vec::new();
    let mut out = vec![0u8; 2048];
    let mut handle = None;
    for round in 0..8 {
        let op = Op::Transmit { max: 255 };
        rig.apply(&op);
        ops.push(op);
        for d in rig.sent.as_mut().map(std::mem::take).unwrap_or_default() {
            server.handle_datagram(rig.now, crate::addrs()[0], &d);
        }
        while let Some(e) = server.poll_event() {
            if let xrudp_proto::ServerEvent::Connected { handle: h, .. } = e {
                handle = Some(h);
            }
        }
        if round == 3
            && let Some(h) = handle
        {
            for (ch, len) in [(0u8, 64usize), (1, 4000), (3, 30)] {
                // INVARIANT: an open connection accepts messages within the configured sizes.
                server
                    .send(h, ch, &crate::message(len as u32, len))
                    .expect("queued");
            }
            let op = Op::Send {
                from: 0,
                channel: 0,
                len: 2500,
            };
            rig.apply(&op);
            ops.push(op);
        }
        while let Some(t) = server.poll_transmit(rig.now, &mut out) {
            let op = Op::Raw {
                from: 0,
                bytes: out[..t.len].to_vec(),
            };
            rig.apply(&op);
            ops.push(op);
        }
        for op in [Op::Events, Op::Advance { ms: 15 }] {
            rig.apply(&op);
            ops.push(op);
        }
        server.handle_timeout(rig.now);
    }
    assert_eq!(
        rig.client.state(),
        ClientState::Connected,
        "seed handshake completes"
    );
    let session = ops;
    let forged = vec![
        Op::Transmit { max: 1 },
        Op::Respond {
            from: 0,
            seq: 1,
            extra: vec![0xc0; 20],
        },
        Op::Transmit { max: 1 },
        Op::Respond {
            from: 0,
            seq: 65530,
            extra: vec![
                0x04, 0xb0, 0, 0, 0x13, 0x88, 0, 0, 0x27, 0x10, 0, 0, 0x03, 0xe8, 4, 0, 0, 0, 0, 0,
                0, 0, 0, 5, 1, 2, 3, 4,
            ],
        },
        Op::Transmit { max: 8 },
        Op::Conn {
            from: 0,
            kind: 0,
            body: vec![0xff, 0xfb, 3, 0, 0xff, 0xfa, 0, 3, 1, 2, 3],
        },
        Op::Events,
        Op::Raw {
            from: 2,
            bytes: b"XR\x01\x06junkjunkjunk".to_vec(),
        },
        Op::Advance { ms: 2000 },
        Op::Transmit { max: 8 },
    ];
    // The handshake resent with backoff until it times out, amid junk from strangers.
    let mut timeout = vec![Op::Transmit { max: 0 }];
    for i in 0..12u8 {
        timeout.push(Op::Sealed {
            from: 1 + i % 3,
            bytes: session_bytes(&session, usize::from(i)),
        });
        timeout.push(Op::Advance { ms: 900 });
        timeout.push(Op::Transmit { max: 2 });
    }
    timeout.push(Op::Events);
    vec![
        ("session", session),
        ("forged_handshake", forged),
        ("handshake_timeout", timeout),
    ]
}

/// The `i`th datagram the recorded server sent (cycling), for replay from elsewhere.
fn session_bytes(session: &[Op], i: usize) -> Vec<u8> {
    let raw: Vec<&Vec<u8>> = session
        .iter()
        .filter_map(|o| match o {
            Op::Raw { bytes, .. } => Some(bytes),
            _ => None,
        })
        .collect();
    raw.get(i % raw.len().max(1))
        .map_or_else(Vec::new, |b| (*b).clone())
}

/// Fragmented messages through a faithful, then a hostile, network.
fn reassembly_seeds() -> Vec<Steps> {
    let s = |s: Step| (s, Vec::new());
    let mut clean = vec![
        s(Step::ClientSend {
            channel: 0,
            len: 5000,
        }),
        s(Step::ServerSend {
            channel: 1,
            len: 3000,
        }),
    ];
    for _ in 0..10 {
        clean.push(s(Step::Transmit));
        for _ in 0..8 {
            clean.push(s(Step::ToServer { action: 0, pos: 0 }));
            clean.push(s(Step::ToClient { action: 0, pos: 0 }));
        }
        clean.push(s(Step::Advance { ms: 5 }));
    }
    clean.push(s(Step::Events));

    // Dropped, duplicated, deferred and corrupted (CRC left wrong) in the first rounds,
    // then a faithful network until the loss is repaired.
    let mut hostile = vec![s(Step::ClientSend {
        channel: 1,
        len: 9000,
    })];
    let fates = [1, 2, 3, 4, 0, 0, 2, 0, 0, 0, 1, 0];
    for round in 0..12 {
        hostile.push(s(Step::Transmit));
        for (i, action) in fates.iter().enumerate() {
            let action = if round < 2 { *action } else { 0 };
            hostile.push(s(Step::ToServer {
                action,
                pos: 40 + i as u8,
            }));
            hostile.push(s(Step::ToClient { action: 0, pos: 0 }));
        }
        hostile.push(s(Step::Advance { ms: 15 }));
    }
    hostile.push(s(Step::Events));

    let forged = vec![
        (
            Step::Forge {
                to_client: 0,
                pn: 3,
                channel: 0,
                seq: 9,
                index: 1,
                count: 3,
                len: 16,
            },
            vec![0xab; 16],
        ),
        (
            Step::Forge {
                to_client: 1,
                pn: 40000,
                channel: 1,
                seq: 2,
                index: 0,
                count: 200,
                len: 8,
            },
            vec![0xcd; 8],
        ),
        s(Step::Transmit),
        s(Step::Events),
    ];
    vec![("clean", clean), ("hostile", hostile), ("forged", forged)]
}

fn new_client(now: Instant) -> Client {
    // INVARIANT: the fixed configuration validates.
    Client::new(
        crate::client_config(),
        crate::addrs()[3],
        crate::CLIENT_SEED,
        now,
        xrudp_proto::session::Security::Off,
    )
    .expect("valid")
}

/// Real datagrams of every type, labelled, from a handshake and a short session.
fn real_datagrams() -> Vec<(String, Vec<u8>)> {
    let now = Instant::now();
    let addrs = crate::addrs();
    // INVARIANT: the fixed configuration validates.
    let mut server =
        xrudp_proto::Server::new(crate::server_config(), crate::SERVER_SEED, now).expect("valid");
    let mut client = new_client(now);
    let mut out = vec![0u8; 2048];
    let mut all = Vec::new();
    let label = |d: &[u8]| match d.get(3) {
        Some(1) => "hello",
        Some(2) => "challenge",
        Some(3) => "response",
        Some(4) => "welcome",
        Some(5) => "reject",
        Some(6) => "data",
        Some(7) => "disconnect",
        _ => "other",
    };
    let mut t = now;
    let mut handle = None;
    for round in 0..10 {
        while let Some(x) = client.poll_transmit(t, &mut out) {
            all.push((label(&out[..x.len]).to_string(), out[..x.len].to_vec()));
            server.handle_datagram(t, addrs[0], &out[..x.len]);
        }
        while let Some(e) = server.poll_event() {
            if let xrudp_proto::ServerEvent::Connected { handle: h, .. } = e {
                handle = Some(h);
            }
        }
        if round == 3
            && let Some(h) = handle
        {
            // INVARIANT: a connected pair accepts messages within the configured sizes.
            client.send(0, &crate::message(1, 2000)).expect("queued");
            client.send(2, &crate::message(2, 30)).expect("queued");
            server.send(h, 3, &crate::message(3, 50)).expect("queued");
        }
        if round == 7
            && let Some(h) = handle
        {
            server.disconnect(h, 9);
        }
        while let Some(x) = server.poll_transmit(t, &mut out) {
            all.push((label(&out[..x.len]).to_string(), out[..x.len].to_vec()));
            client.handle_datagram(t, addrs[3], &out[..x.len]);
        }
        t += Duration::from_millis(10);
        server.handle_timeout(t);
        client.handle_timeout(t);
    }
    all
}
