//! Names and how they meet: host normalisation, the VirtualService host × server host
//! intersection of Istio's gateway merge, server `ns/host` filters, gateway references and the
//! creation-time order that merging follows.

use crate::ir::DomainKind;
use crate::resource::ObjectMeta;

/// A host lowercased, if it is a shape the host index serves (`a.b`, `*.b`, `*`).
pub(crate) fn normalize_host(h: &str) -> Option<String> {
    let h = h.trim().to_ascii_lowercase();
    DomainKind::of(&h)?;
    Some(h)
}

/// The domain two hosts share, the more specific of the pair, or `None` when they do not
/// intersect. Both must be normalised. A wildcard never covers its own apex.
pub(crate) fn intersect(vs_host: &str, server_host: &str) -> Option<String> {
    use DomainKind::*;
    let (a, b) = (DomainKind::of(vs_host)?, DomainKind::of(server_host)?);
    // `suffix` covers `host` when host is `<at least one char>.<suffix>`.
    let covers = |suffix: &str, host: &str| {
        host.strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty())
    };
    match (a, b) {
        (Any, _) => Some(server_host.to_string()),
        (_, Any) => Some(vs_host.to_string()),
        (Exact(x), Exact(y)) => (x == y).then(|| vs_host.to_string()),
        (Exact(x), Suffix(s)) => covers(s, x).then(|| vs_host.to_string()),
        (Suffix(s), Exact(y)) => covers(s, y).then(|| server_host.to_string()),
        (Suffix(s), Suffix(t)) => {
            if s == t || covers(t, s) {
                Some(vs_host.to_string())
            } else if covers(s, t) {
                Some(server_host.to_string())
            } else {
                None
            }
        }
    }
}

/// Which VirtualService namespaces a server host admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NsFilter {
    Any,
    Only(String),
}

impl NsFilter {
    pub(crate) fn admits(&self, ns: &str) -> bool {
        match self {
            NsFilter::Any => true,
            NsFilter::Only(n) => n == ns,
        }
    }
}

/// Splits a server host `[ns/]host`: `*` any namespace (the default), `.` the Gateway's own.
pub(crate) fn parse_server_host(raw: &str, gateway_ns: &str) -> (NsFilter, String) {
    match raw.split_once('/') {
        None => (NsFilter::Any, raw.to_string()),
        Some(("*", h)) => (NsFilter::Any, h.to_string()),
        Some((".", h)) => (NsFilter::Only(gateway_ns.to_string()), h.to_string()),
        Some((ns, h)) => (NsFilter::Only(ns.to_string()), h.to_string()),
    }
}

/// The reserved gateway name that means sidecars, meaningless here.
pub(crate) const MESH: &str = "mesh";

/// Resolves a VirtualService gateway reference to `ns/name`: `ns/name`, a bare `name` in the
/// VirtualService's namespace, or Istio's legacy `name.ns[.svc.cluster.local]`. `None` for `mesh`.
pub(crate) fn resolve_gateway_ref(raw: &str, vs_ns: &str) -> Option<String> {
    let raw = raw.trim();
    if raw == MESH {
        return None;
    }
    if raw.contains('/') {
        return Some(raw.to_string());
    }
    match raw.split_once('.') {
        None => Some(format!("{vs_ns}/{raw}")),
        Some((name, rest)) => {
            let ns = rest.split('.').next().unwrap_or(rest);
            Some(format!("{ns}/{name}"))
        }
    }
}

/// Istio's `configCompareByCreationTime`: creation time (RFC 3339 compares as text; missing sorts
/// first), then name, then namespace.
pub(crate) fn creation_order(m: &ObjectMeta) -> (String, String, String) {
    (
        m.creation_timestamp.clone().unwrap_or_default(),
        m.name.clone(),
        m.namespace().to_string(),
    )
}

/// Whether a destination host is an IP literal (bracketed IPv6 included), which needs no DNS.
pub(crate) fn is_ip(host: &str) -> bool {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_takes_the_more_specific() {
        assert_eq!(
            intersect("a.example.com", "*.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("*.example.com", "*").as_deref(),
            Some("*.example.com")
        );
        assert_eq!(
            intersect("*", "a.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("*.example.com", "*.a.example.com").as_deref(),
            Some("*.a.example.com")
        );
        assert_eq!(
            intersect("*.a.example.com", "*.example.com").as_deref(),
            Some("*.a.example.com")
        );
        assert_eq!(intersect("example.com", "*.example.com"), None);
        assert_eq!(intersect("*.example.com", "example.com"), None);
        assert_eq!(intersect("xexample.com", "*.example.com"), None);
        assert_eq!(intersect("a.com", "b.com"), None);
        assert_eq!(intersect("*.a.com", "*.b.com"), None);
    }

    #[test]
    fn gateway_refs_resolve() {
        assert_eq!(resolve_gateway_ref("gw", "ns1").as_deref(), Some("ns1/gw"));
        assert_eq!(
            resolve_gateway_ref("other/gw", "ns1").as_deref(),
            Some("other/gw")
        );
        assert_eq!(
            resolve_gateway_ref("gw.other.svc.cluster.local", "ns1").as_deref(),
            Some("other/gw")
        );
        assert_eq!(resolve_gateway_ref("mesh", "ns1"), None);
    }

    #[test]
    fn server_host_namespaces() {
        assert_eq!(
            parse_server_host("a.com", "g"),
            (NsFilter::Any, "a.com".into())
        );
        assert_eq!(
            parse_server_host("./a.com", "g"),
            (NsFilter::Only("g".into()), "a.com".into())
        );
        assert_eq!(
            parse_server_host("x/*", "g"),
            (NsFilter::Only("x".into()), "*".into())
        );
        assert_eq!(parse_server_host("*/*", "g"), (NsFilter::Any, "*".into()));
    }
}
