//! One VirtualService `http` rule compiled once into a template: matches, action, header
//! operations, timeout, retries, fault, mirrors and CORS. What depends on where the rule is served
//! (which gateway, which listener port) is left open and filled in by `vhosts`. Anything that
//! cannot be compiled is skipped with a warning naming its field; a condition that cannot be
//! compiled removes its whole match entry, so that a rule never matches more than written.

use super::clusters::{port_u16, Registry};
use super::diag::{Diag, Problem};
use super::hosts::resolve_gateway_ref;
use crate::ir::{
    bytes_body, AbortKind, ClaimMatch, Cors, DirectResponse, Fault, FaultAbort, FaultDelay,
    HeaderMatch, HeaderOps, Matcher, QueryMatch, Redirect, RedirectPort, RegexRewrite, RetryPolicy,
    Rewrite, RouteMatch,
};
use crate::resource::{
    CorsPolicy, Destination, HeaderOperations, HttpFaultInjection, HttpMatchRequest, HttpRedirect,
    HttpRetry, HttpRoute, Percent, RedirectPortSelection, ResourceKey, StringMatch,
    UnmatchedPreflights, VirtualService,
};
use std::sync::Arc;
use std::time::Duration;

/// A compiled rule, not yet bound to a gateway or a listener.
#[derive(Debug)]
pub(crate) struct RuleTemplate {
    pub index: usize,
    /// `vs/<ns>/<name>/http/<i>`.
    pub id: String,
    /// `false` when the rule has no `match` at all (it matches everything).
    pub has_match: bool,
    pub entries: Vec<EntryTemplate>,
    pub action: ActionTemplate,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub timeout: Option<Duration>,
    /// `None`: Istio's default policy, built per route rather than cloned (it allocates).
    pub retries: Option<RetryPolicy>,
    pub fault: Option<Fault>,
    pub mirrors: Vec<DestTemplate>,
    pub cors: Option<crate::ir::Cors>,
}

/// One `match` entry.
#[derive(Debug)]
pub(crate) struct EntryTemplate {
    /// `None` when a condition could not be compiled: the entry never matches.
    pub compiled: Option<RouteMatch>,
    /// Per-match `gateways` as (index in the list, `ns/name`), `mesh` dropped; `None` inherits
    /// the VirtualService's.
    pub gateways: Option<Vec<(usize, String)>>,
    /// Istio's catch-all: no condition but a uri prefix `/` or regex `.*` (or none at all).
    pub catch_all: bool,
}

#[derive(Debug)]
pub(crate) enum ActionTemplate {
    Forward {
        destinations: Vec<DestTemplate>,
        total_weight: u32,
        rewrite: Option<Rewrite>,
    },
    Redirect(Redirect),
    Direct(DirectResponse),
}

/// A destination (or mirror) whose port may still be the listener's.
#[derive(Debug)]
pub(crate) struct DestTemplate {
    /// As written (metrics label).
    pub host: String,
    /// Lowercased: cluster identity.
    pub host_key: String,
    pub subset: Option<String>,
    /// `None`: the port of the listener the route is served on.
    pub port: Option<u16>,
    /// Why there is no cluster (a subset no DestinationRule defines).
    pub no_cluster: Option<String>,
    pub weight: u32,
    /// Mirrors only, 0..=100.
    pub percent: f64,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

impl RuleTemplate {
    /// Whether instantiating this rule needs the listener port (a destination without one).
    pub(crate) fn needs_listener_port(&self) -> bool {
        let dests = match &self.action {
            ActionTemplate::Forward { destinations, .. } => destinations.as_slice(),
            _ => &[],
        };
        dests.iter().chain(&self.mirrors).any(|d| d.port.is_none())
    }
}

/// Where problems go while compiling one VirtualService.
pub(crate) struct Sink<'d> {
    pub diag: &'d mut Diag,
    pub key: &'d ResourceKey,
}

