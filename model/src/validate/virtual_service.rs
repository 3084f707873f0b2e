//! VirtualService: hosts, gateway references, ordered HTTP rules (matches, destinations, redirect,
//! direct response, rewrite, retries, fault, mirrors, CORS, header operations), TLS and TCP rules,
//! `exportTo`; and the warnings for rules and matches that can never be used.

use super::common::{
    check_duration, check_export_to, check_header_value, check_i32_count, check_int_percent,
    check_ip_or_cidr, check_labels, check_metadata, check_percent, check_port, check_regex,
    check_string_match, check_wildcard_domain, decode_proto_bytes, dns1123_label,
    dns1123_subdomain, is_ip, is_strict_header_name, is_token, join_and, HostIndex, MatchUse,
    NameRule, STRICT_MATCH,
};
use super::findings::Findings;
use super::path::FieldPath;
use crate::resource::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpDirectResponse, HttpFaultInjection,
    HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, L4MatchAttributes,
    RouteDestination, TcpRoute, TlsRoute, VirtualService,
};
use std::collections::{BTreeMap, HashMap};

/// A direct response body above this is rejected.
pub(crate) const BODY_MAX: usize = 1024 * 1024;
/// A direct response body above this is accepted with a warning.
pub(crate) const BODY_WARN: usize = 100 * 1024;

/// `retryOn` policies besides numeric status codes.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// gRPC status names a fault may abort with, in code order (the index is the status number).
pub(crate) const GRPC_CODES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Methods a CORS policy may allow.
const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

const SIDECAR_ONLY: &str = "ignored at a gateway (sidecar-only)";
const JWT_CLAIM_PREFIX: &str = "@request.auth.claims.";

fn non_empty(o: &Option<String>) -> bool {
    o.as_deref().is_some_and(|s| !s.is_empty())
}

pub(crate) fn validate_virtual_service(vs: &VirtualService, f: &mut Findings) {
    check_metadata(f, &vs.metadata, NameRule::Subdomain);
    let spec = &vs.spec;
    let p = FieldPath::root("spec");
    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        f.required(&p, "at least one of http, tcp or tls");
    }

    let is_delegate = spec.hosts.is_empty();
    if is_delegate {
        f.warn(
            &p.field("hosts"),
            "no hosts: this VirtualService is used only as the delegate of another VirtualService's http[].delegate",
        );
        if !spec.gateways.is_empty() {
            f.forbidden(
                &p.field("gateways"),
                "a delegate VirtualService (no hosts) may not set gateways",
            );
        }
        if !spec.tls.is_empty() {
            f.forbidden(
                &p.field("tls"),
                "a delegate VirtualService (no hosts) may not have tls rules",
            );
        }
        if !spec.tcp.is_empty() {
            f.forbidden(
                &p.field("tcp"),
                "a delegate VirtualService (no hosts) may not have tcp rules",
            );
        }
    }
    check_hosts(f, &p.field("hosts"), &spec.hosts);
    check_gateway_refs(f, &p.field("gateways"), &spec.gateways);

    let hp = p.field("http");
    for (i, r) in spec.http.iter().enumerate() {
        check_http_route(f, &hp.index(i), r, is_delegate);
    }
    check_reachability(f, &hp, &spec.http);

    let host_index = HostIndex::new(spec.hosts.iter().map(String::as_str));
    for (i, r) in spec.tls.iter().enumerate() {
        check_tls_route(f, &p.field("tls").index(i), r, &host_index, is_delegate);
    }
    for (i, r) in spec.tcp.iter().enumerate() {
        check_tcp_route(f, &p.field("tcp").index(i), r);
    }
    check_export_to(
        f,
        &p.field("exportTo"),
        &spec.export_to,
        vs.metadata.namespace(),
        false,
    );
}

