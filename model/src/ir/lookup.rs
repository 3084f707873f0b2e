//! Request-time lookup over a [`Snapshot`](super::Snapshot): host index, then the first route whose
//! match accepts the request. Pure functions of the snapshot and a view of the request; the common
//! case allocates nothing (only a mixed-case Host, a repeated header or a non-UTF-8 header value
//! makes a temporary copy).

use super::{
    ClaimMatch, HeaderMatch, HostIndex, Listener, Matcher, QueryMatch, Route, RouteMatch, Snapshot,
    VirtualHost,
};
use std::borrow::Cow;

/// What route matching reads from a request. Borrowed, so a lookup allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host or `:authority` as sent (may carry a port).
    pub authority: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    /// Query string without `?`.
    pub query: Option<&'a str>,
    /// Gateway port the request arrived on (80, 443, or a `--listen` port).
    pub port: u16,
    pub headers: &'a http::HeaderMap,
    /// The verified JWT's claims (after authentication), for `@request.auth.claims` matches.
    pub claims: Option<&'a super::jwt::Claims>,
}

/// The route a lookup chose, with the `match` entry that accepted the request, so that what
/// depends on the match (a prefix rewrite, a redirect's path) never matches again.
#[derive(Debug, Clone, Copy)]
pub struct Winner<'s> {
    pub route: &'s std::sync::Arc<Route>,
    /// `None` for a route without `match` entries (it accepts every request).
    pub entry: Option<&'s RouteMatch>,
}

impl<'s> Winner<'s> {
    /// The URI matcher of the accepting entry, if it has one.
    pub fn uri(&self) -> Option<&'s Matcher> {
        self.entry.and_then(|m| m.uri.as_ref())
    }
}

impl Snapshot {
    /// The virtual host then the first matching route for a request on `port`.
    #[inline]
    pub fn lookup<'s>(
        &'s self,
        req: &RequestView<'_>,
    ) -> Option<(&'s VirtualHost, Option<Winner<'s>>)> {
        self.lookup_observed(req, &mut ())
    }

    /// [`Snapshot::lookup`], telling `obs` every step: the listener, the virtual host, and each
    /// route passed over before the winner with the condition that failed. This is the one walk
    /// of the routes; the proxy runs it with the no-op observer `()`, which compiles away.
    pub fn lookup_observed<'s, O: LookupObserver>(
        &'s self,
        req: &RequestView<'_>,
        obs: &mut O,
    ) -> Option<(&'s VirtualHost, Option<Winner<'s>>)> {
        let listener: Option<&Listener> = self.listeners.get(&req.port);
        obs.listener(listener);
        let vh = listener?.hosts.find(req.authority);
        obs.virtual_host(vh);
        let vh = vh?;
        let winner = vh.routes.iter().find_map(|route| {
            let hit = accepting_entry(route, req, obs);
            if hit.is_none() {
                obs.skipped(route);
            }
            hit.map(|entry| Winner { route, entry })
        });
        Some((vh, winner))
    }

    /// Whether a request for `authority` may be served on a TLS connection to `port` whose
    /// ClientHello named `sni`: only the hosts of the server that SNI selects are reachable
    /// through it (another server's hosts are not).
    pub fn tls_admits(&self, port: u16, sni: Option<&str>, authority: &str) -> bool {
        self.tls
            .get(&port)
            .and_then(|l| l.server_for(sni))
            .is_some_and(|s| s.admits(strip_port(authority)))
    }
}

