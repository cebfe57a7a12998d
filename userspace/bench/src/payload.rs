//! The load generator's message: `[thread u16][seq u64][scheduled ns u64]`, little-endian,
//! zero-padded to the requested size. The echo server returns it unchanged, so the
//! receiving thread knows which message came back and when it was due.

/// Bytes of the header; the smallest `--size`.
pub const HEADER_LEN: usize = 18;

/// What a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The sending thread.
    pub thread: u16,
    /// The message's number within its thread's schedule.
    pub seq: u64,
    /// When it was due, in nanoseconds after the run's start.
    pub scheduled_ns: u64,
}

impl Stamp {
    /// Writes the stamp at the start of `buf` (the rest is left as it is: zero it once).
    /// Returns `None` if `buf` is shorter than [`HEADER_LEN`].
    pub fn encode(&self, buf: &mut [u8]) -> Option<()> {
        let head = buf.get_mut(..HEADER_LEN)?;
        head[..2].copy_from_slice(&self.thread.to_le_bytes());
        head[2..10].copy_from_slice(&self.seq.to_le_bytes());
        head[10..18].copy_from_slice(&self.scheduled_ns.to_le_bytes());
        Some(())
    }

    /// Reads a stamp; `None` if the message is too short to hold one.
    #[must_use]
    pub fn decode(msg: &[u8]) -> Option<Self> {
        let head = msg.get(..HEADER_LEN)?;
        let thread = u16::from_le_bytes([head[0], head[1]]);
        let mut seq = [0; 8];
        seq.copy_from_slice(&head[2..10]);
        let mut at = [0; 8];
        at.copy_from_slice(&head[10..18]);
        Some(Self {
            thread,
            seq: u64::from_le_bytes(seq),
            scheduled_ns: u64::from_le_bytes(at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let mut buf = vec![0u8; 64];
        let s = Stamp {
            thread: 0xBEEF,
            seq: 0x0102_0304_0506_0708,
            scheduled_ns: u64::MAX - 5,
        };
        s.encode(&mut buf).unwrap();
        assert_eq!(Stamp::decode(&buf), Some(s));
        assert_eq!(&buf[..2], &[0xEF, 0xBE]);
        assert!(buf[HEADER_LEN..].iter().all(|&b| b == 0));
        assert_eq!(Stamp::decode(&buf[..HEADER_LEN]), Some(s));
    }

    #[test]
    fn short_buffers_are_refused() {
        let s = Stamp {
            thread: 1,
            seq: 2,
            scheduled_ns: 3,
        };
        let mut short = [0u8; HEADER_LEN - 1];
        assert_eq!(s.encode(&mut short), None);
        for n in 0..HEADER_LEN {
            assert_eq!(Stamp::decode(&vec![0xFF; n]), None);
        }
    }
}
