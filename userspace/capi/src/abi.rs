//! The `extern "C"` entry points: the only `unsafe` code of the crate. Each one checks its
//! pointers, turns them into references for the duration of the call, and hands over to
//! the safe operations in [`crate::table`] inside [`guard`] (no panic unwinds into C).
//!
//! Ownership: every pointer argument is borrowed for the call only; the library keeps
//! none. The one pointer it returns, `xrudp_status_text`'s, points to static text.

use std::ffi::{CStr, c_char};

use crate::status::Status;
use crate::table::{self, XrudpConnectOptions, XrudpEvent, XrudpStats, guard};

/// A connection handle: non-zero, from `xrudp_connect`, valid until `xrudp_free`. A plain
/// number, not a pointer: a stale one is refused with `XRUDP_STATUS_INVALID_HANDLE`.
pub type XrudpConn = u64;

/// The text for a status code: a static NUL-terminated string that the caller must not
/// free or modify. Unknown codes get "unknown status code". Never fails.
#[unsafe(no_mangle)]
pub extern "C" fn xrudp_status_text(status: i32) -> *const c_char {
    Status::from_code(status).map_or(c"unknown status code".as_ptr(), |s| s.text().as_ptr())
}

/// Starts connecting to `server`, an "ip:port" NUL-terminated string (IPv4, or IPv6 in
/// brackets), and writes the new connection's handle (never 0) to `*out_conn`. Does not
/// wait: call `xrudp_wait` or `xrudp_poll` and watch for `XRUDP_EVENT_KIND_CONNECTED`.
///
/// `server`, `options` (null or zeroed: defaults, anonymous protection, 1200-byte
/// datagrams; `options->mtu` and `options->pmtud` set path MTU discovery) and `options->key` are
/// borrowed for the call only; the library copies what it needs. `*out_conn` is written
/// only on success. Free the handle with `xrudp_free`.
///
/// # Safety
/// `server` is null or a NUL-terminated string; `options` is null or points to an
/// `XrudpConnectOptions` whose `key` is null or points to `key_len` readable bytes;
/// `out_conn` is null or points to a writable `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xrudp_connect(
    server: *const c_char,
    options: *const XrudpConnectOptions,
    out_conn: *mut XrudpConn,
) -> Status {
    guard(|| {
        if server.is_null() || out_conn.is_null() {
            return Err(Status::NullPointer);
        }
        // SAFETY: non-null, and the caller promises a NUL-terminated string that stays
        // valid for the call.
        let server = unsafe { CStr::from_ptr(server) };
        let server = server.to_str().map_err(|_| Status::InvalidArgument)?;
        // SAFETY: `options` is null (checked by `as_ref`) or points to a readable
        // `XrudpConnectOptions`, as the caller promises; it is `Copy`, so it is read once.
        let options = unsafe { options.as_ref() }.copied();
        let path = options.map_or_else(table::PathOptions::default, |o| table::PathOptions {
            mtu: o.mtu,
            pmtud: o.pmtud,
        });
        let (protection, key) = match options {
            None => (table::XRUDP_PROTECTION_ANONYMOUS, &[][..]),
            Some(o) if o.key_len == 0 => (o.protection, &[][..]),
            Some(o) if o.key.is_null() => return Err(Status::NullPointer),
            // SAFETY: non-null, and the caller promises `key_len` readable bytes that
            // nothing writes during the call.
            Some(o) => (o.protection, unsafe {
                std::slice::from_raw_parts(o.key, o.key_len as usize)
            }),
        };
        let conn = table::connect(server, protection, key, path)?;
        // SAFETY: non-null, and the caller promises a writable `uint64_t`.
        unsafe { out_conn.write(conn) };
        Ok(())
    })
}

/// Does all pending work without blocking: reads the socket, fires due timers and sends
/// what is queued. Call it every frame (or use `xrudp_wait`). Takes no buffers.
#[unsafe(no_mangle)]
pub extern "C" fn xrudp_poll(conn: XrudpConn) -> Status {
    guard(|| table::poll(conn))
}

