//! Packet protection (docs/PROTOCOL.md §13): the key schedule and the per-packet AEAD.
//!
//! - **AEAD**: AES-256-GCM, chosen by measurement (`benches/aead.rs`, docs/BENCHMARKS.md):
//!   `ring`'s AES-NI/CLMUL code seals a 64-byte packet in 178 ns on the reference VM,
//!   half of ChaCha20-Poly1305's time in the same crate and less than RustCrypto's
//!   AES-GCM (223 ns; 2.4× at 1,200 bytes). On Apple targets RustCrypto's `aes-gcm` is the
//!   backend (pure Rust: no Apple C toolchain needed to build the client).
//! - **Nonce**: the 12-byte per-direction IV XOR the packet's full 64-bit packet number
//!   (right-aligned, big-endian), as in RFC 9001 §5.3. The wire carries 16 bits of it; the
//!   receiver reconstructs the rest (RFC 9000 §A.3, [`crate::packet::expand16`]). A sender
//!   numbers its packets consecutively and never reuses a number, so a nonce never repeats
//!   under one key.
//! - **Key update**: AES-GCM may protect at most 2^23 packets under one key (RFC 9001
//!   §6.6). Packet number `pn` is protected by the key of epoch `pn >> 22`
//!   ([`KEY_EPOCH_BITS`]): epoch 0's key comes from the key schedule, epoch *e* + 1's is
//!   `HKDF-Expand(key_e, "xrudp ku", 32)` (the IV does not change). Both ends know every
//!   packet's full number, so no key-phase bit is needed; a receiver keeps the keys of the
//!   epoch it is in and the next.
//! - **Associated data**: the packet's header up to the sealed body, with the CRC field
//!   (bytes 4..8) as zeros, since the CRC is computed over the sealed packet.
//! - **Keys**: HKDF-SHA256 (RFC 5869). `PRK = Extract(salt = SHA-256(transcript), ikm =
//!   secret)`; each direction's key and IV are `Expand(PRK, label, 32 / 12)` with the
//!   labels `"xrudp c2s key"`, `"xrudp c2s iv"`, `"xrudp s2c key"`, `"xrudp s2c iv"`;
//!   the `Welcome`'s key is `Expand(PRK, "xrudp welcome key", 32)`.

use hkdf::Hkdf;
use sha2::{Digest, Sha256};

/// Bytes of the authentication tag appended to every sealed packet.
pub const TAG_LEN: usize = 16;
/// Bytes of an AEAD key.
pub const KEY_LEN: usize = 32;
/// Bytes of a per-direction IV.
pub const IV_LEN: usize = 12;
/// Largest header (associated data) a sealed packet has.
pub const MAX_HEADER_LEN: usize = 64;
/// Packet numbers per key: a key protects `2^KEY_EPOCH_BITS` packets (half AES-GCM's
/// confidentiality limit of 2^23, RFC 9001 §6.6).
pub const KEY_EPOCH_BITS: u32 = 22;

/// A sealed packet failed to open: forged, altered, replayed under another packet number,
/// or from another session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("packet failed authentication")]
pub struct AuthError;

/// AES-256-GCM: `ring`'s (AES-NI/CLMUL/AVX assembly, measured fastest) everywhere but on
/// Apple targets, where RustCrypto's `aes-gcm` (pure Rust, the same bytes: the tests check
/// one against the other) keeps the client buildable without Apple's C toolchain.
#[cfg(not(target_vendor = "apple"))]
mod backend {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

    use super::{AuthError, IV_LEN, KEY_LEN, TAG_LEN};

    pub(super) struct Aes(LessSafeKey);

    impl Aes {
        pub(super) fn new(raw: &[u8; KEY_LEN]) -> Self {
            // INVARIANT: AES-256-GCM takes exactly KEY_LEN bytes.
            Self(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, raw).expect("a 32-byte AES-256 key"),
            ))
        }

        pub(super) fn seal(&self, nonce: [u8; IV_LEN], ad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
            // INVARIANT: AES-GCM refuses only inputs over 2^36 bytes; a packet is at most
            // 64 KiB.
            let tag = self
                .0
                .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(ad), buf)
                .expect("a packet is far below the AEAD's length limit");
            let mut out = [0; TAG_LEN];
            out.copy_from_slice(tag.as_ref());
            out
        }

        pub(super) fn open(
            &self,
            nonce: [u8; IV_LEN],
            ad: &[u8],
            buf: &mut [u8],
            tag: &[u8; TAG_LEN],
        ) -> Result<(), AuthError> {
            self.0
                .open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(ad),
                    Tag::from(*tag),
                    buf,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| AuthError)
        }
    }
}

