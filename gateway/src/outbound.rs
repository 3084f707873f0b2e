//! One HTTP request the gateway makes on its own behalf (JWKS and OpenID discovery documents,
//! external authorization checks), through Pingora's connector like every upstream request: plain
//! or TLS (the platform's roots, SNI the URL's host), bounded in time and in answer size.

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::time::Duration;

/// The largest answer read (a key set or an authorizer's denial body).
pub const MAX_ANSWER: usize = 1 << 20;

/// An answer: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Where a request goes: the address to connect to, TLS, the Host (and SNI).
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: bool,
    pub host: String,
}

impl Target {
    /// The target of an `http://` or `https://` URL, resolving its host by DNS; with the path
    /// and query to ask for.
    pub async fn of_url(url: &str) -> Result<(Target, String), String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{url:?} is not an http or https URL")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        let path = uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        Ok((Target { addr, tls, host }, path))
    }
}

/// Sends `head` with `body` to `target` and reads the answer, all within `timeout`.
pub async fn send(
    connector: &Connector,
    target: &Target,
    head: RequestHeader,
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, String> {
    let mut peer = HttpPeer::new(target.addr, target.tls, target.host.clone());
    peer.options.connection_timeout = Some(timeout);
    peer.options.set_http_version(1, 1);
    let authority = match (target.tls, target.addr.port()) {
        (true, 443) | (false, 80) => target.host.clone(),
        (_, port) => format!("{}:{port}", target.host),
    };
    send_to_peer(connector, &peer, &authority, head, body, timeout).await
}

/// Sends `head` (with Host `authority`) and `body` to `peer` (made by [`crate::peer`] for a
/// cluster, or by [`send`]) and reads the answer, all within `timeout`. HTTP/1.1 and HTTP/2 alike.
pub async fn send_to_peer(
    connector: &Connector,
    peer: &HttpPeer,
    authority: &str,
    mut head: RequestHeader,
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, String> {
    let exchange = async {
        let (mut session, _reused) = connector
            .get_http_session(peer)
            .await
            .map_err(|e| format!("connecting to {}: {e}", peer._address))?;
        if session.as_http2().is_some() {
            let path = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let scheme = if peer.is_tls() { "https" } else { "http" };
            let uri = http::Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(path)
                .build()
                .map_err(|e| e.to_string())?;
            head.set_uri(uri);
            head.set_version(http::Version::HTTP_2);
        } else {
            head.insert_header(http::header::HOST, authority)
                .map_err(|e| e.to_string())?;
        }
        head.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())
            .map_err(|e| e.to_string())?;
        let io = |e: Box<pingora::Error>| e.to_string();
        session
            .write_request_header(Box::new(head))
            .await
            .map_err(io)?;
        if !body.is_empty() {
            session.write_request_body(body, true).await.map_err(io)?;
        }
        session.finish_request_body().await.map_err(io)?;
        session.read_response_header().await.map_err(io)?;
        let (status, headers) = match session.response_header() {
            Some(r) => (r.status.as_u16(), r.headers.clone()),
            None => return Err("no response header".to_string()),
        };
        let mut out = Vec::new();
        while let Some(chunk) = session.read_response_body().await.map_err(io)? {
            if out.len() + chunk.len() > MAX_ANSWER {
                return Err(format!("the answer is larger than {MAX_ANSWER} bytes"));
            }
            out.extend_from_slice(&chunk);
        }
        connector.release_http_session(session, peer, None).await;
        Ok(Answer {
            status,
            headers,
            body: Bytes::from(out),
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

/// A `GET` of `url`.
pub async fn get(connector: &Connector, url: &str, timeout: Duration) -> Result<Answer, String> {
    let (target, path) = Target::of_url(url).await?;
    let head = RequestHeader::build("GET", path.as_bytes(), None).map_err(|e| e.to_string())?;
    send(connector, &target, head, Bytes::new(), timeout).await
}