/// VirtualService hosts: `*`, an IP, or a (wildcard) domain; no duplicates; no two hosts that
/// overlap (`*.foo.com` and `a.foo.com`).
fn check_hosts(f: &mut Findings, path: &FieldPath, hosts: &[String]) {
    for (i, h) in hosts.iter().enumerate() {
        if h == "*" || is_ip(h) {
            continue;
        }
        if let Err(e) = check_wildcard_domain(h) {
            f.invalid(&path.index(i), h.as_str(), e);
        }
    }
    // For each later host, the first earlier host it duplicates or overlaps.
    let lower: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
    let index = HostIndex::new(lower.iter().map(String::as_str));
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    let mut overlaps: BTreeMap<usize, usize> = BTreeMap::new();
    for (j, h) in lower.iter().enumerate() {
        if let Some(&i) = first_seen.get(h.as_str()) {
            f.duplicate(
                &path.index(j),
                hosts[j].as_str(),
                format!("same host as {}", path.index(i)),
            );
            continue;
        }
        first_seen.insert(h, j);
        for i in index.covering(h) {
            if i == j || lower[i] == *h {
                continue;
            }
            let (early, late) = (i.min(j), i.max(j));
            let e = overlaps.entry(late).or_insert(early);
            *e = (*e).min(early);
        }
    }
    for (late, early) in overlaps {
        if lower[late] == lower[early] || first_seen.get(lower[late].as_str()) != Some(&late) {
            continue;
        }
        f.invalid(
            &path.index(late),
            hosts[late].as_str(),
            format!(
                "overlaps with {} ({:?}): a host may be covered only once in a VirtualService",
                path.index(early),
                hosts[early]
            ),
        );
    }
}

/// Gateway references: `mesh`, `name`, or `namespace/name` with RFC 1123 labels; the legacy
/// `name.namespace` form is accepted with a warning.
fn check_gateway_refs(f: &mut Findings, path: &FieldPath, gateways: &[String]) {
    for (i, g) in gateways.iter().enumerate() {
        let p = path.index(i);
        if g == "mesh" {
            f.warn(
                &p,
                "\"mesh\" (the sidecars) does not exist at a standalone gateway; ignored",
            );
            continue;
        }
        match g.split_once('/') {
            Some((ns, name)) => {
                if let Err(e) = dns1123_label(ns) {
                    f.invalid(&p, g.as_str(), format!("namespace part {ns:?}: {e}"));
                }
                if let Err(e) = dns1123_label(name) {
                    f.invalid(&p, g.as_str(), format!("name part {name:?}: {e}"));
                }
            }
            None if g.contains('.') => match dns1123_subdomain(g) {
                Ok(()) => {
                    let mut parts = g.splitn(3, '.');
                    let name = parts.next().unwrap_or_default();
                    let ns = parts.next().unwrap_or_default();
                    f.warn(
                        &p,
                        format!("legacy gateway name format {g:?}; prefer <namespace>/<name>: \"{ns}/{name}\""),
                    );
                }
                Err(e) => f.invalid(&p, g.as_str(), e),
            },
            None => {
                if let Err(e) = dns1123_label(g) {
                    f.invalid(&p, g.as_str(), e);
                }
            }
        }
    }
}

