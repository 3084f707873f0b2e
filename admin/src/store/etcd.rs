//! `EtcdStore`: the store shared by several gateway replicas. etcd is the consensus; nothing here
//! tries to be clever about it.
//!
//! Layout: one key per object, `<prefix>/<plural>/<namespace>/<name>` (as Kubernetes' registry
//! does), its value the object's JSON without `resourceVersion`: that is etcd's `mod_revision`
//! of the key, set on every read, so it can never disagree with etcd. A listing's revision is the
//! header revision of one range read, which makes `resourceVersion` a store-wide revision exactly
//! like the file store's.
//!
//! Writes: a commit is ONE etcd transaction whose `compare` clauses are the preconditions
//! (`version == 0` for "absent", `mod_revision == v` for "at version v", `version > 0` for "must
//! exist"); when one fails, the `else` branch reads every key at the same revision so that the
//! error names the object and what was found, as the local stores do.
//!
//! Changes: one background task watches the prefix from the revision after the first read and
//! broadcasts each revision's events as a [`Change`]. When the watch breaks it watches again from
//! the next revision it has not seen (etcd replays the gap); when that history was compacted, or
//! events could not be decoded, it broadcasts a [`Change`] with no events, which tells followers
//! to relist. Every call has a deadline, so an unreachable etcd is a prompt
//! [`StoreError::Unavailable`], never a hang.

use super::{check, Change, Committed, Event, Listing, Op, Precondition, Store, StoreError};
use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use model::{Kind, Resource, ResourceKey};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// The prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "/gateway";
/// Deadline of one etcd call: an admin write answers 503 after at most this when etcd is gone.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long establishing a TCP connection to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings on idle connections: a partitioned etcd (no RST) is noticed within about this.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Largest response accepted: a listing of every object, Secrets included, in one message.
const MAX_RESPONSE_BYTES: usize = 256 << 20;
/// Backoff between watch attempts while etcd is unreachable.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where the store is: the endpoints and the key prefix of an `etcd://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http://HOST:PORT`, one per cluster member given.
    pub endpoints: Vec<String>,
    /// Starts with `/`, never ends with one.
    pub prefix: String,
}

impl EtcdConfig {
    /// Parses `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]` (CONTRACT §1).
    pub fn parse(url: &str) -> Result<EtcdConfig, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{url:?}: expected etcd://HOST:PORT[,HOST:PORT…][/PREFIX]"))?;
        let (hosts, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let mut endpoints = Vec::new();
        for h in hosts.split(',') {
            let h = h.trim();
            let port = h.rsplit_once(':').map(|(host, p)| (host, p.parse::<u16>()));
            match port {
                Some((host, Ok(p))) if !host.is_empty() && p != 0 => {
                    endpoints.push(format!("http://{h}"));
                }
                _ => return Err(format!("{url:?}: {h:?} is not HOST:PORT")),
            }
        }
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            DEFAULT_PREFIX.to_string()
        } else {
            prefix.to_string()
        };
        if prefix.contains("//") {
            return Err(format!(
                "{url:?}: the prefix {prefix:?} has an empty segment"
            ));
        }
        Ok(EtcdConfig { endpoints, prefix })
    }
}

/// A store in etcd, shared by every replica pointed at the same endpoints and prefix.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// `<prefix>/`: every key of ours starts with it.
    root: String,
    changes: broadcast::Sender<Change>,
    /// The watch stream is established (cleared on any break until it is again).
    connected: Arc<AtomicBool>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The watch task holds no reference to the store; stop it with the last handle.
        self.watcher.abort();
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects and reads the current revision once (so an unreachable etcd is an error here,
    /// [`StoreError::Unavailable`], for the caller to retry), then starts the watch task on the
    /// current tokio runtime, which must live as long as the store.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(KEEPALIVE, CALL_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let client = deadline(Client::connect(&config.endpoints, Some(options))).await?;
        let root = format!("{}/", config.prefix);
        let revision = current_revision(&client, &root).await?;
        let changes = broadcast::channel(1024).0;
        let connected = Arc::new(AtomicBool::new(false));
        let watcher = tokio::spawn(watch_loop(
            client.clone(),
            root.clone(),
            revision + 1,
            changes.clone(),
            connected.clone(),
        ));
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                client,
                root,
                changes,
                connected,
                watcher,
            }),
        })
    }

    /// Compacts etcd's history up to `revision` (operators and tests: a compacted history is
    /// what forces watchers to relist).
    pub async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        let mut kv = self.inner.client.kv_client();
        deadline(kv.compact(as_i64(revision)?, None)).await?;
        Ok(())
    }

    fn key(&self, key: &ResourceKey) -> String {
        etcd_key(&self.inner.root, key)
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.inner
            .client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }
}

