//! The `token` target: connect tokens v2 (`xrudp_proto::token`) on any bytes. Nothing
//! panics; a public token that decodes encodes back to the same bytes; whatever opens is
//! authentic, unexpired, names the server, and carries its tag at the end; a token that
//! opens admits one address in a [`ReuseTable`].
//!
//! Input: the bytes, taken both as a public token ([`PublicToken::decode`], then
//! [`token::open`] of the private token it carries) and as a private token
//! ([`token::open`]). The seeds are real tokens issued under [`KEY`], so the fuzzer starts
//! past authentication; it cannot forge its way there.

use std::net::SocketAddr;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use xrudp_proto::token::{
    self, MAX_ADDRESSES, MAX_PRIVATE_LEN, MAX_USER_DATA, MIN_PRIVATE_LEN, OpenedToken, PublicToken,
    ReuseTable, TAG_LEN, TokenError, TokenKey, TokenParams,
};

/// The key the seeds are issued under and the harness opens with.
pub const KEY: TokenKey = TokenKey([0x7b; 32]);

/// The Unix time the harness opens tokens at.
pub const NOW: u64 = 1_000_000;

/// The server that opens the tokens: address 0 of [`crate::addrs`].
#[must_use]
pub fn server() -> SocketAddr {
    crate::addrs()[0]
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut scratch = [0u8; MAX_PRIVATE_LEN];
    if let Ok(t) = PublicToken::decode(data) {
        assert_eq!(t.encode(), data, "a decoded token re-encodes to its bytes");
        assert!((1..=MAX_ADDRESSES).contains(&t.addresses.len()));
        assert!(t.handshake_timeout <= Duration::from_millis(u64::from(u32::MAX)));
        let private = t.private_bytes();
        assert!((MIN_PRIVATE_LEN..=MAX_PRIVATE_LEN).contains(&private.len()));
        let opened = token::open(&KEY, private, NOW, server(), &mut scratch);
        // The public part is not authenticated (the fuzzer may change its addresses and
        // keys); the expiry is, through the private token, and decode checks they agree.
        check_opened(private, &opened);
        if let Ok(o) = &opened {
            assert_eq!(o.expires, t.expires);
        }
        if opened == Err(TokenError::Expired) {
            assert!(NOW >= t.expires);
        }
    }
    let opened = token::open(&KEY, data, NOW, server(), &mut scratch);
    check_opened(data, &opened);
}

/// What holds of any result of opening `private` with [`KEY`] at [`NOW`] at [`server`].
fn check_opened(private: &[u8], opened: &Result<OpenedToken<'_>, TokenError>) {
    let Ok(o) = opened else {
        let mut scratch = [0u8; MAX_PRIVATE_LEN];
        // Another key never opens what this one did not (a forgery is a 2^-128 event).
        assert!(token::open(&TokenKey([0x7c; 32]), private, NOW, server(), &mut scratch).is_err());
        return;
    };
    assert!(NOW < o.expires, "an open token has not expired");
    assert!(
        o.addresses.contains(server()),
        "an open token names the server"
    );
    assert!((1..=MAX_ADDRESSES).contains(&o.addresses.len()));
    assert_eq!(o.addresses.iter().count(), o.addresses.len());
    assert!(o.user_data.len() <= MAX_USER_DATA);
    assert_eq!(
        o.tag,
        private[private.len() - TAG_LEN..],
        "the tag ends the token"
    );
    assert_eq!(
        u64::from_be_bytes(private[1..9].try_into().expect("8 bytes")),
        o.expires
    );
    // One token, one address.
    let [_, a, b, _] = crate::addrs();
    let mut reuse = ReuseTable::new(2);
    assert!(reuse.check(o.tag, a, o.expires, NOW).is_ok());
    assert!(reuse.check(o.tag, a, o.expires, NOW).is_ok());
    assert!(reuse.check(o.tag, b, o.expires, NOW).is_err());
    assert!(
        reuse.check(o.tag, b, o.expires, o.expires).is_ok(),
        "forgotten at expiry"
    );
}

/// Real tokens issued under [`KEY`]: public tokens that open at [`server`], one expired,
/// one for other servers, and a bare private token.
#[must_use]
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let addrs = crate::addrs();
    let mut rng = ChaCha8Rng::seed_from_u64(crate::SERVER_SEED);
    let params = |expires: u64, addresses: Vec<SocketAddr>, user: usize| TokenParams {
        client_id: 0x0123_4567_89ab_cdef,
        expires,
        handshake_timeout: Duration::from_secs(5),
        addresses,
        user_data: (0..user).map(|i| (i * 7) as u8).collect(),
    };
    let largest: Vec<SocketAddr> = (0..MAX_ADDRESSES as u16)
        .map(|i| SocketAddr::new(addrs[i as usize % 4].ip(), 4001 + i))
        .collect();
    let mut out = Vec::new();
    for (name, p) in [
        ("one_server", params(NOW + 60, vec![server()], 0)),
        ("ipv6_first", params(NOW + 60, vec![addrs[3], server()], 16)),
        ("largest", params(NOW + 3600, largest, MAX_USER_DATA)),
        (
            "other_servers",
            params(NOW + 60, vec![addrs[1], addrs[3]], 1),
        ),
        ("expired", params(NOW, vec![server()], 4)),
    ] {
        // INVARIANT: the parameters are within the token's limits.
        let t = token::issue(&KEY, &p, &mut rng).expect("valid parameters");
        if name == "one_server" {
            out.push(("private_only".to_string(), t.private_bytes().to_vec()));
        }
        out.push((name.to_string(), t.encode()));
    }
    out
}
