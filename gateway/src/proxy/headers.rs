//! Header edits, in place: the request as the upstream sees it and the response as the client
//! sees it.

use super::ctx::Ctx;
use super::GatewayProxy;
use crate::policy;
use crate::routing::{apply_request_ops, apply_response_ops, new_traceparent};
use model::ir::{self, RouteAction};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::ErrorType;

pub(super) const X_REQUEST_ID: &str = "x-request-id";
const TRACEPARENT: &str = "traceparent";
pub(super) const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_ENVOY_EXTERNAL_ADDRESS: &str = "x-envoy-external-address";

/// An address as text, on the stack: the forwarding headers write one or two per request, and
/// `Display` for an IPv4 address costs ten times these few digit writes.
pub(super) struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    pub(super) fn new(ip: std::net::IpAddr) -> IpText {
        let mut t = IpText {
            buf: [0; 45],
            len: 0,
        };
        match ip {
            std::net::IpAddr::V4(v4) => {
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    if o >= 100 {
                        t.push(b'0' + o / 100);
                    }
                    if o >= 10 {
                        t.push(b'0' + o / 10 % 10);
                    }
                    t.push(b'0' + o % 10);
                }
            }
            std::net::IpAddr::V6(v6) => {
                use std::io::Write;
                let mut w = &mut t.buf[..];
                // The longest IPv6 text (an IPv4-mapped address) is 45 bytes: it always fits.
                let _ = write!(w, "{v6}");
                t.len = 45 - w.len();
            }
        }
        t
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// `x-forwarded-for` with the client's address appended, built without heap formatting for the
/// usual case of a short previous value.
pub(super) fn forwarded_for(
    prev: Option<&http::HeaderValue>,
    ip: std::net::IpAddr,
) -> http::HeaderValue {
    let ip = IpText::new(ip);
    let ip = ip.as_bytes();
    let prev = prev.map(|v| v.as_bytes()).filter(|v| !v.is_empty());
    const CAP: usize = 256;
    let mut buf = [0u8; CAP];
    let len = match prev {
        Some(p) => p.len() + 2 + ip.len(),
        None => ip.len(),
    };
    let joined: &[u8] = match (prev, buf.get_mut(..len)) {
        (None, _) => ip,
        (Some(p), Some(out)) => {
            let (head, tail) = out.split_at_mut(p.len());
            head.copy_from_slice(p);
            let (sep, rest) = tail.split_at_mut(2);
            sep.copy_from_slice(b", ");
            rest.copy_from_slice(ip);
            out
        }
        (Some(p), None) => {
            let mut long = Vec::with_capacity(len);
            long.extend_from_slice(p);
            long.extend_from_slice(b", ");
            long.extend_from_slice(ip);
            return http::HeaderValue::from_bytes(&long)
                .unwrap_or_else(|_| http::HeaderValue::from_static(""));
        }
    };
    http::HeaderValue::from_bytes(joined).unwrap_or_else(|_| http::HeaderValue::from_static(""))
}

