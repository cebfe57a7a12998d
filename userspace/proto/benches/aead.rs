//! The packet-protection candidates, measured to choose one (issue 13): AES-256-GCM and
//! ChaCha20-Poly1305 from `ring` (BoringSSL's assembly) and from RustCrypto (`aes-gcm`,
//! `chacha20poly1305`: pure Rust with AES-NI/CLMUL and AVX2 back ends picked at run
//! time), sealing and opening one packet in place at 64, 512 and 1,200 bytes of payload
//! with a 14-byte header as associated data and a fresh per-packet nonce — what one
//! `Data` packet costs.
//!
//! Per element: one packet. Every open is checked to succeed, so a broken setup cannot
//! measure the fast path of a failure.
//!
//! `cargo bench -p xrudp-proto --bench aead -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [usize; 3] = [64, 512, 1200];
const KEY: [u8; 32] = [0x42; 32];
const HEADER: [u8; 14] = *b"XR\x01\x06\0\0\0\0\0\0\0\x07\0\x01";

fn nonce(pn: u64) -> [u8; 12] {
    let mut n = [0x5a; 12];
    for (b, p) in n[4..].iter_mut().zip(pn.to_be_bytes()) {
        *b ^= p;
    }
    n
}

/// One candidate: seals `buf` in place (returns the tag) and opens it again.
trait Candidate {
    fn seal(&self, pn: u64, buf: &mut [u8]) -> [u8; 16];
    fn open(&self, pn: u64, buf: &mut [u8], tag: &[u8; 16]) -> bool;
}

struct Ring(ring::aead::LessSafeKey);

impl Ring {
    fn new(alg: &'static ring::aead::Algorithm) -> Self {
        let key = ring::aead::UnboundKey::new(alg, &KEY[..alg.key_len()]).expect("key");
        Self(ring::aead::LessSafeKey::new(key))
    }
}

impl Candidate for Ring {
    fn seal(&self, pn: u64, buf: &mut [u8]) -> [u8; 16] {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce(pn)),
                ring::aead::Aad::from(&HEADER),
                buf,
            )
            .expect("seal");
        tag.as_ref().try_into().expect("16-byte tag")
    }

    fn open(&self, pn: u64, buf: &mut [u8], tag: &[u8; 16]) -> bool {
        self.0
            .open_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce(pn)),
                ring::aead::Aad::from(&HEADER),
                ring::aead::Tag::from(*tag),
                buf,
                0..,
            )
            .is_ok()
    }
}

struct Rust<A>(A);

impl<A: AeadInPlace<NonceSize = aes_gcm::aead::consts::U12, TagSize = aes_gcm::aead::consts::U16>>
    Candidate for Rust<A>
{
    fn seal(&self, pn: u64, buf: &mut [u8]) -> [u8; 16] {
        self.0
            .encrypt_in_place_detached(&nonce(pn).into(), &HEADER, buf)
            .expect("seal")
            .into()
    }

    fn open(&self, pn: u64, buf: &mut [u8], tag: &[u8; 16]) -> bool {
        self.0
            .decrypt_in_place_detached(&nonce(pn).into(), &HEADER, buf, tag.into())
            .is_ok()
    }
}

fn bench(c: &mut Criterion) {
    let candidates: Vec<(&str, Box<dyn Candidate>)> = vec![
        (
            "ring-aes256gcm",
            Box::new(Ring::new(&ring::aead::AES_256_GCM)),
        ),
        (
            "ring-chacha20poly1305",
            Box::new(Ring::new(&ring::aead::CHACHA20_POLY1305)),
        ),
        (
            "rustcrypto-aes256gcm",
            Box::new(Rust(aes_gcm::Aes256Gcm::new(&KEY.into()))),
        ),
        (
            "rustcrypto-chacha20poly1305",
            Box::new(Rust(chacha20poly1305::ChaCha20Poly1305::new(&KEY.into()))),
        ),
    ];
    for (op, open) in [("seal", false), ("open", true)] {
        let mut g = c.benchmark_group(format!("aead/{op}"));
        for size in SIZES {
            g.throughput(Throughput::Elements(1));
            for (name, cand) in &candidates {
                let mut buf = vec![0xa5u8; size];
                let mut pn = 0u64;
                if open {
                    let tag = cand.seal(7, &mut buf);
                    let sealed = buf.clone();
                    g.bench_with_input(BenchmarkId::new(*name, size), &size, |b, _| {
                        b.iter(|| {
                            buf.copy_from_slice(&sealed);
                            assert!(cand.open(7, black_box(&mut buf), &tag), "open failed");
                        });
                    });
                } else {
                    g.bench_with_input(BenchmarkId::new(*name, size), &size, |b, _| {
                        b.iter(|| {
                            pn += 1;
                            black_box(cand.seal(pn, black_box(&mut buf)))
                        });
                    });
                }
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
