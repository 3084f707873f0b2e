//! The traffic listeners that serve a Gateway port whatever its protocol (`--https` and every
//! `--listen PORT=ADDR`): one Pingora listening service with each address added by `add_tcp`, so
//! that Pingora's upgrade hand-over covers them. What a connection is (HTTP, TCP, or TLS: passthrough by SNI, or terminated then
//! HTTP or `tcp` routes) is decided when it is accepted, from the snapshot current at that moment.

use crate::proxy::ListenerInfo;
use crate::tcp::{Downstream, L4Proxy};
use crate::tls::{read_client_hello, Failed, Handshake, TlsAcceptor, HANDSHAKE_TIMEOUT};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use model::ir::{L4Conn, PortKind, Snapshot};
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use prometheus::{IntCounter, IntGauge};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The application of the port listeners (one Pingora service, one runtime, for all of them):
/// `A` is the HTTP proxy.
pub struct PortApp<A> {
    http: Arc<A>,
    l4: Arc<L4Proxy>,
    acceptor: Arc<TlsAcceptor>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// By local port.
    ports: HashMap<u16, Port>,
    edge: Arc<crate::edge::Edge>,
}

/// One listener of a [`PortApp`].
struct Port {
    /// The Gateway server port this listener serves.
    gateway_port: u16,
    /// `--https`: TLS even while no server is configured (the handshake then fails).
    always_tls: bool,
    /// `gateway_tls_handshake_failures_total{listener}`.
    failures: IntCounter,
    /// `gateway_open_connections{listener}`, for the connections the L4 proxy serves (the HTTP
    /// proxy counts its own).
    open: IntGauge,
}

/// The addresses of a connection: (local, peer).
fn addresses(io: &Stream) -> Option<(SocketAddr, SocketAddr)> {
    let d = io.get_socket_digest()?;
    let local = *d.local_addr()?.as_inet()?;
    let peer = *d.peer_addr()?.as_inet()?;
    Some((local, peer))
}

/// Counts one connection in `gateway_open_connections` while it lives.
struct Open(IntGauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<A: ServerApp + Send + Sync + 'static> PortApp<A> {
    /// Serves HTTP on `io` (plain or decrypted) until the connection ends. The proxy returns the
    /// stream while it may serve another request (keep-alive); Pingora's own loop would hand it
    /// back to this app, which would decide the protocol again, so loop in place instead.
    async fn http(&self, io: Stream, shutdown: &ShutdownWatch) {
        let mut next = Some(self.edge.http_stream(io));
        while let Some(stream) = next.take() {
            next = self.http.process_new(stream, shutdown).await;
        }
    }

    async fn tcp(
        &self,
        p: &Port,
        io: Stream,
        snapshot: &Snapshot,
        addrs: Option<(SocketAddr, SocketAddr)>,
    ) {
        let _open = p.open();
        let d = downstream(addrs, None);
        let conn = l4_conn(p.gateway_port, addrs, None);
        match snapshot
            .l4
            .get(&p.gateway_port)
            .and_then(|l| l.tcp_route(&conn))
        {
            Some(route) => self.l4.serve(io, route, &d).await,
            None => self.l4.no_route(&d),
        }
    }

    async fn tls(
        &self,
        p: &Port,
        io: Stream,
        snapshot: Arc<Snapshot>,
        addrs: Option<(SocketAddr, SocketAddr)>,
        shutdown: &ShutdownWatch,
    ) {
        let started = Instant::now();
        let (io, sni) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_client_hello(io)).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return p.failed(e),
            Err(_) => return p.failed(Failed::Counted("ClientHello timed out".to_string())),
        };
        let conn = l4_conn(p.gateway_port, addrs, sni.as_deref());
        let port = snapshot.l4.get(&p.gateway_port);
        if let Some(route) = port.and_then(|l| l.tls_route(&conn)) {
            let _open = p.open();
            let mut d = downstream(addrs, sni.as_deref());
            d.started = started;
            return self.l4.serve(io, route, &d).await;
        }
        let server = snapshot
            .tls
            .get(&p.gateway_port)
            .and_then(|l| l.server_for(sni.as_deref()))
            .cloned();
        let remaining = HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed());
        let tls =
            match tokio::time::timeout(remaining, self.acceptor.terminate(io, server.as_ref()))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return p.failed(e),
                Err(_) => return p.failed(Failed::Counted("TLS handshake timed out".to_string())),
            };
        let principal = tls.principal();
        let stream: Stream = Box::new(tls);
        if server.is_some_and(|s| s.tcp) {
            let _open = p.open();
            let d = downstream(addrs, sni.as_deref());
            match port.and_then(|l| l.tcp_route(&conn)) {
                Some(route) => self.l4.serve(stream, route, &d).await,
                None => self.l4.no_route(&d),
            }
            return;
        }
        let _registered = addrs.map(|(local, peer)| {
            self.acceptor.register(
                (local.port(), peer),
                Handshake {
                    sni: sni.clone(),
                    principal: principal.clone(),
                },
            )
        });
        self.http(stream, shutdown).await;
    }
}

