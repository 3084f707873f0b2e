//! Data-plane metrics on the gateway's one explicit registry: request counts and latencies with
//! bounded labels (route ids, never raw paths), TCP connections and bytes by L4 route, TLS
//! handshake failures by listener, and the
//! expiry of every TLS Secret's certificate (read from the served snapshot at scrape time).

use crate::fast_map::FastMap;
use model::ir::Route;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use std::cell::RefCell;
use std::sync::Arc;

/// Handles to every data-plane series.
#[derive(Clone)]
pub struct Metrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_retries: IntCounterVec,
    pub connect_failures: IntCounterVec,
    pub access_log_dropped: IntCounter,
    /// `gateway_tls_handshake_failures_total{listener}`.
    pub tls_handshake_failures: IntCounterVec,
    /// `gateway_open_connections{listener}`.
    pub open_connections: prometheus::IntGaugeVec,
    /// `gateway_tcp_connections_total`, by L4 route and destination ([`TCP_LABELS`]).
    pub tcp_connections: IntCounterVec,
    /// `gateway_tcp_sent_bytes_total`: bytes sent to the client.
    pub tcp_sent_bytes: IntCounterVec,
    /// `gateway_tcp_received_bytes_total`: bytes received from the client.
    pub tcp_received_bytes: IntCounterVec,
    /// `gateway_mirror_requests_total{destination_service,result}`.
    pub mirror_requests: IntCounterVec,
    /// JWT and AuthorizationPolicy series ([`Security`]).
    pub security: Security,
    /// `gateway_grpc_requests_total` ([`GRPC_LABELS`]): gRPC requests by their final status.
    pub grpc_requests: IntCounterVec,
}

/// The series of authentication and authorization. Labels are bounded: policy ids come from the
/// configuration, reasons and actions from fixed sets.
#[derive(Clone)]
pub struct Security {
    /// `gateway_authz_denied_total{policy,action}`: requests answered 403 (or the provider's
    /// denial); `action` is `DENY`, `ALLOW` (no ALLOW rule matched, `policy` empty) or `CUSTOM`.
    pub denied: IntCounterVec,
    /// `gateway_authz_audited_total{policy}`: requests an AUDIT policy matched.
    pub audited: IntCounterVec,
    /// `gateway_authz_dry_run_denied_total{policy}`: requests a dry-run policy would deny.
    pub dry_run_denied: IntCounterVec,
    /// `gateway_jwt_failures_total{reason}`: requests refused 401, by [`model::ir::jwt::JwtError::reason`].
    pub jwt_failures: IntCounterVec,
    /// `gateway_jwks_fetches_total{result}`: `ok`, `failed`.
    pub jwks_fetches: IntCounterVec,
    /// `gateway_ext_authz_duration_seconds{provider}`: time to the authorizer's answer.
    pub ext_authz_duration: HistogramVec,
    /// `gateway_ext_authz_errors_total{provider,reason}`: `timeout`, `connect`, `status`, `unknown_provider`.
    pub ext_authz_errors: IntCounterVec,
}

impl Security {
    fn register(registry: &Registry) -> Result<Security, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let ext_authz_duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_ext_authz_duration_seconds",
                "Time from sending a check to a CUSTOM authorizer to its answer, by provider.",
            )
            .buckets(BUCKETS.to_vec()),
            &["provider"],
        )?;
        registry.register(Box::new(ext_authz_duration.clone()))?;
        Ok(Security {
            denied: counter(
                "gateway_authz_denied_total",
                "Requests an AuthorizationPolicy denied, by policy and action (ALLOW with an empty policy: no ALLOW rule matched).",
                &["policy", "action"],
            )?,
            audited: counter(
                "gateway_authz_audited_total",
                "Requests an AUDIT AuthorizationPolicy matched, by policy.",
                &["policy"],
            )?,
            dry_run_denied: counter(
                "gateway_authz_dry_run_denied_total",
                "Requests a dry-run AuthorizationPolicy would have denied, by policy (empty: no dry-run ALLOW rule matched).",
                &["policy"],
            )?,
            jwt_failures: counter(
                "gateway_jwt_failures_total",
                "Requests refused because their JWT did not verify, by reason.",
                &["reason"],
            )?,
            jwks_fetches: counter(
                "gateway_jwks_fetches_total",
                "Fetches of remote JWT key sets (jwksUri, OpenID discovery), by result.",
                &["result"],
            )?,
            ext_authz_duration,
            ext_authz_errors: counter(
                "gateway_ext_authz_errors_total",
                "Checks a CUSTOM authorizer could not answer, by provider and reason (timeout, connect, status, unknown_provider).",
                &["provider", "reason"],
            )?,
        })
    }
}

