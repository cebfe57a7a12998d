//! The handshake: stateless cookies, connect tokens, and the handshake packets
//! (docs/PROTOCOL.md §4).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use xrudp_common::rudp::PacketType;

use crate::packet::{COOKIE_LEN, DecodeError, MAX_TOKEN_LEN, MIN_HANDSHAKE_LEN, Reader, Writer};

type HmacSha256 = Hmac<Sha256>;

/// How long one cookie secret is in use before the next one replaces it.
pub const COOKIE_ROTATION: Duration = Duration::from_secs(30);

/// How old a cookie may be and still be accepted.
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(20);

/// Length of the MAC carried in cookies (HMAC-SHA256 truncated, RFC 2104 §5).
pub const MAC_LEN: usize = 16;

/// Computes cookies with a secret that rotates every [`COOKIE_ROTATION`]; the secret of
/// period `n` is `HMAC(seed key, n)`, so cookies of the previous period still verify.
#[derive(Clone, Debug)]
pub struct CookieJar {
    seed: [u8; 32],
    period: u64,
    current: [u8; 32],
    previous: [u8; 32],
}

impl CookieJar {
    /// A jar keyed by `seed` (from the server's configured seed or RNG).
    #[must_use]
    pub fn new(seed: [u8; 32]) -> Self {
        let mut jar = Self {
            seed,
            period: 0,
            current: [0; 32],
            previous: [0; 32],
        };
        jar.current = jar.secret(0);
        jar.previous = jar.current;
        jar
    }