impl Sink<'_> {
    fn part(&mut self, field: &str, msg: &str) {
        self.diag.push(self.key, Problem::Part, field, msg);
    }
    fn reference(&mut self, reason: &'static str, field: &str, msg: &str) {
        self.diag.push(self.key, Problem::Ref(reason), field, msg);
    }
}

/// Compiles `spec.http[i]`; `None` when it has nothing the gateway can do.
pub(crate) fn compile_rule(
    vs: &VirtualService,
    index: usize,
    rule: &HttpRoute,
    reg: &Registry<'_>,
    sink: &mut Sink<'_>,
) -> Option<RuleTemplate> {
    let ns = vs.metadata.namespace();
    let path = format!("spec.http[{index}]");
    let action = if let Some(r) = &rule.redirect {
        ActionTemplate::Redirect(redirect(r))
    } else if let Some(d) = &rule.direct_response {
        ActionTemplate::Direct(direct(d, &format!("{path}.directResponse"), sink))
    } else if !rule.route.is_empty() {
        let mut destinations = Vec::new();
        for (j, rd) in rule.route.iter().enumerate() {
            let dpath = format!("{path}.route[{j}]");
            let Some(d) = &rd.destination else {
                sink.part(&dpath, "destination is required; entry skipped");
                continue;
            };
            let Some(mut t) = destination(d, &format!("{dpath}.destination"), reg, sink) else {
                continue;
            };
            t.weight = rd
                .weight
                .map_or(0, |w| u32::try_from(w.max(0)).unwrap_or(u32::MAX));
            if let Some(h) = &rd.headers {
                t.request_headers = header_ops(
                    h.request.as_ref(),
                    &format!("{dpath}.headers.request"),
                    sink,
                );
                t.response_headers = header_ops(
                    h.response.as_ref(),
                    &format!("{dpath}.headers.response"),
                    sink,
                );
            }
            destinations.push(t);
        }
        if destinations.is_empty() {
            sink.part(&path, "no usable destination; rule skipped");
            return None;
        }
        let total_weight = normalize_weights(&mut destinations);
        let rewrite = rule
            .rewrite
            .as_ref()
            .and_then(|rw| rewrite(rw, &format!("{path}.rewrite"), sink));
        ActionTemplate::Forward {
            destinations,
            total_weight,
            rewrite,
        }
    } else if rule.delegate.is_some() {
        sink.part(
            &format!("{path}.delegate"),
            "delegation is not supported; rule skipped",
        );
        return None;
    } else {
        sink.part(&path, "no route, redirect or directResponse; rule skipped");
        return None;
    };

    let entries: Vec<EntryTemplate> = rule
        .match_
        .iter()
        .enumerate()
        .map(|(k, m)| entry(m, ns, &format!("{path}.match[{k}]"), sink))
        .collect();

    let (request_headers, response_headers) = match &rule.headers {
        Some(h) => (
            header_ops(h.request.as_ref(), &format!("{path}.headers.request"), sink),
            header_ops(
                h.response.as_ref(),
                &format!("{path}.headers.response"),
                sink,
            ),
        ),
        None => Default::default(),
    };

    let timeout = rule.timeout.as_ref().and_then(|t| match t.parse() {
        Ok(d) if d.is_zero() => None,
        Ok(d) => Some(d),
        Err(e) => {
            sink.part(
                &format!("{path}.timeout"),
                &format!("{e}; no timeout applied"),
            );
            None
        }
    });

    let retries = rule
        .retries
        .as_ref()
        .map(|r| retries(r, &format!("{path}.retries"), sink));

    let fault = rule
        .fault
        .as_ref()
        .and_then(|f| fault(f, &format!("{path}.fault"), sink));

    let mut mirrors = Vec::new();
    if let Some(m) = &rule.mirror {
        let pct = match (&rule.mirror_percentage, rule.mirror_percent) {
            (Some(p), _) => percent(Some(p)),
            (None, Some(n)) => clamp_percent(n as f64),
            (None, None) => 100.0,
        };
        if let Some(mut t) = destination(m, &format!("{path}.mirror"), reg, sink) {
            t.percent = pct;
            mirrors.push(t);
        }
    }
    for (k, mp) in rule.mirrors.iter().enumerate() {
        let mpath = format!("{path}.mirrors[{k}]");
        let Some(d) = &mp.destination else {
            sink.part(&mpath, "destination is required; mirror skipped");
            continue;
        };
        if let Some(mut t) = destination(d, &format!("{mpath}.destination"), reg, sink) {
            t.percent = mp.percentage.as_ref().map_or(100.0, |p| percent(Some(p)));
            mirrors.push(t);
        }
    }

    let cors = rule
        .cors_policy
        .as_ref()
        .map(|c| cors(c, &format!("{path}.corsPolicy"), sink));

    Some(RuleTemplate {
        index,
        id: format!("vs/{}/{}/http/{index}", ns, vs.metadata.name),
        has_match: !rule.match_.is_empty(),
        entries,
        action,
        request_headers,
        response_headers,
        timeout,
        retries,
        fault,
        mirrors,
        cors,
    })
}

