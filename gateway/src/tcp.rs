//! The L4 proxy: a connection that a `tcp` or `tls` route took goes to one of the route's weighted
//! destinations, an endpoint of its cluster chosen by the cluster's balancer (DestinationRule LB
//! policy, `maxConnections`, outlier ejection), connected within `connectTimeout` with
//! `tcpKeepalive` (and TLS when the DestinationRule originates it), other endpoints tried on
//! connect failure; then bytes flow both ways until both
//! sides have closed (a half-close is passed on: the other side's write side is shut down) or
//! nothing moved for `idleTimeout` (Istio's default for TCP: 1 h). Counted in the TCP series and
//! logged as one access-log line per connection.

use crate::accesslog::{AccessLogger, Entry};
use crate::balancer::{Balancers, Pick};
use crate::metrics::Metrics;
use crate::proxy::InflightGuard;
use crate::upstream::Upstreams;
use model::ir::{HashKey, L4Destination, L4Route, LbPolicy, Target};
use pingora::connectors::TransportConnector;
use pingora::protocols::Stream;
use prometheus::IntCounter;
use rand::Rng;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Istio's default idle timeout of TCP connections.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Connection attempts per downstream connection (the first and the retries on other endpoints).
const CONNECT_ATTEMPTS: usize = 3;
/// The copy buffer of each direction.
const BUFFER: usize = 16 * 1024;

/// Proxies L4 connections; shared by every listener.
pub struct L4Proxy {
    pub upstreams: Arc<Upstreams>,
    pub balancers: Arc<Balancers>,
    pub metrics: Metrics,
    pub access_log: AccessLogger,
    /// The drain's count: a proxied connection is in flight until either side closes, so SIGTERM
    /// and an upgrade let it finish within the drain timeout.
    inflight: Arc<AtomicUsize>,
    connector: TransportConnector,
}

/// What the listener knows of a connection when it hands it over.
pub struct Downstream<'a> {
    pub client: Option<SocketAddr>,
    /// The SNI of its ClientHello (passthrough, or TLS terminated then `tcp` routes).
    pub sni: Option<&'a str>,
    pub start: SystemTime,
    pub started: Instant,
}

/// The counters of one proxied connection, outside the copy futures so that a connection ended
/// by the idle timer (which drops them) still reports what moved.
struct Moved {
    received: AtomicU64,
    sent: AtomicU64,
    /// Milliseconds since `started` of the last byte either way.
    last: AtomicU64,
}

impl L4Proxy {
    pub fn new(
        upstreams: Arc<Upstreams>,
        balancers: Arc<Balancers>,
        metrics: Metrics,
        access_log: AccessLogger,
        inflight: Arc<AtomicUsize>,
    ) -> L4Proxy {
        L4Proxy {
            upstreams,
            balancers,
            metrics,
            access_log,
            inflight,
            connector: TransportConnector::new(None),
        }
    }

    /// Logs a connection that no route took (it is closed).
    pub fn no_route(&self, d: &Downstream<'_>) {
        self.log(d, None, "NR");
    }

