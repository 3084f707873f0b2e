//! Request policies decided per request: which failures `retryOn` retries, fault injection rolls,
//! and CORS (origin matching, preflight and response headers as Envoy's CORS filter sends them).

use model::ir::{Cors, RetryPolicy};
use rand::Rng;

/// What went wrong with one upstream attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be established.
    Connect,
    /// The connection was reset or closed before a response.
    Reset,
    /// The per-try timeout expired before the response header.
    Timeout,
    /// A response arrived: its status and `grpc-status` if any.
    Status(u16, Option<u32>),
}

/// Whether `retryOn` covers this failure.
pub fn retriable(p: &RetryPolicy, f: Failure) -> bool {
    p.retry_on.iter().any(|t| match (t.as_str(), f) {
        ("5xx", Failure::Status(s, _)) => s >= 500,
        ("5xx", _) => true,
        ("gateway-error", Failure::Status(s, _)) => matches!(s, 502..=504),
        ("gateway-error", _) => true,
        ("reset", Failure::Reset | Failure::Timeout) => true,
        ("connect-failure" | "reset-before-request" | "refused-stream", Failure::Connect) => true,
        ("retriable-4xx", Failure::Status(409, _)) => true,
        ("retriable-status-codes", Failure::Status(s, _)) => p.status_codes.contains(&s),
        ("cancelled", Failure::Status(_, Some(1))) => true,
        ("deadline-exceeded", Failure::Status(_, Some(4))) => true,
        ("resource-exhausted", Failure::Status(_, Some(8))) => true,
        ("internal", Failure::Status(_, Some(13))) => true,
        ("unavailable", Failure::Status(_, Some(14))) => true,
        _ => false,
    }) || matches!(f, Failure::Status(s, _) if p.status_codes.contains(&s))
}

/// True with probability `percent`/100.
pub fn roll(percent: f64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    if percent <= 0.0 {
        return false;
    }
    rand::thread_rng().gen_range(0.0..100.0) < percent
}

/// Whether `origin` is allowed by the policy.
pub fn origin_allowed(c: &Cors, origin: &str) -> bool {
    c.allow_origins.iter().any(|m| m.matches(origin))
}

/// Headers of a gateway-answered preflight for an allowed origin.
pub fn preflight_headers(c: &Cors, origin: &str) -> Vec<(&'static str, String)> {
    let mut h = vec![("access-control-allow-origin", origin.to_string())];
    if !c.allow_methods.is_empty() {
        h.push(("access-control-allow-methods", c.allow_methods.clone()));
    }
    if !c.allow_headers.is_empty() {
        h.push(("access-control-allow-headers", c.allow_headers.clone()));
    }
    if let Some(age) = c.max_age {
        h.push(("access-control-max-age", age.to_string()));
    }
    if c.allow_credentials == Some(true) {
        h.push(("access-control-allow-credentials", "true".to_string()));
    }
    h
}

/// Headers added to a proxied response for an allowed origin.
pub fn response_headers(c: &Cors, origin: &str) -> Vec<(&'static str, String)> {
    let mut h = vec![("access-control-allow-origin", origin.to_string())];
    if c.allow_credentials == Some(true) {
        h.push(("access-control-allow-credentials", "true".to_string()));
    }
    if !c.expose_headers.is_empty() {
        h.push(("access-control-expose-headers", c.expose_headers.clone()));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[&str], codes: &[u16]) -> RetryPolicy {
        RetryPolicy {
            retry_on: on.iter().map(|s| s.to_string()).collect(),
            status_codes: codes.to_vec(),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn istio_default_retries_connect_failures_only() {
        let p = RetryPolicy::default();
        assert!(retriable(&p, Failure::Connect));
        assert!(!retriable(&p, Failure::Status(503, None)));
        assert!(!retriable(&p, Failure::Reset));
        assert!(retriable(&p, Failure::Status(200, Some(14))), "unavailable");
    }

    #[test]
    fn tokens_cover_their_failures() {
        assert!(retriable(
            &policy(&["5xx"], &[]),
            Failure::Status(500, None)
        ));
        assert!(retriable(&policy(&["5xx"], &[]), Failure::Reset));
        assert!(!retriable(
            &policy(&["gateway-error"], &[]),
            Failure::Status(500, None)
        ));
        assert!(retriable(
            &policy(&["gateway-error"], &[]),
            Failure::Status(503, None)
        ));
        assert!(retriable(
            &policy(&["retriable-4xx"], &[]),
            Failure::Status(409, None)
        ));
        assert!(retriable(&policy(&[], &[418]), Failure::Status(418, None)));
        assert!(!retriable(
            &policy(&["connect-failure"], &[]),
            Failure::Timeout
        ));
        assert!(retriable(&policy(&["reset"], &[]), Failure::Timeout));
    }
}
