//! DestinationRule, as Istio's webhook and CRD schema validate it: host, subsets, `exportTo`,
//! `workloadSelector`, and the traffic policy (load balancer, connection pool, outlier detection,
//! upstream TLS, port-level settings, tunnel, proxy protocol, retry budget) at host, port and
//! subset level. Locality settings are in `locality.rs`.

use super::common::{
    check_duration, check_export_to, check_fqdn, check_i32_count, check_int_percent, check_labels,
    check_metadata, check_port, check_u32_count, check_wildcard_domain, is_ip, is_token, join_and,
    NameRule,
};
use super::findings::Findings;
use super::istio::is_label;
use super::locality::{check_locality, check_zone_aware};
use super::path::FieldPath;
use crate::resource::{
    BackendUtilization, ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb,
    DestinationRule, Duration, H2UpgradePolicy, LoadBalancerSettings, OutlierDetection,
    TrafficPolicy,
};
use std::collections::{HashMap, HashSet};

/// Maglev table sizes must be below this.
const MAGLEV_TABLE_MAX: i64 = 5_000_011;

/// The prefix of a `credentialName` that names a ConfigMap (`configmap://namespace/name`).
const CONFIGMAP_PREFIX: &str = "configmap://";

fn non_empty(o: &Option<String>) -> bool {
    o.as_deref().is_some_and(|s| !s.is_empty())
}

pub(crate) fn validate_destination_rule(dr: &DestinationRule, f: &mut Findings) {
    check_metadata(f, &dr.metadata, NameRule::Subdomain);
    let spec = &dr.spec;
    let own_ns = dr.metadata.namespace();
    let p = FieldPath::root("spec");
    let hp = p.field("host");
    if spec.host.is_empty() {
        f.required(
            &hp,
            "the host this rule applies to (a ServiceEntry host or a DNS name)",
        );
    } else if let Err(e) = check_wildcard_domain(&spec.host) {
        let e = if is_ip(&spec.host) {
            "must be a host name, not an IP address".to_string()
        } else {
            e
        };
        f.invalid(&hp, spec.host.as_str(), e);
    }
    if let Some(tp) = &spec.traffic_policy {
        check_traffic_policy(f, &p.field("trafficPolicy"), tp, own_ns);
    }
    let sp = p.field("subsets");
    // Subset names compare case-sensitively, as Istio's do.
    let mut names: HashMap<&str, FieldPath> = HashMap::new();
    for (i, s) in spec.subsets.iter().enumerate() {
        let ip = sp.index(i);
        let np = ip.field("name");
        if s.name.is_empty() {
            f.required(&np, "a subset name (a DNS label, e.g. \"v1\")");
        } else if !is_label(&s.name) {
            f.invalid(
                &np,
                s.name.as_str(),
                "a subset name must be a DNS label: letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
            );
        } else if let Some(first) = names.get(s.name.as_str()) {
            f.duplicate(
                &np,
                s.name.as_str(),
                format!("subset names must be unique; already used by {first}"),
            );
        } else {
            names.insert(&s.name, np);
        }
        check_labels(f, &ip.field("labels"), &s.labels);
        if let Some(tp) = &s.traffic_policy {
            check_traffic_policy(f, &ip.field("trafficPolicy"), tp, own_ns);
        }
    }
    let ep = p.field("exportTo");
    check_export_to(f, &ep, &spec.export_to, own_ns, false);
    if let Some(ws) = &spec.workload_selector {
        let wp = p.field("workloadSelector");
        check_labels(f, &wp.field("matchLabels"), &ws.match_labels);
        f.warn(&wp, "ignored at a gateway (sidecar-only)");
        for (i, e) in spec.export_to.iter().enumerate() {
            if e != "." && e != own_ns {
                f.forbidden(
                    &ep.index(i),
                    "with workloadSelector, exportTo may only name this namespace (\".\")",
                );
            }
        }
    }
}

