//! The compiled security of one gateway workload — its JWT rules and its AuthorizationPolicies by
//! action — and [`GatewaySecurity::authorize`], Istio's decision for a request: `CUSTOM` first,
//! then `DENY`, then `ALLOW` (with any `ALLOW` policy, a request no `ALLOW` rule matches is
//! denied); `AUDIT` only marks. Matching follows Envoy's RBAC filter as Istio generates it
//! (`pilot/pkg/security/authz/model`): within a rule any `from`, any `to` and every `when`;
//! within a condition any value, and none of the `not` values.

use super::jwt::{Claims, JwtProvider};
use crate::resource::AuthorizationAction;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;

/// Everything that applies to one gateway workload.
#[derive(Debug, Default, Serialize)]
pub struct GatewaySecurity {
    /// JWT rules of every RequestAuthentication that applies, in order.
    pub jwt: Vec<Arc<JwtProvider>>,
    pub custom: Vec<Arc<Policy>>,
    pub deny: Vec<Arc<Policy>>,
    pub allow: Vec<Arc<Policy>>,
    pub audit: Vec<Arc<Policy>>,
}

impl GatewaySecurity {
    pub fn is_empty(&self) -> bool {
        self.jwt.is_empty()
            && self.custom.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty()
    }
}

/// One AuthorizationPolicy, compiled.
#[derive(Debug, Serialize)]
pub struct Policy {
    /// `ap/<ns>/<name>`, for logs, metrics and access-log fields.
    pub id: String,
    pub action: AuthorizationAction,
    /// `CUSTOM`: the MeshConfig extension provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `istio.io/dry-run: "true"`: evaluated and reported, never enforced.
    pub dry_run: bool,
    /// OR: the policy matches when one rule does. Empty matches nothing.
    pub rules: Vec<Rule>,
}

/// One `rules[]` entry: any of `from`, any of `to`, all of `when`. An empty list is no condition.
#[derive(Debug, Default, Serialize)]
pub struct Rule {
    /// Each entry an AND of conditions (one `from[].source`).
    pub from: Vec<Vec<Condition>>,
    /// Each entry an AND of conditions (one `to[].operation`).
    pub to: Vec<Vec<Condition>>,
    pub when: Vec<Condition>,
}

/// One attribute with its values: matches when some value matches (if any are given) and no
/// `not` value does.
#[derive(Debug, Serialize)]
pub struct Condition {
    pub attribute: Attribute,
    pub values: Vec<ValueMatch>,
    pub not_values: Vec<ValueMatch>,
}

/// What a condition looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Attribute {
    /// The `Host`/`:authority` as sent (port included), compared ignoring case.
    Host,
    Method,
    /// The path without query and fragment.
    Path,
    /// The gateway's local port the request arrived on.
    Port,
    /// A request header (lowercase name); several values are joined with `,`.
    Header(String),
    /// The peer address.
    SourceIp,
    /// The client address (`X-Forwarded-For` per `numTrustedProxies`, or PROXY protocol).
    RemoteIp,
    DestinationIp,
    /// The client certificate's identity (URI SAN), `spiffe://` prefix included.
    Principal,
    /// `iss/sub` of the verified JWT.
    RequestPrincipal,
    /// `aud` of the verified JWT.
    Audiences,
    /// `azp` of the verified JWT.
    Presenter,
    /// A claim of the verified JWT, by path.
    Claim(Vec<String>),
    Sni,
    /// Envoy dynamic metadata (`experimental.envoy.filters.*`): there is none here.
    EnvoyMetadata(String),
}

/// One compiled value.
#[derive(Debug, Serialize)]
pub enum ValueMatch {
    /// Istio's string forms: exact, `prefix*`, `*suffix`, `*` (any non-empty value).
    Str(StrMatch),
    /// An address or CIDR range.
    Cidr(Cidr),
    Port(u16),
    /// A path with `{*}`/`{**}`.
    Template(PathTemplate),
    /// `iss/sub` with Istio's split at the last `/`.
    RequestPrincipal {
        iss: StrMatch,
        sub: StrMatch,
    },
    /// Never matches (a value that cannot be compiled, or an attribute absent here).
    Never,
}

