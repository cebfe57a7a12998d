//! Result codes of the C ABI and their text.

/// What an `xrudp_*` call returns: `XRUDP_STATUS_OK` (0), `XRUDP_STATUS_NO_EVENT` (1, not an error),
/// or a negative error code. `xrudp_status_text` describes each.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// `xrudp_next_event`: no event is waiting (not an error).
    NoEvent = 1,
    /// A required pointer argument was null.
    NullPointer = -1,
    /// The handle is 0, was freed, or never came from `xrudp_connect`.
    InvalidHandle = -2,
    /// An argument is out of range: an address that does not parse, a key that is not 32
    /// bytes, a token that does not decode, an unknown protection mode.
    InvalidArgument = -3,
    /// The receive buffer is smaller than the message; the message stays queued and the
    /// event's `len` says how many bytes it needs.
    BufferTooSmall = -4,
    /// The connection is not established (still connecting, closing or closed).
    NotConnected = -5,
    /// The send buffer is full: poll so acknowledgements arrive, then retry.
    QueueFull = -6,
    /// The message is larger than the channel allows.
    MessageTooLarge = -7,
    /// No such channel on this server.
    BadChannel = -8,
    /// A socket call failed (the OS refused to open, bind or use the UDP socket).
    Io = -9,
    /// A bug inside the library was caught before it could unwind into the caller; the
    /// connection it happened on is unusable, free it.
    Internal = -10,
}

impl Status {
    /// A description of the code, for logs and players' error dialogs.
    #[must_use]
    pub fn text(self) -> &'static std::ffi::CStr {
        match self {
            Self::Ok => c"ok",
            Self::NoEvent => c"no event is waiting",
            Self::NullPointer => c"a required pointer argument was null",
            Self::InvalidHandle => {
                c"invalid connection handle (0, already freed, or not from xrudp_connect)"
            }
            Self::InvalidArgument => {
                c"invalid argument (server address as \"ip:port\", a 32-byte server key, a token from the game backend, a known protection mode)"
            }
            Self::BufferTooSmall => {
                c"receive buffer too small; the message stays queued: retry with the event's len bytes"
            }
            Self::NotConnected => c"not connected (still connecting, closing or closed)",
            Self::QueueFull => {
                c"send buffer full: call xrudp_poll so acknowledgements arrive, then retry"
            }
            Self::MessageTooLarge => c"message larger than this channel allows",
            Self::BadChannel => c"no such channel on this server",
            Self::Io => c"socket error (the OS refused to open, bind or use the UDP socket)",
            Self::Internal => c"internal error in the xrudp library; free this connection",
        }
    }

    /// The code for `code`, if it is one.
    #[must_use]
    pub fn from_code(code: i32) -> Option<Self> {
        [
            Self::Ok,
            Self::NoEvent,
            Self::NullPointer,
            Self::InvalidHandle,
            Self::InvalidArgument,
            Self::BufferTooSmall,
            Self::NotConnected,
            Self::QueueFull,
            Self::MessageTooLarge,
            Self::BadChannel,
            Self::Io,
            Self::Internal,
        ]
        .into_iter()
        .find(|s| *s as i32 == code)
    }
}

impl From<xrudp_client::SendError> for Status {
    fn from(e: xrudp_client::SendError) -> Self {
        use xrudp_client::SendError;
        match e {
            SendError::QueueFull => Self::QueueFull,
            SendError::TooLarge { .. } => Self::MessageTooLarge,
            SendError::BadChannel(_) => Self::BadChannel,
            _ => Self::NotConnected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_has_text() {
        for code in -10..=1 {
            let s = Status::from_code(code).expect("every code in -10..=1 is a status");
            assert_eq!(s as i32, code);
            assert!(!s.text().is_empty());
        }
        assert_eq!(Status::from_code(-11), None);
        assert_eq!(Status::from_code(2), None);
    }
}
