//! The edge of every traffic listener, applied as a connection is accepted: the per-listener
//! connection limit (`--max-connections`: over it a new connection is closed at once, as Envoy's
//! overload manager does), the PROXY protocol when MeshConfig turns it on, and the request-header
//! timer of connections served as HTTP. Also the serving loop of the plain `--http` listener.

use crate::header_timer::HeaderTimer;
use crate::request_limits::BodyLimits;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The edge settings (command line and MeshConfig) and their series.
pub struct Edge {
    /// `gatewayTopology.numTrustedProxies`.
    pub trusted_hops: u32,
    /// `gatewayTopology.proxyProtocol`.
    pub proxy_protocol: bool,
    /// Zero: no request-header timeout.
    pub header_timeout: Duration,
    pub body: BodyLimits,
    /// Zero: no limit.
    max_connections: usize,
    /// By local port.
    listeners: HashMap<u16, Listener>,
    header_timeouts: Arc<IntCounter>,
}

/// What [`Edge::new`] is built from.
pub struct Settings {
    pub trusted_hops: u32,
    pub proxy_protocol: bool,
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub max_body_bytes: u64,
    pub body_timeout: Duration,
    pub body_min_rate: u64,
}

struct Listener {
    active: Arc<AtomicUsize>,
    /// `gateway_downstream_connections{listener}`.
    gauge: IntGauge,
    /// `gateway_downstream_connections_refused_total{listener}`.
    refused: IntCounter,
    /// `gateway_downstream_proxy_protocol_errors_total{listener}`.
    proxy_errors: IntCounter,
}

/// One admitted connection, counted until it drops.
pub struct Admitted {
    active: Arc<AtomicUsize>,
    gauge: IntGauge,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

impl Edge {
    /// `listeners`: (local port, listener label) of every traffic listener.
    pub fn new(
        s: Settings,
        listeners: &[(u16, String)],
        registry: &Registry,
    ) -> Result<Edge, prometheus::Error> {
        let gauge = IntGaugeVec::new(
            Opts::new(
                "gateway_downstream_connections",
                "Downstream connections accepted and open, by listener: what --max-connections bounds (TLS handshakes and idle keep-alive connections included).",
            ),
            &["listener"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "gateway_downstream_connections_refused_total",
                "Downstream connections closed at accept because the listener had --max-connections open, by listener.",
            ),
            &["listener"],
        )?;
        let proxy_errors = IntCounterVec::new(
            Opts::new(
                "gateway_downstream_proxy_protocol_errors_total",
                "Downstream connections closed for a missing or invalid PROXY protocol header, by listener.",
            ),
            &["listener"],
        )?;
        let timeouts = IntCounterVec::new(
            Opts::new(
                "gateway_downstream_timeouts_total",
                "Downstream requests ended by an edge timeout, by kind: request_headers (the header not complete within --request-headers-timeout: the connection is closed), request_body (the body slower than --request-body-timeout and --request-body-min-rate allow: 408).",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(gauge.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(proxy_errors.clone()))?;
        registry.register(Box::new(timeouts.clone()))?;
        let listeners = listeners
            .iter()
            .map(|(port, label)| {
                let l = Listener {
                    active: Arc::new(AtomicUsize::new(0)),
                    gauge: gauge.with_label_values(&[label]),
                    refused: refused.with_label_values(&[label]),
                    proxy_errors: proxy_errors.with_label_values(&[label]),
                };
                (*port, l)
            })
            .collect();
        Ok(Edge {
            trusted_hops: s.trusted_hops,
            proxy_protocol: s.proxy_protocol,
            header_timeout: s.header_timeout,
            body: BodyLimits {
                max_bytes: s.max_body_bytes,
                timeout: s.body_timeout,
                min_rate: s.body_min_rate,
                timeouts: timeouts.with_label_values(&["request_body"]),
            },
            max_connections: s.max_connections,
            listeners,
            header_timeouts: Arc::new(timeouts.with_label_values(&["request_headers"])),
        })
    }

    /// Admits a new connection (or closes it: over the limit, or without its PROXY header), and
    /// reads its PROXY header when that is on. What follows sees the header's source as the peer.
    pub async fn accept(&self, io: Stream) -> Option<(Stream, Admitted)> {
        let local = io
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).map(|a| a.port()))?;
        let l = self.listeners.get(&local)?;
        let n = l.active.fetch_add(1, Ordering::AcqRel);
        if self.max_connections > 0 && n >= self.max_connections {
            l.active.fetch_sub(1, Ordering::AcqRel);
            l.refused.inc();
            tracing::debug!(
                port = local,
                limit = self.max_connections,
                "connection refused: listener at --max-connections"
            );
            return None;
        }
        l.gauge.inc();
        let admitted = Admitted {
            active: l.active.clone(),
            gauge: l.gauge.clone(),
        };
        if !self.proxy_protocol {
            return Some((io, admitted));
        }
        match crate::proxy_protocol::accept(io).await {
            Ok(io) => Some((io, admitted)),
            Err(e) => {
                l.proxy_errors.inc();
                tracing::debug!(port = local, error = %e, "connection closed: PROXY protocol");
                None
            }
        }
    }

    /// The stream to serve as HTTP, with the request-header timer when one is set.
    pub fn http_stream(&self, io: Stream) -> Stream {
        if self.header_timeout.is_zero() {
            io
        } else {
            HeaderTimer::wrap(io, self.header_timeout, self.header_timeouts.clone())
        }
    }
}

/// The application of the plain `--http` listener: the edge, then the HTTP proxy `A`.
pub struct PlainApp<A> {
    pub http: Arc<A>,
    pub edge: Arc<Edge>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for PlainApp<A> {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let (io, _admitted) = self.edge.accept(io).await?;
        // The proxy serves every request of the connection; a stream it hands back is served in
        // place, not returned to Pingora, which would admit it again.
        let mut next = Some(self.edge.http_stream(io));
        while let Some(stream) = next.take() {
            next = self.http.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.http.cleanup().await;
    }
}