/// Sends what is queued, then blocks the calling thread until a datagram arrives, a protocol timer is due or
/// `timeout_ms` passes, then does what `xrudp_poll` does. Returns at once when an event
/// is already waiting. Other connections' calls are not blocked. Takes no buffers.
#[unsafe(no_mangle)]
pub extern "C" fn xrudp_wait(conn: XrudpConn, timeout_ms: u32) -> Status {
    guard(|| table::wait(conn, timeout_ms))
}

/// Takes the next event into `*out_event`. A message's bytes are copied into `buf` (the
/// caller's, `buf_len` bytes, written only up to the message's length and kept by the
/// caller); `out_event->len` is its length.
///
/// Returns `XRUDP_STATUS_NO_EVENT` when nothing is waiting, and
/// `XRUDP_STATUS_BUFFER_TOO_SMALL` when the message does not fit: it then stays queued,
/// `out_event->len` says how many bytes it needs, and the next call returns it again.
/// `buf` may be null when `buf_len` is 0 (a message then always reports its size).
///
/// # Safety
/// `out_event` is null or points to a writable `XrudpEvent`; `buf` is null or points to
/// `buf_len` writable bytes that nothing else accesses during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xrudp_next_event(
    conn: XrudpConn,
    out_event: *mut XrudpEvent,
    buf: *mut u8,
    buf_len: usize,
) -> Status {
    let mut status = Status::Ok;
    let guarded = guard(|| {
        // SAFETY: `out_event` is null (checked by `as_mut`) or points to a writable
        // `XrudpEvent` that the caller does not touch during the call.
        let out = unsafe { out_event.as_mut() }.ok_or(Status::NullPointer)?;
        let buf: &mut [u8] = if buf_len == 0 {
            &mut []
        } else if buf.is_null() {
            return Err(Status::NullPointer);
        } else {
            // SAFETY: non-null, and the caller promises `buf_len` writable bytes that
            // nothing else accesses during the call.
            unsafe { std::slice::from_raw_parts_mut(buf, buf_len) }
        };
        status = table::next_event(conn, out, buf);
        Ok(())
    });
    if guarded == Status::Ok {
        status
    } else {
        guarded
    }
}

/// Queues a message of `len` bytes from `data` (the caller's; copied, not kept) on
/// `channel`. It leaves at the next `xrudp_poll` or `xrudp_wait`.
/// `XRUDP_STATUS_QUEUE_FULL` is backpressure: poll, then retry. `data` may be null when
/// `len` is 0.
///
/// # Safety
/// `data` is null or points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xrudp_send(
    conn: XrudpConn,
    channel: u8,
    data: *const u8,
    len: usize,
) -> Status {
    guard(|| {
        let data: &[u8] = if len == 0 {
            &[]
        } else if data.is_null() {
            return Err(Status::NullPointer);
        } else {
            // SAFETY: non-null, and the caller promises `len` readable bytes that nothing
            // writes during the call.
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        table::send(conn, channel, data)
    })
}

/// Writes the connection's quality figures (RTT, loss, bytes in flight, path MTU, state) to
/// `*out_stats`, the caller's struct.
///
/// # Safety
/// `out_stats` is null or points to a writable `XrudpStats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xrudp_stats(conn: XrudpConn, out_stats: *mut XrudpStats) -> Status {
    guard(|| {
        if out_stats.is_null() {
            return Err(Status::NullPointer);
        }
        let stats = table::stats(conn)?;
        // SAFETY: non-null, and the caller promises a writable `XrudpStats`.
        unsafe { out_stats.write(stats) };
        Ok(())
    })
}

