//! The admin REST API (CONTRACT §3): Kubernetes-style paths for the networking kinds and Secrets,
//! `/apply`, `/openapi.json` (this API's own document), `/debug/explain`, `/debug/snapshot`, `/metrics`, `/healthz`, `/readyz`. Handlers only translate HTTP to control-plane calls;
//! every failure is an [`AdminError`] and so a `Status` object, 404 and 405 included.

use crate::body::read_body;
use crate::control::ControlPlane;
use crate::error::AdminError;
use crate::health::Health;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde_json::Value;
use std::sync::Arc;
use subtle::{Choice, ConstantTimeEq};

#[derive(Clone)]
struct AppState {
    cp: Arc<ControlPlane>,
    health: Arc<Health>,
}

/// The admin router. With `token`, every request but `/healthz` and `/readyz` needs
/// `Authorization: Bearer <token>`.
pub fn router(cp: Arc<ControlPlane>, health: Arc<Health>, token: Option<String>) -> Router {
    let token: Option<Arc<[u8]>> = token.map(|t| Arc::from(t.into_bytes()));
    let state = AppState { cp, health };
    Router::new()
        .route("/api", any(resources))
        .route("/api/{*rest}", any(resources))
        .route("/apis", any(resources))
        .route("/apis/{*rest}", any(resources))
        .route("/version", get(version))
        .route("/openapi/v3", get(openapi_root))
        .route("/openapi/v3/{*rest}", get(openapi_document))
        .route(crate::api_doc::PATH, get(api_document))
        .route("/apply", post(apply))
        .route("/debug/explain", post(debug_explain))
        .route("/debug/snapshot", get(debug_snapshot))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { AdminError::no_route() })
        // axum adds the route's `Allow` header to this answer.
        .method_not_allowed_fallback(|| async { AdminError::method_not_allowed(None) })
        .layer(middleware::from_fn_with_state(token, auth))
        .with_state(state)
}

// ----- auth -----

async fn auth(State(token): State<Option<Arc<[u8]>>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let open = path == "/healthz" || path == "/readyz";
    match &token {
        Some(token) if !open => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| bearer(v.as_bytes()));
            if given.is_some_and(|g| token_matches(token, g)) {
                next.run(req).await
            } else {
                AdminError::unauthorized().into_response()
            }
        }
        _ => next.run(req).await,
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer(v: &[u8]) -> Option<&[u8]> {
    let scheme = v.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let t = v.get(7..)?;
    let start = t.iter().position(|c| *c != b' ')?;
    let end = t.iter().rposition(|c| *c != b' ')?;
    t.get(start..=end)
}

/// Constant time in the length of the expected token, whatever the client sends: the length
/// comparison does not short-circuit the byte comparison. An empty configured token never matches.
fn token_matches(expected: &[u8], given: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let len_eq = (expected.len() as u64).ct_eq(&(given.len() as u64));
    let mut bytes_eq = Choice::from(1u8);
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(0);
        bytes_eq &= e.ct_eq(&g);
    }
    bool::from(len_eq & bytes_eq)
}

// ----- responses -----

/// `299 - "<message>"`, quotes and backslashes escaped, anything outside printable ASCII replaced
/// so that the header stays valid.
fn warning_value(message: &str) -> String {
    let mut s = String::with_capacity(message.len() + 8);
    s.push_str("299 - \"");
    for c in message.chars() {
        match c {
            '"' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            ' '..='~' => s.push(c),
            '\t' | '\n' | '\r' => s.push(' '),
            _ => s.push('?'),
        }
    }
    s.push('"');
    s
}

/// At most this many `Warning` headers, and this many bytes of them, per answer: a batch of
/// thousands of objects can warn about each, and clients cap headers (Python's at 100). Kubernetes
/// caps them too (4 KiB total, longer items truncated); the rest is counted in one last warning.
const MAX_WARNINGS: usize = 50;
const MAX_WARNING_BYTES: usize = 16 * 1024;