#[cfg(target_vendor = "apple")]
mod backend {
    use aes_gcm::aead::{AeadInPlace, KeyInit};

    use super::{AuthError, IV_LEN, KEY_LEN, TAG_LEN};

    pub(super) struct Aes(aes_gcm::Aes256Gcm);

    impl Aes {
        pub(super) fn new(raw: &[u8; KEY_LEN]) -> Self {
            Self(aes_gcm::Aes256Gcm::new(raw.into()))
        }

        pub(super) fn seal(&self, nonce: [u8; IV_LEN], ad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
            // INVARIANT: AES-GCM refuses only inputs over 2^36 bytes; a packet is at most
            // 64 KiB.
            self.0
                .encrypt_in_place_detached(&nonce.into(), ad, buf)
                .expect("a packet is far below the AEAD's length limit")
                .into()
        }

        pub(super) fn open(
            &self,
            nonce: [u8; IV_LEN],
            ad: &[u8],
            buf: &mut [u8],
            tag: &[u8; TAG_LEN],
        ) -> Result<(), AuthError> {
            self.0
                .decrypt_in_place_detached(&nonce.into(), ad, buf, tag.into())
                .map_err(|_| AuthError)
        }
    }
}

/// One AES-256-GCM key (one epoch's).
struct EpochKey {
    aead: backend::Aes,
    raw: [u8; KEY_LEN],
}

impl EpochKey {
    fn new(raw: [u8; KEY_LEN]) -> Self {
        Self {
            aead: backend::Aes::new(&raw),
            raw,
        }
    }

    /// The next epoch's key: `HKDF-Expand(key, "xrudp ku", 32)`.
    fn next(&self) -> Self {
        let mut raw = [0; KEY_LEN];
        // INVARIANT: a 32-byte PRK is valid, and 32 bytes is a short output.
        Hkdf::<Sha256>::from_prk(&self.raw)
            .expect("a 32-byte PRK")
            .expand(b"xrudp ku", &mut raw)
            .expect("short HKDF output");
        Self::new(raw)
    }
}

/// One direction's packet protection: the key of the current epoch (and, on the
/// receiving side, the next), and the IV.
pub struct PacketKey {
    iv: [u8; IV_LEN],
    epoch: u64,
    key: EpochKey,
    /// The next epoch's key, derived when first needed (boxed: a connection holds two
    /// `PacketKey`s, and this is needed once per 2^22 packets).
    next: Option<Box<EpochKey>>,
}

impl Clone for PacketKey {
    fn clone(&self) -> Self {
        Self {
            iv: self.iv,
            epoch: self.epoch,
            key: EpochKey::new(self.key.raw),
            next: self.next.as_ref().map(|k| Box::new(EpochKey::new(k.raw))),
        }
    }
}

impl core::fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PacketKey(epoch {})", self.epoch)
    }
}

impl PacketKey {
    /// A key from its raw parts (epoch 0).
    #[must_use]
    pub fn new(key: &[u8; KEY_LEN], iv: [u8; IV_LEN]) -> Self {
        Self {
            iv,
            epoch: 0,
            key: EpochKey::new(*key),
            next: None,
        }
    }

    /// The key epoch this key is in (`pn >> KEY_EPOCH_BITS` of the newest packet it
    /// sealed or opened).
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The nonce for packet number `pn`: the IV XOR `pn` right-aligned, big-endian.
    #[must_use]
    pub fn nonce(&self, pn: u64) -> [u8; IV_LEN] {
        let mut n = self.iv;
        for (b, p) in n[IV_LEN - 8..].iter_mut().zip(pn.to_be_bytes()) {
            *b ^= p;
        }
        n
    }

    /// The key for `pn` when sealing: moves forward to its epoch (a sender's numbers only
    /// grow). `None` for a number of an earlier epoch.
    fn sealing_key(&mut self, pn: u64) -> Option<&backend::Aes> {
        let e = pn >> KEY_EPOCH_BITS;
        if e < self.epoch {
            return None;
        }
        while self.epoch < e {
            self.key = self.next.take().map_or_else(|| self.key.next(), |k| *k);
            self.epoch += 1;
        }
        Some(&self.key.aead)
    }