/// Closes gracefully with an application `code` that the server sees as the reason: the
/// `Disconnect` packets leave now, then an `XRUDP_EVENT_KIND_DISCONNECTED` event
/// (reason `XRUDP_REASON_LOCAL`) follows. While still connecting, gives up at once.
/// `XRUDP_STATUS_NOT_CONNECTED` if it is already over. The handle stays valid until
/// `xrudp_free`. Takes no buffers.
#[unsafe(no_mangle)]
pub extern "C" fn xrudp_disconnect(conn: XrudpConn, code: u16) -> Status {
    guard(|| table::disconnect(conn, code))
}

/// Frees the connection and closes its socket, without telling the server (call
/// `xrudp_disconnect` first for a graceful close). The handle is invalid afterwards: a
/// second `xrudp_free` returns `XRUDP_STATUS_INVALID_HANDLE`. Takes no buffers.
#[unsafe(no_mangle)]
pub extern "C" fn xrudp_free(conn: XrudpConn) -> Status {
    guard(|| table::free(conn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::XrudpEventKind;

    #[test]
    fn null_pointers_are_refused_without_a_server() {
        let mut conn: XrudpConn = 0;
        // SAFETY: every pointer is null or points to a live local of the right type.
        unsafe {
            assert_eq!(
                xrudp_connect(std::ptr::null(), std::ptr::null(), &raw mut conn),
                Status::NullPointer
            );
            assert_eq!(
                xrudp_connect(
                    c"127.0.0.1:9".as_ptr(),
                    std::ptr::null(),
                    std::ptr::null_mut()
                ),
                Status::NullPointer
            );
            let opts = XrudpConnectOptions {
                protection: table::XRUDP_PROTECTION_PINNED,
                key_len: 32,
                key: std::ptr::null(),
                mtu: 0,
                pmtud: table::XRUDP_PMTUD_ON,
            };
            assert_eq!(
                xrudp_connect(c"127.0.0.1:9".as_ptr(), &raw const opts, &raw mut conn),
                Status::NullPointer
            );
            assert_eq!(conn, 0, "no handle is written on failure");
            let off = XrudpConnectOptions {
                protection: table::XRUDP_PROTECTION_OFF,
                key_len: 0,
                key: std::ptr::null(),
                mtu: 0,
                pmtud: table::XRUDP_PMTUD_ON,
            };
            assert_eq!(
                xrudp_connect(c"127.0.0.1:9".as_ptr(), &raw const off, &raw mut conn),
                Status::Ok
            );
            assert_ne!(conn, 0);
            let mut ev = XrudpEvent {
                kind: XrudpEventKind::Message,
                channel: 9,
                reason: table::XrudpReason::Peer,
                reason_code: 9,
                len: 9,
            };
            assert_eq!(
                xrudp_next_event(conn, std::ptr::null_mut(), std::ptr::null_mut(), 0),
                Status::NullPointer
            );
            assert_eq!(
                xrudp_next_event(conn, &raw mut ev, std::ptr::null_mut(), 8),
                Status::NullPointer
            );
            assert_eq!(
                xrudp_next_event(conn, &raw mut ev, std::ptr::null_mut(), 0),
                Status::NoEvent
            );
            assert_eq!(ev.kind, XrudpEventKind::None, "the event is cleared");
            assert_eq!(
                xrudp_send(conn, 0, std::ptr::null(), 3),
                Status::NullPointer
            );
            assert_eq!(xrudp_stats(conn, std::ptr::null_mut()), Status::NullPointer);
        }
        assert_eq!(xrudp_free(conn), Status::Ok);
        assert_eq!(xrudp_free(conn), Status::InvalidHandle);
        assert_eq!(xrudp_wait(conn, 0), Status::InvalidHandle);
        assert_eq!(xrudp_disconnect(conn, 1), Status::InvalidHandle);
    }

    #[test]
    fn status_text_covers_unknown_codes() {
        // SAFETY: xrudp_status_text returns static NUL-terminated text.
        let text = |code| unsafe { CStr::from_ptr(xrudp_status_text(code)) };
        assert_eq!(text(12_345), c"unknown status code");
        assert_eq!(
            text(Status::BufferTooSmall as i32),
            Status::BufferTooSmall.text()
        );
    }
}
