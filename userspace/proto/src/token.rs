//! Connect tokens, version 2 (netcode-style): the backend draws the session keys and
//! seals them, with the client's identity, into a private part only the servers can read.
//!
//! A game backend that shares a [`TokenKey`] with the servers [`issue`]s a
//! [`PublicToken`] to a client over a secure channel. The client reads the public part
//! (servers to try, handshake timeout, session keys) and passes the private part, unread,
//! to a server in its `Response`. The server [`open`]s it: it authenticates, has not
//! expired, and names this server; its identity (the AEAD tag) goes into a [`ReuseTable`],
//! so that one token serves one client address at a time.
//!
//! # Wire format
//!
//! All integers are big-endian.
//!
//! **Address list**: count `u8` (1..=[`MAX_ADDRESSES`]), then per address: family `u8`
//! (`4` or `6`), IP (4 or 16 bytes), port `u16`. A count of 0 or over 8, or another family
//! byte, is malformed.
//!
//! **Private token** (at most [`MAX_PRIVATE_LEN`] bytes; the client passes it to the server
//! unread):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | version = [`TOKEN_VERSION2`] (2) |
//! | 1 | 8 | expiry, Unix seconds |
//! | 9 | 24 | nonce, random, drawn by the issuer |
//! | 33 | m | ciphertext of the private plaintext |
//! | 33 + m | 16 | tag |
//!
//! The ciphertext and tag are XChaCha20-Poly1305 under the 32-byte [`TokenKey`] with the
//! nonce above; the associated data is the ASCII string `xrudp connect token v2` (22
//! bytes) followed by bytes 0..9 of the private token (version and expiry), so the expiry
//! is authenticated though it travels in the clear.
//!
//! **Private plaintext**: client id `u64` · client→server key (32) · server→client key (32)
//! · address list · user data length `u16` (0..=[`MAX_USER_DATA`]) · user data. Nothing
//! may follow. Its length is 82 to 483 bytes, so a private token is [`MIN_PRIVATE_LEN`]
//! (131) to 532 bytes long.
//!
//! **Public token** (the backend hands it to the client, which reads it):
//!
//! | size | field |
//! | --- | --- |
//! | 1 | version = 2 |
//! | 8 | expiry, Unix seconds (equal to the private token's) |
//! | 4 | handshake timeout, ms: the client gives up connecting after this |
//! | 8..=153 | address list: the servers the client may connect to |
//! | 32 | client→server key |
//! | 32 | server→client key |
//! | 2 | private token length ([`MIN_PRIVATE_LEN`]..=[`MAX_PRIVATE_LEN`]) |
//! | n | private token |
//!
//! Nothing may follow.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use rand_core::CryptoRng;

pub use crate::handshake::TokenKey;
use crate::packet::Reader;

/// Version byte of both the public and the private token of this format.
pub const TOKEN_VERSION2: u8 = 2;

/// Bytes of a session key (and of a [`TokenKey`]).
pub const KEY_LEN: usize = 32;

/// Most server addresses a token lists.
pub const MAX_ADDRESSES: usize = 8;

/// Largest user data a token carries, in bytes.
pub const MAX_USER_DATA: usize = 256;

/// Largest private token the format allows (what a receiver accepts), in bytes.
pub const MAX_PRIVATE_LEN: usize = 1024;

/// Bytes of the private token's nonce.
pub const TOKEN_NONCE_LEN: usize = 24;

/// Bytes of the private token's authentication tag.
pub const TAG_LEN: usize = 16;

/// Bytes of the private token before the ciphertext: version, expiry, nonce.
const PRIVATE_HEADER_LEN: usize = 1 + 8 + TOKEN_NONCE_LEN;

/// Bytes of the private token that are associated data: version and expiry.
const AD_HEADER_LEN: usize = 1 + 8;

/// The associated data's label, before the version and expiry.
const AD_LABEL: &[u8; 22] = b"xrudp connect token v2";

/// Bytes of the associated data: the label, version and expiry.
const AD_LEN: usize = AD_LABEL.len() + AD_HEADER_LEN;

/// Shortest private plaintext: client id, two keys, one IPv4 address, empty user data.
const MIN_PLAINTEXT_LEN: usize = 8 + 2 * KEY_LEN + 1 + 7 + 2;

/// Shortest private token: the header, the shortest plaintext, the tag.
pub const MIN_PRIVATE_LEN: usize = PRIVATE_HEADER_LEN + MIN_PLAINTEXT_LEN + TAG_LEN;

/// Why a connect token was refused, or could not be issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Malformed: wrong length, version or field.
    #[error(
        "connect token malformed (wrong length, version or field); have the backend issue a new one"
    )]
    Malformed,
    /// The private token does not verify under the server's key (forged, altered, or
    /// issued under another key).
    #[error(
        "connect token does not verify under this server's key (forged, altered, or issued with another key); check that the backend and the servers share one token key"
    )]
    BadMac,
    /// The expiry time has passed.
    #[error("connect token expired; have the backend issue a new one")]
    Expired,
    /// The token does not list the server that received it.
    #[error("this token was issued for other servers; check the backend's server address list")]
    WrongServer,
    /// Issuing: more user data than [`MAX_USER_DATA`].
    #[error(
        "user data of {len} bytes does not fit a connect token (at most {MAX_USER_DATA}); shorten it"
    )]
    UserDataTooLong {
        /// The length asked for.
        len: usize,
    },
    /// Issuing: no server address, or more than [`MAX_ADDRESSES`].
    #[error(
        "a connect token lists 1 to {MAX_ADDRESSES} server addresses, not {count}; pass between 1 and {MAX_ADDRESSES}"
    )]
    BadAddressCount {
        /// The number of addresses asked for.
        count: usize,
    },
    /// Issuing: a handshake timeout of `u32::MAX` ms (about 49.7 days) or more.
    #[error(
        "handshake timeout does not fit in a u32 of milliseconds (about 49.7 days); pass a shorter one"
    )]
    TimeoutTooLong,
}