/// Exact, prefix, suffix or non-empty, optionally ignoring ASCII case; or presence (headers).
#[derive(Debug, Clone, Serialize)]
pub enum StrMatch {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    /// Any non-empty value (Istio's `*` for strings: regex `.+`).
    NonEmpty,
    /// Present, even empty (Istio's `*` for headers, hosts and methods).
    Present,
    /// Anchored regex (namespaces, service accounts, trust domains, `*suffix` principals).
    Regex(#[serde(serialize_with = "ser_regex")] regex::Regex),
}

fn ser_regex<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

impl StrMatch {
    /// Istio's `StringMatcherWithPrefix(v, "")`: `*` non-empty, `*x` suffix, `x*` prefix, else exact.
    pub fn istio(v: &str, ignore_case: bool) -> StrMatch {
        if v == "*" {
            StrMatch::NonEmpty
        } else if let Some(s) = v.strip_prefix('*') {
            StrMatch::Suffix(s.to_string(), ignore_case)
        } else if let Some(p) = v.strip_suffix('*') {
            StrMatch::Prefix(p.to_string(), ignore_case)
        } else {
            StrMatch::Exact(v.to_string(), ignore_case)
        }
    }

    /// Istio's `HeaderMatcher`/`HostMatcher`: as [`StrMatch::istio`], with `*` a presence test.
    pub fn header(v: &str, ignore_case: bool) -> StrMatch {
        if v == "*" {
            StrMatch::Present
        } else {
            StrMatch::istio(v, ignore_case)
        }
    }

    pub fn matches(&self, s: &str) -> bool {
        fn starts(s: &str, p: &str, ic: bool) -> bool {
            s.get(..p.len()).is_some_and(|h| {
                if ic {
                    h.eq_ignore_ascii_case(p)
                } else {
                    h == p
                }
            })
        }
        fn ends(s: &str, p: &str, ic: bool) -> bool {
            s.len() >= p.len()
                && s.get(s.len() - p.len()..).is_some_and(|t| {
                    if ic {
                        t.eq_ignore_ascii_case(p)
                    } else {
                        t == p
                    }
                })
        }
        match self {
            StrMatch::Exact(v, ic) => {
                if *ic {
                    s.eq_ignore_ascii_case(v)
                } else {
                    s == v
                }
            }
            StrMatch::Prefix(p, ic) => starts(s, p, *ic),
            StrMatch::Suffix(p, ic) => ends(s, p, *ic),
            StrMatch::NonEmpty => !s.is_empty(),
            StrMatch::Present => true,
            StrMatch::Regex(r) => r.is_match(s),
        }
    }
}

/// An address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub bits: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `::1`, `1.2.3.4` (a single address is a full-length range).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, b) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match b {
            None => max,
            Some(b) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => b.parse().ok()?,
            Some(_) => return None,
        };
        (bits <= max).then_some(Cidr { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 peer (`::ffff:1.2.3.4`, as dual-stack sockets report) is its IPv4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Envoy's `uri_template` matcher for Istio's `{*}` (one segment) and `{**}` (any segments, the
/// last operator) paths: the pattern's segments, with at most one `{**}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathTemplate {
    /// The segments before `{**}` (all of them when there is none).
    pub head: Vec<Segment>,
    /// `{**}` and the literal text after it (`/a/b`, or empty).
    pub any_then: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Segment {
    /// `{*}`: one or more path characters, no `/`.
    One,
    Literal(String),
}

/// Envoy's path characters (RFC 3986 pchar less `*` and `=`), which `{*}` and `{**}` match.
pub fn is_template_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@".contains(&b)
}

impl PathTemplate {
    /// Compiles an Istio template path; `None` when Envoy would refuse it (no leading `/`, an
    /// operator after `{**}`, a template inside a segment, an empty segment).
    pub fn compile(path: &str) -> Option<PathTemplate> {
        let rest = path.strip_prefix('/')?;
        let segs: Vec<&str> = rest.split('/').collect();
        let mut head = Vec::new();
        let mut any_then: Option<String> = None;
        let last = segs.len().saturating_sub(1);
        for (i, s) in segs.iter().enumerate() {
            let seg = match *s {
                "{*}" => Segment::One,
                "{**}" => {
                    if any_then.is_some() {
                        return None;
                    }
                    any_then = Some(String::new());
                    continue;
                }
                lit if lit.contains(['{', '}', '*']) => return None,
                "" if i != last => return None,
                lit => Segment::Literal(lit.to_string()),
            };
            match &mut any_then {
                Some(tail) => match seg {
                    Segment::Literal(l) => {
                        tail.push('/');
                        tail.push_str(&l);
                    }
                    Segment::One => return None,
                },
                None => head.push(seg),
            }
        }
        Some(PathTemplate { head, any_then })
    }

    /// Whether `path` (no query) matches the whole template.
    pub fn matches(&self, path: &str) -> bool {
        let mut rest = path;
        for (i, seg) in self.head.iter().enumerate() {
            let Some(r) = rest.strip_prefix('/') else {
                return false;
            };
            rest = r;
            match seg {
                Segment::Literal(l) => match rest.strip_prefix(l.as_str()) {
                    Some(r) => rest = r,
                    None => return false,
                },
                Segment::One => {
                    let n = rest.bytes().take_while(|b| is_template_char(*b)).count();
                    if n == 0 {
                        return false;
                    }
                    rest = &rest[n..];
                }
            }
            // A literal may not swallow the next separator: segments end at `/` or the end.
            let more = i + 1 < self.head.len() || self.any_then.is_some();
            if more && !rest.starts_with('/') {
                return false;
            }
        }
        match &self.any_then {
            None => rest.is_empty(),
            Some(tail) => {
                let Some(r) = rest.strip_prefix('/') else {
                    return false;
                };
                match r.strip_suffix(tail.as_str()) {
                    Some(mid) => mid.bytes().all(|b| b == b'/' || is_template_char(b)),
                    None => false,
                }
            }
        }
    }
}

/// What is known about a request when it is authorized. JWT attributes (request principal,
/// audiences, presenter, claims) all come from `jwt`, the verified payload, as Istio reads them.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// `Host`/`:authority` as sent.
    pub host: &'a str,
    /// The local port of the listener.
    pub port: u16,
    pub method: &'a str,
    /// As sent; the query and fragment are not matched.
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    pub source_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    /// The client certificate's URI SAN (`spiffe://cluster.local/ns/a/sa/b`).
    pub principal: Option<&'a str>,
    pub jwt: Option<&'a Claims>,
    /// The claims matched as space-separated lists (the verifying rule's).
    pub space_delimited_claims: &'a [String],
    pub sni: Option<&'a str>,
}

/// What authorization decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// The first `AUDIT` policy that matched.
    pub audited_by: Option<String>,
    /// What the dry-run policies would have done: `Some(id)` of the dry-run policy that would
    /// deny (`""` when no dry-run ALLOW rule matched), `None` when they would allow.
    pub dry_run_denied_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Allowed; by the `ALLOW` policy that matched, if there are any.
    Allow { policy: Option<String> },
    /// 403 `RBAC: access denied`; by the `DENY` policy that matched, or `None` when `ALLOW`
    /// policies exist and none matched.
    Deny { policy: Option<String> },
    /// Ask the `CUSTOM` provider; if it allows, call [`GatewaySecurity::authorize_after_custom`].
    Custom { provider: String, policy: String },
}

