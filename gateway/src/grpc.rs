//! gRPC at the edge: which requests are gRPC, the answers the gateway makes to them (`:status 200`
//! with `grpc-status` and `grpc-message`, as Envoy's local replies), the `grpc-timeout` header, and
//! the `grpc-status` of an upstream answer (for `retryOn`).

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use std::time::Duration;

/// gRPC and gRPC-Web requests (`application/grpc`, `application/grpc+proto`,
/// `application/grpc-web…`): answered with a gRPC status rather than an HTTP error.
pub fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().get(..16))
        .is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc"))
}

/// The gRPC status of an HTTP status the gateway answers with: Envoy's
/// `Grpc::Utility::httpToGrpcStatus`, except 504 (a route timeout), which is DEADLINE_EXCEEDED
/// here as the contract says (Envoy answers UNAVAILABLE).
pub fn status_for_http(status: u16) -> u32 {
    match status {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        504 => 4,              // DEADLINE_EXCEEDED
        429 | 502 | 503 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// A trailers-only gRPC answer: `:status 200`, the status and message in the headers (Envoy sends
/// the body text, percent-encoded, as `grpc-message`; an empty body sends none).
pub fn local_reply(grpc_status: u32, message: &str, flags: &str) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(200, Some(5))?;
    resp.insert_header("content-type", "application/grpc")?;
    resp.insert_header("grpc-status", grpc_status.to_string())?;
    if !message.is_empty() {
        resp.insert_header("grpc-message", percent_encode(message))?;
    }
    if !flags.is_empty() {
        resp.insert_header("x-gateway-error", flags)?;
    }
    Ok(resp)
}

/// Writes a [`local_reply`] as a trailers-only response: HTTP/2 HEADERS with END_STREAM, which is
/// how a gRPC client expects a status without messages (Pingora's plain header write would end
/// the stream with an empty DATA frame instead, which clients read as a broken stream).
pub async fn send_local_reply(
    session: &mut pingora::proxy::Session,
    mut resp: ResponseHeader,
) -> Result<()> {
    if session.req_header().version != http::Version::HTTP_2 {
        resp.insert_header("content-length", "0")?;
    }
    session
        .write_response_tasks(vec![pingora::protocols::http::HttpTask::Header(
            Box::new(resp),
            true,
        )])
        .await?;
    Ok(())
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII except `%` as is, the rest `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `grpc-timeout`: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`); `None` when absent
/// or malformed (Envoy then ignores it).
pub fn timeout(req: &RequestHeader) -> Option<Duration> {
    let v = req.headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The `grpc-status` of an upstream answer's headers (a trailers-only answer carries it there).
pub fn response_status(resp: &ResponseHeader) -> Option<u32> {
    resp.headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/pkg.Svc/Method", None).expect("test value");
        for (n, v) in headers {
            r.insert_header(n.to_string(), *v).expect("test value");
        }
        r
    }

    #[test]
    fn grpc_content_types_are_grpc() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC-web+proto",
            "application/grpc-web-text",
        ] {
            assert!(is_grpc(&req(&[("content-type", ct)])), "{ct}");
        }
        for ct in ["application/json", "application/grp", "text/plain"] {
            assert!(!is_grpc(&req(&[("content-type", ct)])), "{ct}");
        }
        assert!(!is_grpc(&req(&[])));
    }

    #[test]
    fn http_statuses_map_as_envoy_does() {
        assert_eq!(status_for_http(503), 14);
        assert_eq!(status_for_http(502), 14);
        assert_eq!(status_for_http(429), 14);
        assert_eq!(status_for_http(404), 12);
        assert_eq!(status_for_http(403), 7);
        assert_eq!(status_for_http(401), 16);
        assert_eq!(status_for_http(400), 13);
        assert_eq!(status_for_http(504), 4);
        assert_eq!(status_for_http(500), 2);
        assert_eq!(status_for_http(418), 2);
    }

    #[test]
    fn grpc_timeout_units() {
        let t = |v: &str| timeout(&req(&[("grpc-timeout", v)]));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("5u"), Some(Duration::from_micros(5)));
        assert_eq!(t("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(t("123456789m"), None);
        assert_eq!(t("10x"), None);
        assert_eq!(t("m"), None);
        assert_eq!(t("-1S"), None);
        assert_eq!(timeout(&req(&[])), None);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("no healthy upstream"), "no healthy upstream");
        assert_eq!(percent_encode("50% done\n"), "50%25 done%0A");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