fn check_http_route(f: &mut Findings, p: &FieldPath, r: &HttpRoute, in_delegate_vs: bool) {
    let has_route = !r.route.is_empty();
    if !has_route && r.redirect.is_none() && r.direct_response.is_none() && r.delegate.is_none() {
        f.required(p, "one of route, redirect, directResponse or delegate");
    }

    // Mutually exclusive actions.
    type Conflicts<'a> = [(&'a str, bool, &'a [(&'a str, bool)]); 3];
    let conflicts: Conflicts = [
        (
            "redirect",
            r.redirect.is_some(),
            &[
                ("route", has_route),
                ("fault", r.fault.is_some()),
                ("rewrite", r.rewrite.is_some()),
                ("directResponse", r.direct_response.is_some()),
            ],
        ),
        (
            "directResponse",
            r.direct_response.is_some(),
            &[
                ("route", has_route),
                ("fault", r.fault.is_some()),
                ("rewrite", r.rewrite.is_some()),
            ],
        ),
        (
            "delegate",
            r.delegate.is_some(),
            &[
                ("route", has_route),
                ("redirect", r.redirect.is_some()),
                ("directResponse", r.direct_response.is_some()),
            ],
        ),
    ];
    for (field, set, others) in conflicts {
        if !set {
            continue;
        }
        for (other, other_set) in others {
            if *other_set {
                f.forbidden(
                    &p.field(field),
                    format!("{field} may not be combined with {other}"),
                );
            }
        }
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        f.forbidden(
            &p.field("mirrors"),
            "mirrors may not be combined with mirror",
        );
    }

    if let Some(d) = &r.delegate {
        let dp = p.field("delegate");
        if in_delegate_vs {
            f.forbidden(
                &dp,
                "only one level of delegation is allowed: a delegate VirtualService (no hosts) may not delegate again",
            );
        }
        if d.name.is_empty() {
            f.required(&dp.field("name"), "the name of the delegate VirtualService");
        } else if let Err(e) = dns1123_subdomain(&d.name) {
            f.invalid(&dp.field("name"), d.name.as_str(), e);
        }
        if let Some(ns) = &d.namespace {
            if !ns.is_empty() {
                if let Err(e) = dns1123_label(ns) {
                    f.invalid(&dp.field("namespace"), ns.as_str(), e);
                }
            }
        }
    }

    let mp = p.field("match");
    for (j, m) in r.match_.iter().enumerate() {
        check_http_match(f, &mp.index(j), m);
    }

    let rp = p.field("route");
    for (k, d) in r.route.iter().enumerate() {
        let dp = rp.index(k);
        match &d.destination {
            Some(dest) => check_destination(f, &dp.field("destination"), dest),
            None => f.required(
                &dp.field("destination"),
                "a destination with a host to forward to",
            ),
        }
        if let Some(w) = d.weight {
            check_i32_count(f, &dp.field("weight"), w);
        }
        if let Some(h) = &d.headers {
            check_headers(f, &dp.field("headers"), h);
            check_authority_once(f, p, r.rewrite.as_deref(), Some((&dp.field("headers"), h)));
        }
    }
    check_total_weight(f, &rp, r.route.iter().map(|d| d.weight));

    if let Some(rd) = &r.redirect {
        check_redirect(f, &p.field("redirect"), rd, &r.match_, &mp);
    }
    if let Some(d) = &r.direct_response {
        check_direct_response(f, &p.field("directResponse"), d);
    }
    if let Some(rw) = &r.rewrite {
        check_rewrite(f, &p.field("rewrite"), rw);
    }
    if let Some(h) = &r.headers {
        check_headers(f, &p.field("headers"), h);
    }
    let hp = p.field("headers");
    check_authority_once(
        f,
        p,
        r.rewrite.as_deref(),
        r.headers.as_deref().map(|h| (&hp, h)),
    );
    if let Some(t) = &r.timeout {
        check_duration(f, &p.field("timeout"), t, false);
    }
    if let Some(rt) = &r.retries {
        check_retries(f, &p.field("retries"), rt);
    }
    if let Some(fi) = &r.fault {
        check_fault(f, &p.field("fault"), fi);
    }
    if let Some(m) = &r.mirror {
        check_destination(f, &p.field("mirror"), m);
    }
    if let Some(pc) = &r.mirror_percentage {
        check_percent(f, &p.field("mirrorPercentage"), pc);
    }
    if let Some(pc) = r.mirror_percent {
        check_int_percent(f, &p.field("mirrorPercent"), pc);
        f.warn(
            &p.field("mirrorPercent"),
            "deprecated: use mirrorPercentage",
        );
    }
    for (k, m) in r.mirrors.iter().enumerate() {
        let mp = p.field("mirrors").index(k);
        match &m.destination {
            Some(d) => check_destination(f, &mp.field("destination"), d),
            None => f.required(&mp.field("destination"), "a destination to mirror to"),
        }
        if let Some(pc) = &m.percentage {
            check_percent(f, &mp.field("percentage"), pc);
        }
    }
    if let Some(c) = &r.cors_policy {
        check_cors(f, &p.field("corsPolicy"), c);
    }
}

fn check_http_match(f: &mut Findings, p: &FieldPath, m: &HttpMatchRequest) {
    for (name, sm) in [
        ("uri", m.uri.as_ref()),
        ("scheme", m.scheme.as_deref()),
        ("method", m.method.as_deref()),
        ("authority", m.authority.as_deref()),
    ] {
        if let Some(sm) = sm {
            check_string_match(f, &p.field(name), sm, STRICT_MATCH);
        }
    }
    let header_use = MatchUse {
        empty_is_presence: true,
        star_regex_is_presence: true,
    };
    for (field, map) in [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (name, sm) in map {
            let kp = p.field(field).key(name);
            check_match_header_name(f, &kp, name);
            check_string_match(f, &kp, sm, header_use);
        }
    }
    let query_use = MatchUse {
        empty_is_presence: true,
        star_regex_is_presence: false,
    };
    for (name, sm) in &m.query_params {
        let kp = p.field("queryParams").key(name);
        if name.is_empty() {
            f.invalid(
                &kp,
                name.as_str(),
                "a query parameter name must not be empty",
            );
        }
        check_string_match(f, &kp, sm, query_use);
    }
    if let Some(port) = m.port {
        check_port(f, &p.field("port"), port);
    }
    check_gateway_refs(f, &p.field("gateways"), &m.gateways);
    if !m.source_labels.is_empty() {
        check_labels(f, &p.field("sourceLabels"), &m.source_labels);
        f.warn(&p.field("sourceLabels"), SIDECAR_ONLY);
    }
    if let Some(ns) = &m.source_namespace {
        if let Err(e) = dns1123_label(ns) {
            f.invalid(&p.field("sourceNamespace"), ns.as_str(), e);
        }
        f.warn(&p.field("sourceNamespace"), SIDECAR_ONLY);
    }
}