impl GatewaySecurity {
    /// Istio's order: a matching `CUSTOM` policy first (the caller asks its provider), then `DENY`,
    /// then `ALLOW`.
    pub fn authorize(&self, facts: &RequestFacts<'_>) -> Decision {
        let audited_by = first_match(&self.audit, facts, false).map(|p| p.id.clone());
        if let Some(p) = first_match(&self.custom, facts, false) {
            return Decision {
                outcome: Outcome::Custom {
                    provider: p.provider.clone().unwrap_or_default(),
                    policy: p.id.clone(),
                },
                audited_by,
                dry_run_denied_by: self.dry_run(facts),
            };
        }
        self.authorize_after_custom(facts)
    }

    /// `DENY` then `ALLOW`, for a request a `CUSTOM` provider allowed (or none asked about).
    pub fn authorize_after_custom(&self, facts: &RequestFacts<'_>) -> Decision {
        let audited_by = first_match(&self.audit, facts, false).map(|p| p.id.clone());
        let dry_run_denied_by = self.dry_run(facts);
        let outcome = if let Some(p) = first_match(&self.deny, facts, false) {
            Outcome::Deny {
                policy: Some(p.id.clone()),
            }
        } else if !self.allow.iter().any(|p| !p.dry_run) {
            Outcome::Allow { policy: None }
        } else {
            match first_match(&self.allow, facts, false) {
                Some(p) => Outcome::Allow {
                    policy: Some(p.id.clone()),
                },
                None => Outcome::Deny { policy: None },
            }
        };
        Decision {
            outcome,
            audited_by,
            dry_run_denied_by,
        }
    }

    fn dry_run(&self, facts: &RequestFacts<'_>) -> Option<String> {
        if let Some(p) = first_match(&self.deny, facts, true) {
            return Some(p.id.clone());
        }
        if self.allow.iter().any(|p| p.dry_run) && first_match(&self.allow, facts, true).is_none() {
            return Some(String::new());
        }
        None
    }
}