fn check_traffic_policy(f: &mut Findings, p: &FieldPath, tp: &TrafficPolicy, ns: &str) {
    let TrafficPolicy {
        load_balancer,
        connection_pool,
        outlier_detection,
        tls,
        port_level_settings,
        tunnel,
        proxy_protocol,
        retry_budget,
    } = tp;
    if load_balancer.is_none()
        && connection_pool.is_none()
        && outlier_detection.is_none()
        && tls.is_none()
        && port_level_settings.is_empty()
        && tunnel.is_none()
        && proxy_protocol.is_none()
        && retry_budget.is_none()
    {
        f.required(
            p,
            "at least one of loadBalancer, connectionPool, outlierDetection, tls, portLevelSettings, tunnel, proxyProtocol or retryBudget",
        );
    }
    check_policy_parts(
        f,
        p,
        load_balancer.as_ref(),
        connection_pool.as_ref(),
        outlier_detection.as_ref(),
        tls.as_ref(),
        ns,
    );

    let pp = p.field("portLevelSettings");
    let mut ports: HashMap<i64, FieldPath> = HashMap::new();
    for (i, pl) in port_level_settings.iter().enumerate() {
        let ip = pp.index(i);
        match &pl.port {
            None => f.required(&ip.field("port"), "the port number these settings apply to"),
            Some(port) => {
                let np = ip.field("port").field("number");
                check_port(f, &np, port.number);
                match ports.get(&port.number) {
                    Some(first) => f.duplicate(
                        &np,
                        &port.number,
                        format!("settings for this port are already at {first}"),
                    ),
                    None => {
                        ports.insert(port.number, np);
                    }
                }
            }
        }
        if pl.load_balancer.is_none()
            && pl.connection_pool.is_none()
            && pl.outlier_detection.is_none()
            && pl.tls.is_none()
        {
            f.required(
                &ip,
                "at least one of loadBalancer, connectionPool, outlierDetection or tls",
            );
        }
        check_policy_parts(
            f,
            &ip,
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            pl.tls.as_ref(),
            ns,
        );
    }

    if tunnel.is_some() && proxy_protocol.is_some() {
        f.forbidden(
            &p.field("proxyProtocol"),
            "proxyProtocol may not be combined with tunnel",
        );
    }
    if let Some(t) = tunnel {
        let tp = p.field("tunnel");
        if let Some(proto) = &t.protocol {
            if !proto.is_empty() && proto != "CONNECT" && proto != "POST" {
                f.not_supported(&tp.field("protocol"), proto.as_str(), &["CONNECT", "POST"]);
            }
        }
        if t.target_host.is_empty() {
            f.required(&tp.field("targetHost"), "the host to tunnel to");
        } else if !is_ip(&t.target_host) {
            if let Err(e) = check_fqdn(&t.target_host) {
                f.invalid(&tp.field("targetHost"), t.target_host.as_str(), e);
            }
        }
        check_port(f, &tp.field("targetPort"), t.target_port);
    }
    if let Some(rb) = retry_budget {
        let rp = p.field("retryBudget");
        if let Some(pc) = rb.percent {
            if !(0.0..=100.0).contains(&pc) {
                f.invalid(
                    &rp.field("percent"),
                    &pc,
                    "must be between 0 and 100, inclusive",
                );
            }
        }
        if let Some(n) = rb.min_retry_concurrency {
            check_u32_count(f, &rp.field("minRetryConcurrency"), n);
        }
        if let Some(d) = &rb.budget_interval {
            check_parses(f, &rp.field("budgetInterval"), d);
        }
    }
}

/// The four parts host-level and port-level policies share.
fn check_policy_parts(
    f: &mut Findings,
    p: &FieldPath,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
    ns: &str,
) {
    if let Some(lb) = lb {
        check_load_balancer(f, &p.field("loadBalancer"), lb, outlier.is_some());
    }
    if let Some(pool) = pool {
        check_connection_pool(f, &p.field("connectionPool"), pool);
    }
    if let Some(o) = outlier {
        check_outlier(f, &p.field("outlierDetection"), o);
    }
    if let Some(t) = tls {
        check_client_tls(f, &p.field("tls"), t, ns);
    }
}