    fn secret(&self, period: u64) -> [u8; 32] {
        // INVARIANT: HMAC accepts keys of any length.
        let mut mac = HmacSha256::new_from_slice(&self.seed).expect("any key length");
        mac.update(b"xrudp cookie secret");
        mac.update(&period.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    fn rotate_to(&mut self, secs: u32) {
        let period = u64::from(secs) / COOKIE_ROTATION.as_secs();
        if period != self.period {
            self.previous = if period == self.period + 1 {
                self.current
            } else {
                self.secret(period - 1)
            };
            self.current = self.secret(period);
            self.period = period;
        }
    }

    fn mac(key: &[u8; 32], addr: SocketAddr, nonce: u64, secs: u32) -> [u8; MAC_LEN] {
        // INVARIANT: HMAC accepts keys of any length.
        let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
        match addr.ip() {
            IpAddr::V4(ip) => mac.update(&ip.to_ipv6_mapped().octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&addr.port().to_be_bytes());
        mac.update(&nonce.to_be_bytes());
        mac.update(&secs.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// A cookie for `addr` and the client's nonce at `secs` (seconds since server start).
    pub fn issue(&mut self, addr: SocketAddr, nonce: u64, secs: u32) -> [u8; COOKIE_LEN] {
        self.rotate_to(secs);
        let mut out = [0; COOKIE_LEN];
        out[..4].copy_from_slice(&secs.to_be_bytes());
        out[4..].copy_from_slice(&Self::mac(&self.current, addr, nonce, secs));
        out
    }

    /// Whether `cookie` was issued by this jar to `addr` and `nonce`, at most
    /// [`COOKIE_LIFETIME`] before `now_secs`.
    pub fn verify(
        &mut self,
        cookie: &[u8; COOKIE_LEN],
        addr: SocketAddr,
        nonce: u64,
        now_secs: u32,
    ) -> bool {
        self.rotate_to(now_secs);
        let secs = u32::from_be_bytes([cookie[0], cookie[1], cookie[2], cookie[3]]);
        if secs > now_secs || u64::from(now_secs - secs) > COOKIE_LIFETIME.as_secs() {
            return false;
        }
        let period = u64::from(secs) / COOKIE_ROTATION.as_secs();
        let key = if period == self.period {
            &self.current
        } else if period + 1 == self.period {
            &self.previous
        } else {
            return false;
        };
        let expect = Self::mac(key, addr, nonce, secs);
        // Constant-time comparison.
        expect
            .iter()
            .zip(&cookie[4..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// A key shared between the game backend (which issues connect tokens) and the servers.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey(pub [u8; 32]);

impl core::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Why the server refused to admit a client (the `Reject` packet's reason byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RejectReason {
    /// Every connection slot is taken.
    ServerFull = 1,
    /// The server requires a connect token and none was sent.
    TokenRequired = 2,
    /// The token is malformed or its MAC does not verify.
    TokenInvalid = 3,
    /// The token has expired.
    TokenExpired = 4,
    /// The token is already in use from another address.
    TokenReused = 5,
    /// The client asked for a session protection mode this server does not accept
    /// (docs/PROTOCOL.md §13.1).
    SecurityMismatch = 6,
}

impl RejectReason {
    /// All reasons, in counter order.
    pub const ALL: [Self; 6] = [
        Self::ServerFull,
        Self::TokenRequired,
        Self::TokenInvalid,
        Self::TokenExpired,
        Self::TokenReused,
        Self::SecurityMismatch,
    ];

    /// Decodes a reason byte.
    #[must_use]
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == v)
    }

    /// Index into a counter array.
    #[must_use]
    pub fn index(self) -> usize {
        self as usize - 1
    }
}

/// The parameters a server announces in `Welcome`, which the client adopts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The client's nonce, echoed.
    pub nonce: u64,
    /// The server's first packet and channel sequence number.
    pub initial_seq: u16,
    /// The server's maximum datagram payload.
    pub mtu: u16,
    /// The server's maximum ack delay, µs.
    pub max_ack_delay_us: u32,
    /// Idle timeout, ms.
    pub idle_timeout_ms: u32,
    /// Keepalive interval, ms.
    pub keepalive_ms: u32,
    /// Channel kinds, in channel order (see [`crate::ChannelKind`] for the bytes).
    pub channels: [u8; crate::packet::MAX_CHANNELS],
    /// Number of channels.
    pub channel_count: u8,
}

/// Decoded handshake packet bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handshake<'a> {
    /// `Hello`: the client's nonce.
    Hello {
        /// Client nonce.
        nonce: u64,
    },
    /// `Challenge`: nonce echo and cookie.
    Challenge {
        /// Client nonce.
        nonce: u64,
        /// The cookie to echo.
        cookie: [u8; COOKIE_LEN],
    },
    /// `Response`: nonce, cookie, optional token.
    Response {
        /// Client nonce.
        nonce: u64,
        /// Echoed cookie.
        cookie: [u8; COOKIE_LEN],
        /// The client's first packet and channel sequence number.
        initial_seq: u16,
        /// Connect token bytes (empty if none).
        token: &'a [u8],
        /// The session's protection, [`crate::session::Mode`] (docs/PROTOCOL.md §13.1).
        mode: u8,
        /// The client's ephemeral X25519 public key (modes `Anonymous` and `Pinned`).
        client_key: Option<[u8; 32]>,
    },
    /// `Welcome`.
    Welcome(Welcome),
    /// `Reject`.
    Reject {
        /// Client nonce.
        nonce: u64,
        /// Raw reason byte.
        reason: u8,
    },
    /// `VersionMismatch`: the versions the server speaks.
    VersionMismatch {
        /// Client nonce.
        nonce: u64,
        /// Bitmask of supported versions 0..=63 (bit v set: version v spoken).
        versions: u64,
    },
}

/// Decodes the body of a handshake packet of type `kind`, `len` being the datagram length.
pub fn decode(kind: PacketType, body: &[u8], len: usize) -> Result<Handshake<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let nonce = r.u64()?;
    Ok(match kind {
        PacketType::Hello | PacketType::Response if len < MIN_HANDSHAKE_LEN => {
            return Err(DecodeError::Unpadded);
        }
        PacketType::Hello => Handshake::Hello { nonce },
        PacketType::Challenge => Handshake::Challenge {
            nonce,
            cookie: cookie(&mut r)?,
        },
        PacketType::Response => {
            let cookie = cookie(&mut r)?;
            let initial_seq = r.u16()?;
            let n = usize::from(r.u16()?);
            if n > MAX_TOKEN_LEN {
                return Err(DecodeError::BadField);
            }
            let token = r.bytes(n)?;
            let mode = r.u8()?;
            let client_key = match crate::session::Mode::from_u8(mode) {
                None => return Err(DecodeError::BadField),
                Some(m) if m.is_open() => {
                    let mut k = [0; 32];
                    k.copy_from_slice(r.bytes(32)?);
                    Some(k)
                }
                Some(_) => None,
            };
            Handshake::Response {
                nonce,
                cookie,
                initial_seq,
                token,
                mode,
                client_key,
            }
        }
        PacketType::Welcome => Handshake::Welcome(welcome_fields(nonce, &mut r)?),
        PacketType::Reject => Handshake::Reject {
            nonce,
            reason: r.u8()?,
        },
        PacketType::VersionMismatch => Handshake::VersionMismatch {
            nonce,
            versions: r.u64()?,
        },
        PacketType::Data | PacketType::Disconnect => return Err(DecodeError::Unexpected),
    })
}

/// Decodes a `Welcome`'s fields after the nonce (in the clear, or once opened).
pub fn welcome_fields(nonce: u64, r: &mut Reader<'_>) -> Result<Welcome, DecodeError> {
    let initial_seq = r.u16()?;
    let mtu = r.u16()?;
    let max_ack_delay_us = r.u32()?;
    let idle_timeout_ms = r.u32()?;
    let keepalive_ms = r.u32()?;
    let count = r.u8()?;
    if count == 0 || usize::from(count) > crate::packet::MAX_CHANNELS {
        return Err(DecodeError::BadField);
    }
    let mut channels = [0; crate::packet::MAX_CHANNELS];
    channels[..usize::from(count)].copy_from_slice(r.bytes(usize::from(count))?);
    Ok(Welcome {
        nonce,
        initial_seq,
        mtu,
        max_ack_delay_us,
        idle_timeout_ms,
        keepalive_ms,
        channels,
        channel_count: count,
    })
}

fn cookie(r: &mut Reader<'_>) -> Result<[u8; COOKIE_LEN], DecodeError> {
    let mut c = [0; COOKIE_LEN];
    c.copy_from_slice(r.bytes(COOKIE_LEN)?);
    Ok(c)
}

/// Encodes a handshake packet into `out`; returns its length, `None` if `out` is too small.
/// `Hello` and `Response` are padded to [`MIN_HANDSHAKE_LEN`].
pub fn encode(out: &mut [u8], conn_id: u32, packet: &Handshake<'_>) -> Option<usize> {
    let mut w = Writer::new(out);
    let (kind, nonce) = match packet {
        Handshake::Hello { nonce } => (PacketType::Hello, nonce),
        Handshake::Challenge { nonce, .. } => (PacketType::Challenge, nonce),
        Handshake::Response { nonce, .. } => (PacketType::Response, nonce),
        Handshake::Welcome(w) => (PacketType::Welcome, &w.nonce),
        Handshake::Reject { nonce, .. } => (PacketType::Reject, nonce),
        Handshake::VersionMismatch { nonce, .. } => (PacketType::VersionMismatch, nonce),
    };
    w.header(kind, conn_id)?;
    w.u64(*nonce)?;
    match packet {
        Handshake::Hello { .. } => {}
        Handshake::Challenge { cookie, .. } => w.bytes(cookie)?,
        Handshake::Response {
            cookie,
            token,
            initial_seq,
            mode,
            client_key,
            ..
        } => {
            w.bytes(cookie)?;
            w.u16(*initial_seq)?;
            w.u16(u16::try_from(token.len()).ok()?)?;
            w.bytes(token)?;
            w.u8(*mode)?;
            if let Some(k) = client_key {
                w.bytes(k)?;
            }
        }
        Handshake::Welcome(p) => write_welcome_fields(&mut w, p)?,
        Handshake::Reject { reason, .. } => w.u8(*reason)?,
        Handshake::VersionMismatch { versions, .. } => w.u64(*versions)?,
    }
    if matches!(kind, PacketType::Hello | PacketType::Response) && w.len() < MIN_HANDSHAKE_LEN {
        let pad = MIN_HANDSHAKE_LEN - w.len();
        w.zeros(pad)?;
    }
    Some(w.finish())
}

/// Writes a `Welcome`'s fields after the nonce.
pub fn write_welcome_fields(w: &mut Writer<'_>, p: &Welcome) -> Option<()> {
    w.u16(p.initial_seq)?;
    w.u16(p.mtu)?;
    w.u32(p.max_ack_delay_us)?;
    w.u32(p.idle_timeout_ms)?;
    w.u32(p.keepalive_ms)?;
    w.u8(p.channel_count)?;
    w.bytes(&p.channels[..usize::from(p.channel_count)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Datagram;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], p))
    }

    #[test]
    fn cookie_binds_address_port_nonce_and_time() {
        let mut jar = CookieJar::new([7; 32]);
        let c = jar.issue(addr(1000), 42, 100);
        assert!(jar.verify(&c, addr(1000), 42, 100));
        assert!(jar.verify(&c, addr(1000), 42, 100 + COOKIE_LIFETIME.as_secs() as u32));
        assert!(!jar.verify(&c, addr(1000), 42, 101 + COOKIE_LIFETIME.as_secs() as u32));
        assert!(!jar.verify(&c, addr(1001), 42, 100));
        assert!(!jar.verify(&c, SocketAddr::from(([10, 0, 0, 2], 1000)), 42, 100));
        assert!(!jar.verify(&c, addr(1000), 43, 100));
        let mut forged = c;
        forged[10] ^= 1;
        assert!(!jar.verify(&forged, addr(1000), 42, 100));
        // Another server (another seed) does not accept it.
        let mut other = CookieJar::new([8; 32]);
        assert!(!other.verify(&c, addr(1000), 42, 100));
    }

    #[test]
    fn cookie_survives_one_rotation() {
        let mut jar = CookieJar::new([1; 32]);
        let t = COOKIE_ROTATION.as_secs() as u32 - 1;
        let c = jar.issue(addr(5), 1, t);
        assert!(jar.verify(&c, addr(5), 1, t + 10));
    }

    #[test]
    fn handshake_packets_round_trip() {
        let mut buf = [0u8; 1500];
        let welcome = Welcome {
            nonce: 5,
            initial_seq: 65530,
            mtu: 1200,
            max_ack_delay_us: 10_000,
            idle_timeout_ms: 10_000,
            keepalive_ms: 1000,
            channels: [1; crate::packet::MAX_CHANNELS],
            channel_count: 3,
        };
        let cases = [
            Handshake::Hello { nonce: 1 },
            Handshake::Challenge {
                nonce: 2,
                cookie: [9; COOKIE_LEN],
            },
            Handshake::Response {
                nonce: 3,
                cookie: [8; COOKIE_LEN],
                initial_seq: 7,
                token: b"tok",
                mode: 0,
                client_key: None,
            },
            Handshake::Response {
                nonce: 3,
                cookie: [8; COOKIE_LEN],
                initial_seq: 7,
                token: b"",
                mode: 3,
                client_key: Some([0x77; 32]),
            },
            Handshake::Reject {
                nonce: 4,
                reason: 1,
            },
            Handshake::VersionMismatch {
                nonce: 6,
                versions: 2,
            },
        ];
        for p in cases.iter().chain([&Handshake::Welcome(welcome.clone())]) {
            let n = encode(&mut buf, 0, p).unwrap();
            let d = Datagram::parse(&buf[..n]).unwrap();
            let mut back = decode(d.kind, d.body, d.len).unwrap();
            if let Handshake::Welcome(w) = &mut back {
                // Only the announced channels travel.
                w.channels[3..].fill(1);
            }
            assert_eq!(&back, p);
            if matches!(p, Handshake::Hello { .. } | Handshake::Response { .. }) {
                assert_eq!(n, MIN_HANDSHAKE_LEN);
            } else {
                assert!(n < 100, "server replies stay small: {n}");
            }
        }
    }
}
