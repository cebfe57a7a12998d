//! How a session gets its keys (docs/PROTOCOL.md §13): the protection modes a client asks
//! for in `Response`, the server's and the client's settings, the X25519 exchange of the
//! open modes, the handshake transcript and the sealed `Welcome`.

use x25519_dalek::{PublicKey, StaticSecret};

use crate::crypto::{self, AuthError, KEY_LEN, RawKeys, TAG_LEN};
use crate::handshake::TokenKey;
use crate::token::PublicToken;

/// Bytes of an X25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// The session protection a client asks for (the `mode` byte of `Response`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// No protection: packets travel in the clear, as in protocol version 1 without
    /// encryption. Only a server configured with encryption off accepts it.
    Off = 0,
    /// Keys from a connect token (§13.2): the backend gave both ends the keys.
    Token = 1,
    /// An ephemeral X25519 exchange; the server is not authenticated.
    Anonymous = 2,
    /// An ephemeral X25519 exchange that also mixes in the server's static key, which the
    /// client knows in advance: only the holder of the static private key completes it.
    Pinned = 3,
}

impl Mode {
    /// Decodes a mode byte.
    #[must_use]
    pub fn from_u8(v: u8) -> Option<Self> {
        [Self::Off, Self::Token, Self::Anonymous, Self::Pinned]
            .into_iter()
            .find(|m| *m as u8 == v)
    }

    /// Whether the mode carries an X25519 exchange (a client key in `Response`, a server
    /// key in `Welcome`).
    #[must_use]
    pub fn is_open(self) -> bool {
        matches!(self, Self::Anonymous | Self::Pinned)
    }
}

/// A server's session protection (`ServerConfig::encryption`).
#[derive(Clone, PartialEq, Eq)]
pub enum Encryption {
    /// Admit only clients in mode `Off`: no encryption, no authentication (LANs,
    /// benchmarks). Never the default.
    Off,
    /// Admit only clients with a connect token sealed under this key (mode `Token`).
    Token(TokenKey),
    /// Admit clients in modes `Pinned` and, if `allow_anonymous`, `Anonymous`, with this
    /// static X25519 private key (clients pin its public key,
    /// [`crate::Server::public_key`]).
    Open {
        /// The static private key; `None`: the server draws one at start (clients cannot
        /// pin it before they have seen it: for anonymous use and development).
        static_key: Option<[u8; KEY_LEN]>,
        /// Whether clients that do not pin the key are admitted.
        allow_anonymous: bool,
    },
}

impl core::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Off => f.write_str("Off"),
            Self::Token(_) => f.write_str("Token(..)"),
            Self::Open {
                allow_anonymous, ..
            } => write!(f, "Open {{ allow_anonymous: {allow_anonymous}, .. }}"),
        }
    }
}

impl Encryption {
    /// Whether this server accepts a client asking for `mode`.
    #[must_use]
    pub fn accepts(&self, mode: Mode) -> bool {
        match (self, mode) {
            (Self::Off, Mode::Off)
            | (Self::Token(_), Mode::Token)
            | (Self::Open { .. }, Mode::Pinned) => true,
            (
                Self::Open {
                    allow_anonymous, ..
                },
                Mode::Anonymous,
            ) => *allow_anonymous,
            _ => false,
        }
    }
}

/// A client's session protection (the argument of [`crate::Client::new`]).
#[derive(Clone)]
pub enum Security {
    /// No protection (mode `Off`); only servers with encryption off admit it.
    Off,
    /// A connect token issued by the game's backend (mode `Token`).
    Token(Box<PublicToken>),
    /// An X25519 exchange (mode `Anonymous`, or `Pinned` with the server's public key).
    Open {
        /// 32 bytes from a cryptographic random source: the ephemeral private key. The
        /// sans-IO core reads no random source; `xrudp-client` draws it from the OS.
        ephemeral: [u8; KEY_LEN],
        /// The server's static public key, if the client knows it (authenticates the
        /// server).
        server_key: Option<[u8; PUBLIC_KEY_LEN]>,
    },
}

impl core::fmt::Debug for Security {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Off => f.write_str("Off"),
            Self::Token(_) => f.write_str("Token(..)"),
            Self::Open { server_key, .. } => {
                write!(f, "Open {{ pinned: {}, .. }}", server_key.is_some())
            }
        }
    }
}

impl Security {
    /// Mode `Anonymous` with an ephemeral key from the operating system's random source
    /// would be the real thing; this derives it from `seed` instead, deterministically,
    /// with 64 bits of entropy: for tests, simulations and fuzzing only, never for a
    /// session that must be private.
    #[must_use]
    pub fn insecure_from_seed(seed: u64) -> Self {
        use rand_core::{RngCore, SeedableRng};
        let mut ephemeral = [0; KEY_LEN];
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6b65_7973).fill_bytes(&mut ephemeral);
        Self::Open {
            ephemeral,
            server_key: None,
        }
    }

    /// The mode this asks the server for.
    #[must_use]
    pub fn mode(&self) -> Mode {
        match self {
            Self::Off => Mode::Off,
            Self::Token(_) => Mode::Token,
            Self::Open {
                server_key: None, ..
            } => Mode::Anonymous,
            Self::Open {
                server_key: Some(_),
                ..
            } => Mode::Pinned,
        }
    }
}