/// One destination: port and subset resolved as far as they can be without a listener.
pub(crate) fn destination(
    d: &Destination,
    path: &str,
    reg: &Registry<'_>,
    sink: &mut Sink<'_>,
) -> Option<DestTemplate> {
    let host_key = d.host.trim().to_ascii_lowercase();
    if host_key.is_empty() || host_key.contains('*') {
        sink.part(
            &format!("{path}.host"),
            &format!("host {:?} cannot be sent to; destination skipped", d.host),
        );
        return None;
    }
    let port = match d.port.as_ref().map(|p| p.number) {
        Some(n) => match port_u16(n) {
            Some(p) => Some(p),
            None => {
                sink.part(
                    &format!("{path}.port.number"),
                    &format!("invalid port {n}; the default port applies"),
                );
                reg.implicit_port(&host_key)
            }
        },
        None => reg.implicit_port(&host_key),
    };
    let subset = d.subset.clone().filter(|s| !s.is_empty());
    let mut no_cluster = None;
    if let Some(s) = &subset {
        match reg.rule_for(&host_key).and_then(|r| r.subset(s)) {
            None => {
                let msg = format!(
                    "subset {s:?} of host {:?} is defined by no DestinationRule",
                    d.host
                );
                sink.reference("SubsetNotFound", &format!("{path}.subset"), &msg);
                no_cluster = Some(msg);
            }
            Some(def) => {
                if let Some(why) = reg.subset_emptiness(&host_key, def) {
                    sink.reference(
                        "NoEndpoints",
                        &format!("{path}.subset"),
                        &format!(
                            "subset {s:?} of host {:?} selects no endpoint: {why}",
                            d.host
                        ),
                    );
                }
            }
        }
    }
    Some(DestTemplate {
        host: d.host.clone(),
        host_key,
        subset,
        port,
        no_cluster,
        weight: 0,
        percent: 100.0,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    })
}

/// One destination takes everything whatever its weight; several keep theirs (0 gets nothing).
/// Returns the total, never 0.
pub(crate) fn normalize_weights(dests: &mut [DestTemplate]) -> u32 {
    if let [only] = dests {
        only.weight = 1;
        return 1;
    }
    let sum: u64 = dests.iter().map(|d| u64::from(d.weight)).sum();
    if sum == 0 {
        // All zero is rejected by validation; split evenly rather than send nowhere.
        for d in dests.iter_mut() {
            d.weight = 1;
        }
        return u32::try_from(dests.len()).unwrap_or(u32::MAX);
    }
    if sum > u64::from(u32::MAX) {
        for d in dests.iter_mut() {
            d.weight =
                u32::try_from(u64::from(d.weight) * u64::from(u32::MAX) / sum).unwrap_or(u32::MAX);
        }
    }
    let total: u64 = dests.iter().map(|d| u64::from(d.weight)).sum();
    u32::try_from(total).unwrap_or(u32::MAX).max(1)
}