    /// Seals `buf` in place with `ad` as associated data and returns the tag. `None` if
    /// `pn` belongs to an epoch before the key's (a sender never goes back).
    ///
    /// # Panics
    /// Never for a packet: AES-GCM refuses only inputs over 2^36 bytes.
    pub fn seal_detached(&mut self, pn: u64, ad: &[u8], buf: &mut [u8]) -> Option<[u8; TAG_LEN]> {
        let nonce = self.nonce(pn);
        Some(self.sealing_key(pn)?.seal(nonce, ad, buf))
    }

    /// Opens `buf` in place, checking `tag` over it and `ad`. A packet of the next epoch
    /// moves the key forward once it authenticates; one from an earlier epoch fails.
    ///
    /// # Panics
    /// Never: the next epoch's key is set before it is taken.
    pub fn open_detached(
        &mut self,
        pn: u64,
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthError> {
        let nonce = self.nonce(pn);
        let e = pn >> KEY_EPOCH_BITS;
        let key = if e == self.epoch {
            &self.key
        } else if e == self.epoch + 1 {
            self.next.get_or_insert_with(|| Box::new(self.key.next()))
        } else {
            return Err(AuthError);
        };
        key.aead.open(nonce, ad, buf, tag)?;
        if e > self.epoch {
            // INVARIANT: set just above.
            self.key = *self.next.take().expect("next epoch's key");
            self.epoch = e;
        }
        Ok(())
    }

    /// Seals a whole packet in place: `packet[..header_len]` is the header (associated
    /// data, CRC field taken as zeros), `packet[header_len..len]` the body, sealed in place;
    /// the tag is written at `packet[len..len + TAG_LEN]`. Returns the sealed length, or
    /// `None` if the tag does not fit, the header is longer than [`MAX_HEADER_LEN`] or `pn`
    /// is of an earlier epoch.
    #[must_use]
    pub fn seal_packet(
        &mut self,
        pn: u64,
        packet: &mut [u8],
        header_len: usize,
        len: usize,
    ) -> Option<usize> {
        if len + TAG_LEN > packet.len() || header_len > len {
            return None;
        }
        let ad = header_ad(&packet[..header_len])?;
        let (body, rest) = packet[header_len..].split_at_mut(len - header_len);
        let tag = self.seal_detached(pn, &ad[..header_len], body)?;
        rest[..TAG_LEN].copy_from_slice(&tag);
        Some(len + TAG_LEN)
    }

    /// Opens a whole packet in place (the inverse of [`Self::seal_packet`]): on success
    /// `packet[header_len..n]` holds the body, where `n` is the returned length (the
    /// packet's minus the tag).
    pub fn open_packet(
        &mut self,
        pn: u64,
        packet: &mut [u8],
        header_len: usize,
    ) -> Result<usize, AuthError> {
        let body_end = packet
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&e| e >= header_len)
            .ok_or(AuthError)?;
        let ad = header_ad(&packet[..header_len]).ok_or(AuthError)?;
        let (head, tag) = packet.split_at_mut(body_end);
        let mut t = [0; TAG_LEN];
        t.copy_from_slice(tag);
        self.open_detached(pn, &ad[..header_len], &mut head[header_len..], &t)?;
        Ok(body_end)
    }
}

/// The associated data of a header: its bytes with the CRC field (4..8) zeroed.
fn header_ad(header: &[u8]) -> Option<[u8; MAX_HEADER_LEN]> {
    if header.len() > MAX_HEADER_LEN {
        return None;
    }
    let mut ad = [0u8; MAX_HEADER_LEN];
    ad[..header.len()].copy_from_slice(header);
    ad[4..8].fill(0);
    Some(ad)
}

/// Which end of a session a key set belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The client: seals with the client→server key, opens with the server→client key.
    Client,
    /// The server: the reverse.
    Server,
}

/// A session's two packet keys, as one end holds them.
#[derive(Clone, Debug)]
pub struct SessionKeys {
    /// Seals what this end sends.
    pub seal: PacketKey,
    /// Opens what this end receives.
    pub open: PacketKey,
}

/// The raw key schedule's output for both directions (also what the test vectors in
/// docs/PROTOCOL.md pin).
#[derive(Clone, PartialEq, Eq)]
pub struct RawKeys {
    /// Client → server key and IV.
    pub c2s_key: [u8; KEY_LEN],
    /// Client → server IV.
    pub c2s_iv: [u8; IV_LEN],
    /// Server → client key.
    pub s2c_key: [u8; KEY_LEN],
    /// Server → client IV.
    pub s2c_iv: [u8; IV_LEN],
    /// The key that seals the server's `Welcome` (nonce: 12 zero bytes; it seals one
    /// plaintext only, resent unchanged).
    pub welcome_key: [u8; KEY_LEN],
}