/// Labels of `gateway_grpc_requests_total`: the route, and the gRPC status the client got
/// (`grpc_response_status`, as Istio's `istio_requests_total` names it; `-` when the stream ended
/// without one).
pub const GRPC_LABELS: [&str; 5] = [
    "gateway",
    "virtual_service",
    "route",
    "destination_service",
    "grpc_response_status",
];

/// Labels of the TCP series.
pub const TCP_LABELS: [&str; 4] = ["gateway", "virtual_service", "route", "destination_service"];

const REQUEST_LABELS: [&str; 8] = [
    "gateway",
    "virtual_service",
    "route",
    "destination_service",
    "destination_subset",
    "method",
    "response_code",
    "response_flags",
];
const DURATION_LABELS: [&str; 6] = [
    "gateway",
    "virtual_service",
    "route",
    "destination_service",
    "destination_subset",
    "method",
];

/// Latency buckets from 0.5 ms to 30 s: an edge proxy's requests span that range.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

impl Metrics {
    /// Registers every series on `registry`.
    pub fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_requests_total",
                "Requests served, by route and outcome.",
            ),
            &REQUEST_LABELS,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "Time from request start to the end of the response, by route.",
            )
            .buckets(BUCKETS.to_vec()),
            &DURATION_LABELS,
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_upstream_request_duration_seconds",
                "Time from sending the request upstream to the end of the upstream response header.",
            )
            .buckets(BUCKETS.to_vec()),
            &["destination_service", "destination_subset"],
        )?;
        let upstream_retries = IntCounterVec::new(
            Opts::new(
                "gateway_upstream_retries_total",
                "Retried upstream attempts.",
            ),
            &["destination_service", "destination_subset"],
        )?;
        let connect_failures = IntCounterVec::new(
            Opts::new(
                "gateway_upstream_connect_failures_total",
                "Failed connection attempts to upstream endpoints.",
            ),
            &["destination_service", "destination_subset"],
        )?;
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new(
                "gateway_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let access_log_dropped = IntCounter::new(
            "gateway_access_log_dropped_total",
            "Access log lines dropped because stdout could not keep up.",
        )?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(upstream_retries.clone()))?;
        registry.register(Box::new(connect_failures.clone()))?;
        registry.register(Box::new(build_info))?;
        let tls_handshake_failures = IntCounterVec::new(
            Opts::new(
                "gateway_tls_handshake_failures_total",
                "TLS handshakes that failed (no server for the SNI, no usable certificate, client certificate refused, protocol error, timeout), by listener.",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(tls_handshake_failures.clone()))?;
        let open_connections = prometheus::IntGaugeVec::new(
            Opts::new(
                "gateway_open_connections",
                "Downstream connections open, by listener (HTTP/2 counts streams).",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(open_connections.clone()))?;
        let tcp = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), &TCP_LABELS)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let tcp_connections = tcp(
            "gateway_tcp_connections_total",
            "TCP and TLS connections a tcp or tls route took, by route and destination.",
        )?;
        let tcp_sent_bytes = tcp(
            "gateway_tcp_sent_bytes_total",
            "Bytes sent to clients on TCP and TLS connections, by route and destination.",
        )?;
        let tcp_received_bytes = tcp(
            "gateway_tcp_received_bytes_total",
            "Bytes received from clients on TCP and TLS connections, by route and destination.",
        )?;
        let mirror_requests = IntCounterVec::new(
            Opts::new(
                "gateway_mirror_requests_total",
                "Mirrored copies of requests, by mirror host and result: sent (the mirror answered), failed, no_endpoint, body_too_large (a body over 1 MiB is not mirrored).",
            ),
            &["destination_service", "result"],
        )?;
        registry.register(Box::new(mirror_requests.clone()))?;
        let security = Security::register(registry)?;
        let grpc_requests = IntCounterVec::new(
            Opts::new(
                "gateway_grpc_requests_total",
                "gRPC requests (content-type application/grpc*, gRPC-Web included), by route and the grpc-status the client got.",
            ),
            &GRPC_LABELS,
        )?;
        registry.register(Box::new(grpc_requests.clone()))?;
        Ok(Metrics {
            security,
            mirror_requests,
            grpc_requests,
            open_connections,
            tcp_connections,
            tcp_sent_bytes,
            tcp_received_bytes,
            requests,
            duration,
            upstream_duration,
            upstream_retries,
            connect_failures,
            access_log_dropped,
            tls_handshake_failures,
        })
    }
}

