//! The one place an upstream connection's settings are made from a cluster: TLS (per the
//! DestinationRule), the HTTP version (the cluster's compiled protocol), HTTP/2 stream limit and
//! PINGs, connect and idle timeouts, TCP keepalive. Proxied and mirrored requests both connect
//! through Pingora's connector with a peer built here, so they speak to an upstream alike.

use model::ir::{self, Cluster, UpstreamProtocol};
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::time::Duration;

/// Envoy's default limit of concurrent streams on one upstream HTTP/2 connection (2^31 - 1): in
/// effect the server's `SETTINGS_MAX_CONCURRENT_STREAMS` decides. Pingora's own default is 1.
const DEFAULT_MAX_STREAMS: usize = 2_147_483_647;

/// A peer for `addr` of `cluster`. `host` is the Host the upstream sees (the SNI by default);
/// `client_h2`: the client spoke HTTP/2 (for `useClientProtocol`). `Err` says why the cluster's
/// TLS cannot be used.
pub fn build(
    cluster: &Cluster,
    addr: SocketAddr,
    host: &str,
    client_h2: bool,
) -> Result<HttpPeer, String> {
    let p = &cluster.policy;
    let mut peer = transport(cluster, addr, host)?;
    let h2 = match p.protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Client => client_h2,
    };
    if h2 {
        // HTTP/2 only: prior knowledge in plain text, ALPN `h2` alone over TLS (a server that
        // does not select it is spoken to in HTTP/1.1, as Pingora falls back).
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = p
            .max_concurrent_streams
            .map_or(DEFAULT_MAX_STREAMS, |n| n as usize);
        peer.options.h2_ping_interval = p.h2_ping_interval;
    } else {
        peer.options.set_http_version(1, 1);
    }
    if let Some(idle) = p.idle_timeout {
        peer.options.idle_timeout = Some(idle);
    }
    Ok(peer)
}

/// The connection itself, whatever is spoken over it (HTTP here, bytes for `tcp` routes): TLS per
/// the DestinationRule, connect timeout, TCP keepalive.
pub fn transport(cluster: &Cluster, addr: SocketAddr, host: &str) -> Result<HttpPeer, String> {
    let p = &cluster.policy;
    let mut peer = match &p.tls {
        None => HttpPeer::new(addr, false, String::new()),
        Some(tls) => crate::tls::upstream_peer_tls(addr, tls, host, &cluster.host)?,
    };
    peer.options.connection_timeout = Some(p.connect_timeout);
    peer.options.tcp_keepalive = p.tcp_keepalive.as_ref().map(keepalive);
    Ok(peer)
}

/// `tcpKeepalive` as the socket options Pingora sets on a new upstream connection.
fn keepalive(k: &ir::TcpKeepalive) -> pingora::protocols::TcpKeepalive {
    pingora::protocols::TcpKeepalive {
        idle: k.time,
        interval: k.interval,
        count: k.probes as usize,
        // The system default: Envoy's keepalive sets no user timeout either.
        #[cfg(target_os = "linux")]
        user_timeout: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::ir::{ClusterPolicy, Discovery};

    fn cluster(policy: ClusterPolicy) -> Cluster {
        Cluster {
            name: "outbound|9000||a.svc".to_string(),
            host: "a.svc".to_string(),
            port: 9000,
            subset: None,
            discovery: Discovery::Static(Vec::new()),
            policy,
        }
    }

    fn versions(p: &HttpPeer) -> (u8, u8) {
        (
            p.options.alpn.get_min_http_version(),
            p.options.alpn.get_max_http_version(),
        )
    }

    #[test]
    fn the_cluster_protocol_picks_the_http_version() {
        let addr: SocketAddr = "127.0.0.1:9000".parse().expect("test value");
        let h1 = cluster(ClusterPolicy::default());
        let p = build(&h1, addr, "a.example.com", true).expect("plain text");
        assert_eq!(versions(&p), (1, 1));

        let h2 = cluster(ClusterPolicy {
            protocol: UpstreamProtocol::Http2,
            max_concurrent_streams: Some(7),
            h2_ping_interval: Some(Duration::from_secs(3)),
            ..ClusterPolicy::default()
        });
        let p = build(&h2, addr, "a.example.com", false).expect("plain text");
        assert_eq!(versions(&p), (2, 2));
        assert_eq!(p.options.max_h2_streams, 7);
        assert_eq!(p.options.h2_ping_interval, Some(Duration::from_secs(3)));

        let unlimited = cluster(ClusterPolicy {
            protocol: UpstreamProtocol::Http2,
            ..ClusterPolicy::default()
        });
        let p = build(&unlimited, addr, "a.example.com", false).expect("plain text");
        assert_eq!(p.options.max_h2_streams, DEFAULT_MAX_STREAMS);

        let client = cluster(ClusterPolicy {
            protocol: UpstreamProtocol::Client,
            ..ClusterPolicy::default()
        });
        let p = build(&client, addr, "a.example.com", true).expect("plain text");
        assert_eq!(versions(&p), (2, 2));
        let p = build(&client, addr, "a.example.com", false).expect("plain text");
        assert_eq!(versions(&p), (1, 1));
    }
}