impl core::fmt::Debug for RawKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RawKeys(..)")
    }
}

impl RawKeys {
    /// Runs the key schedule: HKDF-SHA256 with `salt = SHA-256(transcript)` over `secret`.
    ///
    /// # Panics
    /// Never: every output is far shorter than HKDF-SHA256's limit of 8,160 bytes.
    #[must_use]
    pub fn derive(secret: &[u8], transcript: &[u8]) -> Self {
        let salt = Sha256::digest(transcript);
        let hk = Hkdf::<Sha256>::new(Some(&salt), secret);
        let mut k = Self {
            c2s_key: [0; KEY_LEN],
            c2s_iv: [0; IV_LEN],
            s2c_key: [0; KEY_LEN],
            s2c_iv: [0; IV_LEN],
            welcome_key: [0; KEY_LEN],
        };
        // INVARIANT: HKDF-SHA256 expands up to 255 × 32 bytes; these ask for 32 and 12.
        for (label, out) in [
            (&b"xrudp c2s key"[..], &mut k.c2s_key[..]),
            (b"xrudp c2s iv", &mut k.c2s_iv[..]),
            (b"xrudp s2c key", &mut k.s2c_key[..]),
            (b"xrudp s2c iv", &mut k.s2c_iv[..]),
            (b"xrudp welcome key", &mut k.welcome_key[..]),
        ] {
            hk.expand(label, out).expect("short HKDF output");
        }
        k
    }

