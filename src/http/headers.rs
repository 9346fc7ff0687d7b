//! Headers a proxy must change, and only those.
//!
//! Hop-by-hop headers describe one connection, not the message (RFC 9110
//! §7.6.1): `Connection` and every header it names, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding` and `Upgrade`
//! are removed in both directions, and hyper frames each leg itself
//! (chunked or `Content-Length` as the body needs). `TE: trailers` is kept
//! towards an HTTP/2 upstream, where it is the one value allowed (gRPC
//! needs it).
//!
//! Added towards the upstream: `X-Forwarded-For` (the client's address
//! appended to any list a proxy before us started), `X-Forwarded-Proto:
//! http` (unless already set) and `Via`; towards the client, `Via`. The
//! client's `Host` is kept as sent (an h2 request's `:authority` becomes
//! `Host`), so virtual hosts on the upstream see the name the client used.

use hyper::header::{
    CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
    VIA,
};
use hyper::{Uri, Version};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Connection tokens that name no header to remove.
fn plain_token(t: &str) -> bool {
    t.is_empty() || t.eq_ignore_ascii_case("close") || t.eq_ignore_ascii_case("keep-alive")
}

/// Removes the hop-by-hop headers; `keep_te_trailers` keeps `TE:
/// trailers` (for an HTTP/2 upstream).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    if headers.contains_key(&CONNECTION) {
        // Allocates only when Connection names a header (rare).
        let mut named: Vec<HeaderName> = Vec::new();
        for v in headers.get_all(&CONNECTION) {
            let Ok(text) = v.to_str() else { continue };
            for token in text.split(',').map(str::trim) {
                if !plain_token(token)
                    && let Ok(name) = HeaderName::from_bytes(token.as_bytes())
                {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
        headers.remove(&CONNECTION);
    }
    for name in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TRAILER,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ] {
        headers.remove(name);
    }
    if headers.contains_key(&TE) {
        let trailers = keep_te_trailers
            && headers.get_all(&TE).iter().any(|v| {
                v.to_str().is_ok_and(|s| {
                    s.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
                })
            });
        headers.remove(&TE);
        if trailers {
            headers.insert(&TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// The `Via` entry for a message received in `version`.
pub fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_09 => "0.9 shakedown",
        Version::HTTP_10 => "1.0 shakedown",
        Version::HTTP_2 => "2 shakedown",
        Version::HTTP_3 => "3 shakedown",
        _ => "1.1 shakedown",
    })
}

/// Prepares a client's request headers for the upstream: hop-by-hop
/// headers removed, `Host` kept (or taken from an h2 `:authority`),
/// forwarding headers added.
pub fn to_upstream(
    headers: &mut HeaderMap,
    version: Version,
    uri: &Uri,
    client_ip: &HeaderValue,
    upstream_http2: bool,
) {
    strip_hop_by_hop(headers, upstream_http2);
    if !headers.contains_key(&HOST)
        && let Some(a) = uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        headers.insert(&HOST, v);
    }
    match headers.get(&X_FORWARDED_FOR) {
        None => {
            headers.insert(&X_FORWARDED_FOR, client_ip.clone());
        }
        Some(_) => {
            // Fold every earlier entry into one list, then add ours.
            let mut list: Vec<u8> = Vec::new();
            for v in headers.get_all(&X_FORWARDED_FOR) {
                if !list.is_empty() {
                    list.extend_from_slice(b", ");
                }
                list.extend_from_slice(v.as_bytes());
            }
            list.extend_from_slice(b", ");
            list.extend_from_slice(client_ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&list) {
                headers.insert(&X_FORWARDED_FOR, v);
            }
        }
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    headers.append(&VIA, via(version));
}

/// Prepares an upstream's response headers for the client.
pub fn to_client(headers: &mut HeaderMap, upstream_version: Version) {
    strip_hop_by_hop(headers, false);
    headers.append(&VIA, via(upstream_version));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        n.sort();
        n
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "close"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers, deflate"),
            ("trailer", "expires"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["set-cookie"]);
        assert_eq!(
            h.get_all("set-cookie").iter().count(),
            2,
            "multi-valued kept"
        );
        let mut h2 = map(&[("te", "deflate, trailers")]);
        strip_hop_by_hop(&mut h2, true);
        assert_eq!(h2.get("te").unwrap(), "trailers");
        let mut h3 = map(&[("te", "deflate")]);
        strip_hop_by_hop(&mut h3, true);
        assert!(h3.get("te").is_none());
    }

    #[test]
    fn forwarding_headers_are_added() {
        let ip = HeaderValue::from_static("10.1.2.3");
        let uri: Uri = "/x".parse().unwrap();
        let mut h = map(&[("host", "shop.example"), ("via", "1.1 edge")]);
        to_upstream(&mut h, Version::HTTP_11, &uri, &ip, false);
        assert_eq!(h.get("host").unwrap(), "shop.example");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        let via: Vec<_> = h.get_all("via").iter().collect();
        assert_eq!(via, ["1.1 edge", "1.1 shakedown"]);

        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        let uri: Uri = "http://shop.example:8080/x".parse().unwrap();
        to_upstream(&mut h, Version::HTTP_2, &uri, &ip, false);
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "1.1.1.1, 2.2.2.2, 10.1.2.3"
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            h.get("host").unwrap(),
            "shop.example:8080",
            "from :authority"
        );
        assert_eq!(h.get("via").unwrap(), "2 shakedown");
    }
}