/// The first policy (enforced ones, or the dry-run ones) with a matching rule.
fn first_match<'p>(
    policies: &'p [Arc<Policy>],
    facts: &RequestFacts<'_>,
    dry_run: bool,
) -> Option<&'p Arc<Policy>> {
    policies
        .iter()
        .filter(|p| p.dry_run == dry_run)
        .find(|p| p.rules.iter().any(|r| r.matches(facts)))
}

impl Rule {
    pub fn matches(&self, facts: &RequestFacts<'_>) -> bool {
        let all = |cs: &Vec<Condition>| cs.iter().all(|c| c.matches(facts));
        (self.from.is_empty() || self.from.iter().any(all))
            && (self.to.is_empty() || self.to.iter().any(all))
            && all(&self.when)
    }
}

impl Condition {
    pub fn matches(&self, facts: &RequestFacts<'_>) -> bool {
        let any = |vs: &[ValueMatch]| vs.iter().any(|v| value_matches(&self.attribute, v, facts));
        (self.values.is_empty() || any(&self.values)) && !any(&self.not_values)
    }
}

fn strip_query(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

fn header_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let mut it = headers.get_all(name).iter().peekable();
    it.peek()?;
    let parts: Vec<&str> = it.map(|v| v.to_str().unwrap_or_default()).collect();
    Some(parts.join(","))
}

fn value_matches(attr: &Attribute, v: &ValueMatch, f: &RequestFacts<'_>) -> bool {
    let str_of = |m: &StrMatch, s: Option<&str>| s.is_some_and(|s| m.matches(s));
    match (attr, v) {
        (_, ValueMatch::Never) => false,
        (Attribute::Host, ValueMatch::Str(m)) => m.matches(f.host),
        (Attribute::Method, ValueMatch::Str(m)) => m.matches(f.method),
        (Attribute::Path, ValueMatch::Str(m)) => m.matches(strip_query(f.path)),
        (Attribute::Path, ValueMatch::Template(t)) => t.matches(strip_query(f.path)),
        (Attribute::Port, ValueMatch::Port(p)) => f.port == *p,
        (Attribute::Header(name), ValueMatch::Str(m)) => {
            str_of(m, header_value(f.headers, name).as_deref())
        }
        (Attribute::SourceIp, ValueMatch::Cidr(c)) => f.source_ip.is_some_and(|ip| c.contains(ip)),
        (Attribute::RemoteIp, ValueMatch::Cidr(c)) => f.remote_ip.is_some_and(|ip| c.contains(ip)),
        (Attribute::DestinationIp, ValueMatch::Cidr(c)) => {
            f.destination_ip.is_some_and(|ip| c.contains(ip))
        }
        (Attribute::Principal, ValueMatch::Str(m)) => str_of(m, f.principal),
        (Attribute::RequestPrincipal, ValueMatch::RequestPrincipal { iss, sub }) => f
            .jwt
            .is_some_and(|c| str_of(iss, c.issuer()) && str_of(sub, c.subject())),
        (Attribute::Audiences, ValueMatch::Str(m)) => f
            .jwt
            .is_some_and(|c| c.audiences().iter().any(|a| m.matches(a))),
        (Attribute::Presenter, ValueMatch::Str(m)) => f
            .jwt
            .is_some_and(|c| c.values_at(&["azp"], &[]).iter().any(|a| m.matches(a))),
        (Attribute::Claim(path), ValueMatch::Str(m)) => f.jwt.is_some_and(|c| {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            c.values_at(&path, f.space_delimited_claims)
                .iter()
                .any(|a| m.matches(a))
        }),
        (Attribute::Sni, ValueMatch::Str(m)) => str_of(m, f.sni),
        _ => false,
    }
}

impl super::Snapshot {
    /// The security of the gateway a route belongs to ([`super::Route::gateway`]), if any applies.
    pub fn security_for(&self, gateway: &str) -> Option<&GatewaySecurity> {
        self.security.get(gateway).map(|s| &**s)
    }

    /// The security that applies to a request on `port` for `authority`, before its route is
    /// chosen (authentication runs before routing, so that claims can route): the gateway of the
    /// virtual host's first route; with no virtual host or no route, the one security every
    /// gateway shares (the usual case: every Gateway selects the same ingress workload).
    pub fn security_at(&self, port: u16, authority: &str) -> Option<&Arc<GatewaySecurity>> {
        let routed = self
            .listeners
            .get(&port)
            .and_then(|l| l.hosts.find(authority))
            .and_then(|vh| vh.routes.first());
        if let Some(r) = routed {
            return self.security.get(&r.gateway);
        }
        let mut all = self.security.values();
        let first = all.next()?;
        all.all(|s| Arc::ptr_eq(s, first)).then_some(first)
    }
}

#[cfg(test)]
mod tests;
