//! The consistent-hash key of a request, by the DestinationRule's `consistentHash` (header,
//! cookie, source IP, query parameter), and the cookie Envoy sets when it generates one.

use crate::balancer;
use model::ir::HashKey;
use pingora::http::RequestHeader;
use std::net::IpAddr;

/// A request's hash, and the `set-cookie` value for the response when the cookie was generated.
#[derive(Debug, Default)]
pub struct RequestHash {
    pub hash: Option<u64>,
    pub set_cookie: Option<String>,
}

/// Hashes the request's key; `client` is the client address trusted proxies name.
pub fn request_hash(key: &HashKey, req: &RequestHeader, client: Option<IpAddr>) -> RequestHash {
    let mut set_cookie = None;
    let hash = hash_of(key, req, client, &mut set_cookie);
    RequestHash { hash, set_cookie }
}

fn hash_of(
    key: &HashKey,
    req: &RequestHeader,
    client: Option<IpAddr>,
    set_cookie: &mut Option<String>,
) -> Option<u64> {
    match key {
        HashKey::Header(name) => req
            .headers
            .get(name.as_str())
            .map(|v| balancer::hash_key(v.as_bytes())),
        // Envoy hashes the downstream remote address: the client trusted proxies name.
        HashKey::SourceIp => client.map(|ip| balancer::hash_key(ip.to_string().as_bytes())),
        HashKey::QueryParameter(name) => req.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .find(|(k, _)| k == name)
                .map(|(_, v)| balancer::hash_key(v.as_bytes()))
        }),
        HashKey::Cookie {
            name,
            path,
            ttl,
            attributes,
        } => {
            let found = req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_string());
            let value = match found {
                Some(v) => v,
                None => {
                    // Envoy generates the cookie when a ttl is configured, so the client sticks.
                    let ttl = (*ttl)?;
                    let v = format!("{:016x}", rand::random::<u64>());
                    let mut c = format!("{name}={v}");
                    if let Some(p) = path {
                        c.push_str(&format!("; Path={p}"));
                    }
                    if !ttl.is_zero() {
                        c.push_str(&format!("; Max-Age={}", ttl.as_secs()));
                    }
                    // Envoy's order: the attributes, then HttpOnly.
                    for a in attributes {
                        c.push_str("; ");
                        c.push_str(a);
                    }
                    c.push_str("; HttpOnly");
                    *set_cookie = Some(c);
                    v
                }
            };
            Some(balancer::hash_key(value.as_bytes()))
        }
    }
}
