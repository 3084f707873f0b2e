//! Request-side helpers of routing: the authority, redirect `Location`s, path rewrites, header
//! operations, weighted destination choice, and the responses the gateway writes itself.

use bytes::Bytes;
use http::HeaderValue;
use model::ir::{Forward, HeaderOps, Matcher, Redirect, RedirectPort};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;
use rand::Rng;

/// Builds a response the gateway makes itself.
pub fn local_response(status: u16, flags: &str, body_len: usize) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    if !flags.is_empty() {
        resp.insert_header("x-gateway-error", flags)?;
    }
    resp.insert_header("content-length", body_len.to_string())?;
    Ok(resp)
}

/// Writes a response the gateway makes itself; to a gRPC request, as the gRPC status of `status`
/// with `body` as its message (Envoy's local replies to gRPC).
pub async fn respond(
    session: &mut Session,
    status: u16,
    flags: &str,
    body: &'static str,
) -> Result<()> {
    if crate::grpc::is_grpc(session.req_header()) {
        let resp = crate::grpc::local_reply(crate::grpc::status_for_http(status), body, flags)?;
        return crate::grpc::send_local_reply(session, resp).await;
    }
    let resp = local_response(status, flags, body.len())?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), body.is_empty() || head_only)
        .await?;
    if !body.is_empty() && !head_only {
        session
            .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
            .await?;
    }
    Ok(())
}

/// Host as sent, from `:authority` (HTTP/2) or the Host header.
pub fn authority_of(req: &RequestHeader) -> &str {
    if let Some(a) = req.uri.authority() {
        return a.as_str();
    }
    req.headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(i) => &authority[..=i],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

pub fn port_of(authority: &str) -> Option<u16> {
    let tail = if authority.starts_with('[') {
        authority.rsplit_once("]:").map(|(_, p)| p)
    } else {
        authority.rsplit_once(':').map(|(_, p)| p)
    };
    tail.and_then(|p| p.parse().ok())
}

pub fn replace_prefix(path: &str, matcher: Option<&Matcher>, replacement: &str) -> String {
    match matcher {
        Some(Matcher::Prefix { value, .. } | Matcher::PathSeparatedPrefix { value })
            if path.len() >= value.len() =>
        {
            // ignoreUriCase prefixes match case-insensitively: cut by length, not by equality.
            let rest = path.get(value.len()..).unwrap_or("");
            let mut out = String::with_capacity(replacement.len() + rest.len());
            out.push_str(replacement);
            out.push_str(rest);
            out
        }
        _ => replacement.to_string(),
    }
}

pub fn redirect_location(
    r: &Redirect,
    matcher: Option<&Matcher>,
    req: &RequestHeader,
    tls: bool,
) -> String {
    let scheme = r
        .scheme
        .as_deref()
        .unwrap_or(if tls { "https" } else { "http" });
    let authority = authority_of(req);
    let host = match &r.authority {
        Some(a) => strip_port(a).to_string(),
        None => strip_port(authority).to_string(),
    };
    let explicit_port = r.authority.as_deref().and_then(port_of);
    let port = match r.port {
        Some(RedirectPort::Fixed(p)) => Some(p),
        Some(RedirectPort::FromProtocolDefault) => None,
        Some(RedirectPort::FromRequestPort) => port_of(authority),
        None => explicit_port.or_else(|| {
            // Envoy keeps the request's port unless the scheme changes.
            if r.scheme.is_some() && r.authority.is_none() {
                None
            } else if r.authority.is_none() {
                port_of(authority)
            } else {
                None
            }
        }),
    };
    let port =
        port.filter(|&p| !((scheme == "http" && p == 80) || (scheme == "https" && p == 443)));
    let path = req.uri.path();
    let new_path = if let Some(uri) = &r.uri {
        uri.clone()
    } else if let Some(p) = &r.prefix_rewrite {
        replace_prefix(path, matcher, p)
    } else {
        path.to_string()
    };
    let mut loc = format!("{scheme}://{host}");
    if let Some(p) = port {
        loc.push(':');
        loc.push_str(&p.to_string());
    }
    loc.push_str(&new_path);
    if let Some(q) = req.uri.query() {
        if !new_path.contains('?') {
            loc.push('?');
            loc.push_str(q);
        }
    }
    loc
}

pub fn apply_request_ops(req: &mut RequestHeader, ops: &HeaderOps) -> Result<()> {
    for name in &ops.remove {
        req.remove_header(name);
    }
    for (n, v) in &ops.set {
        req.insert_header(n.clone(), v.clone())?;
    }
    for (n, v) in &ops.add {
        req.append_header(n.clone(), v.clone())?;
    }
    Ok(())
}

pub fn apply_response_ops(resp: &mut ResponseHeader, ops: &HeaderOps) -> Result<()> {
    for name in &ops.remove {
        resp.remove_header(name);
    }
    for (n, v) in &ops.set {
        resp.insert_header(n.clone(), v.clone())?;
    }
    for (n, v) in &ops.add {
        resp.append_header(n.clone(), v.clone())?;
    }
    Ok(())
}

pub fn choose_destination(f: &Forward) -> Option<usize> {
    if f.destinations.len() == 1 {
        return Some(0);
    }
    if f.total_weight == 0 {
        return None;
    }
    let mut n = rand::thread_rng().gen_range(0..f.total_weight);
    for (i, d) in f.destinations.iter().enumerate() {
        if n < d.weight {
            return Some(i);
        }
        n -= d.weight;
    }
    None
}

/// Lower-case hex of `bytes` into `out` (twice as long).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// A W3C `traceparent` starting a new trace (sampled), for requests that arrive without one.
/// Written into a stack buffer: this runs on every proxied request.
pub fn new_traceparent() -> HeaderValue {
    let mut rng = rand::thread_rng();
    let trace: u128 = rng.gen_range(1..=u128::MAX);
    let span: u64 = rng.gen_range(1..=u64::MAX);
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-01";
    hex_into(&mut buf[3..35], &trace.to_be_bytes());
    hex_into(&mut buf[36..52], &span.to_be_bytes());
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("00-0-0-00"))
}

/// A random (version 4) UUID for `x-request-id`, as Envoy generates one. From the thread's RNG,
/// not `uuid::Uuid::new_v4`, which asks the kernel for randomness on every request.
pub fn new_request_id() -> HeaderValue {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut buf = [b'-'; 36];
    hex_into(&mut buf[0..8], &b[0..4]);
    hex_into(&mut buf[9..13], &b[4..6]);
    hex_into(&mut buf[14..18], &b[6..8]);
    hex_into(&mut buf[19..23], &b[8..10]);
    hex_into(&mut buf[24..36], &b[10..16]);
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::{new_request_id, new_traceparent};

    #[test]
    fn request_ids_are_version_4_uuids() {
        let a = new_request_id();
        let id = uuid::Uuid::parse_str(a.to_str().expect("test value")).expect("test value");
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(a.to_str().expect("test value"), id.hyphenated().to_string());
        assert_ne!(a, new_request_id());
    }

    #[test]
    fn traceparents_are_w3c_version_00_and_sampled() {
        let t = new_traceparent();
        let t = t.to_str().expect("test value");
        let parts: Vec<&str> = t.split('-').collect();
        assert_eq!(parts.len(), 4, "{t}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "01");
        for p in &parts[1..3] {
            assert!(p
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(
                p.bytes().any(|b| b != b'0'),
                "all-zero ids are invalid: {t}"
            );
        }
    }
}

#[cfg(test)]
#[path = "routing_prop_tests.rs"]
mod prop_tests;