/// A header name in `headers`/`withoutHeaders`: a lowercase token, or a JWT claim.
fn check_match_header_name(f: &mut Findings, p: &FieldPath, name: &str) {
    if name.is_empty() {
        f.invalid(p, name, "a header name must not be empty");
        return;
    }
    if let Some(claim) = name.strip_prefix(JWT_CLAIM_PREFIX) {
        if claim.is_empty() {
            f.invalid(
                p,
                name,
                "the claim name after @request.auth.claims. must not be empty",
            );
        } else {
            f.warn(
                p,
                "JWT claim matches need a RequestAuthentication, which this gateway does not support yet",
            );
        }
        return;
    }
    if !is_token(name) {
        f.invalid(
            p,
            name,
            "must be a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
        );
    } else if name.bytes().any(|b| b.is_ascii_uppercase()) {
        f.invalid(p, name, "header names in a match must be lowercase");
    } else if matches!(name, "uri" | "scheme" | "method" | "authority") {
        f.warn(
            p,
            format!("ignored: a header named {name:?} is not matched; use match.{name} instead"),
        );
    }
}

/// A destination: host required (not `*`; a domain or an IP), subset a label, port valid.
fn check_destination(f: &mut Findings, p: &FieldPath, d: &Destination) {
    let hp = p.field("host");
    if d.host.is_empty() {
        f.required(
            &hp,
            "the host to send to (a ServiceEntry host, a DNS name or an IP)",
        );
    } else if d.host == "*" {
        f.invalid(&hp, d.host.as_str(), "a destination host may not be \"*\"");
    } else if !is_ip(&d.host) {
        if let Err(e) = check_wildcard_domain(&d.host) {
            f.invalid(&hp, d.host.as_str(), e);
        }
    }
    if let Some(s) = &d.subset {
        if !s.is_empty() {
            if let Err(e) = dns1123_label(s) {
                f.invalid(&p.field("subset"), s.as_str(), e);
            }
        }
    }
    if let Some(port) = &d.port {
        check_port(f, &p.field("port").field("number"), port.number);
    }
}

/// With more than one destination, the weights must not all be 0 (checked once every weight is
/// valid on its own).
fn check_total_weight(f: &mut Findings, p: &FieldPath, weights: impl Iterator<Item = Option<i64>>) {
    let weights: Vec<i64> = weights.map(|w| w.unwrap_or(0)).collect();
    if weights.len() < 2
        || weights
            .iter()
            .any(|w| !(0..=i64::from(i32::MAX)).contains(w))
    {
        return;
    }
    let total: i64 = weights.iter().sum();
    if total == 0 {
        f.invalid(
            p,
            &total,
            "the total weight of the destinations must be > 0 when there is more than one destination",
        );
    }
}

fn check_headers(f: &mut Findings, p: &FieldPath, h: &Headers) {
    if let Some(req) = &h.request {
        check_header_ops(f, &p.field("request"), req, true);
    }
    if let Some(resp) = &h.response {
        check_header_ops(f, &p.field("response"), resp, false);
    }
}

fn check_header_ops(f: &mut Findings, p: &FieldPath, ops: &HeaderOperations, is_request: bool) {
    for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in map {
            let kp = p.field(op).key(name);
            check_header_op_name(f, &kp, name, is_request);
            check_header_value(f, &kp, value);
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        check_header_op_name(f, &p.field("remove").index(i), name, false);
    }
}

fn check_header_op_name(f: &mut Findings, p: &FieldPath, name: &str, host_ok: bool) {
    if name.is_empty() {
        f.invalid(p, name, "a header name must not be empty");
    } else if name.starts_with(':') {
        f.forbidden(p, format!("pseudo-header {name:?} may not be modified"));
    } else if !is_strict_header_name(name) {
        f.invalid(
            p,
            name,
            "must be a valid header name (letters, digits, '-' and '_')",
        );
    } else if name.eq_ignore_ascii_case("host") && !host_ok {
        f.forbidden(
            p,
            "the host header may only be changed by request set/add or rewrite.authority",
        );
    }
}