    /// Serves one connection on `route` until it ends.
    pub async fn serve(&self, down: Stream, route: &L4Route, d: &Downstream<'_>) {
        let _inflight = InflightGuard::enter(&self.inflight);
        let Some(dest) = pick_destination(route) else {
            self.log(d, Some(route), "UH");
            return;
        };
        let labels = [
            route.gateway.as_str(),
            route.virtual_service.as_str(),
            route.id.as_str(),
            dest.host.as_str(),
        ];
        self.metrics
            .tcp_connections
            .with_label_values(&labels)
            .inc();
        let cluster = match &dest.target {
            Target::Cluster(c) => c.clone(),
            Target::NoCluster { reason } => {
                tracing::debug!(route = %route.id, reason, "no cluster");
                self.log(d, Some(route), "NC");
                return;
            }
        };
        let state = self.balancers.get(&cluster.name);
        let policy = &cluster.policy;
        // `maxConnections` bounds the connections open to the cluster.
        let Some(_admitted) = state.admit_connection(policy) else {
            self.log(d, Some(route), "UO");
            return;
        };
        let endpoints = self.upstreams.endpoints(&cluster, &state).await;
        let hash = match &policy.lb {
            LbPolicy::ConsistentHash(HashKey::SourceIp) => d
                .client
                .map(|c| crate::balancer::hash_key(c.ip().to_string().as_bytes())),
            _ => None,
        };
        let subset = dest.subset.as_deref().unwrap_or("");
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut flags = "UH";
        let mut connected = None;
        for _ in 0..CONNECT_ATTEMPTS.min(endpoints.len().max(1)) {
            let addr = match state.pick(policy, &endpoints, &tried, hash) {
                Pick::Endpoint(a) => a,
                Pick::AllEjected | Pick::Empty => break,
            };
            let tracked = state.track(addr);
            match self.connect(addr, &cluster).await {
                Ok(up) => {
                    connected = Some((addr, up, tracked));
                    break;
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, route = %route.id, "upstream connect failed");
                    self.metrics
                        .connect_failures
                        .with_label_values(&[dest.host.as_str(), subset])
                        .inc();
                    state.record(addr, None, policy.outlier.as_ref());
                    tried.push(addr);
                    flags = "UF";
                }
            }
        }
        let Some((addr, up, _tracked)) = connected else {
            self.log(d, Some(route), flags);
            return;
        };
        let received = self.metrics.tcp_received_bytes.with_label_values(&labels);
        let sent = self.metrics.tcp_sent_bytes.with_label_values(&labels);
        let idle = policy.tcp_idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
        let (moved, flags) = pump(down, up, idle, d.started, (&received, &sent)).await;
        self.log_to(d, Some(route), flags, Some(addr), moved);
    }

    /// A new upstream connection: plain TCP, or TLS when the DestinationRule originates it
    /// (`tls` `SIMPLE`/`MUTUAL`, verified as for HTTP; the SNI is the policy's, else the host).
    async fn connect(
        &self,
        addr: SocketAddr,
        cluster: &model::ir::Cluster,
    ) -> pingora::Result<Stream> {
        let peer = crate::peer::transport(cluster, addr, "")
            .map_err(|e| pingora::Error::explain(pingora::ErrorType::ConnectError, e))?;
        self.connector.new_stream(&peer).await
    }

    /// The access-log line of a connection that ended before any byte was proxied.
    fn log(&self, d: &Downstream<'_>, route: Option<&L4Route>, flags: &str) {
        self.log_to(d, route, flags, None, (0, 0));
    }

    /// One access-log line per connection, in the request format: HTTP fields are `-`.
    fn log_to(
        &self,
        d: &Downstream<'_>,
        route: Option<&L4Route>,
        flags: &str,
        upstream: Option<SocketAddr>,
        (received, sent): (u64, u64),
    ) {
        if !self.access_log.enabled() {
            return;
        }
        let client = d.client.map(|c| c.to_string());
        self.access_log.log(&Entry {
            start: d.start,
            method: "-",
            path: "-",
            protocol: "-",
            status: 0,
            flags,
            bytes_received: usize::try_from(received).unwrap_or(usize::MAX),
            bytes_sent: usize::try_from(sent).unwrap_or(usize::MAX),
            duration_ms: d.started.elapsed().as_millis(),
            upstream_service_time_ms: None,
            x_forwarded_for: None,
            user_agent: None,
            request_id: "",
            authority: "",
            upstream_host: upstream.map(|a| a.to_string()),
            route: route.map_or("-", |r| r.id.as_str()),
            sni: d.sni,
            peer_principal: None,
            request_principal: None,
            authz_policy: None,
            downstream_remote_address: client.as_deref(),
        });
    }
}

/// A destination by weight; `None` when the route has none.
fn pick_destination(route: &L4Route) -> Option<&L4Destination> {
    if route.destinations.len() <= 1 {
        return route.destinations.first();
    }
    let mut n = rand::thread_rng().gen_range(0..route.total_weight.max(1));
    route.destinations.iter().find(|d| {
        if n < d.weight {
            true
        } else {
            n -= d.weight;
            false
        }
    })
}

/// Copies bytes both ways until both directions have ended, either side fails, or nothing moved
/// for `idle`. Returns (bytes from the client, bytes to the client) and the response flags.
async fn pump(
    down: Stream,
    up: Stream,
    idle: Duration,
    started: Instant,
    (received_total, sent_total): (&IntCounter, &IntCounter),
) -> ((u64, u64), &'static str) {
    let moved = Moved {
        received: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        last: AtomicU64::new(0),
    };
    let (down_r, down_w) = tokio::io::split(down);
    let (up_r, up_w) = tokio::io::split(up);
    let to_up = copy(
        down_r,
        up_w,
        &moved.received,
        &moved.last,
        started,
        received_total,
    );
    let to_down = copy(up_r, down_w, &moved.sent, &moved.last, started, sent_total);
    let both = async { tokio::try_join!(to_up, to_down) };
    let watch = async {
        loop {
            let last = Duration::from_millis(moved.last.load(Ordering::Relaxed));
            let since = started.elapsed().saturating_sub(last);
            if since >= idle {
                return;
            }
            tokio::time::sleep(idle - since).await;
        }
    };
    let flags = tokio::select! {
        r = both => match r {
            Ok(_) => "-",
            // Envoy's flag for a connection reset by either side.
            Err(_) => "UC",
        },
        () = watch => "IT",
    };
    (
        (
            moved.received.load(Ordering::Relaxed),
            moved.sent.load(Ordering::Relaxed),
        ),
        flags,
    )
}

/// One direction: read until end of stream, then shut the writer down (passing the half-close on).
async fn copy<R, W>(
    mut r: R,
    mut w: W,
    count: &AtomicU64,
    last: &AtomicU64,
    started: Instant,
    total: &IntCounter,
) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            // The peer may still be reading: only the write side closes.
            let _ = w.shutdown().await;
            return Ok(());
        }
        let chunk = buf.get(..n).unwrap_or_default();
        w.write_all(chunk).await?;
        w.flush().await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        total.inc_by(n as u64);
        let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(now, Ordering::Relaxed);
    }
}
