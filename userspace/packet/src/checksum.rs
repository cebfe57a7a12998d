//! The Internet checksum (RFC 1071) with SIMD kernels, pseudo-headers and RFC 1624
//! incremental updates.
//!
//! The one's complement sum does not depend on byte order (RFC 1071 §2(B)): the kernels add
//! native-endian 64-bit or 32-bit words with end-around carry and swap once at the end.
//! A [`Kernel`] is chosen once at start-up ([`Kernel::detect`]: AVX2, else SSE4.1, else
//! scalar) and passed by value to every call; [`Kernel::forced`] picks a level for tests
//! and benchmarks. Every path returns the same value for every input (property-tested).
//!
//! Values are plain `u16`s in network order *as numbers*: write them with `to_be_bytes`.
//!
//! This is the only module of the crate with `unsafe` code: the unaligned vector loads and
//! the calls into `#[target_feature]` functions, each guarded by the runtime detection that
//! a [`Kernel`] carries.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

/// A checksum implementation level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// 256-bit vectors (x86-64 AVX2).
    Avx2,
    /// 128-bit vectors (x86-64 SSE4.1).
    Sse41,
    /// Portable 64-bit words with end-around carry; available everywhere.
    Scalar,
}

impl Level {
    /// Every level, fastest first.
    pub const ALL: [Level; 3] = [Level::Avx2, Level::Sse41, Level::Scalar];

    /// Whether this CPU can run this level.
    #[must_use]
    pub fn is_available(self) -> bool {
        match self {
            Level::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Level::Sse41 => std::is_x86_feature_detected!("sse4.1"),
            #[cfg(not(target_arch = "x86_64"))]
            Level::Avx2 | Level::Sse41 => false,
        }
    }

    /// A short lower-case name, as shown by the engine and the benchmarks.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Level::Avx2 => "avx2",
            Level::Sse41 => "sse4.1",
            Level::Scalar => "scalar",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A checksum implementation known to run on this CPU.
///
/// Only [`Kernel::detect`], [`Kernel::forced`] and [`Kernel::scalar`] create one, and they
/// check the CPU first: holding a `Kernel` is the proof that its level's instructions exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    level: Level,
}

impl Default for Kernel {
    fn default() -> Self {
        Self::detect()
    }
}

impl Kernel {
    /// The fastest level this CPU supports (AVX2, then SSE4.1, then scalar).
    #[must_use]
    pub fn detect() -> Self {
        let level = Level::ALL
            .into_iter()
            .find(|l| l.is_available())
            .unwrap_or(Level::Scalar);
        Self { level }
    }

    /// The given level, or `None` if this CPU cannot run it.
    #[must_use]
    pub fn forced(level: Level) -> Option<Self> {
        level.is_available().then_some(Self { level })
    }

    /// The portable kernel.
    #[must_use]
    pub const fn scalar() -> Self {
        Self {
            level: Level::Scalar,
        }
    }

    /// The level this kernel runs.
    #[must_use]
    pub const fn level(self) -> Level {
        self.level
    }

    /// The one's complement sum of `data` as big-endian 16-bit words (a trailing odd byte
    /// is padded with zero), folded to 16 bits and not complemented.
    ///
    /// Sums of pieces that start at even offsets combine with [`add`].
    #[inline]
    #[must_use]
    pub fn sum(self, data: &[u8]) -> u16 {
        let wide = match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Kernel holds Level::Avx2 only after `is_available` saw AVX2 on this CPU.
            Level::Avx2 => unsafe { x86::sum_avx2(data) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Kernel holds Level::Sse41 only after `is_available` saw SSE4.1 on this CPU.
            Level::Sse41 => unsafe { x86::sum_sse41(data) },
            _ => sum_words(data),
        };
        u16::from_be(fold(wide))
    }

    /// The Internet checksum of `data`: the complement of [`Kernel::sum`].
    #[inline]
    #[must_use]
    pub fn checksum(self, data: &[u8]) -> u16 {
        !self.sum(data)
    }
}