/// What a route lookup can report as it goes. Every method defaults to doing nothing, and the
/// proxy's observer is `()`: calls and the [`Mismatch`] values built for them are optimised out.
pub trait LookupObserver {
    /// The listener of the request's port, `None` when the snapshot has none.
    #[inline(always)]
    fn listener(&mut self, _listener: Option<&Listener>) {}
    /// The virtual host the host index chose, `None` when no domain matches.
    #[inline(always)]
    fn virtual_host(&mut self, _vhost: Option<&VirtualHost>) {}
    /// Match entry `entry` of `route` failed on `why` (one call per entry of a skipped route).
    #[inline(always)]
    fn mismatch(&mut self, _route: &Route, _entry: usize, _why: Mismatch<'_>) {}
    /// `route` was considered and did not accept the request.
    #[inline(always)]
    fn skipped(&mut self, _route: &std::sync::Arc<Route>) {}
}

/// The observer that observes nothing: the data plane's.
impl LookupObserver for () {}

/// The first condition of a `match` entry that a request fails, with what the request had.
#[derive(Debug, Clone)]
pub enum Mismatch<'a> {
    Port {
        want: u16,
        got: u16,
    },
    Uri {
        matcher: &'a Matcher,
        got: &'a str,
    },
    Scheme {
        matcher: &'a Matcher,
        got: &'a str,
    },
    Method {
        matcher: &'a Matcher,
        got: &'a str,
    },
    Authority {
        matcher: &'a Matcher,
        got: &'a str,
    },
    /// `got` is the request's value (several joined with `,`), `None` when absent.
    Header {
        header: &'a HeaderMatch,
        got: Option<Cow<'a, str>>,
    },
    Query {
        query: &'a QueryMatch,
        got: Option<&'a str>,
    },
    /// `got` is the claim's string values; `None` without a verified token or the claim.
    Claim {
        claim: &'a ClaimMatch,
        got: Option<Vec<&'a str>>,
    },
}

/// Where a domain goes in a [`HostIndex`]: the precedence class is a value, not a code path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DomainKind<'a> {
    /// `*`: the last resort.
    Any,
    /// `*.suffix`, with `suffix` (longer suffixes win among these).
    Suffix(&'a str),
    /// A plain domain.
    Exact(&'a str),
}

impl<'a> DomainKind<'a> {
    /// Classifies an already lowercased domain; `None` for shapes the index cannot serve (`*.`,
    /// partial wildcards like `*foo.com`, an empty string).
    pub fn of(domain: &'a str) -> Option<DomainKind<'a>> {
        if domain == "*" {
            return Some(DomainKind::Any);
        }
        if let Some(suffix) = domain.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return None;
            }
            return Some(DomainKind::Suffix(suffix));
        }
        if domain.is_empty() || domain.contains('*') {
            return None;
        }
        Some(DomainKind::Exact(domain))
    }
}

impl HostIndex {
    /// Finds the virtual host for a Host header value: port stripped, case-insensitive. Cost is
    /// one hash lookup per label of the host, whatever the number of domains indexed.
    pub fn find(&self, authority: &str) -> Option<&VirtualHost> {
        let host = lowercase(strip_port(authority));
        let host: &str = &host;
        if let Some(&i) = self.exact.get(host) {
            return self.vhosts.get(i);
        }
        if !self.suffix.is_empty() {
            // Every dot starts a candidate suffix; scanning left to right visits them longest
            // first, and the host itself is never a candidate (`*.a.com` must not match `a.com`).
            for (pos, b) in host.bytes().enumerate() {
                if b == b'.' {
                    if let Some(&i) = self.suffix.get(&host[pos + 1..]) {
                        return self.vhosts.get(i);
                    }
                }
            }
        }
        self.any.and_then(|i| self.vhosts.get(i))
    }