/// The `Warning` header values of an answer: duplicates once, within the caps.
fn warning_values(warnings: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<&String> = warnings.iter().filter(|w| seen.insert(*w)).collect();
    let mut out = Vec::new();
    let mut bytes = 0;
    for (i, w) in unique.iter().enumerate() {
        let v = warning_value(w);
        if out.len() == MAX_WARNINGS || bytes + v.len() > MAX_WARNING_BYTES {
            out.push(warning_value(&format!(
                "{} more warnings not shown",
                unique.len() - i
            )));
            break;
        }
        bytes += v.len();
        out.push(v);
    }
    out
}

pub(crate) fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (code, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warning_values(warnings) {
        if let Ok(v) = HeaderValue::from_str(&w) {
            h.append(HeaderName::from_static("warning"), v);
        }
    }
    resp
}

type ApiResult = Result<Response, AdminError>;

// ----- resources -----

/// Every `/api/…` and `/apis/…` request: one handler, see [`crate::rest`].
async fn resources(State(s): State<AppState>, req: Request) -> ApiResult {
    let (parts, body) = req.into_parts();
    crate::rest::handle(
        Arc::clone(&s.cp),
        parts.method,
        parts.uri,
        parts.headers,
        body,
    )
    .await
}

async fn version() -> ApiResult {
    Ok(json_response(
        StatusCode::OK,
        &crate::k8s::discovery::version(),
        &[],
    ))
}

async fn openapi_root() -> ApiResult {
    Ok(json_response(
        StatusCode::OK,
        &crate::k8s::openapi::root(),
        &[],
    ))
}

async fn openapi_document(uri: axum::http::Uri) -> ApiResult {
    let key = uri.path().trim_start_matches("/openapi/v3/");
    match crate::k8s::openapi::document(key) {
        Some(doc) => Ok(json_response(StatusCode::OK, doc, &[])),
        None => Err(AdminError::no_route()),
    }
}

async fn api_document() -> ApiResult {
    Ok(json_response(
        StatusCode::OK,
        crate::api_doc::document(),
        &[],
    ))
}

async fn apply(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let dry = crate::rest::Query::parse(q.as_deref())?.dry_run;
    let (bytes, format) = read_body(&headers, body).await?;
    let a = s.cp.apply(&bytes, format, dry).await?;
    Ok(json_response(StatusCode::OK, &a.list, &a.warnings))
}

// ----- operations -----

async fn debug_explain(State(s): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult {
    crate::debug::explain(&s.cp, &headers, body).await
}

async fn debug_snapshot(State(s): State<AppState>) -> ApiResult {
    crate::debug::snapshot(&s.cp).await
}

async fn metrics(State(s): State<AppState>) -> ApiResult {
    let families = s.cp.gather();
    let mut text = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&families, &mut text)
        .map_err(|e| AdminError::internal(format!("encoding metrics: {e}")))?;
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.health.is_ready() {
        (StatusCode::OK, "ok")
    } else if s.health.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert!(token_matches(b"secret", b"secret"));
        assert!(!token_matches(b"secret", b"secre"));
        assert!(!token_matches(b"secret", b"secretx"));
        assert!(!token_matches(b"secret", b"SECRET"));
        assert!(!token_matches(b"", b""));
    }

    #[test]
    fn warnings_are_deduplicated_and_capped() {
        let many: Vec<String> = (0..500).map(|i| format!("w{}", i % 200)).collect();
        let v = warning_values(&many);
        assert_eq!(v.len(), MAX_WARNINGS + 1);
        assert_eq!(v[0], "299 - \"w0\"");
        assert_eq!(v[MAX_WARNINGS], "299 - \"150 more warnings not shown\"");
        let long: Vec<String> = (0..40)
            .map(|i| format!("{i}{}", "x".repeat(1000)))
            .collect();
        let v = warning_values(&long);
        assert!(v.iter().map(String::len).sum::<usize>() <= MAX_WARNING_BYTES + 64);
        assert!(v
            .last()
            .is_some_and(|l| l.contains("more warnings not shown")));
        assert_eq!(warning_values(&["a".into(), "a".into()]), ["299 - \"a\""]);
    }

    #[test]
    fn warnings_are_escaped() {
        assert_eq!(
            warning_value(r#"subset "v3" of host "r\x""#),
            r#"299 - "subset \"v3\" of host \"r\\x\"""#
        );
        assert_eq!(warning_value("é\n"), "299 - \"? \"");
    }
}
