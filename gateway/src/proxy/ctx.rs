//! Per-request state: what every stage of one request reads and writes (loaded once, so that a
//! reload mid-request changes nothing for it), and the in-flight count the drain waits on.

use super::downstream::ConnectionGuard;
use crate::balancer::{ClusterState, Slot};
use crate::mirror;
use crate::upstream::Resolved;
use model::ir::{self, Route, RouteAction, Snapshot, WeightedDestination};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Decrements the in-flight count when a request's context (or a proxied TCP connection) is
/// dropped, however it ends: the drain waits for the count to reach zero.
pub struct InflightGuard(Arc<AtomicUsize>);

impl InflightGuard {
    pub fn enter(count: &Arc<AtomicUsize>) -> InflightGuard {
        count.fetch_add(1, Ordering::AcqRel);
        InflightGuard(count.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A local answer decided in a phase that cannot write it (status, flag, body), written by
/// `fail_to_proxy`.
pub(super) type LocalError = (u16, &'static str, &'static str);

/// Per-request state. The snapshot is loaded once, so every phase of a request (and its retries)
/// sees one configuration even if a reload happens meanwhile.
pub struct Ctx {
    pub(super) _inflight: InflightGuard,
    pub(super) start: Instant,
    pub(super) snapshot: Option<Arc<Snapshot>>,
    pub(super) route: Option<Arc<Route>>,
    pub(super) dest: Option<usize>,
    pub(super) cluster: Option<Arc<ir::Cluster>>,
    pub(super) state: Option<Arc<ClusterState>>,
    pub(super) endpoints: Arc<Vec<Resolved>>,
    pub(super) tried: Vec<SocketAddr>,
    /// Counters held for the request's lifetime (circuit breaker, least request, retries).
    pub(super) slots: Vec<Slot>,
    pub(super) endpoint_slot: Option<Slot>,
    pub(super) retries_left: u32,
    pub(super) attempts: u32,
    pub(super) hash: Option<u64>,
    /// A consistent-hash cookie the gateway generated, to set on the response.
    pub(super) set_cookie: Option<String>,
    pub(super) deadline: Option<Instant>,
    /// The attempt failed on a retriable upstream status (the marker error of a status retry).
    pub(super) status_retry: bool,
    pub(super) local_error: Option<LocalError>,
    pub(super) flags: Vec<&'static str>,
    pub(super) tls: bool,
    /// The SNI of the TLS connection the request came on.
    pub(super) sni: Option<Arc<str>>,
    pub(super) upstream_start: Option<Instant>,
    /// The rewritten path (without query), computed at routing time where the match is known.
    pub(super) new_path: Option<String>,
    /// `x-request-id` generated for this request when the client sent none (the client's own is
    /// read from the request when needed, never copied).
    pub(super) request_id: Option<http::HeaderValue>,
    pub(super) upstream_service_time: Option<Duration>,
    /// Origin allowed by the route's CORS policy: the response gets CORS headers.
    pub(super) cors_origin: Option<String>,
    pub(super) mirror: Option<mirror::Pending>,
    /// The downstream connection's unit of `gateway_open_connections`.
    pub(super) connection: Option<ConnectionGuard>,
    /// A gRPC-Web text request on a GRPC-WEB server, bridged here (Pingora's bridge does binary).
    pub(super) web_text: Option<crate::grpc_web_text::Bridge>,
    /// What authentication and authorization decided (identity, deciding policy, header changes).
    pub(super) auth: crate::security::RequestAuth,
    /// The `grpc-status` of the answer's trailers, for `gateway_grpc_requests_total`.
    pub(super) grpc_status: Option<u32>,
    /// The body's size and pace so far.
    pub(super) body: crate::request_limits::BodyState,
    /// The client address (`crate::client_addr`), once the header is read.
    pub(super) client: Option<std::net::IpAddr>,
}

impl Ctx {
    pub(super) fn new(inflight: &Arc<AtomicUsize>) -> Ctx {
        Ctx {
            _inflight: InflightGuard::enter(inflight),
            start: Instant::now(),
            snapshot: None,
            route: None,
            dest: None,
            cluster: None,
            state: None,
            endpoints: Arc::default(),
            tried: Vec::new(),
            slots: Vec::new(),
            endpoint_slot: None,
            retries_left: 0,
            attempts: 0,
            hash: None,
            set_cookie: None,
            deadline: None,
            status_retry: false,
            local_error: None,
            flags: Vec::new(),
            tls: false,
            sni: None,
            upstream_start: None,
            new_path: None,
            request_id: None,
            upstream_service_time: None,
            cors_origin: None,
            mirror: None,
            connection: None,
            web_text: None,
            auth: crate::security::RequestAuth::default(),
            grpc_status: None,
            body: Default::default(),
            client: None,
        }
    }

    pub(super) fn destination(&self) -> Option<&WeightedDestination> {
        let route = self.route.as_deref()?;
        match &route.action {
            RouteAction::Forward(f) => f.destinations.get(self.dest?),
            _ => None,
        }
    }

    pub(super) fn flags_header(&self) -> String {
        self.flags.join(",")
    }

    pub(super) fn flag(&mut self, f: &'static str) {
        if !self.flags.contains(&f) {
            self.flags.push(f);
        }
    }

    /// The destination labels of the request's metrics: host and subset, empty before routing.
    pub(super) fn labels(&self) -> [&str; 2] {
        match self.destination() {
            Some(d) => [d.host.as_str(), d.subset.as_deref().unwrap_or("")],
            None => ["", ""],
        }
    }
}