/// The authority may be set once: by `rewrite.authority` or a request `set`/`add` of `host`.
fn check_authority_once(
    f: &mut Findings,
    route: &FieldPath,
    rewrite: Option<&HttpRewrite>,
    headers: Option<(&FieldPath, &Headers)>,
) {
    let mut sources: Vec<FieldPath> = Vec::new();
    if rewrite.is_some_and(|rw| non_empty(&rw.authority)) {
        sources.push(route.field("rewrite").field("authority"));
    }
    if let Some((hp, h)) = headers {
        if let Some(req) = &h.request {
            for (op, map) in [("set", &req.set), ("add", &req.add)] {
                for name in map.keys() {
                    if name.eq_ignore_ascii_case("host") {
                        sources.push(hp.field("request").field(op).key(name));
                    }
                }
            }
        }
    }
    if let Some((first, rest)) = sources.split_first() {
        for later in rest {
            f.forbidden(
                later,
                format!("the authority may be set only once; it is already set by {first}"),
            );
        }
    }
}

fn check_redirect(
    f: &mut Findings,
    p: &FieldPath,
    r: &HttpRedirect,
    matches: &[HttpMatchRequest],
    match_path: &FieldPath,
) {
    let uri = non_empty(&r.uri);
    let prefix = non_empty(&r.prefix_rewrite);
    if uri && prefix {
        f.forbidden(
            &p.field("prefixRewrite"),
            "prefixRewrite may not be combined with uri",
        );
    }
    if !uri
        && !prefix
        && !non_empty(&r.authority)
        && !non_empty(&r.scheme)
        && r.port.is_none()
        && r.derive_port.is_none()
    {
        f.required(
            p,
            "at least one of uri, prefixRewrite, authority, scheme, port or derivePort",
        );
    }
    if prefix {
        for (j, m) in matches.iter().enumerate() {
            let Some(u) = &m.uri else { continue };
            if u.prefix.is_some() {
                continue;
            }
            let kind = if u.exact.is_some() {
                "an exact"
            } else if u.regex.is_some() {
                "a regex"
            } else {
                "not a prefix"
            };
            f.forbidden(
                &p.field("prefixRewrite"),
                format!(
                    "prefixRewrite needs prefix uri matches, but {} is {kind} match",
                    match_path.index(j).field("uri")
                ),
            );
        }
    }
    if r.port.is_some() && r.derive_port.is_some() {
        f.forbidden(
            &p.field("derivePort"),
            "derivePort may not be combined with port",
        );
    }
    if let Some(port) = r.port {
        check_port(f, &p.field("port"), port);
    }
    if let Some(s) = &r.scheme {
        if !s.is_empty() && s != "http" && s != "https" {
            f.not_supported(&p.field("scheme"), s.as_str(), &["http", "https"]);
        }
    }
    if let Some(code) = r.redirect_code {
        if code != 0 && !(300..=399).contains(&code) {
            f.invalid(
                &p.field("redirectCode"),
                &code,
                "must be a redirect status code between 300 and 399",
            );
        }
    }
    for (name, v) in [
        ("uri", &r.uri),
        ("prefixRewrite", &r.prefix_rewrite),
        ("authority", &r.authority),
    ] {
        if let Some(v) = v {
            check_header_value(f, &p.field(name), v);
        }
    }
}

fn check_direct_response(f: &mut Findings, p: &FieldPath, d: &HttpDirectResponse) {
    if d.status == 0 {
        f.required(
            &p.field("status"),
            "the HTTP status code to answer with (200-600)",
        );
    } else if !(200..=600).contains(&d.status) {
        f.invalid(
            &p.field("status"),
            &d.status,
            "must be between 200 and 600, inclusive",
        );
    }
    let Some(b) = &d.body else { return };
    let bp = p.field("body");
    let sized = match (&b.string, &b.bytes) {
        (Some(_), Some(_)) => {
            f.forbidden(&bp.field("bytes"), "bytes may not be combined with string");
            None
        }
        (Some(s), None) => Some((bp.field("string"), s.len())),
        (None, Some(x)) => match decode_proto_bytes(x) {
            Some(v) => Some((bp.field("bytes"), v.len())),
            None => {
                f.invalid(&bp.field("bytes"), x.as_str(), "must be base64");
                None
            }
        },
        (None, None) => None,
    };
    if let Some((path, n)) = sized {
        if n > BODY_MAX {
            f.too_long(
                &path,
                format!("may not be more than {BODY_MAX} bytes (1MB); the body has {n}"),
            );
        } else if n > BODY_WARN {
            f.warn(
                &path,
                format!("large body ({n} bytes): keep direct responses under 100KB"),
            );
        }
    }
}

