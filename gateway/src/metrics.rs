//! Data-plane metrics on the gateway's one explicit registry: request counts and latencies with
//! bounded labels (route ids, never raw paths), TLS handshake failures by listener, and the
//! expiry of every TLS Secret's certificate (read from the served snapshot at scrape time).

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

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
}

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
        Ok(Metrics {
            open_connections,
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
