//! VirtualService: hosts, gateway references, ordered HTTP rules (matches, destinations, redirect,
//! direct response, rewrite, retries, fault, mirrors, CORS, header operations), TLS and TCP rules,
//! `exportTo`; and Istio's warnings for rules and matches that are never used.
//!
//! The rules are Istio's own (`ValidateVirtualService` and `validateHTTPRoute` with what they call,
//! in Istio's `pkg/config/validation`), case for case: `testdata/istio/virtualservice` holds Istio's
//! test cases with Istio's verdict. Where the gateway deliberately differs because there is no mesh
//! here, it accepts with a warning that says so: `hosts: ["*"]` without `gateways`, and IP addresses
//! as destination hosts. What Istio accepts but this gateway does not do (pseudo-header matches, Envoy header formatters, source selectors, delegation) is accepted with an
//! "accepted but not enforced yet" note.

use super::common::{
    check_duration, check_export_to, check_header_value, check_header_value_format,
    check_i32_count, check_ip_or_cidr, check_istio_fqdn, check_labels, check_metadata, check_port,
    check_regex, check_string_match, check_wildcard_domain, decode_proto_bytes, dns1123_label,
    dns1123_subdomain, envoy_header_formatter, is_ip, is_istio_label, is_token, join_and,
    HostIndex, MatchRule, NameRule, HOST_MAX,
};
use super::findings::Findings;
use super::path::FieldPath;
use crate::resource::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpDirectResponse, HttpFaultInjection,
    HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, Percent, RouteDestination,
    StringMatch, TcpRoute, TlsRoute, VirtualService,
};
use std::collections::{BTreeMap, HashMap};

/// A direct response body above this is rejected.
pub(crate) const BODY_MAX: usize = 1024 * 1024;
/// A direct response body above this is accepted with a warning.
pub(crate) const BODY_WARN: usize = 100 * 1024;

/// The end of the notes about what Istio accepts and this gateway does not do (yet); they are
/// notes about the gateway, not Istio's opinion of the resource.
const NOT_ENFORCED: &str = ": accepted but not enforced yet";

/// `retryOn` policies besides HTTP status codes (Envoy's `x-envoy-retry-on` and
/// `x-envoy-retry-grpc-on` values, as Istio lists them).
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