fn entry(m: &HttpMatchRequest, vs_ns: &str, path: &str, sink: &mut Sink<'_>) -> EntryTemplate {
    let gateways = (!m.gateways.is_empty()).then(|| {
        m.gateways
            .iter()
            .enumerate()
            .filter_map(|(j, g)| resolve_gateway_ref(g, vs_ns).map(|l| (j, l)))
            .collect::<Vec<_>>()
    });
    EntryTemplate {
        compiled: compile_match(m, path, sink),
        gateways,
        catch_all: m.is_catch_all(),
    }
}

fn compile_match(m: &HttpMatchRequest, path: &str, sink: &mut Sink<'_>) -> Option<RouteMatch> {
    let mut failed = false;
    let mut one =
        |sm: Option<&StringMatch>, field: &str, ignore_case: bool, sink: &mut Sink<'_>| {
            let sm = sm?;
            match string_matcher(sm, ignore_case) {
                Ok(m) => m,
                Err(e) => {
                    sink.part(
                        &format!("{path}.{field}"),
                        &format!("{e}; match entry skipped"),
                    );
                    failed = true;
                    None
                }
            }
        };
    let mut out = RouteMatch {
        uri: one(m.uri.as_ref(), "uri", m.ignore_uri_case, sink),
        scheme: one(m.scheme.as_deref(), "scheme", false, sink),
        method: one(m.method.as_deref(), "method", false, sink),
        authority: one(m.authority.as_deref(), "authority", false, sink),
        ..RouteMatch::default()
    };
    for (invert, field, map) in [
        (false, "headers", &m.headers),
        (true, "withoutHeaders", &m.without_headers),
    ] {
        for (name, sm) in map {
            let lname = name.to_ascii_lowercase();
            let hpath = format!("{path}.{field}[{name:?}]");
            if lname.starts_with('@') {
                let Some(path) = routing_claim(name) else {
                    sink.part(
                        &hpath,
                        "not a JWT claim (`@request.auth.claims.<name>` or `@request.auth.claims[<name>]`); match entry skipped",
                    );
                    failed = true;
                    continue;
                };
                match string_matcher(sm, false) {
                    Ok(matcher) => out.claims.push(ClaimMatch {
                        path,
                        matcher,
                        invert,
                    }),
                    Err(e) => {
                        sink.part(&hpath, &format!("{e}; match entry skipped"));
                        failed = true;
                    }
                }
                continue;
            }
            // Istio ignores these keys: they were once how uri/scheme/method/authority matched.
            if matches!(lname.as_str(), "uri" | "scheme" | "method" | "authority") {
                continue;
            }
            let matcher = if sm.regex.as_deref() == Some("*") {
                None
            } else {
                match string_matcher(sm, false) {
                    Ok(m) => m,
                    Err(e) => {
                        sink.part(&hpath, &format!("{e}; match entry skipped"));
                        failed = true;
                        None
                    }
                }
            };
            out.headers.push(HeaderMatch {
                name: lname,
                matcher,
                invert,
            });
        }
    }
    for (name, sm) in &m.query_params {
        match string_matcher(sm, false) {
            Ok(matcher) => out.query_params.push(QueryMatch {
                name: name.clone(),
                matcher,
            }),
            Err(e) => {
                sink.part(
                    &format!("{path}.queryParams[{name:?}]"),
                    &format!("{e}; match entry skipped"),
                );
                failed = true;
            }
        }
    }
    if let Some(p) = m.port {
        match port_u16(p) {
            Some(p) => out.port = Some(p),
            None => {
                sink.part(
                    &format!("{path}.port"),
                    &format!("invalid port {p}; match entry skipped"),
                );
                failed = true;
            }
        }
    }
    (!failed).then_some(out)
}

/// `Ok(None)` for an empty `{}` (no condition, or a presence test where that applies).
/// Istio's `jwt.ToRoutingClaim`: `@request.auth.claims.a.b` or `@request.auth.claims[a][b]` (the
/// prefix compared ignoring case) as the claim's path of names.
fn routing_claim(name: &str) -> Option<Vec<String>> {
    const PREFIX: &str = "@request.auth.claims";
    let head = name.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let rest = &name[PREFIX.len()..];
    if let Some(dotted) = rest.strip_prefix('.').filter(|r| !r.is_empty()) {
        return Some(dotted.split('.').map(str::to_string).collect());
    }
    let inner = rest.strip_prefix('[')?.strip_suffix(']')?;
    (!inner.is_empty()).then(|| inner.split("][").map(str::to_string).collect())
}