/// The X25519 public key of a private key.
#[must_use]
pub fn public_key(private: &[u8; KEY_LEN]) -> [u8; PUBLIC_KEY_LEN] {
    PublicKey::from(&StaticSecret::from(*private)).to_bytes()
}

/// X25519(`private`, `public`); `None` if the result is all zeros (a low-order public
/// key, RFC 7748 §6.1), which the protocol refuses.
#[must_use]
pub fn agree(private: &[u8; KEY_LEN], public: &[u8; PUBLIC_KEY_LEN]) -> Option<[u8; KEY_LEN]> {
    let shared = StaticSecret::from(*private).diffie_hellman(&PublicKey::from(*public));
    shared.was_contributory().then(|| shared.to_bytes())
}

/// What the key schedule binds a session to (docs/PROTOCOL.md §13.3), in this order.
#[derive(Clone, Copy, Debug)]
pub struct Transcript<'a> {
    /// The mode.
    pub mode: Mode,
    /// The client's nonce.
    pub nonce: u64,
    /// The connection id the server issued.
    pub conn_id: u32,
    /// The client's initial sequence number.
    pub client_seq: u16,
    /// Open modes: the client's ephemeral public key.
    pub client_key: Option<&'a [u8; PUBLIC_KEY_LEN]>,
    /// Open modes: the server's ephemeral public key.
    pub server_ephemeral: Option<&'a [u8; PUBLIC_KEY_LEN]>,
    /// Mode `Pinned`: the server's static public key.
    pub server_static: Option<&'a [u8; PUBLIC_KEY_LEN]>,
    /// Mode `Token`: the sealed token's tag (its last 16 bytes).
    pub token_tag: Option<&'a [u8; TAG_LEN]>,
}

/// Longest transcript: label, mode, nonce, id, sequence, three keys and a tag (no mode
/// has all four; the mode byte says which are present).
const MAX_TRANSCRIPT: usize = 16 + 1 + 8 + 4 + 2 + 3 * PUBLIC_KEY_LEN + TAG_LEN;

impl Transcript<'_> {
    /// The transcript's bytes: `"xrudp session v1"` · mode · nonce · connection id ·
    /// client sequence · the present keys or tag, in field order.
    pub fn bytes(&self, out: &mut [u8; MAX_TRANSCRIPT]) -> usize {
        let mut n = 0;
        let mut put = |b: &[u8]| {
            out[n..n + b.len()].copy_from_slice(b);
            n += b.len();
        };
        put(b"xrudp session v1");
        put(&[self.mode as u8]);
        put(&self.nonce.to_be_bytes());
        put(&self.conn_id.to_be_bytes());
        put(&self.client_seq.to_be_bytes());
        for k in [self.client_key, self.server_ephemeral, self.server_static]
            .into_iter()
            .flatten()
        {
            put(k);
        }
        if let Some(t) = self.token_tag {
            put(t);
        }
        n
    }

    /// Runs the key schedule over `secret` (§13.3).
    #[must_use]
    pub fn derive(&self, secret: &[u8]) -> RawKeys {
        let mut buf = [0; MAX_TRANSCRIPT];
        let n = self.bytes(&mut buf);
        RawKeys::derive(secret, &buf[..n])
    }
}

/// Where a `Welcome`'s sealed part starts: after the header, the nonce and, in the open
/// modes, the server's ephemeral key.
#[must_use]
pub fn welcome_clear_len(mode: Mode) -> usize {
    xrudp_common::rudp::HEADER_LEN + 8 + if mode.is_open() { PUBLIC_KEY_LEN } else { 0 }
}

/// Seals a `Welcome` in place: `packet[..clear]` stays in the clear (authenticated),
/// `packet[clear..len]` is sealed, the tag follows. Returns the sealed length.
#[must_use]
pub fn seal_welcome(keys: &RawKeys, packet: &mut [u8], clear: usize, len: usize) -> Option<usize> {
    welcome_key(keys).seal_packet(0, packet, clear, len)
}

/// Opens a sealed `Welcome` in place; returns the end of its plaintext.
pub fn open_welcome(keys: &RawKeys, packet: &mut [u8], clear: usize) -> Result<usize, AuthError> {
    welcome_key(keys).open_packet(0, packet, clear)
}