fn etcd_key(root: &str, key: &ResourceKey) -> String {
    format!("{root}{}/{}/{}", key.kind.plural(), key.namespace, key.name)
}

/// The resource key of an etcd key under `root`, if it is one of ours.
fn resource_key(root: &str, key: &[u8]) -> Option<ResourceKey> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(root)?;
    let mut parts = rest.splitn(3, '/');
    let kind = Kind::from_plural(parts.next()?)?;
    let ns = parts.next()?;
    let name = parts.next()?;
    // A cluster-scoped kind is stored under the empty namespace (`ingressclasses//name`).
    (ns.is_empty() == kind.cluster_scoped() && !name.is_empty() && !name.contains('/'))
        .then(|| ResourceKey::new(kind, ns, name))
}

/// The stored object of a key-value: its JSON, `resourceVersion` = the key's `mod_revision`.
fn decode(kv: &KeyValue) -> Result<Resource, StoreError> {
    let corrupt = |m: String| {
        StoreError::Corrupt(format!(
            "etcd key {}: {m}",
            String::from_utf8_lossy(kv.key())
        ))
    };
    let value: serde_json::Value =
        serde_json::from_slice(kv.value()).map_err(|e| corrupt(e.to_string()))?;
    let mut r = model::resource_from_value(value, None).map_err(|e| corrupt(e.to_string()))?;
    let rv = u64::try_from(kv.mod_revision()).map_err(|_| corrupt("negative revision".into()))?;
    r.meta_mut().resource_version = Some(rv.to_string());
    Ok(r)
}

fn encode(r: &Resource) -> Result<Vec<u8>, StoreError> {
    let mut r = r.clone();
    r.meta_mut().resource_version = None;
    serde_json::to_vec(&r.to_value())
        .map_err(|e| StoreError::Io(format!("encode {}: {e}", r.key())))
}

/// The etcd compare a precondition on key `k` stands for (none for `Any`).
fn compare(k: &str, expected: &Precondition) -> Result<Option<Compare>, StoreError> {
    Ok(match expected {
        Precondition::Any => None,
        Precondition::Absent => Some(Compare::version(k, CompareOp::Equal, 0)),
        Precondition::Version(v) => Some(Compare::mod_revision(k, CompareOp::Equal, as_i64(*v)?)),
    })
}

fn as_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Io(format!("revision {v} out of range")))
}

fn as_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A failed etcd call as a store error: anything that looks like "cannot reach a healthy
/// cluster" is `Unavailable` (a 503, retried by clients); a request etcd refuses is not.
fn store_error(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    use tonic::Code;
    match &e {
        E::GRpcStatus(s) => match s.code() {
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::ResourceExhausted => StoreError::Io(format!("etcd refused the request: {e}")),
            _ => StoreError::Unavailable(format!("etcd: {e}")),
        },
        E::InvalidArgs(_) | E::InvalidUri(_) | E::EndpointError(_) => {
            StoreError::Io(format!("etcd client: {e}"))
        }
        _ => StoreError::Unavailable(format!("etcd: {e}")),
    }
}