/// The HTTP status codes Go's `net/http.StatusText` knows: Istio accepts a `retryOn` number only
/// when it is one of them.
const KNOWN_STATUS_CODES: &[i64] = &[
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304,
    305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415,
    416, 417, 418, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505,
    506, 507, 508, 510, 511,
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

/// Methods a CORS policy may allow (Go's method constants, and `*`).
const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// The pseudo-headers a match may name (RFC 9113 §8.3).
const PSEUDO_HEADERS: &[&str] = &[":method", ":scheme", ":authority", ":path", ":status"];

/// The reserved gateway name for the sidecars.
const MESH: &str = "mesh";

/// Istio's routing on JWT claims: `@request.auth.claims.a.b` or `@request.auth.claims[a][b]`
/// (`jwt.ToRoutingClaim`; the prefix is compared case-insensitively).
fn is_jwt_claim(name: &str) -> bool {
    const PREFIX: &str = "@request.auth.claims";
    let Some(head) = name.get(..PREFIX.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(PREFIX) {
        return false;
    }
    let rest = &name[PREFIX.len()..];
    (rest.starts_with('.') && rest.len() > 1)
        || (rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
}

fn non_empty(o: &Option<String>) -> bool {
    o.as_deref().is_some_and(|s| !s.is_empty())
}

/// How Istio reads `gateways`: none, or a list with `mesh`, applies the VirtualService to the
/// mesh; any other list applies it to gateways only.
#[derive(Debug, Clone, Copy)]
struct Binding {
    to_gateway: bool,
    no_gateways: bool,
}

impl Binding {
    fn of(gateways: &[String]) -> Self {
        Binding {
            to_gateway: !gateways.is_empty() && !gateways.iter().any(|g| g == MESH),
            no_gateways: gateways.is_empty(),
        }
    }

    /// Istio's `isGateway`, used for SNI hosts: true unless `mesh` is listed (also with no list).
    fn sni_at_gateway(gateways: &[String]) -> bool {
        !gateways.iter().any(|g| g == MESH)
    }
}

pub(crate) fn validate_virtual_service(vs: &VirtualService, f: &mut Findings) {
    check_metadata(f, &vs.metadata, NameRule::Subdomain);
    let spec = &vs.spec;
    let p = FieldPath::root("spec");

    let is_delegate = spec.hosts.is_empty();
    if is_delegate {
        f.warn(
            &p.field("hosts"),
            format!("none: a delegate VirtualService, used only through another VirtualService's http[].delegate{NOT_ENFORCED}"),
        );
        for (field, set) in [
            ("gateways", !spec.gateways.is_empty()),
            ("tls", !spec.tls.is_empty()),
            ("tcp", !spec.tcp.is_empty()),
        ] {
            if set {
                f.forbidden(
                    &p.field(field),
                    format!("a delegate VirtualService (no hosts) may not set {field}"),
                );
            }
        }
    }

    let binding = Binding::of(&spec.gateways);
    check_gateway_refs(f, &p.field("gateways"), &spec.gateways);
    let hp = p.field("http");
    if !binding.to_gateway {
        check_no_jwt_claims(f, &hp, &spec.http);
    }
    let sni = spec
        .tls
        .iter()
        .any(|t| t.match_.iter().any(|m| !m.sni_hosts.is_empty()));
    check_hosts(f, &p.field("hosts"), &spec.hosts, binding, sni);

    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        f.required(&p, "at least one of http, tcp or tls");
    }
    for (i, r) in spec.http.iter().enumerate() {
        check_http_route(f, &hp.index(i), r, is_delegate);
    }
    let sni_at_gateway = Binding::sni_at_gateway(&spec.gateways);
    for (i, r) in spec.tls.iter().enumerate() {
        check_tls_route(f, &p.field("tls").index(i), r, &spec.hosts, sni_at_gateway);
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

    check_http_reachability(f, &hp, &spec.http);
    let tcp_keys: Vec<Vec<String>> = spec
        .tcp
        .iter()
        .map(|r| r.match_.iter().map(json_key).collect())
        .collect();
    check_l4_reachability(f, &p.field("tcp"), &tcp_keys);
    let tls_keys: Vec<Vec<String>> = spec
        .tls
        .iter()
        .map(|r| r.match_.iter().map(json_key).collect())
        .collect();
    check_l4_reachability(f, &p.field("tls"), &tls_keys);
}

/// Istio refuses JWT claim matches in a VirtualService that applies to the mesh: only gateways
/// authenticate requests.
fn check_no_jwt_claims(f: &mut Findings, p: &FieldPath, rules: &[HttpRoute]) {
    for (i, r) in rules.iter().enumerate() {
        for (j, m) in r.match_.iter().enumerate() {
            for (field, map) in [
                ("headers", &m.headers),
                ("withoutHeaders", &m.without_headers),
            ] {
                for name in map.keys().filter(|n| is_jwt_claim(n)) {
                    f.forbidden(
                        &p.index(i).field("match").index(j).field(field).key(name),
                        "JWT claim matches are only supported in a VirtualService bound to gateways (list them in spec.gateways, without \"mesh\")",
                    );
                }
            }
        }
    }
}

/// Istio's `ValidateWildcardDomainForVirtualServiceBoundToGateway`: a (wildcard) domain, or, in a
/// VirtualService with SNI matches, the `outbound_.<port>_._.<host>` names Istio generates for
/// AUTO_PASSTHROUGH.
fn check_gateway_host(sni: bool, host: &str) -> Result<(), String> {
    if sni && host.len() <= HOST_MAX && host.starts_with("outbound_") {
        let format = "must follow the outbound_.<port>_._.<hostname> format";
        let parts: Vec<&str> = host.split('_').collect();
        let [direction, port, _, hostname, ..] = parts.as_slice() else {
            return Err(format.to_string());
        };
        let port = port.trim_matches('.');
        let hostname = hostname.trim_matches('.');
        if *direction != "outbound"
            || !port.bytes().any(|b| b.is_ascii_digit())
            || !hostname.bytes().any(|b| b.is_ascii_alphabetic())
        {
            return Err(format.to_string());
        }
        return Ok(());
    }
    check_wildcard_domain(host)
}

/// VirtualService hosts: a (wildcard) domain or an IP, `*` not for the mesh; then, when every host
/// is valid, no two hosts that cover one another (`*.foo.com` and `a.foo.com`).
fn check_hosts(f: &mut Findings, path: &FieldPath, hosts: &[String], b: Binding, sni: bool) {
    let mut all_valid = true;
    for (i, h) in hosts.iter().enumerate() {
        let p = path.index(i);
        let checked = if b.to_gateway {
            check_gateway_host(sni, h)
        } else {
            check_wildcard_domain(h)
        };
        match checked {
            Err(e) => {
                if !is_ip(h) {
                    f.invalid(&p, h.as_str(), e);
                    all_valid = false;
                }
            }
            Ok(()) if !b.to_gateway && h == "*" => {
                if b.no_gateways {
                    f.warn(
                        &p,
                        "Istio refuses \"*\" without gateways (it would apply to the mesh); there is no mesh here and this VirtualService is served on every Gateway",
                    );
                } else {
                    f.invalid(
                        &p,
                        h.as_str(),
                        "\"*\" is not allowed in a VirtualService bound to the mesh",
                    );
                    all_valid = false;
                }
            }
            Ok(()) => {}
        }
    }
    if !all_valid {
        return;
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

/// Istio's `validateGatewayNames`: `namespace/name` with RFC 1123 labels (either case), or a name
/// without '/' that is a domain name (`mesh`, `name`; the legacy `name.namespace` form with a
/// warning).
fn check_gateway_refs(f: &mut Findings, path: &FieldPath, gateways: &[String]) {
    for (i, g) in gateways.iter().enumerate() {
        let p = path.index(i);
        match g.split_once('/') {
            None => {
                if g.contains('.') {
                    let parts: Vec<&str> = g.split('.').collect();
                    let name = parts.first().copied().unwrap_or_default();
                    let ns = parts.get(1).copied().unwrap_or_default();
                    f.warn(
                        &p,
                        format!("legacy gateway name format {g:?}; prefer <namespace>/<name>: \"{ns}/{name}\""),
                    );
                }
                if let Err(e) = check_istio_fqdn(g) {
                    f.invalid(&p, g.as_str(), e);
                }
            }
            Some((ns, name)) => {
                if ns.is_empty() || name.is_empty() {
                    f.invalid(
                        &p,
                        g.as_str(),
                        "the namespace and the name of a gateway reference must not be empty",
                    );
                }
                if !is_istio_label(ns) {
                    f.invalid(
                        &p,
                        g.as_str(),
                        format!("namespace part {ns:?} must be an RFC 1123 label"),
                    );
                }
                if !is_istio_label(name) {
                    f.invalid(
                        &p,
                        g.as_str(),
                        format!("name part {name:?} must be an RFC 1123 label"),
                    );
                }
            }
        }
    }
}

/// A rule's kind in Istio: a root rule delegates, a delegate rule belongs to a VirtualService
/// without hosts, an independent rule is neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleKind {
    Independent,
    Root,
    Delegate,
}

fn check_conflicts(f: &mut Findings, p: &FieldPath, r: &HttpRoute, kind: RuleKind) {
    let has_route = !r.route.is_empty();
    let conflict = |f: &mut Findings, field: &str, other: &str| {
        f.forbidden(
            &p.field(field),
            format!("{field} may not be combined with {other}"),
        );
    };
    if kind == RuleKind::Root {
        // Istio checks nothing else of a rule that delegates: the delegate's rules act.
        if r.redirect.is_some() {
            conflict(f, "delegate", "redirect");
        }
        if has_route {
            conflict(f, "delegate", "route");
        }
        return;
    }
    if kind == RuleKind::Delegate && r.delegate.is_some() {
        f.forbidden(
            &p.field("delegate"),
            "only one level of delegation is allowed: a delegate VirtualService (no hosts) may not delegate again",
        );
    }
    if r.redirect.is_some() {
        for (other, set) in [
            ("route", has_route),
            ("fault", r.fault.is_some()),
            ("rewrite", r.rewrite.is_some()),
            ("directResponse", r.direct_response.is_some()),
        ] {
            if set {
                conflict(f, "redirect", other);
            }
        }
    } else if r.direct_response.is_some() {
        for (other, set) in [
            ("route", has_route),
            ("fault", r.fault.is_some()),
            ("rewrite", r.rewrite.is_some()),
        ] {
            if set {
                conflict(f, "directResponse", other);
            }
        }
    } else if !has_route {
        f.required(p, "one of route, redirect, directResponse or delegate");
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        conflict(f, "mirrors", "mirror");
    }
}

fn check_http_route(f: &mut Findings, p: &FieldPath, r: &HttpRoute, in_delegate_vs: bool) {
    let kind = if in_delegate_vs {
        RuleKind::Delegate
    } else if r.delegate.is_some() {
        RuleKind::Root
    } else {
        RuleKind::Independent
    };
    check_conflicts(f, p, r, kind);

    if let Some(d) = &r.delegate {
        let dp = p.field("delegate");
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
    if let Some(h) = &r.headers {
        check_headers(f, &p.field("headers"), h);
    }
    if let Some(c) = &r.cors_policy {
        check_cors(f, &p.field("corsPolicy"), c);
    }
    if let Some(fi) = &r.fault {
        check_fault(f, &p.field("fault"), fi);
    }
    if let Some(pc) = r.mirror_percent {
        let pp = p.field("mirrorPercent");
        if pc < 0 {
            f.invalid(&pp, &pc, "must be >= 0");
        } else if pc > 100 {
            f.invalid(&pp, &pc, "must be at most 100");
        }
        f.warn(&pp, "deprecated: use mirrorPercentage");
    }
    if let Some(pc) = &r.mirror_percentage {
        check_mirror_percentage(f, &p.field("mirrorPercentage"), pc);
    }
    if let Some(m) = &r.mirror {
        check_destination(f, &p.field("mirror"), m);
    }
    for (k, m) in r.mirrors.iter().enumerate() {
        let mp = p.field("mirrors").index(k);
        match &m.destination {
            Some(d) => check_destination(f, &mp.field("destination"), d),
            None => f.required(&mp.field("destination"), "a destination to mirror to"),
        }
        if let Some(pc) = &m.percentage {
            check_mirror_percentage(f, &mp.field("percentage"), pc);
        }
    }
    if let Some(rd) = &r.redirect {
        check_redirect(f, &p.field("redirect"), rd, &r.match_, &mp);
    }
    if let Some(d) = &r.direct_response {
        check_direct_response(f, &p.field("directResponse"), d);
    }
    if let Some(rt) = &r.retries {
        check_retries(f, &p.field("retries"), rt);
    }
    if let Some(rw) = &r.rewrite {
        check_rewrite(f, &p.field("rewrite"), rw);
    }
    check_authority_once(f, p, r.rewrite.as_deref(), r.headers.as_deref());

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
        if let Some(h) = &d.headers {
            check_headers(f, &dp.field("headers"), h);
        }
        if let Some(w) = d.weight {
            check_i32_count(f, &dp.field("weight"), w);
        }
    }
    check_total_weight(f, &rp, r.route.iter().map(|d| d.weight));
    if let Some(t) = &r.timeout {
        check_duration(f, &p.field("timeout"), t, false);
    }
}

/// Mirror percentages: Istio checks only the range (no minimum above 0, unlike fault percentages).
fn check_mirror_percentage(f: &mut Findings, p: &FieldPath, pc: &Percent) {
    if !(0.0..=100.0).contains(&pc.value) {
        f.invalid(
            &p.field("value"),
            &pc.value,
            "must be between 0 and 100, inclusive",
        );
    }
}

/// A fault percentage: 0, or within [0.0001, 100].
fn check_fault_percentage(f: &mut Findings, p: &FieldPath, pc: &Percent) {
    let v = pc.value;
    let vp = p.field("value");
    if !(0.0..=100.0).contains(&v) {
        f.invalid(&vp, &v, "must be between 0 and 100, inclusive");
    } else if v > 0.0 && v < 0.0001 {
        f.invalid(&vp, &v, "must be 0 or at least 0.0001");
    }
}

fn check_http_match(f: &mut Findings, p: &FieldPath, m: &HttpMatchRequest) {
    for (field, rule, map) in [
        ("headers", MatchRule::Value, &m.headers),
        (
            "withoutHeaders",
            MatchRule::WithoutHeader,
            &m.without_headers,
        ),
    ] {
        for (name, sm) in map {
            let kp = p.field(field).key(name);
            check_match_header_name(f, &kp, name);
            check_string_match(f, &kp, sm, rule);
        }
    }
    if let Some(sm) = &m.uri {
        check_string_match(f, &p.field("uri"), sm, MatchRule::Uri);
    }
    for (name, sm) in [
        ("scheme", m.scheme.as_deref()),
        ("method", m.method.as_deref()),
        ("authority", m.authority.as_deref()),
    ] {
        if let Some(sm) = sm {
            check_string_match(f, &p.field(name), sm, MatchRule::Value);
        }
    }
    for (name, sm) in &m.query_params {
        let kp = p.field("queryParams").key(name);
        if name.is_empty() {
            f.invalid(
                &kp,
                name.as_str(),
                "a query parameter name must not be empty",
            );
        }
        check_string_match(f, &kp, sm, MatchRule::Value);
    }
    if let Some(port) = m.port.filter(|&n| n != 0) {
        check_port(f, &p.field("port"), port);
    }
    if !m.source_labels.is_empty() {
        check_labels(f, &p.field("sourceLabels"), &m.source_labels);
        f.warn(
            &p.field("sourceLabels"),
            format!("selects the gateway's own workload, which a standalone gateway does not have{NOT_ENFORCED}"),
        );
    }
    check_gateway_refs(f, &p.field("gateways"), &m.gateways);
    if let Some(ns) = &m.source_namespace {
        if !is_istio_label(ns) {
            f.invalid(
                &p.field("sourceNamespace"),
                ns.as_str(),
                "must be an RFC 1123 label",
            );
        }
        f.warn(
            &p.field("sourceNamespace"),
            format!("selects the gateway's own namespace, which a standalone gateway does not have{NOT_ENFORCED}"),
        );
    }
}

/// Istio's `ValidateHTTPHeaderNameOrJwtClaimRoute`: an HTTP token (either case), a pseudo-header,
/// or a JWT claim.
fn check_match_header_name(f: &mut Findings, p: &FieldPath, name: &str) {
    if name.is_empty() {
        f.invalid(p, name, "a header name must not be empty");
    } else if is_jwt_claim(name) {
        // Evaluated on the verified JWT, after RequestAuthentication.
    } else if PSEUDO_HEADERS.contains(&name) {
        f.warn(
            p,
            format!("the gateway does not match pseudo-headers{NOT_ENFORCED}"),
        );
    } else if !is_token(name) {
        f.invalid(
            p,
            name,
            "must be a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
        );
    } else if matches!(
        name.to_ascii_lowercase().as_str(),
        "uri" | "scheme" | "method" | "authority"
    ) {
        f.warn(
            p,
            format!(
                "ignored: a header named {name:?} is not matched; use match.{} instead",
                name.to_ascii_lowercase()
            ),
        );
    }
}

/// A destination: host required, a (wildcard) domain other than `*`; subset a label; port valid.
fn check_destination(f: &mut Findings, p: &FieldPath, d: &Destination) {
    let hp = p.field("host");
    if d.host.is_empty() {
        f.required(
            &hp,
            "the host to send to (a ServiceEntry host, a DNS name or an IP)",
        );
    } else if d.host == "*" {
        f.invalid(&hp, d.host.as_str(), "a destination host may not be \"*\"");
    } else if is_ip(&d.host) {
        f.warn(
            &hp,
            "an IP address: Istio accepts only host names here; this gateway connects to the address directly",
        );
    } else if let Err(e) = check_wildcard_domain(&d.host) {
        f.invalid(&hp, d.host.as_str(), e);
    }
    if let Some(s) = &d.subset {
        if !s.is_empty() && !is_istio_label(s) {
            f.invalid(
                &p.field("subset"),
                s.as_str(),
                "a subset name must be an RFC 1123 label",
            );
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

/// Istio's `ValidateHTTPHeaderWithAuthorityOperationName` (request set/add: the authority may be
/// set, as `host` or `:authority`) and `ValidateHTTPHeaderOperationName` (everything else: no
/// `host`, no pseudo-header); values are Envoy header values.
fn check_header_ops(f: &mut Findings, p: &FieldPath, ops: &HeaderOperations, is_request: bool) {
    for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in map {
            let kp = p.field(op).key(name);
            check_header_op_name(f, &kp, name, is_request);
            check_header_value_format(f, &kp, value);
            if value.contains('%') && envoy_header_formatter(value).is_ok() {
                f.warn(
                    &kp,
                    format!("Envoy header formatters (%VARIABLE%, %%) are sent as written{NOT_ENFORCED}"),
                );
            }
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        check_header_op_name(f, &p.field("remove").index(i), name, false);
    }
}

fn check_header_op_name(f: &mut Findings, p: &FieldPath, name: &str, authority_ok: bool) {
    let is_authority = name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host");
    if name.is_empty() {
        f.invalid(p, name, "a header name must not be empty");
    } else if is_authority && authority_ok {
        if name.starts_with(':') {
            f.warn(
                p,
                format!("setting :authority rewrites the authority in Istio; here it is not applied (use rewrite.authority){NOT_ENFORCED}"),
            );
        }
    } else if name.eq_ignore_ascii_case("host") {
        f.forbidden(
            p,
            "the host header may only be changed by request set/add or rewrite.authority",
        );
    } else if name.starts_with(':') {
        f.forbidden(p, format!("pseudo-header {name:?} may not be modified"));
    } else if !is_token(name) {
        f.invalid(
            p,
            name,
            "must be a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
        );
    }
}

/// Istio's `validateAuthorityRewrite`: the authority is set once, by `rewrite.authority` or a rule
/// level request `set`/`add` of `host` or `:authority` (an empty value sets nothing, but a later
/// one may replace it).
fn check_authority_once(
    f: &mut Findings,
    route: &FieldPath,
    rewrite: Option<&HttpRewrite>,
    headers: Option<&Headers>,
) {
    let mut current: Option<(FieldPath, &str)> = rewrite
        .and_then(|rw| rw.authority.as_deref())
        .map(|a| (route.field("rewrite").field("authority"), a));
    let Some(req) = headers.and_then(|h| h.request.as_ref()) else {
        return;
    };
    let hp = route.field("headers").field("request");
    for (op, map) in [("set", &req.set), ("add", &req.add)] {
        for (name, value) in map {
            if !name.eq_ignore_ascii_case("host") && !name.eq_ignore_ascii_case(":authority") {
                continue;
            }
            let here = hp.field(op).key(name);
            if let Some((first, v)) = &current {
                if !v.is_empty() {
                    f.forbidden(
                        &here,
                        format!("the authority may be set only once; it is already set by {first}"),
                    );
                    continue;
                }
            }
            current = Some((here, value.as_str()));
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
    if let Some(code) = r.redirect_code {
        if code != 0 && !(300..=399).contains(&code) {
            f.invalid(
                &p.field("redirectCode"),
                &code,
                "must be a redirect status code between 300 and 399",
            );
        }
    }
    if let Some(s) = &r.scheme {
        if !s.is_empty() && s != "http" && s != "https" {
            f.not_supported(&p.field("scheme"), s.as_str(), &["http", "https"]);
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
    if let Some(b) = &d.body {
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

/// Istio's `ValidateHTTPRetry`.
fn check_retries(f: &mut Findings, p: &FieldPath, r: &HttpRetry) {
    check_i32_count(f, &p.field("attempts"), r.attempts);
    if r.attempts == 0 {
        for (name, set) in [
            ("perTryTimeout", r.per_try_timeout.is_some()),
            ("retryOn", non_empty(&r.retry_on)),
            ("retryRemoteLocalities", r.retry_remote_localities.is_some()),
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
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.is_empty()) {
        // Istio neither trims nor skips empty items: " 5xx" and "5xx," are refused.
        for policy in on.split(',') {
            if RETRY_ON.contains(&policy) || is_known_status_code(policy) {
                continue;
            }
            let list = RETRY_ON
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            f.not_supported_text(
                &p.field("retryOn"),
                policy,
                format!("{list}, or an HTTP status code such as \"503\""),
            );
        }
    }
    if let Some(d) = &r.backoff {
        check_duration(f, &p.field("backoff"), d, false);
    }
}

/// A `retryOn` item that Go's `strconv.Atoi` reads as a status code `net/http` has a name for.
fn is_known_status_code(t: &str) -> bool {
    t.parse::<i64>()
        .is_ok_and(|c| KNOWN_STATUS_CODES.contains(&c))
}

fn check_fault(f: &mut Findings, p: &FieldPath, fi: &HttpFaultInjection) {
    if fi.delay.is_none() && fi.abort.is_none() {
        f.required(p, "at least one of delay or abort");
    }
    if let Some(a) = &fi.abort {
        let ap = p.field("abort");
        if let Some(pc) = &a.percentage {
            check_fault_percentage(f, &ap.field("percentage"), pc);
        }
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
            f.warn(
                &ap,
                "abort configured, but no error type (httpStatus or grpcStatus): no request is aborted",
            );
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
        if let Some(s) = a.http_status {
            if !(200..=600).contains(&s) {
                f.invalid(
                    &ap.field("httpStatus"),
                    &s,
                    "must be between 200 and 600, inclusive",
                );
            }
        }
    }
    if let Some(d) = &fi.delay {
        let dp = p.field("delay");
        if let Some(pc) = &d.percentage {
            check_fault_percentage(f, &dp.field("percentage"), pc);
        }
        if let Some(pc) = d.percent {
            let pp = dp.field("percent");
            if !(0..=100).contains(&pc) {
                f.invalid(&pp, &pc, "must be between 0 and 100, inclusive");
            }
            f.warn(&pp, "deprecated: use percentage");
        }
        if d.fixed_delay.is_some() && d.exponential_delay.is_some() {
            f.forbidden(
                &dp.field("exponentialDelay"),
                "exponentialDelay may not be combined with fixedDelay",
            );
        }
        if let Some(x) = &d.fixed_delay {
            check_duration(f, &dp.field("fixedDelay"), x, false);
        }
        if let Some(x) = &d.exponential_delay {
            check_duration(f, &dp.field("exponentialDelay"), x, false);
            f.forbidden(
                &dp.field("exponentialDelay"),
                "exponentialDelay is not supported; use fixedDelay",
            );
        }
    }
}

fn check_cors(f: &mut Findings, p: &FieldPath, c: &CorsPolicy) {
    if !c.allow_origin.is_empty() {
        f.warn(&p.field("allowOrigin"), "deprecated: use allowOrigins");
    }
    for (k, o) in c.allow_origins.iter().enumerate() {
        check_string_match(
            f,
            &p.field("allowOrigins").index(k),
            o,
            MatchRule::CorsOrigin,
        );
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
    gateways: &[String],
) {
    for (k, s) in subnets.iter().enumerate() {
        if let Err(e) = check_ip_or_cidr(s) {
            f.invalid(&p.field("destinationSubnets").index(k), s.as_str(), e);
        }
    }
    if let Some(port) = port.filter(|&n| n != 0) {
        check_port(f, &p.field("port"), port);
    }
    if !source_labels.is_empty() {
        check_labels(f, &p.field("sourceLabels"), source_labels);
        f.warn(
            &p.field("sourceLabels"),
            format!("selects the gateway's own workload, which a standalone gateway does not have{NOT_ENFORCED}"),
        );
    }
    check_gateway_refs(f, &p.field("gateways"), gateways);
}

/// Istio's `validateTLSRoute`: matches with SNI hosts that the VirtualService hosts cover.
fn check_tls_route(
    f: &mut Findings,
    p: &FieldPath,
    r: &TlsRoute,
    hosts: &[String],
    at_gateway: bool,
) {
    if r.match_.is_empty() {
        f.required(&p.field("match"), "at least one match with sniHosts");
    }
    let index = HostIndex::new(hosts.iter().map(String::as_str));
    for (j, m) in r.match_.iter().enumerate() {
        let mp = p.field("match").index(j);
        if m.sni_hosts.is_empty() {
            f.required(&mp.field("sniHosts"), "at least one SNI host");
        }
        for (k, sni) in m.sni_hosts.iter().enumerate() {
            let sp = mp.field("sniHosts").index(k);
            let checked = if at_gateway {
                check_gateway_host(true, sni)
            } else {
                check_wildcard_domain(sni)
            };
            if let Err(e) = checked {
                if is_ip(sni) {
                    f.warn(
                        &sp,
                        "an IP address is never sent as SNI (RFC 6066); most clients do not support this",
                    );
                } else {
                    f.invalid(&sp, sni.as_str(), e);
                }
                continue;
            }
            if index.covering(sni).is_empty() {
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
            &m.gateways,
        );
    }
    check_route_destinations(f, &p.field("route"), &r.route);
}

fn check_tcp_route(f: &mut Findings, p: &FieldPath, r: &TcpRoute) {
    for (j, m) in r.match_.iter().enumerate() {
        check_l4_match(
            f,
            &p.field("match").index(j),
            &m.destination_subnets,
            m.port,
            &m.source_labels,
            &m.gateways,
        );
        if let Some(ns) = &m.source_namespace {
            if !is_istio_label(ns) {
                f.invalid(
                    &p.field("match").index(j).field("sourceNamespace"),
                    ns.as_str(),
                    "must be an RFC 1123 label",
                );
            }
        }
    }
    check_route_destinations(f, &p.field("route"), &r.route);
}

/// A match entry as Istio compares them (`asJSON`): the whole entry but its name; a port of 0 is
/// no port.
fn json_key<T: serde::Serialize>(m: &T) -> String {
    let Ok(mut v) = serde_json::to_value(m) else {
        return String::new();
    };
    if let Some(o) = v.as_object_mut() {
        o.remove("name");
        if o.get("port").and_then(serde_json::Value::as_i64) == Some(0) {
            o.remove("port");
        }
    }
    v.to_string()
}

/// What Istio's overlap analysis (`genMatchHTTPRoutes`) keeps of a match entry with a non-empty
/// `uri.prefix`: every condition as `exact:<v>`, `prefix:<v>` or "" (a regex), a missing method
/// reading as `exact:GET`.
struct PrefixEntry {
    path: FieldPath,
    prefix: String,
    port: i64,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query_params: BTreeMap<String, String>,
    without_headers: BTreeMap<String, String>,
}

fn exact_or_prefix(m: Option<&StringMatch>) -> String {
    let Some(m) = m else {
        return String::new();
    };
    match (m.exact.as_deref(), m.prefix.as_deref()) {
        (Some(e), _) if !e.is_empty() => format!("exact:{e}"),
        (_, Some(p)) if !p.is_empty() => format!("prefix:{p}"),
        _ => String::new(),
    }
}

fn prefix_entry(path: FieldPath, m: &HttpMatchRequest) -> Option<PrefixEntry> {
    let prefix = m
        .uri
        .as_ref()?
        .prefix
        .as_deref()
        .filter(|p| !p.is_empty())?;
    let map = |mm: &BTreeMap<String, StringMatch>| {
        mm.iter()
            .map(|(k, v)| (k.clone(), exact_or_prefix(Some(v))))
            .collect::<BTreeMap<_, _>>()
    };
    let method = match exact_or_prefix(m.method.as_deref()) {
        s if s.is_empty() => "exact:GET".to_string(),
        s => s,
    };
    Some(PrefixEntry {
        path,
        prefix: prefix.to_string(),
        port: m.port.unwrap_or(0),
        method,
        authority: exact_or_prefix(m.authority.as_deref()),
        headers: map(&m.headers),
        query_params: map(&m.query_params),
        without_headers: map(&m.without_headers),
    })
}

/// Istio's `coveredValidation`: whether the earlier entry `a` takes every request of `b`, in
/// Istio's approximation (a condition of `a` covers `b`'s when equal, or when `a`'s text starts with
/// `b`'s).
fn covers(a: &PrefixEntry, b: &PrefixEntry) -> bool {
    let cond = |x: &str, y: &str| x == y || x.starts_with(y);
    let maps = |x: &BTreeMap<String, String>, y: &BTreeMap<String, String>| {
        x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| cond(v, w)))
    };
    b.prefix.starts_with(&a.prefix)
        && a.port == b.port
        && cond(&a.method, &b.method)
        && cond(&a.authority, &b.authority)
        && maps(&a.headers, &b.headers)
        && maps(&a.query_params, &b.query_params)
        && maps(&a.without_headers, &b.without_headers)
}

/// Istio's `analyzeUnreachableHTTPRules`: rules after a rule without match, match entries equal to
/// an earlier one, and prefix matches an earlier prefix match covers. A gateway (Istio's and this
/// one) tries rules without match and `prefix: /` matches last, so those two warnings are about
/// Istio's reading, not this gateway's routing; the message says so.
fn check_http_reachability(f: &mut Findings, p: &FieldPath, rules: &[HttpRoute]) {
    let mut seen: HashMap<String, FieldPath> = HashMap::new();
    let mut no_match: Option<usize> = None;
    let mut prefixes: Vec<PrefixEntry> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let rp = p.index(i);
        if r.match_.is_empty() {
            if let Some(e) = no_match {
                f.warn(
                    &rp,
                    format!("rule is never used: only the last rule may have no match, and {} has none either", p.index(e)),
                );
            }
            no_match = Some(i);
            continue;
        }
        if let Some(e) = no_match {
            f.warn(
                &rp,
                format!(
                    "rule is never used: {} before it has no match and takes every request",
                    p.index(e)
                ),
            );
            continue;
        }
        let mut duplicates = 0;
        for (j, m) in r.match_.iter().enumerate() {
            let mp = rp.field("match").index(j);
            let key = json_key(m);
            if let Some(first) = seen.get(&key) {
                f.warn(&mp, format!("match is never used: same as {first}"));
                duplicates += 1;
                continue;
            }
            seen.insert(key, mp.clone());
            if let Some(e) = prefix_entry(mp, m) {
                prefixes.push(e);
            }
        }
        if duplicates == r.match_.len() {
            f.warn(
                &rp,
                "rule is never used: every match is the same as an earlier one",
            );
        }
    }
    check_prefix_overlaps(f, &prefixes);
}

/// Istio's pairwise overlap analysis, without comparing every pair: an entry can only be covered
/// by an earlier one whose prefix starts its own, so only the entries with each shorter prefix of
/// it are looked at. One warning per covered entry (Istio repeats it for every entry covering it).
fn check_prefix_overlaps(f: &mut Findings, prefixes: &[PrefixEntry]) {
    let mut by_prefix: HashMap<&str, Vec<usize>> = HashMap::new();
    for (k, e) in prefixes.iter().enumerate() {
        by_prefix.entry(e.prefix.as_str()).or_default().push(k);
    }
    for (k, b) in prefixes.iter().enumerate() {
        let shorter = b
            .prefix
            .char_indices()
            .skip(1)
            .map(|(at, _)| &b.prefix[..at]);
        let coverer = shorter
            .filter_map(|p| by_prefix.get(p))
            .flat_map(|ix| ix.iter().copied().take_while(|&i| i < k))
            .filter(|&i| covers(&prefixes[i], b))
            .min();
        let Some(i) = coverer else { continue };
        let a = &prefixes[i];
        f.warn(
            &b.path,
            format!(
                "match is never used: uri prefix {:?} is covered by prefix {:?} of {}",
                b.prefix, a.prefix, a.path
            ),
        );
    }
}

/// Istio's `analyzeUnreachableTCPRules` and `analyzeUnreachableTLSRules`, on each rule's match
/// entries as compared by [`json_key`].
fn check_l4_reachability(f: &mut Findings, p: &FieldPath, rules: &[Vec<String>]) {
    let mut seen: HashMap<&str, FieldPath> = HashMap::new();
    let mut no_match: Option<usize> = None;
    for (i, keys) in rules.iter().enumerate() {
        let rp = p.index(i);
        if keys.is_empty() {
            if let Some(e) = no_match {
                f.warn(
                    &rp,
                    format!("rule is never used: only the last rule may have no match, and {} has none either", p.index(e)),
                );
            }
            no_match = Some(i);
            continue;
        }
        if let Some(e) = no_match {
            f.warn(
                &rp,
                format!(
                    "rule is never used: {} before it has no match and takes every connection",
                    p.index(e)
                ),
            );
            continue;
        }
        let mut duplicates = 0;
        for (j, key) in keys.iter().enumerate() {
            let mp = rp.field("match").index(j);
            match seen.get(key.as_str()) {
                Some(first) => {
                    f.warn(&mp, format!("match is never used: same as {first}"));
                    duplicates += 1;
                }
                None => {
                    seen.insert(key, mp);
                }
            }
        }
        if duplicates == keys.len() {
            f.warn(
                &rp,
                "rule is never used: every match is the same as an earlier one",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! The body size rules, whose cases are too big for golden files, and the Envoy formatter.
    use super::{BODY_MAX, BODY_WARN};
    use crate::resource::resource_from_value;
    use crate::validate::common::envoy_header_formatter;
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

    #[test]
    fn envoy_header_formatters() {
        for ok in [
            "",
            "plain",
            "100%%",
            "%HOSTNAME%",
            "a %REQ(x-foo)% b",
            "%REQ([\"a\", \"b\"])%",
            "%DOWNSTREAM_PEER_CERT_V_END(%b %d %H:%M:%S %Y %Z)%",
        ] {
            assert_eq!(envoy_header_formatter(ok), Ok(()), "{ok}");
        }
        for bad in [
            "%",
            "abc%123",
            "%START_TIME%%",
            "%REQ([x])%",
            "%REQ([\"a\" x])%",
            "%REQ([\"a\"] x)%",
            "%REQ(a) x%",
            "%REQ(\\",
        ] {
            assert!(envoy_header_formatter(bad).is_err(), "{bad}");
        }
    }
}