fn welcome_key(keys: &RawKeys) -> crypto::PacketKey {
    crypto::PacketKey::new(&keys.welcome_key, [0; crypto::IV_LEN])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_agree_and_low_order_keys_are_refused() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let ab = agree(&a, &public_key(&b)).expect("contributory");
        assert_eq!(Some(ab), agree(&b, &public_key(&a)));
        assert_eq!(agree(&a, &[0; 32]), None, "the identity point");
    }

    #[test]
    fn modes_round_trip_and_servers_accept_what_they_are_configured_for() {
        for m in [Mode::Off, Mode::Token, Mode::Anonymous, Mode::Pinned] {
            assert_eq!(Mode::from_u8(m as u8), Some(m));
        }
        assert_eq!(Mode::from_u8(4), None);
        let open = Encryption::Open {
            static_key: Some([3; 32]),
            allow_anonymous: false,
        };
        assert!(open.accepts(Mode::Pinned) && !open.accepts(Mode::Anonymous));
        assert!(!open.accepts(Mode::Off) && !open.accepts(Mode::Token));
        assert!(Encryption::Off.accepts(Mode::Off) && !Encryption::Off.accepts(Mode::Pinned));
    }

    #[test]
    fn every_transcript_field_changes_the_keys() {
        let (k1, k2, tag) = ([1u8; 32], [2u8; 32], [3u8; 16]);
        let base = Transcript {
            mode: Mode::Pinned,
            nonce: 1,
            conn_id: 2,
            client_seq: 3,
            client_key: Some(&k1),
            server_ephemeral: Some(&k2),
            server_static: Some(&k1),
            token_tag: None,
        };
        let keys = base.derive(b"s");
        let variants = [
            Transcript {
                mode: Mode::Anonymous,
                ..base
            },
            Transcript { nonce: 9, ..base },
            Transcript { conn_id: 9, ..base },
            Transcript {
                client_seq: 9,
                ..base
            },
            Transcript {
                client_key: Some(&k2),
                ..base
            },
            Transcript {
                server_ephemeral: Some(&k1),
                ..base
            },
            Transcript {
                server_static: None,
                ..base
            },
            Transcript {
                token_tag: Some(&tag),
                ..base
            },
        ];
        for v in variants {
            assert_ne!(v.derive(b"s"), keys, "{v:?}");
        }
        assert_ne!(base.derive(b"t"), keys, "the secret");
    }
}

/// The test vectors of docs/PROTOCOL.md §13.6, computed by this implementation and
/// pinned here: a change to the key schedule or the packet protection fails this test.
#[cfg(test)]
mod vectors {
    use super::*;
    use crate::crypto::Role;

    fn hex(b: &[u8]) -> String {
        b.iter().fold(String::new(), |mut s, x| {
            use std::fmt::Write as _;
            let _ = write!(s, "{x:02x}");
            s
        })
    }

    /// Mode `Anonymous`, secret = 32 × 0x11, nonce 1, connection id 2, Sc 3, E_c = 32 ×
    /// 0xaa, E_s = 32 × 0xbb; then the client's first `Data` packet (number 3: Sc + 0)
    /// carrying one PING frame.
    pub(super) fn compute() -> Vec<(&'static str, String)> {
        let (ec, es) = ([0xaa; 32], [0xbb; 32]);
        let transcript = Transcript {
            mode: Mode::Anonymous,
            nonce: 1,
            conn_id: 2,
            client_seq: 3,
            client_key: Some(&ec),
            server_ephemeral: Some(&es),
            server_static: None,
            token_tag: None,
        };
        let mut tb = [0; MAX_TRANSCRIPT];
        let n = transcript.bytes(&mut tb);
        let k = transcript.derive(&[0x11; 32]);
        let mut packet = vec![0u8; 12 + 2 + 1 + TAG_LEN];
        let mut w = crate::packet::Writer::new(&mut packet);
        w.header(xrudp_common::rudp::PacketType::Data, 2)
            .expect("fits");
        w.u16(3).expect("fits");
        w.u8(crate::packet::frame::PING).expect("fits");
        let len = w.len();
        let mut c = k.for_role(Role::Client);
        let sealed = c.seal.seal_packet(3, &mut packet, 14, len).expect("fits");
        crate::packet::seal(&mut packet[..sealed]);
        vec![
            ("transcript", hex(&tb[..n])),
            ("c2s key", hex(&k.c2s_key)),
            ("c2s iv", hex(&k.c2s_iv)),
            ("s2c key", hex(&k.s2c_key)),
            ("s2c iv", hex(&k.s2c_iv)),
            ("welcome key", hex(&k.welcome_key)),
            ("data packet", hex(&packet[..sealed])),
        ]
    }

    #[test]
    fn the_documented_vectors_hold() {
        let got = compute();
        for (name, value) in &got {
            eprintln!("{name}: {value}");
        }
        let doc = include_str!("../../../docs/PROTOCOL.md");
        for (name, value) in got {
            assert!(
                doc.contains(&format!("| {name} | `{value}` |")),
                "docs/PROTOCOL.md §13.6 lacks `{name}` = {value}"
            );
        }
    }
}
