//! DestinationRule: host, subsets, `exportTo`, `workloadSelector`, and the traffic policy (load
//! balancer, connection pool, outlier detection, upstream TLS, port-level settings, tunnel, proxy
//! protocol, retry budget) at host, port and subset level.

use super::common::{
    check_duration, check_export_to, check_fqdn, check_i32_count, check_int_percent, check_labels,
    check_metadata, check_percent, check_port, check_u32_count, check_unique,
    check_wildcard_domain, dns1123_label, is_ip, is_token, join_and, NameRule,
};
use super::findings::Findings;
use super::path::FieldPath;
use crate::resource::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb, DestinationRule,
    H2UpgradePolicy, LoadBalancerSettings, LocalityLbSetting, OutlierDetection, SimpleLb,
    TrafficPolicy,
};
use std::collections::HashMap;

/// Maglev table sizes must be below this.
const MAGLEV_TABLE_MAX: i64 = 5_000_011;

fn non_empty(o: &Option<String>) -> bool {
    o.as_deref().is_some_and(|s| !s.is_empty())
}

pub(crate) fn validate_destination_rule(dr: &DestinationRule, f: &mut Findings) {
    check_metadata(f, &dr.metadata, NameRule::Subdomain);
    let spec = &dr.spec;
    let p = FieldPath::root("spec");
    let hp = p.field("host");
    if spec.host.is_empty() {
        f.required(
            &hp,
            "the host this rule applies to (a ServiceEntry host or a DNS name)",
        );
    } else if !is_ip(&spec.host) {
        if let Err(e) = check_wildcard_domain(&spec.host) {
            f.invalid(&hp, spec.host.as_str(), e);
        }
    }
    if let Some(tp) = &spec.traffic_policy {
        check_traffic_policy(f, &p.field("trafficPolicy"), tp);
    }
    let sp = p.field("subsets");
    for (i, s) in spec.subsets.iter().enumerate() {
        let ip = sp.index(i);
        if s.name.is_empty() {
            f.required(
                &ip.field("name"),
                "a subset name (an RFC 1123 label, e.g. \"v1\")",
            );
        } else if let Err(e) = dns1123_label(&s.name) {
            f.invalid(&ip.field("name"), s.name.as_str(), e);
        }
        check_labels(f, &ip.field("labels"), &s.labels);
        if let Some(tp) = &s.traffic_policy {
            check_traffic_policy(f, &ip.field("trafficPolicy"), tp);
        }
    }
    check_unique(
        f,
        spec.subsets
            .iter()
            .enumerate()
            .map(|(i, s)| (sp.index(i).field("name"), s.name.as_str())),
        "subset names",
    );
    let own_ns = dr.metadata.namespace();
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

fn check_traffic_policy(f: &mut Findings, p: &FieldPath, tp: &TrafficPolicy) {
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
        if let Some(pc) = &rb.percent {
            check_percent(f, &rp.field("percent"), pc);
        }
        if let Some(n) = rb.min_retry_concurrency {
            check_u32_count(f, &rp.field("minRetryConcurrency"), n);
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
) {
    if let Some(lb) = lb {
        check_load_balancer(f, &p.field("loadBalancer"), lb);
        let failover = lb
            .locality_lb_setting
            .as_ref()
            .is_some_and(|l| !l.failover.is_empty() || !l.failover_priority.is_empty());
        if failover && outlier.is_none() {
            f.warn(
                &p.field("loadBalancer")
                    .field("localityLbSetting")
                    .field("failover"),
                "locality failover takes effect only with outlierDetection; add outlierDetection",
            );
        }
    }
    if let Some(pool) = pool {
        check_connection_pool(f, &p.field("connectionPool"), pool);
    }
    if let Some(o) = outlier {
        check_outlier(f, &p.field("outlierDetection"), o);
    }
    if let Some(t) = tls {
        check_client_tls(f, &p.field("tls"), t);
    }
}

fn check_load_balancer(f: &mut Findings, p: &FieldPath, lb: &LoadBalancerSettings) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        f.forbidden(
            &p.field("consistentHash"),
            "consistentHash may not be combined with simple",
        );
    }
    if lb.simple == Some(SimpleLb::LeastConn) {
        f.warn(
            &p.field("simple"),
            "LEAST_CONN is deprecated: use LEAST_REQUEST",
        );
    }
    if let Some(ch) = &lb.consistent_hash {
        check_consistent_hash(f, &p.field("consistentHash"), ch);
    }
    if let Some(l) = &lb.locality_lb_setting {
        check_locality(f, &p.field("localityLbSetting"), l);
    }
    if let Some(d) = &lb.warmup_duration_secs {
        let wp = p.field("warmupDurationSecs");
        f.warn(&wp, "deprecated: use warmup.duration");
        check_duration(f, &wp, d, false);
        if lb.warmup.is_some() {
            f.forbidden(&wp, "warmupDurationSecs may not be combined with warmup");
        }
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
    let warms = lb.warmup.is_some() || lb.warmup_duration_secs.is_some();
    let warmable = lb.consistent_hash.is_none()
        && matches!(
            lb.simple,
            None | Some(
                SimpleLb::Unspecified
                    | SimpleLb::RoundRobin
                    | SimpleLb::LeastRequest
                    | SimpleLb::LeastConn
            )
        );
    if warms && !warmable {
        let field = if lb.warmup.is_some() {
            "warmup"
        } else {
            "warmupDurationSecs"
        };
        f.warn(
            &p.field(field),
            "ignored: warmup applies only to ROUND_ROBIN and LEAST_REQUEST",
        );
    }
}

fn check_consistent_hash(f: &mut Findings, p: &FieldPath, ch: &ConsistentHashLb) {
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
    if keys.is_empty() {
        f.required(
            p,
            "one hash key: httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
        );
    } else if keys.len() > 1 {
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
        for (i, a) in c.attributes.iter().enumerate() {
            if a.name.is_empty() {
                f.required(
                    &ap.index(i).field("name"),
                    "the attribute name (e.g. \"SameSite\")",
                );
            }
        }
        check_unique(
            f,
            c.attributes
                .iter()
                .enumerate()
                .map(|(i, a)| (ap.index(i).field("name"), a.name.as_str())),
            "cookie attribute names",
        );
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
        if let Some(t) = m.table_size {
            let tp = p.field("maglev").field("tableSize");
            if t < 0 {
                f.invalid(&tp, &t, "must be >= 0");
            } else if t >= MAGLEV_TABLE_MAX {
                f.invalid(&tp, &t, format!("must be less than {MAGLEV_TABLE_MAX}"));
            } else if t != 0 && !is_prime(t) {
                f.invalid(&tp, &t, "must be a prime number (e.g. 65537)");
            }
        }
    }
    if let Some(n) = ch.minimum_ring_size {
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

fn is_prime(n: i64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// `region[/zone[/subzone]]`, where `*` may stand for the last given part.
fn check_locality_name(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split('/').collect();
    let shape =
        "must be region, region/zone or region/zone/subzone, with \"*\" only as the last part";
    if s.is_empty() || parts.len() > 3 {
        return Err(shape.to_string());
    }
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() || (part.contains('*') && (*part != "*" || i + 1 != parts.len())) {
            return Err(shape.to_string());
        }
    }
    Ok(())
}

fn check_locality(f: &mut Findings, p: &FieldPath, l: &LocalityLbSetting) {
    let used: Vec<&str> = [
        ("distribute", !l.distribute.is_empty()),
        ("failover", !l.failover.is_empty()),
        ("failoverPriority", !l.failover_priority.is_empty()),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();
    if used.len() > 1 {
        f.forbidden(
            p,
            format!(
                "{} are mutually exclusive: set only one of distribute, failover or failoverPriority",
                join_and(&used)
            ),
        );
    }
    for (i, d) in l.distribute.iter().enumerate() {
        let dp = p.field("distribute").index(i);
        if let Err(e) = check_locality_name(&d.from) {
            f.invalid(&dp.field("from"), d.from.as_str(), e);
        }
        let mut total: i64 = 0;
        let mut weights_ok = true;
        for (to, w) in &d.to {
            let tp = dp.field("to").key(to);
            if let Err(e) = check_locality_name(to) {
                f.invalid(&tp, to.as_str(), e);
            }
            if !(0..=100).contains(w) {
                f.invalid(&tp, w, "must be between 0 and 100, inclusive");
                weights_ok = false;
            } else {
                total += w;
            }
        }
        if d.to.is_empty() {
            f.required(
                &dp.field("to"),
                "the localities to send traffic to, with weights adding up to 100",
            );
        } else if weights_ok && total != 100 {
            f.invalid(&dp.field("to"), &total, "the weights must add up to 100");
        }
    }
    for (i, fo) in l.failover.iter().enumerate() {
        let fp = p.field("failover").index(i);
        for (name, v) in [("from", &fo.from), ("to", &fo.to)] {
            if v.is_empty() {
                f.required(&fp.field(name), "a region");
            } else if v.contains('/') || v.contains('*') {
                f.invalid(
                    &fp.field(name),
                    v.as_str(),
                    "locality failover names regions only (no '/' and no '*')",
                );
            }
        }
        if !fo.from.is_empty() && fo.from == fo.to {
            f.invalid(
                &fp.field("to"),
                fo.to.as_str(),
                "must be a different region than from",
            );
        }
    }
    for (i, k) in l.failover_priority.iter().enumerate() {
        if k.is_empty() {
            f.invalid(
                &p.field("failoverPriority").index(i),
                k.as_str(),
                "must not be empty",
            );
        }
    }
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
            check_duration(f, &tp.field("idleTimeout"), d, true);
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
        f.warn(&cp, "deprecated: use consecutive5xxErrors");
        check_i32_count(f, &cp, n);
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
    if o.consecutive_local_origin_failures.is_some()
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

fn check_client_tls(f: &mut Findings, p: &FieldPath, t: &ClientTlsSettings) {
    let mode = t.mode.unwrap_or(ClientTlsMode::Disable);
    let credential = non_empty(&t.credential_name);
    if mode == ClientTlsMode::Mutual && !credential {
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
    if credential {
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
    }
    if t.insecure_skip_verify == Some(true)
        && matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual)
    {
        if non_empty(&t.ca_certificates) {
            f.forbidden(
                &p.field("caCertificates"),
                "caCertificates may not be combined with insecureSkipVerify",
            );
        }
        if !t.subject_alt_names.is_empty() {
            f.forbidden(
                &p.field("subjectAltNames"),
                "subjectAltNames may not be combined with insecureSkipVerify",
            );
        }
    }
}