/// What the backend puts into a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenParams {
    /// Identity of the client, chosen by the backend.
    pub client_id: u64,
    /// Unix time (seconds) from which the token is refused.
    pub expires: u64,
    /// How long the client tries to connect before giving up; carried in whole
    /// milliseconds (rounded down), at most `u32::MAX` ms.
    pub handshake_timeout: Duration,
    /// The servers the client may connect to, in the order it tries them: 1 to
    /// [`MAX_ADDRESSES`]. Only the IP and port are carried.
    pub addresses: Vec<SocketAddr>,
    /// Opaque data for the game server, sealed from the client: at most
    /// [`MAX_USER_DATA`] bytes.
    pub user_data: Vec<u8>,
}

/// A connect token as the client holds it: what it reads, and the private token it passes
/// to the server unread.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicToken {
    /// Unix time (seconds) from which servers refuse the token.
    pub expires: u64,
    /// How long the client tries to connect before giving up (whole milliseconds).
    pub handshake_timeout: Duration,
    /// The servers the client may connect to, in the order to try them.
    pub addresses: Vec<SocketAddr>,
    /// The key that seals what the client sends.
    pub c2s_key: [u8; KEY_LEN],
    /// The key that seals what the server sends.
    pub s2c_key: [u8; KEY_LEN],
    private: Vec<u8>,
}

impl core::fmt::Debug for PublicToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PublicToken")
            .field("expires", &self.expires)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("addresses", &self.addresses)
            .field("private_len", &self.private.len())
            .finish_non_exhaustive()
    }
}

impl PublicToken {
    /// The private token: the bytes the client sends to the server in its `Response`.
    #[must_use]
    pub fn private_bytes(&self) -> &[u8] {
        &self.private
    }

    /// Encodes the token, as the backend hands it to the client.
    ///
    /// A token from [`issue`] or [`Self::decode`] encodes exactly (`decode` gives it back).
    /// If its public fields were since changed beyond the format's limits, an address
    /// list of 0 or more than [`MAX_ADDRESSES`] entries is written as a count of 0, which
    /// [`Self::decode`] refuses, and a timeout of `u32::MAX` ms or more is written as
    /// `u32::MAX` ms.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let addresses = if self.addresses.len() <= MAX_ADDRESSES {
            &self.addresses[..]
        } else {
            &[]
        };
        let mut out = Vec::with_capacity(
            1 + 8 + 4 + 1 + addresses.len() * 19 + 2 * KEY_LEN + 2 + self.private.len(),
        );
        out.push(TOKEN_VERSION2);
        out.extend_from_slice(&self.expires.to_be_bytes());
        let ms = u32::try_from(self.handshake_timeout.as_millis()).unwrap_or(u32::MAX);
        out.extend_from_slice(&ms.to_be_bytes());
        put_addresses(&mut out, addresses);
        out.extend_from_slice(&self.c2s_key);
        out.extend_from_slice(&self.s2c_key);
        // The private token is at most MAX_PRIVATE_LEN (1024) bytes: issue and decode
        // make it so, and it cannot be changed since.
        out.extend_from_slice(&(self.private.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.private);
        out
    }

    /// Decodes a token (the client's side). Checks the structure of the public part and
    /// the outer structure of the private token it carries (version, length, the same
    /// expiry); the client cannot check more, lacking the key.
    pub fn decode(bytes: &[u8]) -> Result<Self, TokenError> {
        Self::parse(bytes).ok_or(TokenError::Malformed)
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes);
        if r.u8().ok()? != TOKEN_VERSION2 {
            return None;
        }
        let expires = r.u64().ok()?;
        let ms = r.u32().ok()?;
        let (list, rest) = split_addresses(r.bytes(r.remaining()).ok()?)?;
        let mut r = Reader::new(rest);
        let c2s_key = key(&mut r)?;
        let s2c_key = key(&mut r)?;
        let len = usize::from(r.u16().ok()?);
        let private = r.bytes(len).ok()?;
        if r.remaining() != 0 || PrivateParts::split(private)?.expires != expires {
            return None;
        }
        Some(Self {
            expires,
            handshake_timeout: Duration::from_millis(u64::from(ms)),
            addresses: list.iter().collect(),
            c2s_key,
            s2c_key,
            private: private.to_vec(),
        })
    }
}