    /// Adds a virtual host under its domain (lowercased by the caller) and returns its index.
    /// A domain the index cannot serve, or one already present, leaves the index unchanged and
    /// returns `None`.
    pub fn insert(&mut self, vhost: VirtualHost) -> Option<usize> {
        let i = self.vhosts.len();
        match DomainKind::of(&vhost.domain)? {
            DomainKind::Any => {
                if self.any.is_some() {
                    return None;
                }
                self.any = Some(i);
            }
            DomainKind::Suffix(s) => {
                if self.suffix.contains_key(s) {
                    return None;
                }
                self.suffix.insert(s.to_string(), i);
            }
            DomainKind::Exact(d) => {
                if self.exact.contains_key(d) {
                    return None;
                }
                self.exact.insert(d.to_string(), i);
            }
        }
        self.vhosts.push(vhost);
        Some(i)
    }
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`; a bare IPv6 literal (several colons, no brackets)
/// is left alone because its last group is not a port.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rfind(':') {
        Some(i)
            if !authority[..i].contains(':')
                && authority[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &authority[..i]
        }
        _ => authority,
    }
}

fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// Whether a route accepts the request: no matches, or any match entry.
#[inline]
pub fn route_matches(route: &Route, req: &RequestView<'_>) -> bool {
    accepting_entry(route, req, &mut ()).is_some()
}

/// Whether `route` accepts the request: `Some(entry)` naming the accepting `match` entry (`None`
/// inside for a route without entries), `None` when it does not accept.
fn accepting_entry<'r, O: LookupObserver>(
    route: &'r Route,
    req: &RequestView<'_>,
    obs: &mut O,
) -> Option<Option<&'r RouteMatch>> {
    if route.matches.is_empty() {
        return Some(None);
    }
    for (i, m) in route.matches.iter().enumerate() {
        match first_mismatch(m, req) {
            None => return Some(Some(m)),
            Some(why) => obs.mismatch(route, i, why),
        }
    }
    None
}

/// Whether one `match` entry (all its conditions) accepts the request.
#[inline]
pub fn match_accepts(m: &RouteMatch, req: &RequestView<'_>) -> bool {
    first_mismatch(m, req).is_none()
}

/// The first condition of one `match` entry that the request fails; `None` when it accepts.
#[inline]
pub fn first_mismatch<'a>(m: &'a RouteMatch, req: &RequestView<'a>) -> Option<Mismatch<'a>> {
    if let Some(p) = m.port {
        if p != req.port {
            return Some(Mismatch::Port {
                want: p,
                got: req.port,
            });
        }
    }
    if let Some(u) = &m.uri {
        // Defensive: the view promises a path without query, but a stray `?` must not leak into
        // an exact or regex comparison.
        let path = req.path.split('?').next().unwrap_or(req.path);
        if !u.matches(path) {
            return Some(Mismatch::Uri {
                matcher: u,
                got: path,
            });
        }
    }
    if let Some(s) = &m.scheme {
        if !s.matches(req.scheme) {
            return Some(Mismatch::Scheme {
                matcher: s,
                got: req.scheme,
            });
        }
    }
    if let Some(me) = &m.method {
        if !me.matches(req.method) {
            return Some(Mismatch::Method {
                matcher: me,
                got: req.method,
            });
        }
    }
    if let Some(a) = &m.authority {
        if !a.matches(req.authority) {
            return Some(Mismatch::Authority {
                matcher: a,
                got: req.authority,
            });
        }
    }
    for h in &m.headers {
        if let Err(got) = header_accepts(h, req.headers) {
            return Some(Mismatch::Header { header: h, got });
        }
    }
    for q in &m.query_params {
        if let Err(got) = query_accepts(q, req.query) {
            return Some(Mismatch::Query { query: q, got });
        }
    }
    for c in &m.claims {
        if let Err(got) = claim_accepts(c, req.claims) {
            return Some(Mismatch::Claim { claim: c, got });
        }
    }
    None
}

/// `Err` with the claim's values when the condition fails.
fn claim_accepts<'c>(
    c: &ClaimMatch,
    claims: Option<&'c super::jwt::Claims>,
) -> Result<(), Option<Vec<&'c str>>> {
    let path: Vec<&str> = c.path.iter().map(String::as_str).collect();
    let values = claims.and_then(|cl| {
        cl.get_path(&path)?;
        Some(cl.values_at(&path, &[]))
    });
    let hit = match (&c.matcher, &values) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(m), Some(vs)) => vs.iter().any(|v| m.matches(v)),
    };
    if hit != c.invert {
        Ok(())
    } else {
        Err(values)
    }
}

/// `Err` with the request's value when the condition fails.
fn header_accepts<'h>(
    h: &HeaderMatch,
    headers: &'h http::HeaderMap,
) -> Result<(), Option<Cow<'h, str>>> {
    let value = header_value(headers, &h.name);
    let hit = match (&h.matcher, &value) {
        (None, v) => v.is_some(),
        (Some(m), Some(v)) => m.matches(v),
        (Some(m), None) => {
            if h.invert {
                // withoutHeaders with a value matcher reads a missing header as "".
                m.matches("")
            } else {
                false
            }
        }
    };
    if hit != h.invert {
        Ok(())
    } else {
        Err(value)
    }
}

/// The header's values as Envoy sees them: several joined with `,`.
fn header_value<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<Cow<'h, str>> {
    let mut it = headers.get_all(name).iter();
    let first = it.next()?;
    let first_s = String::from_utf8_lossy(first.as_bytes());
    match it.next() {
        None => Some(first_s),
        Some(second) => {
            let mut joined = first_s.into_owned();
            for v in std::iter::once(second).chain(it) {
                joined.push(',');
                joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
            Some(Cow::Owned(joined))
        }
    }
}

/// `Err` with the request's value when the condition fails.
fn query_accepts<'q>(q: &QueryMatch, query: Option<&'q str>) -> Result<(), Option<&'q str>> {
    let value = query_value(query, &q.name);
    let hit = match (value, &q.matcher) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(v), Some(m)) => m.matches(v),
    };
    if hit {
        Ok(())
    } else {
        Err(value)
    }
}

/// The first value of `name` in a raw query string; `?key` without `=` has the value `""`.
pub fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

impl Matcher {
    /// Whether the value satisfies this matcher.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact {
                value: want,
                ignore_case,
            } => {
                if *ignore_case {
                    value.eq_ignore_ascii_case(want)
                } else {
                    value == want
                }
            }
            Matcher::Prefix {
                value: want,
                ignore_case,
            } => {
                if *ignore_case {
                    value
                        .as_bytes()
                        .get(..want.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(want.as_bytes()))
                } else {
                    value.starts_with(want.as_str())
                }
            }
            Matcher::PathSeparatedPrefix { value: want } => value
                .strip_prefix(want.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            Matcher::Regex(re) => re.is_match(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_separated_prefix_matches_whole_elements() {
        let m = Matcher::PathSeparatedPrefix {
            value: "/foo".to_string(),
        };
        assert!(m.matches("/foo"));
        assert!(m.matches("/foo/"));
        assert!(m.matches("/foo/bar"));
        assert!(!m.matches("/foobar"));
        assert!(!m.matches("/fo"));
        assert!(!m.matches("/bar/foo"));
    }

    #[test]
    fn claim_matches_read_the_verified_token_and_fail_without_one() {
        let claims = crate::ir::jwt::Claims(
            serde_json::json!({"realm": {"role": "admin"}, "groups": ["dev", "ops"], "n": 3})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        let exact = |path: &[&str], v: &str, invert: bool| ClaimMatch {
            path: path.iter().map(|s| s.to_string()).collect(),
            matcher: Some(Matcher::Exact {
                value: v.to_string(),
                ignore_case: false,
            }),
            invert,
        };
        let ok = |c: &ClaimMatch, cl: Option<&crate::ir::jwt::Claims>| claim_accepts(c, cl).is_ok();
        assert!(ok(
            &exact(&["realm", "role"], "admin", false),
            Some(&claims)
        ));
        assert!(!ok(
            &exact(&["realm", "role"], "user", false),
            Some(&claims)
        ));
        assert!(
            ok(&exact(&["groups"], "ops", false), Some(&claims)),
            "any element of a list"
        );
        assert!(
            !ok(&exact(&["n"], "3", false), Some(&claims)),
            "numbers are not strings"
        );
        assert!(
            !ok(&exact(&["realm", "role"], "admin", false), None),
            "no identity"
        );
        assert!(
            ok(&exact(&["realm", "role"], "admin", true), None),
            "withoutHeaders holds"
        );
        assert!(!ok(&exact(&["groups"], "dev", true), Some(&claims)));
        let present = ClaimMatch {
            path: vec!["realm".to_string()],
            matcher: None,
            invert: false,
        };
        assert!(ok(&present, Some(&claims)));
        assert!(!ok(&present, None));
    }
}