fn check_rewrite(f: &mut Findings, p: &FieldPath, rw: &HttpRewrite) {
    let uri = non_empty(&rw.uri);
    if uri && rw.uri_regex_rewrite.is_some() {
        f.forbidden(
            &p.field("uriRegexRewrite"),
            "uriRegexRewrite may not be combined with uri",
        );
    }
    if !uri && !non_empty(&rw.authority) && rw.uri_regex_rewrite.is_none() {
        f.required(p, "at least one of uri, authority or uriRegexRewrite");
    }
    if let Some(rr) = &rw.uri_regex_rewrite {
        let rp = p.field("uriRegexRewrite");
        if rr.match_.is_empty() {
            f.required(&rp.field("match"), "the RE2 regular expression to replace");
        } else {
            check_regex(f, &rp.field("match"), &rr.match_);
        }
        if rr.rewrite.is_empty() {
            f.required(
                &rp.field("rewrite"),
                "the replacement (capture groups as \\1, \\2, ...)",
            );
        } else {
            check_header_value(f, &rp.field("rewrite"), &rr.rewrite);
        }
    }
    for (name, v) in [("uri", &rw.uri), ("authority", &rw.authority)] {
        if let Some(v) = v {
            check_header_value(f, &p.field(name), v);
        }
    }
}

fn check_retries(f: &mut Findings, p: &FieldPath, r: &HttpRetry) {
    check_i32_count(f, &p.field("attempts"), r.attempts);
    if r.attempts == 0 {
        for (name, set) in [
            ("perTryTimeout", r.per_try_timeout.is_some()),
            ("retryOn", non_empty(&r.retry_on)),
            ("retryRemoteLocalities", r.retry_remote_localities.is_some()),
            (
                "retryIgnorePreviousHosts",
                r.retry_ignore_previous_hosts.is_some(),
            ),
            ("backoff", r.backoff.is_some()),
        ] {
            if set {
                f.forbidden(
                    &p.field(name),
                    "retries are disabled (attempts is 0): set attempts > 0 or remove this field",
                );
            }
        }
    }
    if let Some(d) = &r.per_try_timeout {
        check_duration(f, &p.field("perTryTimeout"), d, false);
    }
    if let Some(d) = &r.backoff {
        check_duration(f, &p.field("backoff"), d, false);
    }
    if let Some(on) = &r.retry_on {
        if !on.is_empty() {
            for token in on.split(',') {
                let t = token.trim();
                if RETRY_ON.contains(&t) || is_status_code(t) {
                    continue;
                }
                let list = RETRY_ON
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                f.not_supported_text(
                    &p.field("retryOn"),
                    t,
                    format!("{list}, or an HTTP status code such as \"503\""),
                );
            }
        }
    }
}

fn is_status_code(t: &str) -> bool {
    t.len() == 3
        && t.bytes().all(|b| b.is_ascii_digit())
        && t.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c))
}