/// Issues a token (the game backend's side): draws both session keys and the nonce from
/// `rng`, and seals the private part under `key`.
///
/// Refuses, rather than cuts, what does not fit: more than [`MAX_USER_DATA`] bytes of user
/// data, no address or more than [`MAX_ADDRESSES`], a handshake timeout of `u32::MAX` ms or
/// more.
pub fn issue<R: CryptoRng + ?Sized>(
    key: &TokenKey,
    params: &TokenParams,
    rng: &mut R,
) -> Result<PublicToken, TokenError> {
    if params.user_data.len() > MAX_USER_DATA {
        return Err(TokenError::UserDataTooLong {
            len: params.user_data.len(),
        });
    }
    let count = params.addresses.len();
    if count == 0 || count > MAX_ADDRESSES {
        return Err(TokenError::BadAddressCount { count });
    }
    let ms = u32::try_from(params.handshake_timeout.as_millis())
        .map_err(|_| TokenError::TimeoutTooLong)?;
    let mut c2s_key = [0; KEY_LEN];
    let mut s2c_key = [0; KEY_LEN];
    let mut nonce = [0; TOKEN_NONCE_LEN];
    rng.fill_bytes(&mut c2s_key);
    rng.fill_bytes(&mut s2c_key);
    rng.fill_bytes(&mut nonce);

    let mut plain = Vec::with_capacity(MIN_PLAINTEXT_LEN + count * 19 + params.user_data.len());
    plain.extend_from_slice(&params.client_id.to_be_bytes());
    plain.extend_from_slice(&c2s_key);
    plain.extend_from_slice(&s2c_key);
    put_addresses(&mut plain, &params.addresses);
    // At most MAX_USER_DATA (256) bytes, checked above.
    plain.extend_from_slice(&(params.user_data.len() as u16).to_be_bytes());
    plain.extend_from_slice(&params.user_data);

    Ok(PublicToken {
        expires: params.expires,
        handshake_timeout: Duration::from_millis(u64::from(ms)),
        addresses: params.addresses.clone(),
        c2s_key,
        s2c_key,
        private: seal(key, params.expires, &nonce, &plain),
    })
}

/// Seals a private plaintext into a private token.
fn seal(key: &TokenKey, expires: u64, nonce: &[u8; TOKEN_NONCE_LEN], plain: &[u8]) -> Vec<u8> {
    let mut private = Vec::with_capacity(PRIVATE_HEADER_LEN + plain.len() + TAG_LEN);
    private.push(TOKEN_VERSION2);
    private.extend_from_slice(&expires.to_be_bytes());
    private.extend_from_slice(nonce);
    let ad = associated_data(TOKEN_VERSION2, expires);
    private.extend_from_slice(plain);
    let aead = XChaCha20Poly1305::new((&key.0).into());
    // INVARIANT: XChaCha20-Poly1305 refuses only messages over 2^38 bytes; a private
    // plaintext is at most a few hundred.
    let tag = aead
        .encrypt_in_place_detached(nonce.into(), &ad, &mut private[PRIVATE_HEADER_LEN..])
        .expect("a private plaintext is far below the AEAD's length limit");
    private.extend_from_slice(&tag);
    private
}

/// The associated data of a private token: the label, then version and expiry.
fn associated_data(version: u8, expires: u64) -> [u8; AD_LEN] {
    let mut ad = [0; AD_LEN];
    ad[..AD_LABEL.len()].copy_from_slice(AD_LABEL);
    ad[AD_LABEL.len()] = version;
    ad[AD_LABEL.len() + 1..].copy_from_slice(&expires.to_be_bytes());
    ad
}

/// A private token cut into its parts (outer structure checked, nothing authenticated).
struct PrivateParts<'a> {
    expires: u64,
    nonce: &'a [u8; TOKEN_NONCE_LEN],
    ciphertext: &'a [u8],
    tag: &'a [u8; TAG_LEN],
}

impl<'a> PrivateParts<'a> {
    fn split(private: &'a [u8]) -> Option<Self> {
        if !(MIN_PRIVATE_LEN..=MAX_PRIVATE_LEN).contains(&private.len()) {
            return None;
        }
        let mut r = Reader::new(private);
        if r.u8().ok()? != TOKEN_VERSION2 {
            return None;
        }
        let expires = r.u64().ok()?;
        let nonce = r.bytes(TOKEN_NONCE_LEN).ok()?.try_into().ok()?;
        let ciphertext = r.bytes(r.remaining().checked_sub(TAG_LEN)?).ok()?;
        let tag = r.bytes(TAG_LEN).ok()?.try_into().ok()?;
        Some(Self {
            expires,
            nonce,
            ciphertext,
            tag,
        })
    }
}

/// A private token the server opened: authenticated, unexpired, and naming this server.
/// Its slices borrow the caller's scratch buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedToken<'a> {
    /// Identity of the client, chosen by the backend.
    pub client_id: u64,
    /// Unix time (seconds) from which the token is refused.
    pub expires: u64,
    /// The key that seals what the client sends.
    pub c2s_key: [u8; KEY_LEN],
    /// The key that seals what the server sends.
    pub s2c_key: [u8; KEY_LEN],
    /// The servers the token was issued for (this one among them).
    pub addresses: AddressList<'a>,
    /// Opaque data from the backend (at most [`MAX_USER_DATA`] bytes).
    pub user_data: &'a [u8],
    /// The private token's authentication tag: its identity, for [`ReuseTable::check`].
    pub tag: [u8; TAG_LEN],
}

impl core::fmt::Debug for OpenedToken<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpenedToken")
            .field("client_id", &self.client_id)
            .field("expires", &self.expires)
            .field("addresses", &self.addresses)
            .field("user_data_len", &self.user_data.len())
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