/// One's complement addition of two 16-bit sums (end-around carry).
#[inline]
#[must_use]
pub const fn add(a: u16, b: u16) -> u16 {
    let (s, carry) = a.overflowing_add(b);
    s + carry as u16
}

/// The folded sum of the IPv4 pseudo-header (RFC 768): addresses, zero, protocol, length.
#[inline]
#[must_use]
pub fn pseudo_ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u16 {
    let s =
        u64::from(src.to_bits()) + u64::from(dst.to_bits()) + u64::from(protocol) + u64::from(len);
    fold(s)
}

/// The folded sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, upper-layer
/// length, zeros, next header.
#[inline]
#[must_use]
pub fn pseudo_ipv6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> u16 {
    let (s, c) = src.to_bits().overflowing_add(dst.to_bits());
    let s128 = s.wrapping_add(u128::from(c));
    let hi = (s128 >> 64) as u64;
    let lo = s128 as u64;
    let s = end_around(hi, lo);
    let s = end_around(s, u64::from(len) + u64::from(next_header));
    fold(s)
}

/// RFC 1624 eqn. 3: the new checksum `HC' = ~(~HC + ~m + m')` after one 16-bit word of the
/// covered data changed from `old` to `new`.
#[inline]
#[must_use]
pub const fn update_word(checksum: u16, old: u16, new: u16) -> u16 {
    !add(add(!checksum, !old), new)
}

/// RFC 1624 eqn. 3 for a rewritten run of bytes: `old` and `new` are the bytes before and
/// after, starting at the same even offset of the covered data (an odd tail is padded
/// with zero, as in [`Kernel::sum`]).
#[inline]
#[must_use]
pub fn update(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    let scalar = Kernel::scalar();
    !add(add(!checksum, !scalar.sum(old)), scalar.sum(new))
}

/// Adds two 64-bit partial sums with end-around carry.
#[inline]
const fn end_around(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    // Cannot overflow: with a carry, `s` is at most 2^64 - 2.
    s + carry as u64
}