impl Port {
    fn open(&self) -> Open {
        self.open.inc();
        Open(self.open.clone())
    }

    fn failed(&self, e: Failed) {
        if let Failed::Counted(e) = e {
            self.failures.inc();
            tracing::debug!(port = self.gateway_port, error = %e, "TLS handshake failed");
        }
    }
}

fn downstream(addrs: Option<(SocketAddr, SocketAddr)>, sni: Option<&str>) -> Downstream<'_> {
    Downstream {
        client: addrs.map(|(_, peer)| peer),
        sni,
        start: SystemTime::now(),
        started: Instant::now(),
    }
}

fn l4_conn(port: u16, addrs: Option<(SocketAddr, SocketAddr)>, sni: Option<&str>) -> L4Conn<'_> {
    let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    L4Conn {
        port,
        destination: addrs.map_or(unspecified, |(local, _)| local.ip()),
        source: addrs.map_or(unspecified, |(_, peer)| peer.ip()),
        sni,
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for PortApp<A> {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let (io, _admitted) = self.edge.accept(io).await?;
        let snapshot = self.snapshot.load_full();
        let addrs = addresses(&io);
        let Some(p) = addrs.and_then(|(local, _)| self.ports.get(&local.port())) else {
            tracing::debug!(?addrs, "connection on an unknown listener");
            return None;
        };
        match snapshot.port_kind(p.gateway_port) {
            PortKind::Http if p.always_tls => self.tls(p, io, snapshot, addrs, shutdown).await,
            PortKind::Http => self.http(io, shutdown).await,
            PortKind::Tcp => self.tcp(p, io, &snapshot, addrs).await,
            PortKind::Tls => self.tls(p, io, snapshot, addrs, shutdown).await,
        }
        None
    }

    async fn cleanup(&self) {
        self.http.cleanup().await;
    }
}

/// Everything the port listeners share.
pub struct Shared<A> {
    pub http: Arc<A>,
    pub l4: Arc<L4Proxy>,
    pub acceptor: Arc<TlsAcceptor>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: crate::metrics::Metrics,
    pub edge: Arc<crate::edge::Edge>,
}

/// The port listeners, `(gateway port, listener label, address)`: `--https` (443, `https`) and
/// every `--listen PORT=ADDR` (PORT, `PORT`), each entered in the HTTP proxy's `listeners` by local
/// port. TLS or not is known per connection there (its handshake is registered in `connections`).
pub fn table(
    https: SocketAddr,
    listen: &[(u16, SocketAddr)],
    listeners: &mut crate::fast_map::FastMap<u16, ListenerInfo>,
    connections: &Arc<crate::tls::Connections>,
    metrics: &crate::metrics::Metrics,
) -> Result<Vec<(u16, String, SocketAddr)>, String> {
    let mut out = vec![(443, "https".to_string(), https)];
    out.extend(
        listen
            .iter()
            .map(|(port, addr)| (*port, port.to_string(), *addr)),
    );
    for (port, label, addr) in &out {
        if listeners.contains_key(&addr.port()) {
            let flag = if label == "https" {
                "--https ".to_string()
            } else {
                format!("--listen {port}=")
            };
            return Err(format!(
                "{flag}{addr}: local port already used by another listener"
            ));
        }
        listeners.insert(
            addr.port(),
            ListenerInfo {
                gateway_port: *port,
                tls: label == "https",
                connections: Some(connections.clone()),
                open_connections: Some(metrics.open_connections.with_label_values(&[label])),
            },
        );
    }
    Ok(out)
}

/// The one Pingora listening service of the port listeners, `(gateway port, listener label,
/// address)` each.
pub fn service<A: ServerApp + Send + Sync + 'static>(
    shared: &Shared<A>,
    listeners: &[(u16, String, SocketAddr)],
) -> pingora::services::listening::Service<PortApp<A>> {
    let ports = listeners
        .iter()
        .map(|(gateway_port, label, addr)| {
            let port = Port {
                gateway_port: *gateway_port,
                always_tls: label == "https",
                failures: shared
                    .metrics
                    .tls_handshake_failures
                    .with_label_values(&[label]),
                open: shared.metrics.open_connections.with_label_values(&[label]),
            };
            (addr.port(), port)
        })
        .collect();
    let app = PortApp {
        http: shared.http.clone(),
        l4: shared.l4.clone(),
        acceptor: shared.acceptor.clone(),
        snapshot: shared.snapshot.clone(),
        ports,
        edge: shared.edge.clone(),
    };
    let mut s = pingora::services::listening::Service::new("listeners".to_string(), app);
    for (_, _, addr) in listeners {
        s.add_tcp(&addr.to_string());
    }
    s
}
