//! Every checksum kernel against the scalar one and against the `internet-checksum`
//! crate, on random lengths, alignments and contents; RFC 1624 updates against full
//! recomputation; CRC32C against the plain crate call.

mod support;

use proptest::prelude::*;
use xrudp_packet::checksum::{self, Kernel, Level};
use xrudp_packet::crc;

use support::kernels;

fn reference_checksum(data: &[u8]) -> u16 {
    u16::from_be_bytes(internet_checksum::checksum(data))
}

#[test]
fn this_machine_runs_the_simd_kernels() {
    // On x86-64 the SSE4.1 kernel is always present on the machines this project targets;
    // print what detection chose so a CI log shows which paths were exercised.
    let k = Kernel::detect();
    eprintln!("detected checksum level: {}", k.level());
    #[cfg(target_arch = "x86_64")]
    assert_ne!(k.level(), Level::Scalar, "x86-64 without SSE4.1?");
}

/// Every length 0..=700 at every alignment 0..64, with contents that stress carries (all
/// 0xFF), none (all zero) and a pattern.
#[test]
fn exhaustive_short_lengths_and_alignments() {
    let mut buf = vec![0u8; 700 + 64];
    for fill in [0xffu8, 0x00, 0x5a] {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = if fill == 0x5a {
                (i * 7 + 3) as u8
            } else {
                fill
            };
        }
        for len in 0..=700 {
            for off in 0..64 {
                let data = &buf[off..off + len];
                let want = reference_checksum(data);
                for k in kernels() {
                    assert_eq!(
                        k.checksum(data),
                        want,
                        "{} len {len} off {off} fill {fill:#x}",
                        k.level()
                    );
                }
            }
        }
    }
}

#[test]
fn jumbo_all_ones() {
    let data = vec![0xffu8; 9000];
    for k in kernels() {
        assert_eq!(k.sum(&data), 0xffff, "{}", k.level());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn simd_equals_scalar_and_reference(
        data in prop::collection::vec(any::<u8>(), 0..9000 + 64),
        off in 0usize..64,
        len in 0usize..9000,
    ) {
        let off = off.min(data.len());
        let len = len.min(data.len() - off);
        let slice = &data[off..off + len];
        let scalar = Kernel::scalar().sum(slice);
        for k in kernels() {
            prop_assert_eq!(k.sum(slice), scalar, "{} len {} off {}", k.level(), len, off);
        }
        prop_assert_eq!(!scalar, reference_checksum(slice));
    }

    /// Sums of pieces split at even offsets combine with `add` to the sum of the whole.
    #[test]
    fn sums_combine(data in prop::collection::vec(any::<u8>(), 0..3000), cut in 0usize..3000) {
        let cut = (cut.min(data.len())) & !1;
        let k = Kernel::detect();
        let (a, b) = data.split_at(cut);
        prop_assert_eq!(checksum::add(k.sum(a), k.sum(b)), k.sum(&data));
    }

    /// RFC 1624 eqn. 3 over random rewrites of a header-like buffer equals recomputing.
    #[test]
    fn incremental_update_equals_recompute(
        words in prop::collection::vec(any::<u16>(), 10..=30),
        word in 0usize..30,
        new_word in any::<u16>(),
        run_at in 0usize..30,
        run in prop::collection::vec(any::<u8>(), 0..12),
    ) {
        let k = Kernel::scalar();
        let mut hdr: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        // The checksum field lives in the first word.
        hdr[0..2].fill(0);
        let c = k.checksum(&hdr);
        hdr[0..2].copy_from_slice(&c.to_be_bytes());

        // One word.
        let w = 1 + word % (hdr.len() / 2 - 1);
        let old = u16::from_be_bytes([hdr[2 * w], hdr[2 * w + 1]]);
        let updated = checksum::update_word(c, old, new_word);
        hdr[2 * w..2 * w + 2].copy_from_slice(&new_word.to_be_bytes());
        hdr[0..2].fill(0);
        let full = k.checksum(&hdr);
        prop_assert_eq!(updated, full);
        hdr[0..2].copy_from_slice(&full.to_be_bytes());

        // A run of bytes at an even offset after the checksum field.
        let at = (2 + run_at % (hdr.len() - 2)) & !1;
        let n = run.len().min(hdr.len() - at);
        let old = hdr[at..at + n].to_vec();
        let updated = checksum::update(full, &old, &run[..n]);
        hdr[at..at + n].copy_from_slice(&run[..n]);
        hdr[0..2].fill(0);
        prop_assert_eq!(updated, k.checksum(&hdr));
        // And the crate's own RFC 1624 implementation agrees.
        prop_assert_eq!(
            updated.to_be_bytes(),
            internet_checksum::update(full.to_be_bytes(), &old, &run[..n])
        );
    }

    #[test]
    fn rudp_crc_is_crc32c_with_a_zeroed_field(mut d in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut z = d.clone();
        z.iter_mut().skip(4).take(4).for_each(|b| *b = 0);
        prop_assert_eq!(crc::rudp_crc(&d), crc32c::crc32c(&z));
        if d.len() >= 12 {
            crc::rudp_seal(&mut d).unwrap();
            prop_assert!(crc::rudp_verify(&d));
            let i = d.len() / 2;
            d[i] = d[i].wrapping_add(1);
            prop_assert!(!crc::rudp_verify(&d));
        } else {
            prop_assert!(crc::rudp_seal(&mut d).is_err());
        }
    }
}
