//! The `rudp_decode` target: the protocol codec of `xrudp_proto::packet` and
//! `xrudp_proto::handshake` on any bytes. Nothing panics, and whatever decodes encodes back
//! to the same value (handshakes) or the same bytes (data frames).
//!
//! Input: `[selector]` then the datagram. Selector bit 0: make the datagram's CRC right
//! first (so that the fuzzer reaches the body decoders instead of stopping at the CRC
//! check); bits 1–4: channels configured, minus one; bits 5–7: the one channel (of 0..8)
//! whose MESSAGE frames carry no sequence number. `71` is the default server layout.

use xrudp_common::rudp::{self, PacketType};
use xrudp_proto::handshake::{self, Handshake, TokenKey};
use xrudp_proto::packet::{self, Datagram, Frame, Frames, Writer};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let mut d = bytes.to_vec();
    if sel & 1 != 0 && d.len() >= rudp::HEADER_LEN {
        packet::seal(&mut d);
    }
    // The handshake and token decoders take any body, whatever the header says.
    for kind in 1..=PacketType::MAX {
        if let Some(kind) = PacketType::from_u8(kind) {
            handshake_round_trip(kind, d.get(rudp::HEADER_LEN..).unwrap_or(&d), d.len());
        }
    }
    token(&d);
    // Frames of a data packet body (after the header and packet number).
    frames(sel >> 1, d.get(rudp::HEADER_LEN + 2..).unwrap_or(&d));

    let Ok(dg) = Datagram::parse(&d) else {
        return;
    };
    assert_eq!(dg.len, d.len());
    assert_eq!(dg.body, &d[rudp::HEADER_LEN..]);
    assert_eq!(xrudp_packet::crc::rudp_crc(&d).to_be_bytes(), d[4..8]);
    let mut resealed = d.clone();
    packet::seal(&mut resealed);
    assert_eq!(
        resealed, d,
        "sealing a datagram that verifies changes nothing"
    );
    if dg.version != rudp::VERSION {
        assert_eq!(
            dg.kind,
            PacketType::Hello,
            "only a hello may carry a foreign version"
        );
    }
}

/// A decoded handshake body encodes to a datagram that parses and decodes to the same value.
fn handshake_round_trip(kind: PacketType, body: &[u8], len: usize) {
    let Ok(h) = handshake::decode(kind, body, len) else {
        return;
    };
    let mut buf = [0u8; 2048];
    let n = handshake::encode(&mut buf, 7, &h).expect("a decoded handshake fits 2048 bytes");
    if matches!(kind, PacketType::Hello | PacketType::Response) {
        assert!(n >= packet::MIN_HANDSHAKE_LEN, "hello/response padded");
    }
    let dg = Datagram::parse(&buf[..n]).expect("an encoded handshake parses");
    assert_eq!(dg.kind, kind);
    assert_eq!(dg.conn_id, 7);
    let again = handshake::decode(kind, dg.body, dg.len).expect("re-decodes");
    assert_eq!(again, h);
    if let Handshake::Welcome(w) = &h {
        assert!(usize::from(w.channel_count) <= packet::MAX_CHANNELS);
    }
}

/// Connect tokens: a public token that decodes re-encodes to its bytes; foreign bytes
/// never open as a private token under a key they were not sealed with (a forged tag
/// would be a 2^-128 event). The `token` target goes deeper, from real tokens.
fn token(d: &[u8]) {
    if let Ok(t) = xrudp_proto::token::PublicToken::decode(d) {
        assert_eq!(t.encode(), d);
    }
    let key = TokenKey([0x5a; 32]);
    let mut scratch = [0u8; xrudp_proto::token::MAX_PRIVATE_LEN];
    let server = crate::addrs()[0];
    assert!(xrudp_proto::token::open(&key, d, 0, server, &mut scratch).is_err());
}

/// Frames decode until an error or the end; the frames that decode, written back with the
/// codec's writers, give the input bytes up to where decoding stopped.
fn frames(layout: u8, body: &[u8]) {
    // Channel i exists for i < count; one of them has no sequence numbers.
    let count = (layout & 15) + 1;
    let no_seq = layout >> 4;
    let has_seq = move |c: u8| (c < count).then_some(c != no_seq);
    let mut out = vec![0u8; body.len() + 16];
    let mut w = Writer::new(&mut out);
    let mut failed = false;
    for f in Frames::new(body, has_seq) {
        let Ok(f) = f else {
            failed = true;
            break;
        };
        let ok = match f {
            Frame::Ack(a) => packet::write_ack(&mut w, a),
            Frame::Ping => w.u8(packet::frame::PING),
            Frame::PathChallenge(data) => packet::write_path(&mut w, false, data),
            Frame::PathResponse(data) => packet::write_path(&mut w, true, data),
            Frame::Drain(redirect) => packet::write_drain(&mut w, redirect),
            Frame::Message { channel, seq, data } => {
                let with = has_seq(channel).expect("decoded a known channel");
                packet::write_message(&mut w, channel, with.then_some(seq), data)
            }
            Frame::Fragment {
                channel,
                seq,
                index,
                count,
                data,
            } => {
                assert!(count >= 2 && index < count);
                packet::write_fragment(&mut w, channel, seq, index, count, data)
            }
        };
        assert!(ok.is_some(), "a decoded frame fits where it came from");
    }
    // `len`, not `finish`: finish seals a datagram, and this is a bare body.
    let n = w.len();
    assert!(n <= body.len());
    assert_eq!(&out[..n], &body[..n], "frames re-encode to their bytes");
    if !failed && n < body.len() {
        assert_eq!(
            body[n],
            packet::frame::PADDING,
            "decoding stopped early only at padding"
        );
    }
}
