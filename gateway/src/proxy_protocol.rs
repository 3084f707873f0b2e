//! The PROXY protocol (v1 text and v2 binary, HAProxy's specification) on the traffic listeners
//! when MeshConfig's `gatewayTopology.proxyProtocol` is set, as Istio's gateway then enables
//! Envoy's proxy_protocol listener filter: every connection must open with a header (parsed by
//! the `ppp` crate), whose source address then is the connection's peer for everything that
//! follows (routing by `sourceSubnet`, `X-Forwarded-For`, policies, the access log). A connection
//! without a valid header is closed. The local address stays the socket's: it names the listener.

use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use ppp::{HeaderResult, PartialResult};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How long a client may take to send the header (Envoy's `listener_filters_timeout` default).
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The largest header read: v1 is at most 107 bytes; v2 carries TLVs, which load balancers keep
/// small (an AWS NLB's are under 300 bytes).
const MAX_HEADER: usize = 4096;

/// Reads the PROXY header at the head of `io` and makes its source address the stream's peer.
/// The bytes read past the header are put back for the protocol that follows.
pub async fn accept(io: Stream) -> Result<Stream, String> {
    match tokio::time::timeout(TIMEOUT, read(io)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no PROXY protocol header within {TIMEOUT:?}")),
    }
}

async fn read(io: Stream) -> Result<Stream, String> {
    let mut l4 = io
        .into_any()
        .downcast::<pingora::protocols::l4::stream::Stream>()
        .map_err(|_| "internal: the connection is not a TCP stream".to_string())?;
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let (len, source) = loop {
        let n = l4
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the PROXY header: {e}"))?;
        if n == 0 {
            return Err("closed before a complete PROXY header".to_string());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let parsed = HeaderResult::parse(&buf);
        if parsed.is_incomplete() {
            if buf.len() > MAX_HEADER {
                return Err("PROXY header too long".to_string());
            }
            continue;
        }
        break header(&parsed)?;
    };
    if let Some(rest) = buf.get(len..) {
        l4.rewind(rest);
    }
    if let Some(source) = source {
        let digest = SocketDigest::from_raw_fd(std::os::unix::io::AsRawFd::as_raw_fd(&*l4));
        let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(source)));
        l4.set_socket_digest(digest);
    }
    Ok(l4)
}

/// The header's length and its source address: `None` for a `LOCAL` command (a load balancer's
/// own health check) or an `UNKNOWN` protocol, which keep the socket's peer, as Envoy does.
fn header(parsed: &HeaderResult<'_>) -> Result<(usize, Option<SocketAddr>), String> {
    match parsed {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => None,
            };
            Ok((h.header.len(), source))
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, ppp::v2::Addresses::Unspecified) => None,
                (_, ppp::v2::Addresses::Unix(_)) => {
                    return Err("PROXY header with a unix address".to_string())
                }
            };
            Ok((h.len(), source))
        }
        HeaderResult::V1(Err(e)) => Err(format!("invalid PROXY v1 header: {e}")),
        HeaderResult::V2(Err(e)) => Err(format!("invalid PROXY v2 header: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::header;
    use ppp::HeaderResult;

    #[test]
    fn reads_the_source_and_the_length_of_both_versions() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let (len, src) = header(&HeaderResult::parse(v1)).expect("v1");
        assert_eq!(len, 43);
        assert_eq!(src, Some("203.0.113.7:56324".parse().expect("addr")));
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        v2.extend_from_slice(&[198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb]);
        v2.extend_from_slice(b"GET");
        let (len, src) = header(&HeaderResult::parse(&v2)).expect("v2");
        assert_eq!(len, 28);
        assert_eq!(src, Some("198.51.100.9:8080".parse().expect("addr")));
        assert!(header(&HeaderResult::parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")).is_err());
    }
}