/// Opens a private token (the server's side) at Unix time `unix_now`, received by the
/// server at `server`. Decrypts into `scratch` (which then holds the session keys in the
/// clear; the result borrows it) and allocates nothing.
///
/// Checks, in this order: the outer structure ([`TokenError::Malformed`]), authentication
/// under `key` ([`TokenError::BadMac`]), then the structure of the sealed plaintext
/// ([`TokenError::Malformed`]: only a holder of the key could have made that), the expiry
/// ([`TokenError::Expired`] when `unix_now >= expires`), and that `server` is in the address
/// list ([`TokenError::WrongServer`]). Addresses match by IP and port; an IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`) equals its IPv4 form, on either side.
pub fn open<'s>(
    key: &TokenKey,
    private: &[u8],
    unix_now: u64,
    server: SocketAddr,
    scratch: &'s mut [u8; MAX_PRIVATE_LEN],
) -> Result<OpenedToken<'s>, TokenError> {
    let parts = PrivateParts::split(private).ok_or(TokenError::Malformed)?;
    let len = parts.ciphertext.len();
    let buf = scratch.get_mut(..len).ok_or(TokenError::Malformed)?;
    buf.copy_from_slice(parts.ciphertext);
    let ad = associated_data(TOKEN_VERSION2, parts.expires);
    XChaCha20Poly1305::new((&key.0).into())
        .decrypt_in_place_detached(parts.nonce.into(), &ad, buf, parts.tag.into())
        .map_err(|_| TokenError::BadMac)?;
    let scratch: &'s [u8] = scratch;
    let plain = scratch.get(..len).ok_or(TokenError::Malformed)?;
    let mut opened = parse_plaintext(plain).ok_or(TokenError::Malformed)?;
    if unix_now >= parts.expires {
        return Err(TokenError::Expired);
    }
    if !opened.addresses.contains(server) {
        return Err(TokenError::WrongServer);
    }
    opened.expires = parts.expires;
    opened.tag = *parts.tag;
    Ok(opened)
}

/// Parses an authenticated private plaintext; expiry and tag are left for the caller.
fn parse_plaintext(plain: &[u8]) -> Option<OpenedToken<'_>> {
    let mut r = Reader::new(plain);
    let client_id = r.u64().ok()?;
    let c2s_key = key(&mut r)?;
    let s2c_key = key(&mut r)?;
    let (addresses, rest) = split_addresses(r.bytes(r.remaining()).ok()?)?;
    let mut r = Reader::new(rest);
    let len = usize::from(r.u16().ok()?);
    if len > MAX_USER_DATA {
        return None;
    }
    let user_data = r.bytes(len).ok()?;
    (r.remaining() == 0).then_some(OpenedToken {
        client_id,
        expires: 0,
        c2s_key,
        s2c_key,
        addresses,
        user_data,
        tag: [0; TAG_LEN],
    })
}

fn key(r: &mut Reader<'_>) -> Option<[u8; KEY_LEN]> {
    r.bytes(KEY_LEN).ok()?.try_into().ok()
}

/// Appends an address list (the caller checked that it has 1 to 8 entries).
fn put_addresses(out: &mut Vec<u8>, addresses: &[SocketAddr]) {
    out.push(addresses.len() as u8);
    for a in addresses {
        match a.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
}

/// Splits one encoded address off the front of `buf`.
fn split_address(buf: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let mut r = Reader::new(buf);
    let ip = match r.u8().ok()? {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(r.bytes(4).ok()?).ok()?)),
        6 => IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(r.bytes(16).ok()?).ok()?,
        )),
        _ => return None,
    };
    let port = r.u16().ok()?;
    let used = buf.len() - r.remaining();
    Some((SocketAddr::new(ip, port), buf.get(used..)?))
}

/// Splits a valid address list off the front of `buf`.
fn split_addresses(buf: &[u8]) -> Option<(AddressList<'_>, &[u8])> {
    let (&count, body) = buf.split_first()?;
    if count == 0 || usize::from(count) > MAX_ADDRESSES {
        return None;
    }
    let mut rest = body;
    for _ in 0..count {
        rest = split_address(rest)?.1;
    }
    let bytes = body.get(..body.len() - rest.len())?;
    Some((AddressList { count, bytes }, rest))
}

/// The IP in the form addresses compare in: an IPv4-mapped IPv6 address as IPv4.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
}

/// The address list of an opened token: a view of its validated encoding (1 to
/// [`MAX_ADDRESSES`] entries), read without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AddressList<'a> {
    count: u8,
    bytes: &'a [u8],
}

impl<'a> AddressList<'a> {
    /// Number of addresses.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether the list is empty (never, for a list from an opened token).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The addresses, in the issuer's order.
    #[must_use]
    pub fn iter(&self) -> Addresses<'a> {
        Addresses {
            left: self.count,
            rest: self.bytes,
        }
    }

    /// Whether `addr` is in the list, comparing IP and port, with an IPv4-mapped IPv6
    /// address equal to its IPv4 form.
    #[must_use]
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.iter().any(|a| same_endpoint(a, addr))
    }
}

impl core::fmt::Debug for AddressList<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for AddressList<'a> {
    type Item = SocketAddr;
    type IntoIter = Addresses<'a>;
    fn into_iter(self) -> Addresses<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &AddressList<'a> {
    type Item = SocketAddr;
    type IntoIter = Addresses<'a>;
    fn into_iter(self) -> Addresses<'a> {
        self.iter()
    }
}

/// Iterator over an [`AddressList`].
#[derive(Clone, Debug)]
pub struct Addresses<'a> {
    left: u8,
    rest: &'a [u8],
}

impl Iterator for Addresses<'_> {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        self.left = self.left.checked_sub(1)?;
        // The list was validated when it was split off; a failure here only ends it.
        let (addr, rest) = split_address(self.rest)?;
        self.rest = rest;
        Some(addr)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.left)))
    }
}

/// A token was presented from a second address while its first use is on record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "this connect token is in use from another address; a token admits one client: have the backend issue one per client"
)]
pub struct Reused;

/// Largest capacity a [`ReuseTable`] takes; larger requests are clamped to it.
pub const MAX_REUSE_CAPACITY: usize = 1 << 24;

/// One recorded token use.
#[derive(Clone, Copy, Debug)]
struct Entry {
    tag: [u8; TAG_LEN],
    from: SocketAddr,
    expires: u64,
}

