//! Remote JWT key sets (`jwksUri`, or the issuer's OpenID discovery document): fetched by the
//! gateway with the rule's timeout on first need, cached, refreshed in the background every
//! [`REFRESH`] (Envoy's default `cache_duration`), retried sooner after a failure; a failed
//! fetch keeps the last good keys. A token whose `kid` the cached set lacks triggers one early
//! refetch (at most every [`REFETCH_MIN`]), so a rotation at the issuer is picked up at once.
//! A set no rule has asked for in [`UNUSED`] is dropped with its refresh task.

use arc_swap::ArcSwapOption;
use model::ir::jwt::{parse_jwks, Jwks, JwksSource, JwtProvider};
use pingora::connectors::http::Connector;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long fetched keys are used before they are fetched again (Envoy's default).
pub const REFRESH: Duration = Duration::from_secs(300);
/// The first retry after a failed fetch; doubled up to [`REFRESH`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The least time between two fetches asked for by requests (first fetch, unknown `kid`).
pub const REFETCH_MIN: Duration = Duration::from_secs(2);
/// A set unused for this long is forgotten.
const UNUSED: Duration = Duration::from_secs(1800);

/// Every remote key set the rules of the current snapshots name, by source.
pub struct JwksCache {
    connector: Arc<Connector>,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    started: Instant,
    fetches: prometheus::IntCounterVec,
}

struct Entry {
    source: JwksSource,
    keys: ArcSwapOption<Jwks>,
    /// Serialises fetches, so concurrent requests wait for one.
    fetching: tokio::sync::Mutex<()>,
    /// Milliseconds since the cache started: the last fetch attempt, the last use.
    last_attempt_ms: AtomicU64,
    last_used_ms: AtomicU64,
    /// The last fetch failed (the keys, if any, are older ones).
    failed: AtomicBool,
}

/// The key of a source in the cache.
fn source_key(source: &JwksSource) -> Option<String> {
    match source {
        JwksSource::Inline(_) => None,
        JwksSource::Uri { uri, .. } => Some(format!("uri {uri}")),
        JwksSource::Discovery { issuer, .. } => Some(format!("issuer {issuer}")),
    }
}

fn timeout_of(source: &JwksSource) -> Duration {
    match source {
        JwksSource::Uri { timeout, .. } | JwksSource::Discovery { timeout, .. } => *timeout,
        JwksSource::Inline(_) => Duration::ZERO,
    }
}

impl JwksCache {
    /// `fetches` is `gateway_jwks_fetches_total{result}`.
    pub fn new(fetches: prometheus::IntCounterVec) -> Arc<JwksCache> {
        Arc::new(JwksCache {
            connector: Arc::new(Connector::new(None)),
            entries: Mutex::new(HashMap::new()),
            started: Instant::now(),
            fetches,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The entry of a remote source, created (with its refresh task) on first use.
    fn entry(self: &Arc<Self>, source: &JwksSource) -> Option<Arc<Entry>> {
        let key = source_key(source)?;
        let mut map = self.entries.lock().ok()?;
        let e = map.entry(key.clone()).or_insert_with(|| {
            let e = Arc::new(Entry {
                source: source.clone(),
                keys: ArcSwapOption::empty(),
                fetching: tokio::sync::Mutex::new(()),
                last_attempt_ms: AtomicU64::new(0),
                last_used_ms: AtomicU64::new(0),
                failed: AtomicBool::new(false),
            });
            tokio::spawn(self.clone().refresh_loop(key, e.clone()));
            e
        });
        e.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
        Some(e.clone())
    }

    /// The current keys of a provider: inline ones, or the cached remote ones, fetched now when
    /// there are none yet (waiting at most the rule's timeout).
    pub async fn keys(self: &Arc<Self>, p: &JwtProvider) -> Option<Arc<Jwks>> {
        if let JwksSource::Inline(k) = &p.keys {
            return Some(k.clone());
        }
        let e = self.entry(&p.keys)?;
        if let Some(k) = e.keys.load_full() {
            return Some(k);
        }
        self.fetch_if_due(&e, None).await;
        e.keys.load_full()
    }

    /// Fetches a provider's keys again (a token names a `kid` the cached set lacks), unless the
    /// last fetch was less than [`REFETCH_MIN`] ago; the keys after.
    pub async fn refetch(self: &Arc<Self>, p: &JwtProvider) -> Option<Arc<Jwks>> {
        let e = self.entry(&p.keys)?;
        let before = e.keys.load_full();
        self.fetch_if_due(&e, before.as_ref()).await;
        e.keys.load_full()
    }

    /// One fetch, unless another request's fetch just ran (then its result is used).
    async fn fetch_if_due(&self, e: &Entry, seen: Option<&Arc<Jwks>>) {
        let _one = e.fetching.lock().await;
        let current = e.keys.load_full();
        let changed = match (&current, seen) {
            (Some(c), Some(s)) => !Arc::ptr_eq(c, s),
            (Some(_), None) => true,
            _ => false,
        };
        let last = e.last_attempt_ms.load(Ordering::Relaxed);
        let recent = last > 0 && self.now_ms().saturating_sub(last) < millis(REFETCH_MIN);
        if changed || recent {
            return;
        }
        self.fetch(e).await;
    }

    /// Fetches and stores; `true` on success. A failure keeps the last good keys.
    async fn fetch(&self, e: &Entry) -> bool {
        e.last_attempt_ms
            .store(self.now_ms().max(1), Ordering::Relaxed);
        let result = fetch_source(&self.connector, &e.source).await;
        match result {
            Ok(keys) => {
                self.fetches.with_label_values(&["ok"]).inc();
                e.keys.store(Some(Arc::new(keys)));
                e.failed.store(false, Ordering::Relaxed);
                true
            }
            Err(why) => {
                self.fetches.with_label_values(&["failed"]).inc();
                e.failed.store(true, Ordering::Relaxed);
                tracing::warn!(source = ?source_key(&e.source), error = %why, kept_last_keys = e.keys.load().is_some(), "JWKS fetch failed");
                false
            }
        }
    }

    /// Refreshes one set in the background until it goes unused: every [`REFRESH`] after the
    /// last fetch, sooner (backing off) while fetches fail.
    async fn refresh_loop(self: Arc<Self>, key: String, e: Arc<Entry>) {
        let mut retry = RETRY_FIRST;
        let mut wait = RETRY_FIRST;
        loop {
            tokio::time::sleep(wait).await;
            let now = self.now_ms();
            let idle = now.saturating_sub(e.last_used_ms.load(Ordering::Relaxed));
            if idle > millis(UNUSED) {
                if let Ok(mut map) = self.entries.lock() {
                    map.remove(&key);
                }
                return;
            }
            let healthy = e.keys.load().is_some() && !e.failed.load(Ordering::Relaxed);
            let due = if healthy { REFRESH } else { retry };
            let since = now.saturating_sub(e.last_attempt_ms.load(Ordering::Relaxed));
            if since < millis(due) {
                // A request fetched meanwhile (the first fetch, or an unknown `kid`).
                wait = Duration::from_millis(millis(due) - since);
                continue;
            }
            let ok = {
                let _one = e.fetching.lock().await;
                self.fetch(&e).await
            };
            if ok {
                retry = RETRY_FIRST;
                wait = REFRESH;
            } else {
                retry = (retry * 2).min(REFRESH);
                wait = retry;
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Fetches a remote source: the `jwksUri`, or the discovery document's `jwks_uri` then that.
async fn fetch_source(connector: &Connector, source: &JwksSource) -> Result<Jwks, String> {
    let timeout = timeout_of(source);
    let uri = match source {
        JwksSource::Inline(k) => return Ok((**k).clone()),
        JwksSource::Uri { uri, .. } => uri.clone(),
        JwksSource::Discovery { issuer, .. } => {
            let doc = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let answer = crate::outbound::get(connector, &doc, timeout).await?;
            if answer.status != 200 {
                return Err(format!("{doc} answered {}", answer.status));
            }
            let v: Value = serde_json::from_slice(&answer.body)
                .map_err(|e| format!("{doc}: invalid JSON: {e}"))?;
            v.get("jwks_uri")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{doc} has no jwks_uri"))?
                .to_string()
        }
    };
    let answer = crate::outbound::get(connector, &uri, timeout).await?;
    if answer.status != 200 {
        return Err(format!("{uri} answered {}", answer.status));
    }
    let text = std::str::from_utf8(&answer.body).map_err(|_| format!("{uri}: not UTF-8"))?;
    let keys = parse_jwks(text).map_err(|e| format!("{uri}: {e}"))?;
    if !keys.keys.iter().any(|k| k.usable()) {
        return Err(format!("{uri}: no key can verify tokens"));
    }
    Ok(keys)
}
