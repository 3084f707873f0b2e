//! Real upstream servers for end-to-end tests: HTTP/1.1 echo servers on ephemeral loopback ports
//! that answer with who they are and what they received, optionally after a delay.

#![allow(dead_code)]

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running echo server. Its thread and runtime live as long as the test process.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    seen: Seen,
}

type Seen = Arc<Mutex<Vec<serde_json::Value>>>;

impl Upstream {
    /// Starts an echo server named `name` on 127.0.0.1 with an ephemeral port.
    pub fn start(name: &str) -> Upstream {
        Upstream::start_status(name, 200)
    }

    /// Starts an echo server that answers every request with `status`.
    pub fn start_status(name: &str, status: u16) -> Upstream {
        Upstream::start_with(name, status, 0)
    }

    /// Starts an echo server whose first `failures` requests get 503, the rest 200.
    pub fn start_flaky(name: &str, failures: usize) -> Upstream {
        Upstream::start_with(name, 200, failures)
    }

    fn start_with(name: &str, status: u16, failures: usize) -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let seen: Seen = Arc::default();
        let sn = seen.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let n = name.to_string();
        let h = hits.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr")).expect("send");
                let app = axum::Router::new().fallback(move |req: Request| {
                    let n = n.clone();
                    let h = h.clone();
                    let sn = sn.clone();
                    async move { echo(&n, &h, &sn, status, failures, req).await }
                });
                axum::serve(listener, app).await.expect("serve");
            });
        });
        let addr = rx.recv().expect("upstream address");
        Upstream {
            addr,
            name: name.to_string(),
            hits,
            seen,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// What every request received so far looked like (the echo JSON).
    pub fn seen(&self) -> Vec<serde_json::Value> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

async fn echo(
    name: &str,
    hits: &AtomicUsize,
    seen: &Mutex<Vec<serde_json::Value>>,
    status: u16,
    failures: usize,
    req: Request,
) -> Response {
    let n = hits.fetch_add(1, Ordering::SeqCst);
    let status = if n < failures { 503 } else { status };
    let delay = req
        .headers()
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .and_modify(|e: &mut String| {
                e.push_str(", ");
                e.push_str(v.to_str().unwrap_or(""));
            })
            .or_insert_with(|| v.to_str().unwrap_or("").to_string());
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let body = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let json = serde_json::json!({
        "upstream": name,
        "method": method,
        "uri": uri,
        "headers": headers,
        "body_len": body.len(),
    });
    if let Ok(mut v) = seen.lock() {
        v.push(json.clone());
    }
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-upstream", name)
        .body(Body::from(json.to_string()))
        .expect("response")
}