/// Most series a worker thread keeps resolved before it starts over (bounds the routes of old
/// snapshots the cache keeps alive).
const RESOLVED_MAX: usize = 4096;

/// The series of one (route, destination, method), resolved on the first request so that later
/// requests skip the label hashing and the registry's lock.
struct Resolved {
    /// Keeps the route alive, so that its address (the key) is not reused while cached.
    _route: Arc<Route>,
    duration: Histogram,
    upstream_duration: Histogram,
    /// `gateway_requests_total` by response code and flags: a handful per route in practice.
    outcomes: Vec<(u16, Vec<&'static str>, IntCounter)>,
}

thread_local! {
    static RESOLVED: RefCell<FastMap<(usize, usize, &'static str), Resolved>> =
        RefCell::new(FastMap::default());
}

/// Labels of one request's series (`gateway_requests_total`, `gateway_request_duration_seconds`).
pub struct RequestLabels<'a> {
    pub gateway: &'a str,
    pub virtual_service: &'a str,
    pub route: &'a str,
    pub destination: &'a str,
    pub subset: &'a str,
    pub method: &'static str,
}

impl RequestLabels<'_> {
    /// The labels of `gateway_request_duration_seconds`, in `DURATION_LABELS` order.
    fn duration(&self) -> [&str; 6] {
        [
            self.gateway,
            self.virtual_service,
            self.route,
            self.destination,
            self.subset,
            self.method,
        ]
    }
}

