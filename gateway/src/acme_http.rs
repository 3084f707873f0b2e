//! HTTP-01 (RFC 8555 §8.3) on the port-80 listener: `GET /.well-known/acme-challenge/<token>` is
//! answered with the key authorization the ACME client published, before any routing (so also
//! while the Gateway redirects that port to HTTPS, or routes nothing there). Other tokens, other
//! listeners and other paths go on to routing as usual.

use crate::fast_map::FastMap;
use crate::proxy::ListenerInfo;
use admin::acme::{Challenges, HTTP01_PREFIX};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// Answers the request if it is a published HTTP-01 challenge on the port-80 listener; returns
/// whether it did.
pub async fn answer(
    session: &mut Session,
    challenges: &Challenges,
    listeners: &FastMap<u16, ListenerInfo>,
) -> Result<bool> {
    let req = session.req_header();
    let Some(token) = req.uri.path().strip_prefix(HTTP01_PREFIX) else {
        return Ok(false);
    };
    if !matches!(req.method, http::Method::GET | http::Method::HEAD) {
        return Ok(false);
    }
    let plain_80 = session
        .server_addr()
        .and_then(|a| a.as_inet())
        .and_then(|a| listeners.get(&a.port()))
        .is_some_and(|l| l.gateway_port == 80 && !l.tls && l.connections.is_none());
    if !plain_80 {
        return Ok(false);
    }
    let Some(key_authorization) = challenges.http01(token) else {
        return Ok(false);
    };
    tracing::info!(token, "answering an ACME HTTP-01 challenge");
    let head_only = req.method == http::Method::HEAD;
    let mut resp = ResponseHeader::build(200, Some(3))?;
    resp.insert_header("content-type", "application/octet-stream")?;
    resp.insert_header("content-length", key_authorization.len().to_string())?;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(Bytes::from(key_authorization)), true)
            .await?;
    }
    Ok(true)
}