fn string_matcher(sm: &StringMatch, ignore_case: bool) -> Result<Option<Matcher>, String> {
    if let Some(v) = &sm.exact {
        return Ok(Some(Matcher::Exact {
            value: v.clone(),
            ignore_case,
        }));
    }
    if let Some(v) = &sm.prefix {
        return Ok(Some(Matcher::Prefix {
            value: v.clone(),
            ignore_case,
        }));
    }
    if let Some(r) = &sm.regex {
        return anchored(r).map(|re| Some(Matcher::Regex(re)));
    }
    Ok(None)
}

/// RE2 full-match semantics: the pattern must match the whole value.
pub(crate) fn anchored(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| format!("invalid regex {pattern:?}: {}", last_line(&e.to_string())))
}

/// The `regex` crate's error text ends with the one line that says what is wrong.
fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s).trim()
}

fn header_ops(ops: Option<&HeaderOperations>, path: &str, sink: &mut Sink<'_>) -> HeaderOps {
    let mut out = HeaderOps::default();
    let Some(ops) = ops else {
        return out;
    };
    let pair = |field: &str, name: &str, value: &str, sink: &mut Sink<'_>| {
        let p = format!("{path}.{field}[{name:?}]");
        let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) else {
            sink.part(&p, "invalid header name; skipped");
            return None;
        };
        let Ok(v) = http::HeaderValue::from_str(value) else {
            sink.part(&p, "invalid header value; skipped");
            return None;
        };
        Some((n, v))
    };
    for (k, v) in &ops.set {
        if let Some(p) = pair("set", k, v, sink) {
            out.set.push(p);
        }
    }
    for (k, v) in &ops.add {
        if let Some(p) = pair("add", k, v, sink) {
            out.add.push(p);
        }
    }
    for (i, k) in ops.remove.iter().enumerate() {
        match http::HeaderName::from_bytes(k.as_bytes()) {
            Ok(n) => out.remove.push(n),
            Err(_) => sink.part(
                &format!("{path}.remove[{i}]"),
                "invalid header name; skipped",
            ),
        }
    }
    out
}

fn redirect(r: &HttpRedirect) -> Redirect {
    let port = match (r.port.and_then(port_u16), r.derive_port) {
        (Some(p), _) => Some(RedirectPort::Fixed(p)),
        (None, Some(RedirectPortSelection::FromProtocolDefault)) => {
            Some(RedirectPort::FromProtocolDefault)
        }
        (None, Some(RedirectPortSelection::FromRequestPort)) => Some(RedirectPort::FromRequestPort),
        (None, None) => None,
    };
    Redirect {
        uri: r.uri.clone().filter(|u| !u.is_empty()),
        prefix_rewrite: r.prefix_rewrite.clone(),
        authority: r.authority.clone().filter(|a| !a.is_empty()),
        port,
        scheme: r.scheme.clone().filter(|s| !s.is_empty()),
        code: r
            .redirect_code
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (300..=399).contains(c))
            .unwrap_or(301),
    }
}

fn direct(
    d: &crate::resource::HttpDirectResponse,
    path: &str,
    sink: &mut Sink<'_>,
) -> DirectResponse {
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (100..=999).contains(s))
        .unwrap_or_else(|| {
            sink.part(
                &format!("{path}.status"),
                &format!("invalid status {}; 500 is answered", d.status),
            );
            500
        });
    let body = match &d.body {
        None => Vec::new(),
        Some(b) => match (&b.string, &b.bytes) {
            (Some(s), _) => s.clone().into_bytes(),
            (None, Some(b64)) => {
                crate::validate::decode_proto_bytes(b64.trim()).unwrap_or_else(|| {
                    sink.part(
                        &format!("{path}.body.bytes"),
                        "not valid base64; the body is empty",
                    );
                    Vec::new()
                })
            }
            (None, None) => Vec::new(),
        },
    };
    DirectResponse {
        status,
        body: bytes_body::Body(body),
    }
}