/// The `response_flags` label and access-log field: `-` when there are none, as in Envoy.
pub fn flags_label(flags: &[&'static str]) -> String {
    if flags.is_empty() {
        "-".to_string()
    } else {
        flags.join(",")
    }
}

impl Metrics {
    /// Runs `f` on the resolved series of (route, destination, method), resolving them on this
    /// worker thread's first request for them; `None` when the cache is unavailable.
    fn with_resolved<R>(
        &self,
        route: &Arc<Route>,
        dest: usize,
        labels: &RequestLabels<'_>,
        f: impl FnOnce(&mut Resolved) -> R,
    ) -> Option<R> {
        let key = (Arc::as_ptr(route) as usize, dest, labels.method);
        RESOLVED.with(|cell| {
            let mut map = cell.try_borrow_mut().ok()?;
            if map.len() >= RESOLVED_MAX && !map.contains_key(&key) {
                map.clear();
            }
            let entry = map.entry(key).or_insert_with(|| Resolved {
                _route: route.clone(),
                duration: self.duration.with_label_values(&labels.duration()),
                upstream_duration: self
                    .upstream_duration
                    .with_label_values(&[labels.destination, labels.subset]),
                outcomes: Vec::new(),
            });
            Some(f(entry))
        })
    }

    /// Observes the time to the upstream's response header (`gateway_upstream_request_duration_seconds`).
    pub fn observe_upstream(
        &self,
        route: &Arc<Route>,
        dest: usize,
        labels: &RequestLabels<'_>,
        seconds: f64,
    ) {
        let done = self.with_resolved(route, dest, labels, |r| {
            r.upstream_duration.observe(seconds)
        });
        if done.is_none() {
            self.upstream_duration
                .with_label_values(&[labels.destination, labels.subset])
                .observe(seconds);
        }
    }

    /// Counts a finished request and observes its duration. Routed requests use series resolved
    /// once per worker thread (keyed by the route object, its destination and the method);
    /// requests without a route (404 NR) resolve their labels each time.
    pub fn observe_request(
        &self,
        route: Option<(&Arc<Route>, usize)>,
        labels: &RequestLabels<'_>,
        code: u16,
        flags: &[&'static str],
        seconds: f64,
    ) {
        let done = route.and_then(|(route, dest)| {
            self.with_resolved(route, dest, labels, |r| {
                r.duration.observe(seconds);
                let known = r
                    .outcomes
                    .iter()
                    .find(|(c, f, _)| *c == code && f.as_slice() == flags);
                match known {
                    Some((_, _, counter)) => counter.inc(),
                    None => {
                        let counter = self.requests_counter(labels, code, flags);
                        counter.inc();
                        r.outcomes.push((code, flags.to_vec(), counter));
                    }
                }
            })
        });
        if done.is_none() {
            self.observe_unresolved(labels, code, flags, seconds);
        }
    }

    fn requests_counter(
        &self,
        l: &RequestLabels<'_>,
        code: u16,
        flags: &[&'static str],
    ) -> IntCounter {
        let [g, vs, route, dest, subset, method] = l.duration();
        self.requests.with_label_values(&[
            g,
            vs,
            route,
            dest,
            subset,
            method,
            &code.to_string(),
            &flags_label(flags),
        ])
    }

    fn observe_unresolved(
        &self,
        l: &RequestLabels<'_>,
        code: u16,
        flags: &[&'static str],
        seconds: f64,
    ) {
        self.requests_counter(l, code, flags).inc();
        self.duration
            .with_label_values(&l.duration())
            .observe(seconds);
    }
}

/// Bounds the `method` label: unknown methods are folded into `OTHER`.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// `gateway_outlier_ejections_active{cluster}`, computed from the balancers at scrape time.
pub struct EjectionCollector {
    balancers: std::sync::Arc<crate::balancer::Balancers>,
    desc: prometheus::core::Desc,
}

impl EjectionCollector {
    pub fn new(
        balancers: std::sync::Arc<crate::balancer::Balancers>,
    ) -> Result<Self, prometheus::Error> {
        let desc = prometheus::core::Desc::new(
            "gateway_outlier_ejections_active".into(),
            "Endpoints currently ejected by outlier detection, by cluster.".into(),
            vec!["cluster".into()],
            Default::default(),
        )?;
        Ok(EjectionCollector { balancers, desc })
    }
}

impl prometheus::core::Collector for EjectionCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let gauge = prometheus::IntGaugeVec::new(
            Opts::new(
                "gateway_outlier_ejections_active",
                "Endpoints currently ejected by outlier detection, by cluster.",
            ),
            &["cluster"],
        );
        let Ok(gauge) = gauge else {
            return Vec::new();
        };
        for (cluster, n) in self.balancers.ejections() {
            gauge.with_label_values(&[&cluster]).set(n as i64);
        }
        prometheus::core::Collector::collect(&gauge)
    }
}

/// `gateway_tls_certificate_expiry_timestamp_seconds{namespace, secret}`: the `notAfter` of each
/// TLS Secret's leaf certificate, from the snapshot being served (so it follows every apply).
pub struct CertExpiryCollector {
    snapshot: std::sync::Arc<arc_swap::ArcSwap<model::ir::Snapshot>>,
    desc: prometheus::core::Desc,
}

const CERT_EXPIRY: &str = "gateway_tls_certificate_expiry_timestamp_seconds";
const CERT_EXPIRY_HELP: &str = "Unix time at which the certificate of a TLS Secret expires.";

impl CertExpiryCollector {
    pub fn new(
        snapshot: std::sync::Arc<arc_swap::ArcSwap<model::ir::Snapshot>>,
    ) -> Result<Self, prometheus::Error> {
        let desc = prometheus::core::Desc::new(
            CERT_EXPIRY.into(),
            CERT_EXPIRY_HELP.into(),
            vec!["namespace".into(), "secret".into()],
            Default::default(),
        )?;
        Ok(CertExpiryCollector { snapshot, desc })
    }
}

impl prometheus::core::Collector for CertExpiryCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let Ok(gauge) = prometheus::GaugeVec::new(
            Opts::new(CERT_EXPIRY, CERT_EXPIRY_HELP),
            &["namespace", "secret"],
        ) else {
            return Vec::new();
        };
        let snapshot = self.snapshot.load();
        for c in &snapshot.secret_certificates {
            gauge
                .with_label_values(&[&c.namespace, &c.name])
                .set(c.not_after as f64);
        }
        prometheus::core::Collector::collect(&gauge)
    }
}