fn check_fault(f: &mut Findings, p: &FieldPath, fi: &HttpFaultInjection) {
    if fi.delay.is_none() && fi.abort.is_none() {
        f.required(p, "at least one of delay or abort");
    }
    if let Some(d) = &fi.delay {
        let dp = p.field("delay");
        if d.exponential_delay.is_some() {
            f.forbidden(
                &dp.field("exponentialDelay"),
                "exponentialDelay is not supported; use fixedDelay",
            );
        }
        match &d.fixed_delay {
            Some(x) => {
                check_duration(f, &dp.field("fixedDelay"), x, false);
            }
            None if d.exponential_delay.is_none() => {
                f.required(&dp.field("fixedDelay"), "the delay to inject (e.g. \"5s\")");
            }
            None => {}
        }
        if let Some(pc) = &d.percentage {
            check_percent(f, &dp.field("percentage"), pc);
        }
        if let Some(pc) = d.percent {
            check_int_percent(f, &dp.field("percent"), pc);
            f.warn(&dp.field("percent"), "deprecated: use percentage");
        }
        if d.percentage.is_none() && d.percent.is_none() {
            f.warn(
                &dp.field("percentage"),
                "not set: no request is delayed (set percentage.value, e.g. 100)",
            );
        }
    }
    if let Some(a) = &fi.abort {
        let ap = p.field("abort");
        let kinds: Vec<&str> = [
            ("httpStatus", a.http_status.is_some()),
            ("grpcStatus", a.grpc_status.is_some()),
            ("http2Error", a.http2_error.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect();
        if kinds.len() > 1 {
            f.forbidden(
                &ap,
                format!(
                    "{} are mutually exclusive: set only one error type",
                    join_and(&kinds)
                ),
            );
        }
        if kinds.is_empty() {
            f.warn(&ap, "no httpStatus or grpcStatus: no request is aborted");
        }
        if let Some(s) = a.http_status {
            if !(200..=600).contains(&s) {
                f.invalid(
                    &ap.field("httpStatus"),
                    &s,
                    "must be between 200 and 600, inclusive",
                );
            }
        }
        if let Some(g) = &a.grpc_status {
            if !GRPC_CODES.contains(&g.as_str()) {
                f.not_supported(&ap.field("grpcStatus"), g.as_str(), GRPC_CODES);
            }
        }
        if a.http2_error.is_some() {
            f.forbidden(
                &ap.field("http2Error"),
                "http2Error is not supported; use httpStatus or grpcStatus",
            );
        }
        match &a.percentage {
            Some(pc) => check_percent(f, &ap.field("percentage"), pc),
            None => f.warn(
                &ap.field("percentage"),
                "not set: no request is aborted (set percentage.value, e.g. 100)",
            ),
        }
    }
}

fn check_cors(f: &mut Findings, p: &FieldPath, c: &CorsPolicy) {
    if !c.allow_origin.is_empty() {
        f.warn(&p.field("allowOrigin"), "deprecated: use allowOrigins");
    }
    if c.allow_origin.is_empty() && c.allow_origins.is_empty() {
        f.warn(
            &p.field("allowOrigins"),
            "empty: no origin is allowed, so no CORS headers are ever sent",
        );
    }
    for (k, o) in c.allow_origins.iter().enumerate() {
        check_string_match(f, &p.field("allowOrigins").index(k), o, STRICT_MATCH);
    }
    for (k, m) in c.allow_methods.iter().enumerate() {
        if !CORS_METHODS.contains(&m.as_str()) {
            f.not_supported(&p.field("allowMethods").index(k), m.as_str(), CORS_METHODS);
        }
    }
    for (field, list) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (k, h) in list.iter().enumerate() {
            if h != "*" && !is_token(h) {
                f.invalid(
                    &p.field(field).index(k),
                    h.as_str(),
                    "must be a valid HTTP header name or \"*\"",
                );
            }
        }
    }
    if let Some(d) = &c.max_age {
        if let Some(v) = check_duration(f, &p.field("maxAge"), d, false) {
            if v.subsec_nanos() != 0 {
                f.invalid(
                    &p.field("maxAge"),
                    d.0.as_str(),
                    "must be a whole number of seconds",
                );
            }
        }
    }
}

fn check_route_destinations(f: &mut Findings, p: &FieldPath, route: &[RouteDestination]) {
    if route.is_empty() {
        f.required(p, "at least one destination");
    }
    for (k, d) in route.iter().enumerate() {
        let dp = p.index(k);
        match &d.destination {
            Some(dest) => check_destination(f, &dp.field("destination"), dest),
            None => f.required(
                &dp.field("destination"),
                "a destination with a host to forward to",
            ),
        }
        if let Some(w) = d.weight {
            check_i32_count(f, &dp.field("weight"), w);
        }
    }
    check_total_weight(f, p, route.iter().map(|d| d.weight));
}

/// The parts of TLS and TCP matches they share.
fn check_l4_match(
    f: &mut Findings,
    p: &FieldPath,
    subnets: &[String],
    port: Option<i64>,
    source_labels: &BTreeMap<String, String>,
    source_namespace: Option<&String>,
    gateways: &[String],
) {
    for (k, s) in subnets.iter().enumerate() {
        if let Err(e) = check_ip_or_cidr(s) {
            f.invalid(&p.field("destinationSubnets").index(k), s.as_str(), e);
        }
    }
    if let Some(port) = port {
        check_port(f, &p.field("port"), port);
    }
    if !source_labels.is_empty() {
        check_labels(f, &p.field("sourceLabels"), source_labels);
        f.warn(&p.field("sourceLabels"), SIDECAR_ONLY);
    }
    if let Some(ns) = source_namespace {
        if let Err(e) = dns1123_label(ns) {
            f.invalid(&p.field("sourceNamespace"), ns.as_str(), e);
        }
        f.warn(&p.field("sourceNamespace"), SIDECAR_ONLY);
    }
    check_gateway_refs(f, &p.field("gateways"), gateways);
}

fn check_tls_route(
    f: &mut Findings,
    p: &FieldPath,
    r: &TlsRoute,
    hosts: &HostIndex,
    in_delegate_vs: bool,
) {
    if r.match_.is_empty() {
        f.required(&p.field("match"), "at least one match with sniHosts");
    }
    for (j, m) in r.match_.iter().enumerate() {
        let mp = p.field("match").index(j);
        if m.sni_hosts.is_empty() {
            f.required(&mp.field("sniHosts"), "at least one SNI host");
        }
        for (k, sni) in m.sni_hosts.iter().enumerate() {
            let sp = mp.field("sniHosts").index(k);
            if is_ip(sni) {
                f.warn(
                    &sp,
                    "an IP address is never sent as SNI; this host never matches",
                );
                continue;
            }
            if let Err(e) = check_wildcard_domain(sni) {
                f.invalid(&sp, sni.as_str(), e);
                continue;
            }
            if !in_delegate_vs && hosts.covering(sni).is_empty() {
                f.invalid(
                    &sp,
                    sni.as_str(),
                    "must be one of the VirtualService hosts, or covered by one of them",
                );
            }
        }
        check_l4_match(
            f,
            &mp,
            &m.destination_subnets,
            m.port,
            &m.source_labels,
            m.source_namespace.as_ref(),
            &m.gateways,
        );
    }
    check_route_destinations(f, &p.field("route"), &r.route);
}

fn check_tcp_route(f: &mut Findings, p: &FieldPath, r: &TcpRoute) {
    for (j, m) in r.match_.iter().enumerate() {
        let L4MatchAttributes {
            destination_subnets,
            port,
            source_labels,
            gateways,
            source_namespace,
        } = m;
        check_l4_match(
            f,
            &p.field("match").index(j),
            destination_subnets,
            *port,
            source_labels,
            source_namespace.as_ref(),
            gateways,
        );
    }
    check_route_destinations(f, &p.field("route"), &r.route);
}

/// Whether a match entry matches every request at a gateway: no condition but `uri` prefix `/` or
/// regex `.*` (names and sidecar-only selectors do not restrict anything here).
fn is_catch_all_match(m: &HttpMatchRequest) -> bool {
    m.is_catch_all() && m.gateways.is_empty()
}

/// Warns about rules after a catch-all rule and about match entries identical to an earlier one.
fn check_reachability(f: &mut Findings, p: &FieldPath, rules: &[HttpRoute]) {
    let mut catch_all: Option<usize> = None;
    let mut seen: HashMap<String, FieldPath> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        let rp = p.index(i);
        if let Some(c) = catch_all {
            f.warn(
                &rp,
                format!("rule is never used: {} matches every request", p.index(c)),
            );
            continue;
        }
        for (j, m) in r.match_.iter().enumerate() {
            let mut key = m.clone();
            key.name = None;
            key.stat_prefix = None;
            key.source_labels.clear();
            key.source_namespace = None;
            let Ok(key) = serde_json::to_string(&key) else {
                continue;
            };
            let mp = rp.field("match").index(j);
            match seen.get(&key) {
                Some(first) => f.warn(&mp, format!("match is never used: same as {first}")),
                None => {
                    seen.insert(key, mp);
                }
            }
        }
        let catches_all = r.match_.is_empty() || r.match_.iter().any(is_catch_all_match);
        if r.delegate.is_none() && catches_all {
            catch_all = Some(i);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The body size rules, whose cases are too big for golden files.
    use super::{BODY_MAX, BODY_WARN};
    use crate::resource::resource_from_value;
    use crate::validate::{validate, Reason, Report};
    use serde_json::json;

    fn with_body(body: serde_json::Value) -> Report {
        let doc = json!({
            "kind": "VirtualService",
            "metadata": {"name": "big"},
            "spec": {"hosts": ["a.example.com"], "http": [{"directResponse": {"status": 200, "body": body}}]},
        });
        validate(&resource_from_value(doc, None).expect("decodes"))
    }

    #[test]
    fn body_over_100kb_is_a_warning() {
        let r = with_body(json!({"string": "x".repeat(BODY_WARN + 1)}));
        assert!(r.errors.is_empty(), "{r:?}");
        assert_eq!(
            r.warnings,
            vec![format!(
                "spec.http[0].directResponse.body.string: large body ({} bytes): keep direct responses under 100KB",
                BODY_WARN + 1
            )]
        );
        assert!(with_body(json!({"string": "x".repeat(BODY_WARN)}))
            .warnings
            .is_empty());
    }

    #[test]
    fn body_over_1mb_is_rejected() {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD.encode(vec![0u8; BODY_MAX + 1]);
        let r = with_body(json!({ "bytes": bytes }));
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert_eq!(r.errors[0].field, "spec.http[0].directResponse.body.bytes");
        assert_eq!(r.errors[0].reason, Reason::FieldValueTooLong);
        assert_eq!(
            r.errors[0].message,
            format!(
                "Too long: may not be more than {BODY_MAX} bytes (1MB); the body has {}",
                BODY_MAX + 1
            )
        );
        assert!(r.warnings.is_empty(), "{r:?}");
    }
}
