//! The client address of a request, with Envoy's `xff_num_trusted_hops` semantics (Istio's
//! `gatewayTopology.numTrustedProxies`): with N trusted proxies in front of the gateway, the client
//! is the Nth address from the right of `X-Forwarded-For` (the one the outermost trusted proxy
//! appended); with none, or when the header has fewer than N addresses or an invalid one there,
//! it is the downstream peer (the PROXY protocol source when that is on). One function, so that
//! the access log, `X-Envoy-External-Address` and AuthorizationPolicy's `remoteIpBlocks` and
//! `remote.ip` all see the same client.

use http::HeaderValue;
use std::net::IpAddr;

/// The client's address: `peer` is the downstream connection's peer, `xff` every
/// `X-Forwarded-For` value of the request in order (several headers read as one list, RFC 9110
/// §5.3), `trusted_hops` the number of trusted proxies.
pub fn client_ip<'a>(
    peer: IpAddr,
    xff: impl IntoIterator<Item = &'a HeaderValue>,
    trusted_hops: u32,
) -> IpAddr {
    if trusted_hops == 0 {
        return peer;
    }
    let values: Vec<&[u8]> = xff.into_iter().map(HeaderValue::as_bytes).collect();
    let skip = (trusted_hops - 1) as usize;
    let nth = values
        .iter()
        .rev()
        .flat_map(|v| v.rsplit(|&b| b == b','))
        .nth(skip);
    nth.and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|a| a.trim().parse::<IpAddr>().ok())
        .unwrap_or(peer)
}

/// Whether Envoy counts `ip` as internal (its default `internal_address_config`: RFC 1918,
/// loopback, link-local and IPv6 unique-local): an internal client gets no
/// `X-Envoy-External-Address`.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_internal(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{client_ip, is_internal};
    use http::HeaderValue;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn envoy_examples() {
        let peer = ip("192.0.2.5");
        let xff = HeaderValue::from_static("203.0.113.128, 203.0.113.10, 203.0.113.1");
        // Envoy's XFF documentation, examples 1 and 3.
        assert_eq!(client_ip(peer, [&xff], 0), peer);
        assert_eq!(client_ip(peer, [&xff], 2), ip("203.0.113.10"));
        assert_eq!(client_ip(peer, [&xff], 1), ip("203.0.113.1"));
        assert_eq!(client_ip(peer, [&xff], 3), ip("203.0.113.128"));
        // Fewer addresses than trusted hops, none, or garbage at the chosen place: the peer.
        assert_eq!(client_ip(peer, [&xff], 4), peer);
        assert_eq!(client_ip(peer, [], 1), peer);
        let bad = HeaderValue::from_static("203.0.113.9, unknown");
        assert_eq!(client_ip(peer, [&bad], 1), peer);
        assert_eq!(client_ip(peer, [&bad], 2), ip("203.0.113.9"));
    }

    #[test]
    fn several_headers_are_one_list() {
        let a = HeaderValue::from_static("198.51.100.1, 198.51.100.2");
        let b = HeaderValue::from_static("2001:db8::7");
        let peer = ip("10.0.0.1");
        assert_eq!(client_ip(peer, [&a, &b], 1), ip("2001:db8::7"));
        assert_eq!(client_ip(peer, [&a, &b], 2), ip("198.51.100.2"));
        assert_eq!(client_ip(peer, [&a, &b], 3), ip("198.51.100.1"));
    }

    #[test]
    fn internal_addresses() {
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "::1",
            "fd00::1",
        ] {
            assert!(is_internal(ip(a)), "{a}");
        }
        for a in ["203.0.113.1", "8.8.8.8", "2001:db8::1"] {
            assert!(!is_internal(ip(a)), "{a}");
        }
    }
}
