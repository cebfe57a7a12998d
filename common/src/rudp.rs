//! The fixed RUDP packet header, version 1 (docs/PROTOCOL.md §2).
//!
//! ```text
//!  0      2       3      4               8               12
//!  +------+-------+------+---------------+---------------+------ ... body
//!  | "XR" |version| type |    CRC32C     | connection id |
//!  +------+-------+------+---------------+---------------+------
//! ```
//! All multi-byte fields are big-endian. The CRC32C (Castagnoli) covers the whole
//! datagram with the CRC field taken as four zero bytes. The XDP program checks only the
//! length, magic, version and type; userspace checks the CRC and everything else.

/// The two magic bytes every RUDP packet starts with: ASCII "XR".
pub const MAGIC: [u8; 2] = *b"XR";

/// The wire format version this build speaks.
pub const VERSION: u8 = 1;

/// The fixed header's fields (smoltcp's `wire::field` pattern): the one definition the
/// XDP classifier, the packet crate and the protocol codec read offsets from.
pub mod field {
    use crate::wire::Field;
    /// The magic bytes, [`super::MAGIC`].
    pub const MAGIC: Field = 0..2;
    /// The wire version, [`super::VERSION`].
    pub const VERSION: usize = 2;
    /// The packet type, [`super::PacketType`].
    pub const TYPE: usize = 3;
    /// CRC32C over the datagram with this field zeroed.
    pub const CRC: Field = 4..8;
    /// Connection id (0 before the server assigns one).
    pub const CONN_ID: Field = 8..12;
    /// First byte of the body.
    pub const BODY: usize = 12;
}

/// Length of the fixed header in bytes; a shorter datagram cannot be RUDP.
pub const HEADER_LEN: usize = field::BODY;

/// Byte offset of the CRC32C field.
pub const CRC_OFFSET: usize = field::CRC.start;

/// Byte offset of the connection id field.
pub const CONN_ID_OFFSET: usize = field::CONN_ID.start;

/// Packet types of wire version 1 (docs/PROTOCOL.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Client → server: first hello, padded to the minimum hello size.
    Hello = 1,
    /// Server → client: a stateless cookie the client must echo.
    Challenge = 2,
    /// Client → server: hello carrying the cookie (and a connect token if required), padded.
    Response = 3,
    /// Server → client: the connection is admitted, with its connection id.
    Welcome = 4,
    /// Server → client: the server will not admit the client, with a reason.
    Reject = 5,
    /// Either way: sequenced packet carrying acks and messages (may be empty: keepalive).
    Data = 6,
    /// Either way: the connection is closed, with a reason.
    Disconnect = 7,
    /// Server → client: the server does not speak the client's version; lists its versions.
    VersionMismatch = 8,
}

impl PacketType {
    /// The highest packet type value defined by this version.
    pub const MAX: u8 = 8;

    /// Decodes a type byte; `None` for values this version does not define.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Hello,
            2 => Self::Challenge,
            3 => Self::Response,
            4 => Self::Welcome,
            5 => Self::Reject,
            6 => Self::Data,
            7 => Self::Disconnect,
            8 => Self::VersionMismatch,
            _ => return None,
        })
    }
}

/// Why a datagram's fixed header is not a valid RUDP v1 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    TooShort,
    /// The first two bytes are not [`MAGIC`].
    BadMagic,
    /// The version byte is not one this build accepts. A hello with another version is
    /// still answered (with `VersionMismatch`) by userspace, so the XDP pre-filter lets
    /// any version through on [`PacketType::Hello`].
    BadVersion,
    /// The type byte is not defined by this version.
    BadType,
}

/// Checks the fixed header's magic, version and type: the cheap test that the XDP
/// program applies before a datagram reaches userspace.
///
/// A `Hello` of any version passes, so that userspace can answer with
/// `VersionMismatch` (version negotiation, docs/PROTOCOL.md §4.1).
pub const fn check_prefix(magic: [u8; 2], version: u8, kind: u8) -> Result<(), HeaderError> {
    if magic[0] != MAGIC[0] || magic[1] != MAGIC[1] {
        return Err(HeaderError::BadMagic);
    }
    if kind == PacketType::Hello as u8 {
        return Ok(());
    }
    if version != VERSION {
        return Err(HeaderError::BadVersion);
    }
    if kind == 0 || kind > PacketType::MAX {
        return Err(HeaderError::BadType);
    }
    Ok(())
}