/// Runs one etcd call under [`CALL_TIMEOUT`]: tonic's own timeout does not cover waiting for a
/// connection that the balancer cannot make.
async fn deadline<T>(
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(store_error),
        Err(_) => Err(StoreError::Unavailable(format!(
            "etcd did not answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

async fn current_revision(client: &Client, root: &str) -> Result<u64, StoreError> {
    let mut kv = client.kv_client();
    let resp = deadline(kv.get(
        root,
        Some(GetOptions::new().with_prefix().with_count_only()),
    ))
    .await?;
    header_revision(resp.header())
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Result<u64, StoreError> {
    h.map(|h| as_u64(h.revision()))
        .ok_or_else(|| StoreError::Io("etcd response without a header".into()))
}

#[async_trait]
impl Store for EtcdStore {
    async fn list(&self) -> Result<Listing, StoreError> {
        let mut kv = self.kv();
        let resp = deadline(kv.get(
            self.inner.root.as_str(),
            Some(GetOptions::new().with_prefix()),
        ))
        .await?;
        let revision = header_revision(resp.header())?;
        let mut items = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            // Keys under the prefix that are not objects of ours (an operator's note, a
            // lock) are left alone, as the file store ignores other files.
            if resource_key(&self.inner.root, kv.key()).is_some() {
                items.push(decode(kv)?);
            }
        }
        Ok(Listing { revision, items })
    }

    async fn get(&self, key: &ResourceKey) -> Result<Option<Resource>, StoreError> {
        let mut kv = self.kv();
        let resp = deadline(kv.get(self.key(key), None)).await?;
        resp.kvs().first().map(decode).transpose()
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<Committed, StoreError> {
        if ops.is_empty() {
            return Ok(Committed {
                revision: self.revision().await?,
                objects: Vec::new(),
            });
        }
        let mut seen = BTreeSet::new();
        let mut when = Vec::new();
        let mut then = Vec::with_capacity(ops.len());
        let mut reads = Vec::with_capacity(ops.len());
        for op in &ops {
            let key = op.key();
            if !seen.insert(key.clone()) {
                // etcd refuses a transaction that touches a key twice; say so in our terms.
                return Err(StoreError::Io(format!("{key} appears twice in one commit")));
            }
            let k = self.key(&key);
            match op {
                Op::Put { resource, expected } => {
                    when.extend(compare(&k, expected)?);
                    then.push(TxnOp::put(k.as_str(), encode(resource)?, None));
                }
                Op::Delete { expected, .. } => {
                    // A delete needs the object, whatever else it expects.
                    when.push(Compare::version(k.as_str(), CompareOp::Greater, 0));
                    // Deleting what must not exist cannot succeed (`Absent` contradicts the
                    // compare above); the else branch reports it as the local stores do.
                    when.extend(compare(&k, expected)?);
                    then.push(TxnOp::delete(
                        k.as_str(),
                        Some(DeleteOptions::new().with_prev_key()),
                    ));
                }
            }
            reads.push(TxnOp::get(
                k.as_str(),
                Some(GetOptions::new().with_keys_only()),
            ));
        }
        let txn = Txn::new().when(when).and_then(then).or_else(reads);
        let mut kv = self.kv();
        let resp = deadline(kv.txn(txn)).await?;
        let revision = header_revision(resp.header())?;
        let responses = resp.op_responses();
        if !resp.succeeded() {
            return Err(failed_precondition(&ops, &responses));
        }
        let mut objects = Vec::with_capacity(ops.len());
        for (op, r) in ops.into_iter().zip(responses) {
            match (op, r) {
                (Op::Put { mut resource, .. }, _) => {
                    resource.meta_mut().resource_version = Some(revision.to_string());
                    objects.push(resource);
                }
                (Op::Delete { key, .. }, TxnOpResponse::Delete(d)) => {
                    let old = d
                        .prev_kvs()
                        .first()
                        .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
                    objects.push(decode(old)?);
                }
                (Op::Delete { key, .. }, _) => {
                    return Err(StoreError::Io(format!(
                        "etcd answered the delete of {key} with another operation"
                    )))
                }
            }
        }
        Ok(Committed { revision, objects })
    }

    fn watch(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        current_revision(&self.inner.client, &self.inner.root).await
    }

    fn connected(&self) -> bool {
        self.inner.connected.load(Ordering::SeqCst)
    }
}

/// The first precondition that failed, from the else branch's reads (one per op, in order, all
/// at the revision the transaction was evaluated at).
fn failed_precondition(ops: &[Op], reads: &[TxnOpResponse]) -> StoreError {
    for (op, r) in ops.iter().zip(reads) {
        let current = match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| as_u64(kv.mod_revision())),
            _ => None,
        };
        let result = match op {
            Op::Put { resource, expected } => check(&resource.key(), *expected, current),
            Op::Delete { key, expected } => {
                if current.is_none() && !matches!(expected, Precondition::Version(_)) {
                    Err(StoreError::NotFound { key: key.clone() })
                } else {
                    check(key, *expected, current)
                }
            }
        };
        if let Err(e) = result {
            return e;
        }
    }
    StoreError::Io("etcd rejected the transaction but every precondition holds".into())
}

/// Follows the prefix from `next` on, for as long as the store lives. See the module doc.
async fn watch_loop(
    client: Client,
    root: String,
    mut next: u64,
    tx: broadcast::Sender<Change>,
    connected: Arc<AtomicBool>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match watch_once(&client, &root, &mut next, &tx, &connected).await {
            Ok(()) => backoff = BACKOFF_MIN,
            Err(e) => {
                if connected.swap(false, Ordering::SeqCst) {
                    tracing::warn!(error = %e, "lost the etcd watch; serving the last good configuration");
                } else {
                    tracing::debug!(error = %e, "etcd watch not established");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// One watch stream, until it breaks. `Ok` when etcd cancelled it (compaction): watch again
/// at once.
async fn watch_once(
    client: &Client,
    root: &str,
    next: &mut u64,
    tx: &broadcast::Sender<Change>,
    connected: &AtomicBool,
) -> Result<(), StoreError> {
    let mut wc = client
        .watch_client()
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(as_i64(*next)?)
        .with_prev_key();
    let mut stream = deadline(wc.watch(root, Some(options))).await?;
    loop {
        let msg = stream.message().await.map_err(store_error)?;
        let Some(resp) = msg else {
            return Err(StoreError::Unavailable("etcd closed the watch".into()));
        };
        let header = header_revision(resp.header()).unwrap_or(0);
        if resp.compact_revision() > 0 {
            // What we missed is gone from etcd's history: followers must relist, and
            // watching again from the oldest revision kept loses nothing after that list.
            tracing::info!(
                compacted = resp.compact_revision(),
                "etcd history compacted past the watch; relisting"
            );
            *next = as_u64(resp.compact_revision());
            let _ = tx.send(Change {
                revision: header,
                events: Vec::new(),
            });
            return Ok(());
        }
        if resp.canceled() {
            return Err(StoreError::Unavailable(format!(
                "etcd cancelled the watch: {}",
                resp.cancel_reason()
            )));
        }
        if resp.created() {
            if !connected.swap(true, Ordering::SeqCst) {
                tracing::info!(revision = header, "watching etcd");
            }
            if header >= *next {
                // Changes happened while we were not watching. Nothing is lost (the watch
                // replays from `next`), but one fresh list converges in one step.
                tracing::info!(
                    from = *next,
                    to = header,
                    "etcd changed while the watch was down; relisting"
                );
                let _ = tx.send(Change {
                    revision: header,
                    events: Vec::new(),
                });
            }
            continue;
        }
        for change in changes(root, resp.events()) {
            *next = change.revision + 1;
            let _ = tx.send(change);
        }
    }
}

/// The events of one watch response, one [`Change`] per revision (a transaction's events share
/// it). An event that cannot be decoded turns its change into a relist marker.
fn changes(root: &str, events: &[etcd_client::Event]) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    let mut broken = BTreeSet::new();
    for ev in events {
        let Some(kv) = ev.kv() else { continue };
        let revision = as_u64(kv.mod_revision());
        let Some(key) = resource_key(root, kv.key()) else {
            continue;
        };
        let event = match ev.event_type() {
            EventType::Put => match decode(kv) {
                Ok(r) => Some(Event::Put(r)),
                Err(e) => {
                    tracing::error!(error = %e, "undecodable object in etcd");
                    broken.insert(revision);
                    None
                }
            },
            EventType::Delete => Some(Event::Delete(key)),
        };
        match out.last_mut() {
            Some(c) if c.revision == revision => c.events.extend(event),
            _ => out.push(Change {
                revision,
                events: event.into_iter().collect(),
            }),
        }
    }
    for c in &mut out {
        if broken.contains(&c.revision) {
            c.events.clear();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = EtcdConfig::parse("etcd://127.0.0.1:2379").expect("parse");
        assert_eq!(c.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(c.prefix, "/gateway");
        let c = EtcdConfig::parse("etcd://a:1,b:2/prod/gw/").expect("parse");
        assert_eq!(c.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(c.prefix, "/prod/gw");
        assert!(EtcdConfig::parse("etcd://a").is_err());
        assert!(EtcdConfig::parse("etcd://:1").is_err());
        assert!(EtcdConfig::parse("etcd://a:1,").is_err());
        assert!(EtcdConfig::parse("http://a:1").is_err());
        assert!(EtcdConfig::parse("etcd://a:1/x//y").is_err());
    }

    #[test]
    fn keys_round_trip() {
        let k = ResourceKey::new(Kind::VirtualService, "default", "reviews");
        let e = etcd_key("/gateway/", &k);
        assert_eq!(e, "/gateway/virtualservices/default/reviews");
        assert_eq!(resource_key("/gateway/", e.as_bytes()), Some(k));
        assert_eq!(resource_key("/gateway/", b"/gateway/lock"), None);
        assert_eq!(resource_key("/gateway/", b"/other/secrets/a/b"), None);
        assert_eq!(resource_key("/gateway/", b"/gateway/secrets/a/b/c"), None);
    }
}
