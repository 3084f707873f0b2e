//! `?watch=true`: a stream of JSON lines `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR",
//! "object":…}` as Kubernetes sends them. Without a `resourceVersion` (or with `0`) the current
//! objects come first as `ADDED`; with one, the history after it is replayed, or, if that history
//! is gone, a single `ERROR` event with a 410 `Expired` Status (clients relist). Objects are
//! Tables (one row) when the client asked for Tables, as `kubectl get -w` does.

use super::table;
use crate::error::AdminError;
use crate::feed::WatchEvent;
use crate::rest::Ctx;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::channel::Sender;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How long a watch without `timeoutSeconds` lasts (Kubernetes picks 30 to 60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// The longest watch (`timeoutSeconds` beyond it is cut to it).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(15);

struct Stream {
    tx: Sender<Bytes, std::convert::Infallible>,
    served: &'static super::catalog::Served,
    tables: bool,
}

impl Stream {
    async fn send(&mut self, type_: &str, object: Value) -> bool {
        let object = if self.tables && matches!(type_, "ADDED" | "MODIFIED" | "DELETED") {
            let rv = object
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            table::table(
                self.served,
                std::slice::from_ref(&object),
                json!({ "resourceVersion": rv }),
            )
        } else {
            object
        };
        let mut line =
            serde_json::to_vec(&json!({ "type": type_, "object": object })).unwrap_or_default();
        line.push(b'\n');
        self.tx.send_data(Bytes::from(line)).await.is_ok()
    }

    async fn expired(&mut self, message: String) {
        let status = AdminError::expired(message).status_body();
        self.send("ERROR", status).await;
    }
}

/// Serves a watch of the request's kind, namespace and selectors.
pub(crate) fn serve(ctx: &Ctx) -> Result<Response, AdminError> {
    let served = super::catalog::of(ctx.kind).ok_or_else(AdminError::no_route)?;
    let from: Option<u64> = match ctx.q.resource_version.as_deref() {
        None | Some("0") => None,
        Some(v) => Some(v.parse().map_err(|_| {
            AdminError::bad_request(format!(
                "resourceVersion: Invalid value: {v:?}: must be a decimal number"
            ))
        })?),
    };
    let mut sub = ctx.cp.subscribe();
    // Read after subscribing: a change that lands in between is both listed and in the feed,
    // and is skipped from the feed by its revision.
    let (listed_at, initial) = match from {
        None => {
            let (rev, items) = ctx.selected();
            (rev, Some(items))
        }
        Some(rv) => (rv, None),
    };
    let (tx, body) = http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(64);
    let kind = ctx.kind;
    let namespace = ctx.namespace.clone();
    let selector = ctx.q.selector.clone();
    let bookmarks = ctx.q.bookmarks;
    let initial_end = ctx.q.send_initial_events && bookmarks;
    // Capped: an instant that far ahead cannot be represented.
    let timeout = ctx
        .q
        .timeout_seconds
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
        .min(MAX_TIMEOUT);
    let mut stream = Stream {
        tx,
        served,
        tables: table::wanted(&ctx.headers),
    };
    let relevant = move |e: &WatchEvent| {
        e.key.as_ref().is_some_and(|k| {
            k.kind == kind && namespace.as_deref().is_none_or(|ns| k.namespace == ns)
        }) && selector.matches(&e.object)
    };
    let bookmark = move |rev: u64, end: bool| {
        let mut meta = json!({ "resourceVersion": rev.to_string() });
        if end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        json!({ "kind": kind.as_str(), "apiVersion": kind.api_version(), "metadata": meta })
    };
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = listed_at;
        if let Some(items) = initial {
            for o in items {
                if !stream.send("ADDED", o).await {
                    return;
                }
            }
            if initial_end && !stream.send("BOOKMARK", bookmark(last, true)).await {
                return;
            }
        } else if listed_at < sub.floor {
            stream
                .expired(format!(
                    "too old resource version: {listed_at} ({})",
                    sub.floor
                ))
                .await;
            return;
        }
        for e in std::mem::take(&mut sub.backlog) {
            if e.revision > last && relevant(&e) && !stream.send(e.type_, e.object.clone()).await {
                return;
            }
        }
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = ticker.tick(), if bookmarks => {
                    if !stream.send("BOOKMARK", bookmark(last, false)).await {
                        return;
                    }
                }
                got = sub.rx.recv() => match got {
                    Ok(e) if e.type_ == "RESET" => {
                        stream.expired("the configuration store was reset: relist".into()).await;
                        return;
                    }
                    Ok(e) => {
                        if e.revision <= listed_at {
                            continue;
                        }
                        last = last.max(e.revision);
                        if relevant(&e) && !stream.send(e.type_, e.object.clone()).await {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        stream.expired(format!("the watch fell behind at resource version {last}: relist")).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    let mut resp = (StatusCode::OK, Body::new(body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