/// The server's record of the tokens in use, so that one token admits one client address:
/// a token's first use records its tag with the sender's address until the token expires;
/// a later use from the same address passes, one from another address is refused.
///
/// Bounded: it holds at most `capacity` entries in a table allocated by [`Self::new`]
/// (about 112 to 224 bytes per entry of capacity) and never allocates afterwards. Entries
/// whose token has expired are forgotten. When it is full of live entries, a new token
/// evicts the one that expires first ([`Self::evictions`] counts them). Eviction only
/// shortens how long reuse of the evicted token is detected: it can then be used once more
/// from a new address. Operator guidance: size it at no less than
/// 2 × max connections × token lifetime / typical connection duration, the number of
/// tokens a full server sees used within one token lifetime, with a margin.
///
/// Implementation: open addressing with linear probing over a power-of-two table at least
/// twice the capacity (load at most 1/2), keyed by the tag's first 8 bytes (an AEAD tag
/// under a key clients do not hold: uniformly spread, and not choosable by them). Expired
/// entries met while probing are removed by backward shifting, so no tombstones build up.
///
/// Complexity: [`Self::check`] is O(1) expected; when the table is full (only with more
/// token uses than it was sized for), O(capacity) for one sweep that removes every expired
/// entry and, if that frees nothing, one scan for the entry to evict.
#[derive(Debug)]
pub struct ReuseTable {
    slots: Vec<Option<Entry>>,
    len: usize,
    capacity: usize,
    evictions: u64,
}