fn rewrite(rw: &crate::resource::HttpRewrite, path: &str, sink: &mut Sink<'_>) -> Option<Rewrite> {
    let uri_regex = match &rw.uri_regex_rewrite {
        None => None,
        Some(r) => match regex::Regex::new(&r.match_) {
            Ok(pattern) => Some(RegexRewrite {
                pattern,
                replacement: re2_replacement(&r.rewrite),
            }),
            Err(e) => {
                sink.part(
                    &format!("{path}.uriRegexRewrite.match"),
                    &format!(
                        "invalid regex {:?}: {}; rewrite skipped",
                        r.match_,
                        last_line(&e.to_string())
                    ),
                );
                None
            }
        },
    };
    let out = Rewrite {
        uri: rw.uri.clone(),
        uri_regex,
        authority: rw.authority.clone().filter(|a| !a.is_empty()),
    };
    (out.uri.is_some() || out.uri_regex.is_some() || out.authority.is_some()).then_some(out)
}

/// RE2 substitution (`\1`, `\\`) to the `regex` crate's (`${1}`, `$$` for a literal dollar).
pub(crate) fn re2_replacement(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str("${");
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        out.push(d);
                        chars.next();
                    }
                    out.push('}');
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn retries(r: &HttpRetry, path: &str, sink: &mut Sink<'_>) -> RetryPolicy {
    let default = RetryPolicy::default();
    let attempts = u32::try_from(r.attempts.max(0)).unwrap_or(u32::MAX);
    if attempts == 0 {
        return RetryPolicy {
            attempts: 0,
            retry_on: Arc::from([]),
            ..default
        };
    }
    let mut retry_on = Vec::new();
    let mut status_codes = Vec::new();
    for tok in r.retry_on.as_deref().unwrap_or("").split(',') {
        let tok = tok.trim().to_ascii_lowercase();
        if tok.is_empty() {
            continue;
        }
        match tok.parse::<u16>() {
            Ok(code) => {
                if !status_codes.contains(&code) {
                    status_codes.push(code);
                }
            }
            Err(_) => {
                if !retry_on.contains(&tok) {
                    retry_on.push(tok);
                }
            }
        }
    }
    let retry_on = if retry_on.is_empty() && status_codes.is_empty() {
        default.retry_on.clone()
    } else {
        if !status_codes.is_empty() && !retry_on.iter().any(|t| t == "retriable-status-codes") {
            // A numeric code implies retrying on the listed codes (Istio adds this token).
            retry_on.push("retriable-status-codes".to_string());
        }
        Arc::from(retry_on)
    };
    let mut dur = |field: &str, d: &Option<crate::resource::Duration>| {
        d.as_ref().and_then(|d| match d.parse() {
            Ok(v) if !v.is_zero() => Some(v),
            Ok(_) => None,
            Err(e) => {
                sink.part(&format!("{path}.{field}"), &format!("{e}; default applies"));
                None
            }
        })
    };
    let per_try_timeout = dur("perTryTimeout", &r.per_try_timeout);
    let backoff = dur("backoff", &r.backoff).unwrap_or(default.backoff);
    RetryPolicy {
        attempts,
        per_try_timeout,
        retry_on,
        status_codes,
        ignore_previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(true),
        backoff,
    }
}

fn percent(p: Option<&Percent>) -> f64 {
    p.map_or(0.0, |p| clamp_percent(p.value))
}

fn clamp_percent(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(0.0, 100.0)
    }
}

