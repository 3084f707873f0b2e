//! Request-time lookup over a [`Snapshot`](super::Snapshot): host index, then the first route whose
//! match accepts the request. Pure functions of the snapshot and a view of the request.

use super::{HostIndex, Listener, Matcher, Route, RouteMatch, Snapshot, VirtualHost};

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
}

impl Snapshot {
    /// The virtual host then the first matching route for a request on `port`.
    pub fn lookup<'s>(
        &'s self,
        req: &RequestView<'_>,
    ) -> Option<(&'s VirtualHost, Option<&'s std::sync::Arc<Route>>)> {
        let listener: &Listener = self.listeners.get(&req.port)?;
        let vh = listener.hosts.find(req.authority)?;
        let route = vh.routes.iter().find(|r| route_matches(r, req));
        Some((vh, route))
    }
}

impl HostIndex {
    /// Finds the virtual host for a Host header value: port stripped, case-insensitive.
    pub fn find(&self, authority: &str) -> Option<&VirtualHost> {
        let _ = authority;
        todo_lookup()
    }
}

fn todo_lookup<T>() -> Option<T> {
    None
}

/// Whether a route accepts the request: no matches, or any match entry.
pub fn route_matches(route: &Route, req: &RequestView<'_>) -> bool {
    route.matches.is_empty() || route.matches.iter().any(|m| match_accepts(m, req))
}

/// Whether one `match` entry (all its conditions) accepts the request.
pub fn match_accepts(m: &RouteMatch, req: &RequestView<'_>) -> bool {
    let _ = (m, req);
    false
}

impl Matcher {
    /// Whether the value satisfies this matcher.
    pub fn matches(&self, value: &str) -> bool {
        let _ = value;
        false
    }
}