impl ReuseTable {
    /// A table for at most `capacity` tokens in use (clamped to
    /// 1..=[`MAX_REUSE_CAPACITY`]).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_REUSE_CAPACITY);
        Self {
            slots: vec![None; (2 * capacity).next_power_of_two()],
            len: 0,
            capacity,
            evictions: 0,
        }
    }

    /// Most entries it holds.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries held, including expired ones not yet removed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Live entries evicted to make room so far: a rising count means the table is smaller
    /// than the server's token traffic needs.
    #[must_use]
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Records a use of the token with `tag` (from [`OpenedToken::tag`]) from `from` at
    /// Unix time `unix_now`, the token expiring at `expires`. The first use is recorded and
    /// passes; a later use from the same address (IP and port; IPv4-mapped IPv6 equal to
    /// IPv4) passes; one from another address is refused while the first is on record. A
    /// token already expired (`unix_now >= expires`) passes and is not recorded.
    pub fn check(
        &mut self,
        tag: [u8; TAG_LEN],
        from: SocketAddr,
        expires: u64,
        unix_now: u64,
    ) -> Result<(), Reused> {
        let mut i = self.home(&tag);
        while let Some(e) = self.slots[i] {
            if e.expires <= unix_now {
                // Removing shifts a later entry of the run into slot i: look at it again.
                self.remove(i);
            } else if e.tag == tag {
                return if same_endpoint(e.from, from) {
                    Ok(())
                } else {
                    Err(Reused)
                };
            } else {
                i = self.next(i);
            }
        }
        if unix_now >= expires {
            return Ok(());
        }
        if self.len >= self.capacity {
            self.make_room(unix_now);
            // Removals may have moved entries: find the run's end again.
            i = self.home(&tag);
            while self.slots[i].is_some() {
                i = self.next(i);
            }
        }
        self.slots[i] = Some(Entry { tag, from, expires });
        self.len += 1;
        Ok(())
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, tag: &[u8; TAG_LEN]) -> usize {
        let mut k = [0; 8];
        k.copy_from_slice(&tag[..8]);
        (u64::from_be_bytes(k) as usize) & self.mask()
    }

    fn next(&self, i: usize) -> usize {
        (i + 1) & self.mask()
    }

    /// Empties slot `i` and shifts the rest of its run back, so that every entry stays
    /// reachable from its home slot without crossing an empty one.
    fn remove(&mut self, i: usize) {
        let mask = self.mask();
        self.slots[i] = None;
        self.len -= 1;
        let mut gap = i;
        let mut j = self.next(i);
        while let Some(e) = self.slots[j] {
            let home = self.home(&e.tag);
            // The entry may fill the gap if the gap lies between its home and it.
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(gap) & mask) {
                self.slots[gap] = Some(e);
                self.slots[j] = None;
                gap = j;
            }
            j = self.next(j);
        }
    }

    /// Removes every expired entry; if none was, evicts the entry that expires first.
    fn make_room(&mut self, unix_now: u64) {
        let mut i = 0;
        while i < self.slots.len() {
            // Removing shifts later entries of the run back into slot i (looked at again)
            // and beyond; entries it moves into slots already passed were passed too,
            // since a run cannot wrap round to i (the table is never full).
            if self.slots[i].is_some_and(|e| e.expires <= unix_now) {
                self.remove(i);
            } else {
                i += 1;
            }
        }
        if self.len < self.capacity {
            return;
        }
        let oldest = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|e| (e.expires, i)))
            .min();
        if let Some((_, i)) = oldest {
            self.remove(i);
            self.evictions += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;
    use std::collections::HashMap;

    const KEY: TokenKey = TokenKey([0x42; 32]);
    const NOW: u64 = 1_700_000_000;

    fn v4(a: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, a], port))
    }

    fn v6(a: u16, port: u16) -> SocketAddr {
        SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, a), port))
    }

    fn params(user_data: usize, addresses: Vec<SocketAddr>) -> TokenParams {
        TokenParams {
            client_id: 0x0123_4567_89ab_cdef,
            expires: NOW + 30,
            handshake_timeout: Duration::from_millis(5000),
            addresses,
            user_data: (0..user_data).map(|i| i as u8).collect(),
        }
    }

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(7)
    }

    fn token(p: &TokenParams) -> PublicToken {
        issue(&KEY, p, &mut rng()).unwrap()
    }

    #[test]
    fn round_trips_through_the_client_to_the_server() {
        let lists = [
            vec![v4(1, 4000)],
            vec![v6(1, 4000)],
            vec![v4(1, 4000), v6(2, 4001), v4(3, 4002)],
            (0..8).map(|i| v6(i, 5000 + i)).collect(),
        ];
        for user in [0, 1, 256] {
            for list in &lists {
                let p = params(user, list.clone());
                let issued = token(&p);
                assert_eq!(issued.addresses, p.addresses);
                assert_ne!(issued.c2s_key, issued.s2c_key);
                let bytes = issued.encode();
                let t = PublicToken::decode(&bytes).unwrap();
                assert_eq!(t, issued);
                assert_eq!(t.encode(), bytes);
                assert_eq!(t.expires, p.expires);
                assert_eq!(t.handshake_timeout, p.handshake_timeout);
                assert!(t.private_bytes().len() <= MAX_PRIVATE_LEN);
                for server in list {
                    let mut scratch = [0; MAX_PRIVATE_LEN];
                    let o = open(&KEY, t.private_bytes(), NOW, *server, &mut scratch).unwrap();
                    assert_eq!(o.client_id, p.client_id);
                    assert_eq!(o.expires, p.expires);
                    assert_eq!(o.c2s_key, t.c2s_key);
                    assert_eq!(o.s2c_key, t.s2c_key);
                    assert_eq!(o.user_data, &p.user_data[..]);
                    assert_eq!(o.addresses.len(), list.len());
                    assert_eq!(o.addresses.iter().collect::<Vec<_>>(), *list);
                    let private = t.private_bytes();
                    assert_eq!(o.tag, private[private.len() - TAG_LEN..]);
                }
            }
        }
    }

    #[test]
    fn largest_token_fits_the_limits() {
        let t = token(&params(256, (0..8).map(|i| v6(i, 1)).collect()));
        assert_eq!(t.private_bytes().len(), 532);
        assert_eq!(t.encode().len(), 764);
        let t = token(&params(0, vec![v4(1, 1)]));
        assert_eq!(t.private_bytes().len(), MIN_PRIVATE_LEN);
    }

    #[test]
    fn debug_shows_no_keys() {
        let t = token(&params(3, vec![v4(1, 4000)]));
        let shown = format!("{t:?}");
        assert!(!shown.contains("c2s"), "{shown}");
        let mut scratch = [0; MAX_PRIVATE_LEN];
        let o = open(&KEY, t.private_bytes(), NOW, v4(1, 4000), &mut scratch).unwrap();
        let shown = format!("{o:?}");
        assert!(!shown.contains("c2s") && !shown.contains("s2c"), "{shown}");
        assert!(shown.contains("192.0.2.1:4000"), "{shown}");
    }

    #[test]
    fn every_bit_flip_of_the_private_token_fails() {
        let t = token(&params(5, vec![v4(1, 4000), v6(2, 4001)]));
        let private = t.private_bytes();
        for bit in 0..private.len() * 8 {
            let mut b = private.to_vec();
            b[bit / 8] ^= 1 << (bit % 8);
            let mut scratch = [0; MAX_PRIVATE_LEN];
            let got = open(&KEY, &b, NOW, v4(1, 4000), &mut scratch);
            let want = if bit < 8 {
                TokenError::Malformed
            } else {
                // Expiry (authenticated as associated data), nonce, ciphertext, tag.
                TokenError::BadMac
            };
            assert_eq!(got.unwrap_err(), want, "bit {bit}");
        }
    }

    #[test]
    fn refuses_wrong_key_expired_and_other_servers() {
        let t = token(&params(0, vec![v4(1, 4000), v6(2, 4001)]));
        let p = t.private_bytes();
        let mut s = [0; MAX_PRIVATE_LEN];
        let other = TokenKey([0x43; 32]);
        assert_eq!(
            open(&other, p, NOW, v4(1, 4000), &mut s),
            Err(TokenError::BadMac)
        );
        assert!(open(&KEY, p, NOW + 29, v4(1, 4000), &mut s).is_ok());
        assert_eq!(
            open(&KEY, p, NOW + 30, v4(1, 4000), &mut s),
            Err(TokenError::Expired)
        );
        // Bad MAC before expiry: an expired forgery says "forged".
        assert_eq!(
            open(&other, p, NOW + 30, v4(1, 4000), &mut s),
            Err(TokenError::BadMac)
        );
        for wrong in [v4(1, 4001), v4(9, 4000), v6(1, 4001), v6(2, 4000)] {
            assert_eq!(
                open(&KEY, p, NOW, wrong, &mut s),
                Err(TokenError::WrongServer),
                "{wrong}"
            );
        }
        assert!(open(&KEY, p, NOW, v6(2, 4001), &mut s).is_ok());
        // The IPv4-mapped IPv6 form of a listed IPv4 address is the same server.
        let mapped = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped(), 4000));
        assert!(open(&KEY, p, NOW, mapped, &mut s).is_ok());
        let mapped_port = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped(), 4001));
        assert_eq!(
            open(&KEY, p, NOW, mapped_port, &mut s),
            Err(TokenError::WrongServer)
        );
        // And a mapped entry in the list matches the plain IPv4 server address.
        let t = token(&params(0, vec![mapped]));
        assert!(open(&KEY, t.private_bytes(), NOW, v4(1, 4000), &mut s).is_ok());
        // Cut short: the tag moves, so it no longer verifies; below the shortest token's
        // length, too long, or empty: malformed.
        assert_eq!(
            open(&KEY, &p[..p.len() - 1], NOW, v4(1, 4000), &mut s),
            Err(TokenError::BadMac)
        );
        assert_eq!(
            open(&KEY, &p[..MIN_PRIVATE_LEN - 1], NOW, v4(1, 4000), &mut s),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            open(&KEY, &[], NOW, v4(1, 4000), &mut s),
            Err(TokenError::Malformed)
        );
        let mut long = p.to_vec();
        long.resize(MAX_PRIVATE_LEN + 1, 0);
        assert_eq!(
            open(&KEY, &long, NOW, v4(1, 4000), &mut s),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn authenticated_but_malformed_plaintext_is_malformed() {
        let good = {
            let mut p = Vec::new();
            p.extend_from_slice(&1u64.to_be_bytes());
            p.extend_from_slice(&[1; 64]);
            put_addresses(&mut p, &[v4(1, 4000)]);
            p
        };
        let with_user = |len: u16, data: &[u8]| {
            let mut p = good.clone();
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(data);
            p
        };
        let mut s = [0; MAX_PRIVATE_LEN];
        let sealed = |plain: Vec<u8>| seal(&KEY, NOW + 30, &[9; TOKEN_NONCE_LEN], &plain);
        assert!(open(&KEY, &sealed(with_user(2, b"ok")), NOW, v4(1, 4000), &mut s).is_ok());
        let mut trailing = with_user(2, b"ok");
        trailing.push(0);
        let mut no_addr = good[..72].to_vec();
        no_addr.extend_from_slice(&[0, 0, 0]);
        no_addr.resize(MIN_PLAINTEXT_LEN, 0);
        let mut bad_family = good.clone();
        bad_family[72 + 1] = 5;
        bad_family.extend_from_slice(&[0, 0]);
        for plain in [
            trailing,
            with_user(257, &[0; 257]),
            with_user(3, b"ok"),
            no_addr,
            bad_family,
        ] {
            assert_eq!(
                open(&KEY, &sealed(plain), NOW, v4(1, 4000), &mut s),
                Err(TokenError::Malformed)
            );
        }
    }

    #[test]
    fn issue_refuses_what_does_not_fit() {
        let key = &KEY;
        let r = &mut rng();
        assert_eq!(
            issue(key, &params(257, vec![v4(1, 1)]), r),
            Err(TokenError::UserDataTooLong { len: 257 })
        );
        assert_eq!(
            issue(key, &params(0, vec![]), r),
            Err(TokenError::BadAddressCount { count: 0 })
        );
        assert_eq!(
            issue(key, &params(0, vec![v4(1, 1); 9]), r),
            Err(TokenError::BadAddressCount { count: 9 })
        );
        let mut p = params(0, vec![v4(1, 1)]);
        p.handshake_timeout = Duration::from_millis(u64::from(u32::MAX) + 1);
        assert_eq!(issue(key, &p, r), Err(TokenError::TimeoutTooLong));
        p.handshake_timeout = Duration::from_millis(u64::from(u32::MAX));
        assert!(issue(key, &p, r).is_ok());
        // Sub-millisecond parts are dropped, so the issued token encodes exactly.
        p.handshake_timeout = Duration::from_micros(1500);
        let t = issue(key, &p, r).unwrap();
        assert_eq!(t.handshake_timeout, Duration::from_millis(1));
        assert_eq!(PublicToken::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn issue_draws_fresh_keys_and_nonces() {
        let p = params(0, vec![v4(1, 1)]);
        let mut r = rng();
        let a = issue(&KEY, &p, &mut r).unwrap();
        let b = issue(&KEY, &p, &mut r).unwrap();
        assert_ne!(a.c2s_key, b.c2s_key);
        assert_ne!(a.private_bytes()[9..33], b.private_bytes()[9..33]);
    }

    #[test]
    fn decode_refuses_every_truncation_and_trailing_bytes() {
        let bytes = token(&params(4, vec![v4(1, 4000), v6(2, 4001)])).encode();
        for n in 0..bytes.len() {
            assert_eq!(
                PublicToken::decode(&bytes[..n]),
                Err(TokenError::Malformed),
                "{n}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(PublicToken::decode(&long), Err(TokenError::Malformed));
    }

    #[test]
    fn decode_checks_the_fields_and_the_private_header() {
        let bytes = token(&params(0, vec![v4(1, 4000)])).encode();
        // Offsets: version 0, expiry 1..9, timeout 9..13, count 13, family 14.
        let bad = |at: usize, v: u8| {
            let mut b = bytes.clone();
            b[at] = v;
            PublicToken::decode(&b)
        };
        assert_eq!(bad(0, 1), Err(TokenError::Malformed));
        assert_eq!(
            bad(8, bytes[8] ^ 1),
            Err(TokenError::Malformed),
            "expiries differ"
        );
        assert_eq!(bad(13, 0), Err(TokenError::Malformed));
        assert_eq!(bad(13, 9), Err(TokenError::Malformed));
        assert_eq!(bad(14, 5), Err(TokenError::Malformed));
        // The private token's version: after 13 + 8 (list) + 64 (keys) + 2 (length).
        assert_eq!(bad(13 + 8 + 64 + 2, 1), Err(TokenError::Malformed));
        assert!(bad(9, 0xff).is_ok(), "any timeout decodes");
    }

    #[test]
    fn encode_clamps_what_was_changed_out_of_range() {
        let mut t = token(&params(0, vec![v4(1, 4000)]));
        t.addresses.clear();
        assert!(PublicToken::decode(&t.encode()).is_err());
        t.addresses = vec![v4(1, 1); 9];
        assert!(PublicToken::decode(&t.encode()).is_err());
        t.addresses = vec![v4(1, 1); 300];
        assert!(PublicToken::decode(&t.encode()).is_err());
        t.addresses = vec![v4(1, 1)];
        t.handshake_timeout = Duration::MAX;
        let d = PublicToken::decode(&t.encode()).unwrap();
        assert_eq!(
            d.handshake_timeout,
            Duration::from_millis(u64::from(u32::MAX))
        );
    }

    const A: SocketAddr =
        SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1));
    const B: SocketAddr =
        SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 1));

    fn tag(i: u8) -> [u8; TAG_LEN] {
        [i; TAG_LEN]
    }

    #[test]
    fn reuse_from_the_same_address_passes_from_another_is_refused() {
        let mut t = ReuseTable::new(4);
        assert_eq!(t.check(tag(1), A, 100, 10), Ok(()));
        assert_eq!(t.check(tag(1), A, 100, 11), Ok(()));
        assert_eq!(t.check(tag(1), B, 100, 12), Err(Reused));
        let mapped = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped(), 1));
        assert_eq!(t.check(tag(1), mapped, 100, 12), Ok(()));
        assert_eq!(t.check(tag(2), B, 100, 12), Ok(()));
        assert_eq!(t.len(), 2);
        // Expired: forgotten, so the tag is free again.
        assert_eq!(t.check(tag(1), B, 200, 100), Ok(()));
        assert_eq!(t.check(tag(1), A, 200, 101), Err(Reused));
        // A use of an already expired token passes and is not recorded.
        assert_eq!(t.check(tag(3), A, 50, 100), Ok(()));
        assert_eq!(t.check(tag(3), B, 50, 100), Ok(()));
        assert_eq!(t.len(), 2, "tag 1, and tag 2 expired but not yet met");
        assert!(!t.is_empty());
    }

    #[test]
    fn capacity_bounds_the_table_and_evicts_the_first_to_expire() {
        let mut t = ReuseTable::new(3);
        assert_eq!(t.capacity(), 3);
        t.check(tag(1), A, 300, 0).unwrap();
        t.check(tag(2), A, 100, 0).unwrap();
        t.check(tag(3), A, 200, 0).unwrap();
        assert_eq!(t.len(), 3);
        t.check(tag(4), A, 400, 0).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.evictions(), 1);
        // Tag 2 (first to expire) was evicted: another address now passes with it, and
        // that evicts tag 3.
        assert_eq!(t.check(tag(2), B, 100, 1), Ok(()));
        assert_eq!(t.evictions(), 2);
        assert_eq!(t.check(tag(1), B, 300, 1), Err(Reused));
        assert_eq!(t.check(tag(4), B, 400, 1), Err(Reused));
        // Once some expire, room is made without evicting.
        assert_eq!(t.check(tag(5), B, 500, 150), Ok(()));
        assert_eq!(t.evictions(), 2);
        assert_eq!(t.len(), 3);
        assert_eq!(t.check(tag(1), B, 300, 150), Err(Reused));
    }

    #[derive(Clone, Copy, Debug)]
    struct Use {
        tag: u8,
        from: bool,
        lifetime: u64,
        advance: u64,
    }

    fn a_use() -> impl Strategy<Value = Use> {
        (0u8..24, any::<bool>(), 1u64..40, 0u64..6).prop_map(|(tag, from, lifetime, advance)| Use {
            tag,
            from,
            lifetime,
            advance,
        })
    }

    /// Tags whose first 8 bytes collide often in a small table.
    fn tag_of(i: u8) -> [u8; TAG_LEN] {
        let mut t = [0; TAG_LEN];
        t[7] = i % 5;
        t[15] = i;
        t
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn decode_and_open_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..1200),
            now in any::<u64>(),
        ) {
            let _ = PublicToken::decode(&bytes);
            let mut s = [0; MAX_PRIVATE_LEN];
            let _ = open(&KEY, &bytes, now, v4(1, 4000), &mut s);
        }

        #[test]
        fn mutated_tokens_never_panic(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let t = token(&params(10, vec![v4(1, 4000), v6(2, 4001)]));
            for original in [t.encode(), t.private_bytes().to_vec()] {
                let mut b = original.clone();
                for &(at, v) in &edits {
                    let n = b.len();
                    b[at % n] = v;
                }
                b.truncate(b.len() - cut % 4);
                if let Ok(d) = PublicToken::decode(&b) {
                    prop_assert_eq!(d.encode(), b.clone());
                }
                let mut s = [0; MAX_PRIVATE_LEN];
                let opened = open(&KEY, &b, NOW, v4(1, 4000), &mut s);
                // Only the private token itself, unchanged, opens.
                prop_assert_eq!(opened.is_ok(), b == t.private_bytes());
            }
        }

        /// Until it evicts, the table answers as an unbounded map with expiry does.
        #[test]
        fn reuse_table_matches_a_map(
            uses in proptest::collection::vec(a_use(), 1..300),
            capacity in 1usize..20,
        ) {
            let mut t = ReuseTable::new(capacity);
            let mut model: HashMap<u8, (SocketAddr, u64)> = HashMap::new();
            let mut now = 0;
            for u in uses {
                now += u.advance;
                let from = if u.from { A } else { B };
                let expires = now + u.lifetime;
                let want = match model.get(&u.tag) {
                    Some(&(f, e)) if e > now => if f == from { Ok(()) } else { Err(Reused) },
                    _ => {
                        model.insert(u.tag, (from, expires));
                        Ok(())
                    }
                };
                let got = t.check(tag_of(u.tag), from, expires, now);
                prop_assert!(t.len() <= t.capacity());
                if t.evictions() == 0 {
                    prop_assert_eq!(got, want);
                }
            }
        }
    }
}