    /// The keys as `role` uses them.
    #[must_use]
    pub fn for_role(&self, role: Role) -> SessionKeys {
        let c2s = PacketKey::new(&self.c2s_key, self.c2s_iv);
        let s2c = PacketKey::new(&self.s2c_key, self.s2c_iv);
        match role {
            Role::Client => SessionKeys {
                seal: c2s,
                open: s2c,
            },
            Role::Server => SessionKeys {
                seal: s2c,
                open: c2s,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// The GCM specification's test case 16 (AES-256, 60-byte plaintext, 20-byte
    /// associated data) through [`PacketKey`]: with packet number 0 the nonce is the IV.
    #[test]
    fn gcm_spec_vector_16() {
        let key: [u8; 32] = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
            .try_into()
            .expect("32");
        let iv: [u8; 12] = hex("cafebabefacedbaddecaf888").try_into().expect("12");
        let ad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let plain = hex(concat!(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
        ));
        let mut text = plain.clone();
        let mut k = PacketKey::new(&key, iv);
        let tag = k.seal_detached(0, &ad, &mut text).expect("epoch 0");
        assert_eq!(
            text,
            hex(concat!(
                "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa",
                "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
            )),
            "ciphertext"
        );
        assert_eq!(tag.to_vec(), hex("76fc6ece0f4e1768cddf8853bb2d551b"), "tag");
        k.open_detached(0, &ad, &mut text, &tag).expect("opens");
        assert_eq!(text, plain);
    }

    /// The same bytes as an independent implementation (RustCrypto's `aes-gcm`) for a
    /// spread of packet numbers and lengths: the nonce construction is the one documented.
    #[test]
    fn matches_an_independent_aes_gcm() {
        use aes_gcm::aead::{AeadInPlace, KeyInit};
        let key = [0x11u8; 32];
        let iv = [0x22u8; 12];
        let other = aes_gcm::Aes256Gcm::new(&key.into());
        let mut k = PacketKey::new(&key, iv);
        for (pn, len) in [
            (0u64, 0usize),
            (1, 1),
            (300, 64),
            (65_537, 1200),
            (4_194_303, 17),
        ] {
            let mut a = vec![0x5au8; len];
            let mut b = a.clone();
            let ta = k.seal_detached(pn, b"hdr", &mut a).expect("epoch 0");
            let tb = other
                .encrypt_in_place_detached(&k.nonce(pn).into(), b"hdr", &mut b)
                .expect("seal");
            assert_eq!((a, ta.to_vec()), (b, tb.to_vec()), "pn {pn} len {len}");
        }
    }

    #[test]
    fn keys_move_to_the_next_epoch_with_the_packet_number() {
        let raw = RawKeys::derive(b"secret", b"transcript");
        let (mut c, mut s) = (raw.for_role(Role::Client), raw.for_role(Role::Server));
        let last0 = (1u64 << KEY_EPOCH_BITS) - 1;
        for pn in [last0 - 1, last0, last0 + 1, last0 + 2] {
            let mut p = packet();
            let len = p.len() - TAG_LEN;
            c.seal.seal_packet(pn, &mut p, 14, len).expect("seals");
            let n = s.open.open_packet(pn, &mut p, 14).expect("opens");
            assert_eq!(&p[14..n], b"frames");
        }
        assert_eq!((c.seal.epoch(), s.open.epoch()), (1, 1));
        // The epoch-1 key differs from epoch 0's: the same pn opened under epoch 0's key
        // (a fresh receiver) of a packet sealed under epoch 1 cannot authenticate anything
        // sealed for the other epoch.
        let mut p = packet();
        let len = p.len() - TAG_LEN;
        c.seal
            .seal_packet(last0 + 5, &mut p, 14, len)
            .expect("seals");
        let mut fresh = raw.for_role(Role::Server);
        let mut q = p.clone();
        assert!(
            fresh.open.open_packet(last0 + 5, &mut q, 14).is_ok(),
            "fresh receiver steps once"
        );
        assert_eq!(
            c.seal.seal_packet(last0, &mut p, 14, len),
            None,
            "a sender never goes back"
        );
        assert_eq!(
            s.open.open_packet(last0 - 3, &mut packet(), 14),
            Err(AuthError),
            "an earlier epoch's packet fails"
        );
        let two_ahead = 3u64 << KEY_EPOCH_BITS;
        let mut p = packet();
        let len = p.len() - TAG_LEN;
        raw.for_role(Role::Client)
            .seal
            .seal_packet(two_ahead, &mut p, 14, len)
            .expect("seals");
        assert_eq!(
            s.open.open_packet(two_ahead, &mut p, 14),
            Err(AuthError),
            "two epochs ahead"
        );
    }

    #[test]
    fn nonce_xors_the_packet_number_right_aligned() {
        let k = PacketKey::new(&[0; 32], [0xff; 12]);
        assert_eq!(
            k.nonce(0x0102_0304_0506_0708),
            [
                0xff, 0xff, 0xff, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8, 0xf7
            ]
        );
    }

    fn packet() -> Vec<u8> {
        let mut p = b"XR\x01\x06\xaa\xbb\xcc\xdd\x00\x00\x01\x02\x12\x34frames".to_vec();
        p.resize(p.len() + TAG_LEN, 0);
        p
    }

    #[test]
    fn packets_round_trip_and_the_crc_field_is_not_authenticated() {
        let keys = RawKeys::derive(b"secret", b"transcript");
        let (mut c, mut s) = (keys.for_role(Role::Client), keys.for_role(Role::Server));
        let mut p = packet();
        let len = p.len() - TAG_LEN;
        assert_eq!(c.seal.seal_packet(9, &mut p, 14, len), Some(p.len()));
        assert_ne!(&p[14..20], b"frames", "the body is sealed");
        p[4..8].copy_from_slice(&[1, 2, 3, 4]);
        let n = s.open.open_packet(9, &mut p, 14).expect("opens");
        assert_eq!(&p[14..n], b"frames");
    }

    #[test]
    fn every_flipped_bit_and_wrong_number_or_direction_fails() {
        let keys = RawKeys::derive(b"secret", b"transcript");
        let (mut c, mut s) = (keys.for_role(Role::Client), keys.for_role(Role::Server));
        let mut sealed = packet();
        let len = sealed.len() - TAG_LEN;
        c.seal.seal_packet(9, &mut sealed, 14, len).expect("fits");
        for byte in (0..sealed.len()).filter(|b| !(4..8).contains(b)) {
            for bit in 0..8 {
                let mut p = sealed.clone();
                p[byte] ^= 1 << bit;
                assert_eq!(s.open.open_packet(9, &mut p, 14), Err(AuthError));
            }
        }
        let mut p = sealed.clone();
        assert_eq!(
            s.open.open_packet(10, &mut p, 14),
            Err(AuthError),
            "other pn"
        );
        let mut p = sealed.clone();
        assert_eq!(
            c.open.open_packet(9, &mut p, 14),
            Err(AuthError),
            "reflected"
        );
        let mut other = RawKeys::derive(b"secret", b"another transcript").for_role(Role::Server);
        let mut p = sealed.clone();
        assert_eq!(
            other.open.open_packet(9, &mut p, 14),
            Err(AuthError),
            "other session"
        );
        let mut short = sealed[..TAG_LEN + 3].to_vec();
        assert_eq!(
            s.open.open_packet(9, &mut short, 14),
            Err(AuthError),
            "short"
        );
    }
}