fn fault(f: &HttpFaultInjection, path: &str, sink: &mut Sink<'_>) -> Option<Fault> {
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = d.fixed_delay.as_ref()?;
        match fixed.parse() {
            Ok(delay) => Some(FaultDelay {
                delay,
                percent: match (&d.percentage, d.percent) {
                    (Some(p), _) => percent(Some(p)),
                    (None, Some(n)) => clamp_percent(n as f64),
                    (None, None) => 0.0,
                },
            }),
            Err(e) => {
                sink.part(
                    &format!("{path}.delay.fixedDelay"),
                    &format!("{e}; delay skipped"),
                );
                None
            }
        }
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let kind = if let Some(s) = a.http_status {
            match u16::try_from(s).ok().filter(|s| (100..=999).contains(s)) {
                Some(s) => AbortKind::Http(s),
                None => {
                    sink.part(
                        &format!("{path}.abort.httpStatus"),
                        &format!("invalid status {s}; abort skipped"),
                    );
                    return None;
                }
            }
        } else if let Some(g) = &a.grpc_status {
            match grpc_code(g) {
                Some(c) => AbortKind::Grpc(c),
                None => {
                    sink.part(
                        &format!("{path}.abort.grpcStatus"),
                        &format!("unknown gRPC status {g:?}; abort skipped"),
                    );
                    return None;
                }
            }
        } else {
            return None;
        };
        Some(FaultAbort {
            kind,
            percent: percent(a.percentage.as_ref()),
        })
    });
    (delay.is_some() || abort.is_some()).then_some(Fault { delay, abort })
}

/// gRPC status names to codes (also accepts the number).
pub(crate) fn grpc_code(name: &str) -> Option<u32> {
    let n = name.trim();
    if let Ok(code) = n.parse::<u32>() {
        return (code < 17).then_some(code);
    }
    crate::validate::GRPC_CODES
        .iter()
        .position(|x| x.eq_ignore_ascii_case(n))
        .and_then(|i| u32::try_from(i).ok())
}

fn cors(c: &CorsPolicy, path: &str, sink: &mut Sink<'_>) -> Cors {
    let mut allow_origins: Vec<Matcher> = c
        .allow_origin
        .iter()
        .map(|o| Matcher::Exact {
            value: o.clone(),
            ignore_case: false,
        })
        .collect();
    for (i, sm) in c.allow_origins.iter().enumerate() {
        match string_matcher(sm, false) {
            Ok(Some(m)) => allow_origins.push(m),
            Ok(None) => {}
            Err(e) => sink.part(
                &format!("{path}.allowOrigins[{i}]"),
                &format!("{e}; origin skipped"),
            ),
        }
    }
    let max_age = c.max_age.as_ref().and_then(|d| match d.parse() {
        Ok(d) => Some(d.as_secs()),
        Err(e) => {
            sink.part(&format!("{path}.maxAge"), &format!("{e}; not sent"));
            None
        }
    });
    Cors {
        allow_origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age,
        allow_credentials: c.allow_credentials,
        ignore_unmatched_preflights: c.unmatched_preflights == Some(UnmatchedPreflights::Ignore),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re2_groups_become_regex_crate_groups() {
        assert_eq!(re2_replacement(r"/v2/\1/x\12"), "/v2/${1}/x${12}");
        assert_eq!(re2_replacement(r"a$b\\c"), r"a$$b\c");
    }

    #[test]
    fn routing_claims_are_istios_dotted_or_bracketed_names() {
        let v = |s: &[&str]| Some(s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(routing_claim("@request.auth.claims.a.b"), v(&["a", "b"]));
        assert_eq!(routing_claim("@Request.Auth.Claims.group"), v(&["group"]));
        assert_eq!(
            routing_claim("@request.auth.claims[a.b][c]"),
            v(&["a.b", "c"])
        );
        assert_eq!(routing_claim("@request.auth.claims."), None);
        assert_eq!(routing_claim("@request.auth.claims[]"), None);
        assert_eq!(routing_claim("@request.auth.other"), None);
    }

    #[test]
    fn grpc_names() {
        assert_eq!(grpc_code("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_code("unavailable"), Some(14));
        assert_eq!(grpc_code("14"), Some(14));
        assert_eq!(grpc_code("NOPE"), None);
    }
}
