//! Request identity the host gives every request before the world sees it:
//! an `x-request-id` (the client's own when it is valid, else a new one),
//! the client's address in `x-client-addr` and, over mTLS, its verified
//! certificate identity in `x-client-identity` (both always the host's: a
//! client's own copies are replaced or removed, so it cannot forge them).
//! The id goes back on the response and into the logs.

use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::SocketAddr;

// Header names as `HeaderName` constants: a `&str` key is parsed again on
// every lookup (hundreds of instructions a request).

/// The request-id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The client-address header the host sets.
pub const CLIENT_ADDR: HeaderName = HeaderName::from_static("x-client-addr");
/// The client-certificate identity header the host sets (mTLS).
pub const CLIENT_IDENTITY: HeaderName = HeaderName::from_static("x-client-identity");

/// Who is at the other end of a connection, as the host vouches for it
/// (made once per connection, not per request).
#[derive(Debug, Clone)]
pub struct Client {
    /// Its address, for `x-client-addr`.
    pub addr: HeaderValue,
    /// Its verified certificate's identity, for `x-client-identity`
    /// (`super::tls::identity`); None without one.
    pub identity: Option<HeaderValue>,
}
/// Longest client-supplied id kept.
const MAX_LEN: usize = 128;

/// Whether a client's id is kept: 1–128 visible ASCII characters from
/// `A-Z a-z 0-9 - _ . : / + =`.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

/// A new id: 32 hex digits of 128 random bits (the thread's generator,
/// seeded by the OS): unpredictable; two among four billion ids are the same
/// with a chance of about 2^-65.
pub fn generate() -> HeaderValue {
    let mut bits = [0u8; 16];
    rand::fill(&mut bits);
    let mut hex = [0u8; 32];
    crate::platform::hex::encode_into(&bits, &mut hex);
    HeaderValue::from_bytes(&hex).expect("hex digits are a valid header value")
}

/// The `x-client-addr` value for a connection from `client` (made once per
/// connection, not per request).
pub fn client_value(client: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).expect("an address is a valid header value")
}

/// Sets the request's `x-request-id` (keeping a valid one),
/// `x-client-addr` and `x-client-identity` (removed when the connection
/// has none); returns the id.
pub fn assign(headers: &mut HeaderMap, client: &Client) -> HeaderValue {
    let id = match headers.entry(REQUEST_ID) {
        Entry::Occupied(mut kept) => {
            if !kept.get().to_str().is_ok_and(is_valid) {
                kept.insert(generate());
            }
            kept.get().clone()
        }
        Entry::Vacant(new) => new.insert(generate()).clone(),
    };
    headers.insert(CLIENT_ADDR, client.addr.clone());
    match &client.identity {
        Some(identity) => headers.insert(CLIENT_IDENTITY, identity.clone()),
        None => headers.remove(&CLIENT_IDENTITY),
    };
    id
}

/// Sets `x-request-id: id` (replacing any other).
pub fn stamp(headers: &mut HeaderMap, id: &HeaderValue) {
    headers.insert(REQUEST_ID, id.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_ids_and_replaces_others() {
        let mut client = Client {
            addr: client_value("127.0.0.1:4000".parse().unwrap()),
            identity: None,
        };
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        h.insert(CLIENT_ADDR, HeaderValue::from_static("6.6.6.6:1"));
        h.insert(CLIENT_IDENTITY, HeaderValue::from_static("spiffe://forged"));
        assert_eq!(assign(&mut h, &client), "abc-123");
        assert_eq!(h[&CLIENT_ADDR], "127.0.0.1:4000");
        assert!(
            h.get(&CLIENT_IDENTITY).is_none(),
            "a client's own copy goes"
        );
        client.identity = Some(HeaderValue::from_static("spiffe://a/b"));
        h.insert(CLIENT_IDENTITY, HeaderValue::from_static("spiffe://forged"));
        assign(&mut h, &client);
        assert_eq!(h[&CLIENT_IDENTITY], "spiffe://a/b");
        for bad in ["", "has space", "quote\"", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(bad) {
                h.insert(REQUEST_ID, v);
            }
            let id = assign(&mut h, &client);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
            assert_eq!(h[&REQUEST_ID], id);
        }
        assert_ne!(generate(), generate());
    }
}