/// A borrowed view of the fixed header at the start of a datagram.
#[derive(Clone, Copy, Debug)]
pub struct Header<'a> {
    bytes: &'a [u8; HEADER_LEN],
}

impl<'a> Header<'a> {
    /// Checks length, magic, version and type, and returns a view of the header.
    pub fn new_checked(datagram: &'a [u8]) -> Result<Self, HeaderError> {
        let Some((bytes, _)) = datagram.split_first_chunk::<HEADER_LEN>() else {
            return Err(HeaderError::TooShort);
        };
        check_prefix(
            [bytes[field::MAGIC.start], bytes[field::MAGIC.start + 1]],
            bytes[field::VERSION],
            bytes[field::TYPE],
        )?;
        Ok(Self { bytes })
    }

    /// The version byte.
    #[must_use]
    pub fn version(&self) -> u8 {
        self.bytes[field::VERSION]
    }

    /// The packet type byte (defined by this version unless this is a foreign-version hello).
    #[must_use]
    pub fn kind(&self) -> u8 {
        self.bytes[field::TYPE]
    }

    /// The CRC32C field as sent.
    #[must_use]
    pub fn crc(&self) -> u32 {
        be32(self.bytes, field::CRC)
    }

    /// The connection id (0 before the server issued one).
    #[must_use]
    pub fn conn_id(&self) -> u32 {
        be32(self.bytes, field::CONN_ID)
    }
}

/// The big-endian `u32` in `field` (4 bytes, within the header by construction).
const fn be32(bytes: &[u8; HEADER_LEN], field: crate::wire::Field) -> u32 {
    let at = field.start;
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Writes the fixed header into the first [`HEADER_LEN`] bytes of `out`, with a zero CRC
/// (the caller fills it in once the body is written). Returns `None` if `out` is too short.
pub fn write_header(out: &mut [u8], kind: PacketType, conn_id: u32) -> Option<()> {
    let (h, _) = out.split_first_chunk_mut::<HEADER_LEN>()?;
    h[field::MAGIC].copy_from_slice(&MAGIC);
    h[field::VERSION] = VERSION;
    h[field::TYPE] = kind as u8;
    h[field::CRC].copy_from_slice(&[0; 4]);
    h[field::CONN_ID].copy_from_slice(&conn_id.to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut buf = [0u8; 20];
        write_header(&mut buf, PacketType::Data, 0xdead_beef).unwrap();
        let h = Header::new_checked(&buf).unwrap();
        assert_eq!(h.kind(), PacketType::Data as u8);
        assert_eq!(h.conn_id(), 0xdead_beef);
        assert_eq!(h.version(), VERSION);
    }

    #[test]
    fn rejects_each_bad_field() {
        let mut buf = [0u8; 12];
        write_header(&mut buf, PacketType::Data, 1).unwrap();
        assert_eq!(
            Header::new_checked(&buf[..11]).unwrap_err(),
            HeaderError::TooShort
        );
        let mut b = buf;
        b[0] = b'x';
        assert_eq!(Header::new_checked(&b).unwrap_err(), HeaderError::BadMagic);
        let mut b = buf;
        b[2] = 2;
        assert_eq!(
            Header::new_checked(&b).unwrap_err(),
            HeaderError::BadVersion
        );
        let mut b = buf;
        b[3] = PacketType::MAX + 1;
        assert_eq!(Header::new_checked(&b).unwrap_err(), HeaderError::BadType);
        b[3] = 0;
        assert_eq!(Header::new_checked(&b).unwrap_err(), HeaderError::BadType);
        // A hello of a foreign version passes, so userspace can negotiate.
        let mut b = buf;
        b[2] = 9;
        b[3] = PacketType::Hello as u8;
        assert!(Header::new_checked(&b).is_ok());
    }

    #[test]
    fn every_type_round_trips() {
        for v in 0..=255u8 {
            if let Some(t) = PacketType::from_u8(v) {
                assert_eq!(t as u8, v);
            } else {
                assert!(v == 0 || v > PacketType::MAX);
            }
        }
    }
}