impl GatewayProxy {
    /// The request as the upstream sees it, edited in place: the rewrite, what authentication
    /// decided, Istio's header operations, the forwarding headers, the request id and trace.
    pub(super) fn upstream_request(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(route) = ctx.route.clone() else {
            return Ok(());
        };
        if let Some(p) = ctx.new_path.clone() {
            let full = match upstream.uri.query() {
                Some(q) => format!("{p}?{q}"),
                None => p,
            };
            match full.parse::<http::Uri>() {
                Ok(uri) => upstream.set_uri(uri),
                Err(_) => {
                    ctx.local_error = Some((500, "", ""));
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(500),
                        "rewritten path is not a valid URI",
                    ));
                }
            }
        }
        if let RouteAction::Forward(ir::Forward {
            rewrite: Some(rw), ..
        }) = &route.action
        {
            if let Some(a) = &rw.authority {
                upstream.insert_header(http::header::HOST, a.as_str())?;
            }
        }
        for name in &ctx.auth.upstream_remove {
            upstream.remove_header(name.as_str());
        }
        for (n, v) in &ctx.auth.upstream_set {
            upstream.insert_header(n.clone(), v.clone())?;
        }
        apply_request_ops(upstream, &route.request_headers)?;
        if let Some(d) = ctx.destination() {
            apply_request_ops(upstream, &d.request_headers)?;
        }
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            let xff = forwarded_for(upstream.headers.get(X_FORWARDED_FOR), ip);
            upstream.insert_header(X_FORWARDED_FOR, xff)?;
        }
        upstream.remove_header(X_ENVOY_EXTERNAL_ADDRESS);
        if let Some(c) = ctx.client.filter(|c| !crate::client_addr::is_internal(*c)) {
            let text = IpText::new(c);
            let value = http::HeaderValue::from_bytes(text.as_bytes())
                .unwrap_or_else(|_| http::HeaderValue::from_static(""));
            upstream.insert_header(X_ENVOY_EXTERNAL_ADDRESS, value)?;
        }
        upstream.insert_header("x-forwarded-proto", if ctx.tls { "https" } else { "http" })?;
        // gRPC servers insist on `te: trailers`, which Pingora strips from HTTP/1.1 requests as a
        // hop-by-hop header (a gRPC-Web call, or gRPC over HTTP/1.1, bridged to HTTP/2).
        if session.req_header().version != http::Version::HTTP_2 && crate::grpc::is_grpc(upstream) {
            upstream.insert_header("te", "trailers")?;
        }
        if let Some(b) = ctx.web_text.as_mut() {
            b.request_header(upstream)?;
        }
        if let Some(id) = &ctx.request_id {
            upstream.insert_header(X_REQUEST_ID, id.clone())?;
        }
        if !upstream.headers.contains_key(TRACEPARENT) {
            upstream.insert_header(TRACEPARENT, new_traceparent())?;
        }
        if ctx.mirror.is_some() {
            let no_body = session.as_mut().is_body_empty();
            self.mirrors
                .on_upstream_head(&mut ctx.mirror, upstream, no_body);
        }
        Ok(())
    }

    /// The response as the client sees it, edited in place: Istio's header operations, CORS, the
    /// hash cookie, what authorization adds.
    pub(super) fn downstream_response(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(t) = ctx.web_text.as_mut() {
            t.response_header(resp, session.req_header().version != http::Version::HTTP_2)?;
        }
        if let Some(route) = ctx.route.clone() {
            apply_response_ops(resp, &route.response_headers)?;
            if let Some(d) = ctx.destination() {
                apply_response_ops(resp, &d.response_headers)?;
            }
            if let (Some(cors), Some(origin)) = (&route.cors, &ctx.cors_origin) {
                for (n, v) in policy::response_headers(cors, origin) {
                    resp.insert_header(n, v)?;
                }
            }
        }
        if let Some(c) = ctx.set_cookie.take() {
            resp.append_header("set-cookie", c)?;
        }
        for (n, v) in &ctx.auth.downstream_set {
            resp.append_header(n.clone(), v.clone())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::forwarded_for;
    use http::HeaderValue;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "192.0.2.7",
            "::1",
            "2001:db8::1",
            "::ffff:255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("test value");
            assert_eq!(super::IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn forwarded_for_appends_the_client_address() {
        let ip = "192.0.2.7".parse().expect("test value");
        assert_eq!(forwarded_for(None, ip), "192.0.2.7");
        let empty = HeaderValue::from_static("");
        assert_eq!(forwarded_for(Some(&empty), ip), "192.0.2.7");
        let prev = HeaderValue::from_static("203.0.113.1");
        assert_eq!(forwarded_for(Some(&prev), ip), "203.0.113.1, 192.0.2.7");
        let v6 = "2001:db8::1".parse().expect("test value");
        assert_eq!(forwarded_for(Some(&prev), v6), "203.0.113.1, 2001:db8::1");
        let long = HeaderValue::from_str(&"1.1.1.1, ".repeat(40)).expect("test value");
        let joined = forwarded_for(Some(&long), ip);
        assert_eq!(
            joined.to_str().expect("test value"),
            format!("{}, 192.0.2.7", "1.1.1.1, ".repeat(40))
        );
    }
}