/// Folds a 64-bit one's complement partial sum to 16 bits (2^16 ≡ 1 mod 0xFFFF).
#[inline]
const fn fold(s: u64) -> u16 {
    let s = (s & 0xffff_ffff) + (s >> 32);
    let s = (s & 0xffff_ffff) + (s >> 32);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The portable kernel: native-endian 64-bit words in four independent carry chains.
/// Returns an unfolded native-order partial sum.
#[inline]
fn sum_words(data: &[u8]) -> u64 {
    let (words, tail) = data.as_chunks::<8>();
    let (quads, rest) = words.as_chunks::<4>();
    let mut acc = [0u64; 4];
    for q in quads {
        acc[0] = end_around(acc[0], u64::from_ne_bytes(q[0]));
        acc[1] = end_around(acc[1], u64::from_ne_bytes(q[1]));
        acc[2] = end_around(acc[2], u64::from_ne_bytes(q[2]));
        acc[3] = end_around(acc[3], u64::from_ne_bytes(q[3]));
    }
    let mut s = end_around(end_around(acc[0], acc[1]), end_around(acc[2], acc[3]));
    for w in rest {
        s = end_around(s, u64::from_ne_bytes(*w));
    }
    end_around(s, tail_word(tail))
}

/// The sum of the last 0..=7 bytes as native-endian words, a lone last byte padded with
/// zero. The tail starts at an offset that is a multiple of 8, so each piece below starts
/// on a 16-bit word boundary; reading the pieces directly avoids a variable-length copy.
#[inline]
fn tail_word(tail: &[u8]) -> u64 {
    let mut s = 0u64;
    let mut rest = tail;
    if let Some((four, r)) = rest.split_first_chunk::<4>() {
        s += u64::from(u32::from_ne_bytes(*four));
        rest = r;
    }
    if let Some((two, r)) = rest.split_first_chunk::<2>() {
        s += u64::from(u16::from_ne_bytes(*two));
        rest = r;
    }
    if let Some(&last) = rest.first() {
        s += u64::from(u16::from_ne_bytes([last, 0]));
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX2 and SSE4.1 kernels: every 64-bit word loaded is split into its low and high
    //! 32-bit halves, both added into a 64-bit lane, so no carry is ever lost (2^32 ≡ 1
    //! mod 0xFFFF, so sums of 32-bit words fold to the same 16-bit sum). Inputs are cut
    //! into 1 GiB pieces, within which every lane stays far below 2^64.

    use super::{end_around, sum_words};
    use core::arch::x86_64::{
        __m128i, __m256i, _mm_add_epi64, _mm_and_si128, _mm_extract_epi64, _mm_loadu_si128,
        _mm_set1_epi64x, _mm_setzero_si128, _mm_srli_epi64, _mm256_add_epi64, _mm256_and_si256,
        _mm256_castsi256_si128, _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_set1_epi64x,
        _mm256_setzero_si256, _mm256_srli_epi64,
    };

    /// Longest run summed before the lanes are reduced (a multiple of every block size).
    const PIECE: usize = 1 << 30;

    /// AVX2 kernel: 128 bytes per iteration in four 32-byte loads. Returns an unfolded
    /// native-order partial sum.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sum_avx2(data: &[u8]) -> u64 {
        if data.len() <= PIECE {
            return sum_avx2_piece(data);
        }
        data.chunks(PIECE)
            .fold(0, |total, piece| end_around(total, sum_avx2_piece(piece)))
    }

    #[target_feature(enable = "avx2")]
    fn sum_avx2_piece(data: &[u8]) -> u64 {
        let low = _mm256_set1_epi64x(0xffff_ffff);
        let (blocks, tail) = data.as_chunks::<32>();
        let (quads, rest) = blocks.as_chunks::<4>();
        let mut acc: [__m256i; 4] = [_mm256_setzero_si256(); 4];
        for q in quads {
            for (a, b) in acc.iter_mut().zip(q) {
                let v = load256(b);
                *a = _mm256_add_epi64(*a, _mm256_and_si256(v, low));
                *a = _mm256_add_epi64(*a, _mm256_srli_epi64::<32>(v));
            }
        }
        for (i, b) in rest.iter().enumerate() {
            let v = load256(b);
            let a = &mut acc[i];
            *a = _mm256_add_epi64(*a, _mm256_and_si256(v, low));
            *a = _mm256_add_epi64(*a, _mm256_srli_epi64::<32>(v));
        }
        // Within one piece a lane takes at most 2^26 additions of values below 2^32, so
        // the sum of all sixteen lanes stays below 2^62: plain additions suffice.
        let v = _mm256_add_epi64(
            _mm256_add_epi64(acc[0], acc[1]),
            _mm256_add_epi64(acc[2], acc[3]),
        );
        let v = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let lanes =
            _mm_extract_epi64::<0>(v).cast_unsigned() + _mm_extract_epi64::<1>(v).cast_unsigned();
        end_around(lanes, sum_words(tail))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn load256(b: &[u8; 32]) -> __m256i {
        // SAFETY: `b` is 32 readable bytes and `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
    }

    /// SSE4.1 kernel: 64 bytes per iteration in four 16-byte loads. Returns an unfolded
    /// native-order partial sum.
    ///
    /// # Safety
    /// The CPU must support SSE4.1.
    #[target_feature(enable = "sse4.1")]
    pub(super) unsafe fn sum_sse41(data: &[u8]) -> u64 {
        if data.len() <= PIECE {
            return sum_sse41_piece(data);
        }
        data.chunks(PIECE)
            .fold(0, |total, piece| end_around(total, sum_sse41_piece(piece)))
    }

    #[target_feature(enable = "sse4.1")]
    fn sum_sse41_piece(data: &[u8]) -> u64 {
        let low = _mm_set1_epi64x(0xffff_ffff);
        let (blocks, tail) = data.as_chunks::<16>();
        let (quads, rest) = blocks.as_chunks::<4>();
        let mut acc: [__m128i; 4] = [_mm_setzero_si128(); 4];
        for q in quads {
            for (a, b) in acc.iter_mut().zip(q) {
                let v = load128(b);
                *a = _mm_add_epi64(*a, _mm_and_si128(v, low));
                *a = _mm_add_epi64(*a, _mm_srli_epi64::<32>(v));
            }
        }
        for (i, b) in rest.iter().enumerate() {
            let v = load128(b);
            let a = &mut acc[i];
            *a = _mm_add_epi64(*a, _mm_and_si128(v, low));
            *a = _mm_add_epi64(*a, _mm_srli_epi64::<32>(v));
        }
        // As in the AVX2 kernel, the lanes' total stays below 2^62.
        let v = _mm_add_epi64(_mm_add_epi64(acc[0], acc[1]), _mm_add_epi64(acc[2], acc[3]));
        let lanes =
            _mm_extract_epi64::<0>(v).cast_unsigned() + _mm_extract_epi64::<1>(v).cast_unsigned();
        end_around(lanes, sum_words(tail))
    }

    #[inline]
    #[target_feature(enable = "sse4.1")]
    fn load128(b: &[u8; 16]) -> __m128i {
        // SAFETY: `b` is 16 readable bytes and `loadu` has no alignment requirement.
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 §3's worked example: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        for level in Level::ALL {
            if let Some(k) = Kernel::forced(level) {
                assert_eq!(k.sum(&data), 0xddf2, "{level}");
                assert_eq!(k.checksum(&data), !0xddf2, "{level}");
            } else {
                eprintln!(
                    "checksum: this CPU cannot run the {level} kernel: it is NOT tested here"
                );
            }
        }
    }

    /// A textbook IPv4 header whose checksum field holds 0xb861.
    #[test]
    fn ipv4_header_known_answer() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let k = Kernel::detect();
        assert_eq!(k.checksum(&hdr), 0xb861);
        hdr[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(k.sum(&hdr), 0xffff);
    }

    #[test]
    fn odd_lengths_pad_with_zero() {
        let k = Kernel::scalar();
        assert_eq!(k.sum(&[]), 0);
        assert_eq!(k.sum(&[0xab]), 0xab00);
        assert_eq!(k.sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn end_around_carry() {
        assert_eq!(add(0xffff, 0x0001), 0x0001);
        assert_eq!(add(0x8000, 0x8000), 0x0001);
        assert_eq!(Kernel::scalar().sum(&[0xff; 64]), 0xffff);
    }

    #[test]
    fn pseudo_headers_match_byte_sums() {
        let k = Kernel::scalar();
        let (s4, d4) = (Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(192, 168, 200, 7));
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&s4.octets());
        b[4..8].copy_from_slice(&d4.octets());
        b[9] = 17;
        b[10..12].copy_from_slice(&1234u16.to_be_bytes());
        assert_eq!(pseudo_ipv4(s4, d4, 17, 1234), k.sum(&b));

        let s6: Ipv6Addr = "fe80::ffff:1:2:3".parse().unwrap();
        let d6: Ipv6Addr = "2001:db8:ffff::ffff:9".parse().unwrap();
        let mut b = [0u8; 40];
        b[0..16].copy_from_slice(&s6.octets());
        b[16..32].copy_from_slice(&d6.octets());
        b[32..36].copy_from_slice(&70_000u32.to_be_bytes());
        b[39] = 17;
        assert_eq!(pseudo_ipv6(&s6, &d6, 17, 70_000), k.sum(&b));
    }

    #[test]
    fn forced_levels_report_themselves() {
        assert_eq!(Kernel::forced(Level::Scalar), Some(Kernel::scalar()));
        let k = Kernel::detect();
        assert!(k.level().is_available());
        for level in Level::ALL {
            if let Some(k) = Kernel::forced(level) {
                assert_eq!(k.level(), level);
            }
        }
    }
}