fn check_load_balancer(f: &mut Findings, p: &FieldPath, lb: &LoadBalancerSettings, outlier: bool) {
    let policies: Vec<&str> = [
        ("simple", lb.simple.is_some()),
        ("consistentHash", lb.consistent_hash.is_some()),
        ("backendUtilization", lb.backend_utilization.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();
    if policies.len() > 1 {
        f.forbidden(
            p,
            format!(
                "{} are mutually exclusive: set only one balancing policy",
                join_and(&policies)
            ),
        );
    }
    if let Some(ch) = &lb.consistent_hash {
        check_consistent_hash(f, &p.field("consistentHash"), ch);
    }
    if let Some(bu) = &lb.backend_utilization {
        check_backend_utilization(f, &p.field("backendUtilization"), bu);
    }
    if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
        f.forbidden(
            &p.field("zoneAwareLbSetting"),
            "zoneAwareLbSetting may not be combined with localityLbSetting",
        );
    }
    if let Some(l) = &lb.locality_lb_setting {
        check_locality(f, &p.field("localityLbSetting"), l, outlier);
    }
    if let Some(z) = &lb.zone_aware_lb_setting {
        check_zone_aware(f, &p.field("zoneAwareLbSetting"), z, outlier);
    }
    if let Some(d) = &lb.warmup_duration_secs {
        check_at_least_1ms(f, &p.field("warmupDurationSecs"), d);
    }
    if let Some(w) = &lb.warmup {
        let wp = p.field("warmup");
        match &w.duration {
            Some(d) => {
                check_duration(f, &wp.field("duration"), d, false);
            }
            None => f.required(
                &wp.field("duration"),
                "how long new endpoints warm up (e.g. \"60s\")",
            ),
        }
        if let Some(m) = w.minimum_percent {
            if !(0.0..=100.0).contains(&m) {
                f.invalid(
                    &wp.field("minimumPercent"),
                    &m,
                    "must be between 0 and 100, inclusive",
                );
            }
        }
        if let Some(a) = w.aggression {
            if !(a > 0.0 && a.is_finite()) {
                f.invalid(&wp.field("aggression"), &a, "must be > 0");
            }
        }
    }
}

fn check_backend_utilization(f: &mut Findings, p: &FieldPath, bu: &BackendUtilization) {
    for (name, d) in [
        ("weightUpdatePeriod", &bu.weight_update_period),
        ("weightExpirationPeriod", &bu.weight_expiration_period),
        ("weightStabilizationPeriod", &bu.weight_stabilization_period),
    ] {
        if let Some(d) = d {
            check_parses(f, &p.field(name), d);
        }
    }
    if let Some(n) = bu.error_utilization_penalty_percent {
        check_u32_count(f, &p.field("errorUtilizationPenaltyPercent"), n);
    }
}

fn check_consistent_hash(f: &mut Findings, p: &FieldPath, ch: &ConsistentHashLb) {
    // No hash key is allowed, as in Istio: nothing is hashed, so requests are not pinned to a host.
    let keys: Vec<&str> = [
        ("httpHeaderName", ch.http_header_name.is_some()),
        ("httpCookie", ch.http_cookie.is_some()),
        ("useSourceIp", ch.use_source_ip.is_some()),
        (
            "httpQueryParameterName",
            ch.http_query_parameter_name.is_some(),
        ),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();
    if keys.len() > 1 {
        f.forbidden(
            p,
            format!(
                "{} are mutually exclusive: set only one hash key",
                join_and(&keys)
            ),
        );
    }
    if let Some(h) = &ch.http_header_name {
        if !is_token(h) {
            f.invalid(
                &p.field("httpHeaderName"),
                h.as_str(),
                "must be a valid HTTP header name",
            );
        }
    }
    if let Some(q) = &ch.http_query_parameter_name {
        if q.is_empty() {
            f.invalid(
                &p.field("httpQueryParameterName"),
                q.as_str(),
                "must not be empty",
            );
        }
    }
    if let Some(c) = &ch.http_cookie {
        let cp = p.field("httpCookie");
        if c.name.is_empty() {
            f.required(&cp.field("name"), "the cookie name");
        } else if !is_token(&c.name) {
            f.invalid(
                &cp.field("name"),
                c.name.as_str(),
                "must be a valid cookie name (an HTTP token)",
            );
        }
        if let Some(ttl) = &c.ttl {
            check_duration(f, &cp.field("ttl"), ttl, true);
        }
        let ap = cp.field("attributes");
        let mut seen: HashSet<&str> = HashSet::new();
        for (i, a) in c.attributes.iter().enumerate() {
            let np = ap.index(i).field("name");
            if a.name.is_empty() {
                f.required(&np, "the attribute name (e.g. \"SameSite\")");
            } else if !seen.insert(&a.name) {
                f.duplicate(
                    &np,
                    a.name.as_str(),
                    "cookie attribute names must be unique",
                );
            }
        }
    }
    if ch.ring_hash.is_some() && ch.maglev.is_some() {
        f.forbidden(
            &p.field("maglev"),
            "maglev may not be combined with ringHash",
        );
    }
    if let Some(rh) = &ch.ring_hash {
        if let Some(n) = rh.minimum_ring_size {
            if n < 0 {
                f.invalid(
                    &p.field("ringHash").field("minimumRingSize"),
                    &n,
                    "must be >= 0",
                );
            }
        }
    }
    if let Some(m) = &ch.maglev {
        let tp = p.field("maglev").field("tableSize");
        match m.table_size.unwrap_or(0) {
            0 => f.required(&tp, "the Maglev table size, a prime number (e.g. 65537)"),
            t if t < 0 => f.invalid(&tp, &t, "must be >= 0"),
            t if t >= MAGLEV_TABLE_MAX => {
                f.invalid(&tp, &t, format!("must be less than {MAGLEV_TABLE_MAX}"))
            }
            t if !is_prime(t) => f.invalid(&tp, &t, "must be a prime number (e.g. 65537)"),
            _ => {}
        }
    }
    if let Some(n) = ch.minimum_ring_size.filter(|n| *n != 0) {
        let mp = p.field("minimumRingSize");
        f.warn(&mp, "deprecated: use ringHash.minimumRingSize");
        if n < 0 {
            f.invalid(&mp, &n, "must be >= 0");
        }
        if ch.ring_hash.is_some() || ch.maglev.is_some() {
            f.forbidden(
                &mp,
                "minimumRingSize may not be combined with ringHash or maglev",
            );
        }
    }
}

/// Envoy's primality test, which Istio copies: 1, 2 and 3 count as prime.
fn is_prime(n: i64) -> bool {
    if n > 0 && n < 4 {
        return true;
    }
    if n % 2 == 0 {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

fn check_connection_pool(f: &mut Findings, p: &FieldPath, pool: &ConnectionPoolSettings) {
    if pool.tcp.is_none() && pool.http.is_none() {
        f.required(p, "at least one of tcp or http");
    }
    if let Some(t) = &pool.tcp {
        let tp = p.field("tcp");
        if let Some(n) = t.max_connections {
            check_i32_count(f, &tp.field("maxConnections"), n);
        }
        if let Some(d) = &t.connect_timeout {
            check_duration(f, &tp.field("connectTimeout"), d, false);
        }
        if let Some(d) = &t.max_connection_duration {
            check_duration(f, &tp.field("maxConnectionDuration"), d, false);
        }
        if let Some(d) = &t.idle_timeout {
            // Under a millisecond means "disabled", as Istio reads it.
            let below_1ms = d
                .parse()
                .is_ok_and(|v| v < std::time::Duration::from_millis(1));
            if !below_1ms {
                check_duration(f, &tp.field("idleTimeout"), d, true);
            }
        }
        if let Some(k) = &t.tcp_keepalive {
            let kp = tp.field("tcpKeepalive");
            if let Some(n) = k.probes {
                check_u32_count(f, &kp.field("probes"), n);
            }
            if let Some(d) = &k.time {
                check_duration(f, &kp.field("time"), d, false);
            }
            if let Some(d) = &k.interval {
                check_duration(f, &kp.field("interval"), d, false);
            }
        }
    }
    if let Some(h) = &pool.http {
        let hp = p.field("http");
        for (name, v) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests),
            ("http2MaxRequests", h.http2_max_requests),
            ("maxRequestsPerConnection", h.max_requests_per_connection),
            ("maxRetries", h.max_retries),
            ("maxConcurrentStreams", h.max_concurrent_streams),
        ] {
            if let Some(n) = v {
                check_i32_count(f, &hp.field(name), n);
            }
        }
        if let Some(d) = &h.idle_timeout {
            check_duration(f, &hp.field("idleTimeout"), d, false);
        }
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
            && h.use_client_protocol == Some(true)
        {
            f.forbidden(
                &hp.field("useClientProtocol"),
                "useClientProtocol may not be combined with h2UpgradePolicy UPGRADE",
            );
        }
        if let Some(k) = &h.http2_keep_alive {
            let kp = hp.field("http2KeepAlive");
            for (name, d) in [("interval", &k.interval), ("timeout", &k.timeout)] {
                match d {
                    Some(d) => {
                        check_duration(f, &kp.field(name), d, false);
                    }
                    None => f.required(
                        &kp.field(name),
                        "http2KeepAlive needs both interval and timeout",
                    ),
                }
            }
        }
    }
}

fn check_outlier(f: &mut Findings, p: &FieldPath, o: &OutlierDetection) {
    if let Some(n) = o.consecutive_errors {
        let cp = p.field("consecutiveErrors");
        if n != 0 {
            f.warn(
                &cp,
                "deprecated: use consecutiveGatewayErrors or consecutive5xxErrors",
            );
        }
        if i32::try_from(n).is_err() {
            f.invalid(&cp, &n, "must be a 32-bit integer");
        }
    }
    for (name, v) in [
        ("consecutive5xxErrors", o.consecutive_5xx_errors),
        ("consecutiveGatewayErrors", o.consecutive_gateway_errors),
        (
            "consecutiveLocalOriginFailures",
            o.consecutive_local_origin_failures,
        ),
    ] {
        if let Some(n) = v {
            check_u32_count(f, &p.field(name), n);
        }
    }
    if o.consecutive_local_origin_failures.is_some_and(|n| n > 0)
        && o.split_external_local_origin_errors != Some(true)
    {
        f.forbidden(
            &p.field("consecutiveLocalOriginFailures"),
            "needs splitExternalLocalOriginErrors: true",
        );
    }
    if let Some(d) = &o.interval {
        check_duration(f, &p.field("interval"), d, false);
    }
    if let Some(d) = &o.base_ejection_time {
        check_duration(f, &p.field("baseEjectionTime"), d, false);
    }
    if let Some(n) = o.max_ejection_percent {
        check_int_percent(f, &p.field("maxEjectionPercent"), n);
    }
    if let Some(n) = o.min_health_percent {
        check_int_percent(f, &p.field("minHealthPercent"), n);
    }
    for (i, c) in o.outlier_detection_http_error_codes.iter().enumerate() {
        if !(100..=599).contains(c) {
            f.invalid(
                &p.field("outlierDetectionHttpErrorCodes").index(i),
                c,
                "must be an HTTP status code between 100 and 599",
            );
        }
    }
}

/// Istio's `ValidateTLS` for upstream TLS.
fn check_client_tls(f: &mut Findings, p: &FieldPath, t: &ClientTlsSettings, ns: &str) {
    let mode = t.mode.unwrap_or(ClientTlsMode::Disable);
    let credential = non_empty(&t.credential_name);
    if let Some(rest) = t
        .credential_name
        .as_deref()
        .and_then(|c| c.strip_prefix(CONFIGMAP_PREFIX))
    {
        let cp = p.field("credentialName");
        let shown = t.credential_name.as_deref().unwrap_or_default();
        match rest.split_once('/') {
            Some((cns, name)) if !cns.is_empty() && !name.is_empty() => {
                if cns != ns {
                    f.invalid(
                        &cp,
                        shown,
                        format!(
                            "a configmap:// credential must be in this rule's namespace {ns:?}"
                        ),
                    );
                }
            }
            _ => f.invalid(
                &cp,
                shown,
                "a configmap:// credential must be configmap://<namespace>/<name>",
            ),
        }
    }
    if t.insecure_skip_verify == Some(true) {
        let verifying: &[(&str, bool)] = match mode {
            ClientTlsMode::Simple => &[
                ("caCertificates", non_empty(&t.ca_certificates)),
                ("credentialName", credential),
                ("subjectAltNames", !t.subject_alt_names.is_empty()),
            ],
            // With MUTUAL a credential may carry the client certificate only.
            ClientTlsMode::Mutual => &[
                ("caCertificates", non_empty(&t.ca_certificates)),
                ("subjectAltNames", !t.subject_alt_names.is_empty()),
            ],
            _ => &[],
        };
        for (name, set) in verifying {
            if *set {
                f.forbidden(
                    &p.field(name),
                    format!("{name} may not be combined with insecureSkipVerify"),
                );
            }
        }
    }
    let checked = matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual);
    if checked && credential {
        for (name, v) in [
            ("clientCertificate", &t.client_certificate),
            ("privateKey", &t.private_key),
            ("caCertificates", &t.ca_certificates),
            ("caCrl", &t.ca_crl),
        ] {
            if non_empty(v) {
                f.forbidden(
                    &p.field(name),
                    format!("{name} may not be combined with credentialName"),
                );
            }
        }
        return;
    }
    if mode == ClientTlsMode::Mutual {
        for (name, v) in [
            ("clientCertificate", &t.client_certificate),
            ("privateKey", &t.private_key),
        ] {
            if !non_empty(v) {
                f.required(
                    &p.field(name),
                    "mode MUTUAL needs clientCertificate and privateKey (or credentialName)",
                );
            }
        }
    }
}

/// A duration field with no bound: it must only parse.
fn check_parses(f: &mut Findings, p: &FieldPath, d: &Duration) {
    if d.parse().is_err() {
        f.invalid(
            p,
            d.0.as_str(),
            "not a duration: use a number with a unit among h, m, s, ms, us, ns (e.g. \"1.5s\", \"100ms\")",
        );
    }
}

/// A duration the CRD schema bounds to at least 1ms (any precision).
fn check_at_least_1ms(f: &mut Findings, p: &FieldPath, d: &Duration) {
    match d.parse() {
        Err(_) => check_parses(f, p, d),
        Ok(v) if v < std::time::Duration::from_millis(1) => {
            f.invalid(p, d.0.as_str(), "must be at least 1ms")
        }
        Ok(_) => {}
    }
}
