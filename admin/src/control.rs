//! The control plane: the single-writer apply pipeline. A write goes decode → validate (every
//! cause) → server-managed metadata → preconditions → candidate set → translate → (dry run stops
//! here) → one store commit → the new read view → ONE `ArcSwap::store` of the snapshot → metrics.
//! Reads are served from the last committed view, never from a half-applied change.
//!
//! Shared stores (etcd): the view may be behind the store, because another replica committed and
//! the watch has not delivered it yet. Then the store's preconditions (or the view's own checks)
//! fail; a write that failed that way reloads the view from the store and runs again, so that only
//! a real conflict (a stale `resourceVersion` sent by the client) is a 409. [`ControlPlane::follow`]
//! reloads on every change another replica commits, and on the store's "relist" signal.

use crate::admission::{admit, check, Mode, Origin, Upsert};
use crate::error::AdminError;
use crate::metrics::ConfigMetrics;
use crate::store::{resource_version, Change, Listing, Op, Precondition, Store};
use arc_swap::ArcSwap;
use model::ir::Snapshot;
use model::translate::{Condition, Translation};
use model::{Format, Kind, Resource, ResourceKey, ResourceSet};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast;

/// What the read side serves: the committed set, its revision, and its translation's statuses.
#[derive(Debug, Default)]
struct View {
    revision: u64,
    set: ResourceSet,
    statuses: Statuses,
}

/// A translation's conditions per resource: shared by the view and the answer to the write that
/// produced them (one entry per stored object).
type Statuses = Arc<BTreeMap<ResourceKey, Vec<Condition>>>;

/// The control plane of one gateway process.
pub struct ControlPlane {
    store: Arc<dyn Store>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    view: ArcSwap<View>,
    /// The single writer: held from the read of the current set to the swap of the new one.
    writer: tokio::sync::Mutex<()>,
    metrics: ConfigMetrics,
    registry: prometheus::Registry,
    /// The gateway's own namespace (`--namespace`), where `credentialName`s are looked up after
    /// the referencing resource's namespace.
    gateway_namespace: String,
    /// The Gateway ports the process's listeners serve, once told ([`Self::serve_ports`]).
    listener_ports: std::sync::OnceLock<std::collections::BTreeSet<u16>>,
    /// What watchers see: every change of the view, whichever store it came from.
    feed: crate::feed::Feed,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("revision", &self.view.load().revision)
            .finish_non_exhaustive()
    }
}

/// How many times a write whose failure may come from a stale view reloads and runs again.
/// Each retry follows a commit by someone else, so running out means a write storm on one object.
const STALE_VIEW_RETRIES: usize = 5;
/// Backoff of [`ControlPlane::follow`] while reloading fails (the store is unreachable).
const RELOAD_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RELOAD_BACKOFF_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
enum Step {
    Upsert(Upsert),
    Delete {
        key: ResourceKey,
        expected: Option<u64>,
    },
}

/// What one step did.
#[derive(Debug)]
enum Done {
    Written {
        resource: Resource,
        created: bool,
        warnings: Vec<String>,
    },
    /// Same object as stored: nothing written, `resourceVersion` kept (as Kubernetes does).
    Unchanged {
        resource: Resource,
        warnings: Vec<String>,
    },
    Deleted {
        resource: Resource,
    },
}

struct Executed {
    done: Vec<Done>,
    revision: u64,
    statuses: Statuses,
    warnings: BTreeMap<ResourceKey, Vec<String>>,
}

/// The answer to a single-object write.
#[derive(Debug, Clone)]
pub struct Written {
    /// The object as stored (Secrets redacted), with `status`.
    pub object: Value,
    /// Whether it did not exist before (201).
    pub created: bool,
    /// `Warning` header messages.
    pub warnings: Vec<String>,
}

/// The answer to `/apply`.
#[derive(Debug, Clone)]
pub struct Applied {
    /// A `List` of the applied objects.
    pub list: Value,
    pub warnings: Vec<String>,
}

impl ControlPlane {
    /// Loads every stored resource, validates nothing (already valid), translates and stores the
    /// snapshot. `gateway_namespace` is the gateway's own namespace (`--namespace`).
    pub async fn open(
        store: Arc<dyn Store>,
        registry: prometheus::Registry,
        snapshot: Arc<ArcSwap<Snapshot>>,
        gateway_namespace: String,
    ) -> Result<Arc<ControlPlane>, AdminError> {
        // Read first: a caller may retry `open` while the store is unreachable, and the metrics
        // can be registered only once.
        let listing = store.list().await?;
        let metrics = ConfigMetrics::register(&registry)
            .map_err(|e| AdminError::startup(format!("registering config metrics: {e}")))?;
        let cp = Arc::new(ControlPlane {
            store,
            snapshot,
            view: ArcSwap::from_pointee(View::default()),
            writer: tokio::sync::Mutex::new(()),
            metrics,
            registry,
            gateway_namespace,
            listener_ports: std::sync::OnceLock::new(),
            feed: crate::feed::Feed::new(listing.revision),
        });
        {
            let _writer = cp.writer.lock().await;
            cp.install(listing)?;
        }
        Ok(cp)
    }

    /// Tells which Gateway ports the listeners serve (once; later calls change nothing), so that
    /// a server on another port is reported; translates the stored configuration again with it.
    pub async fn serve_ports(
        &self,
        ports: std::collections::BTreeSet<u16>,
    ) -> Result<(), AdminError> {
        if self.listener_ports.set(ports).is_err() {
            return Ok(());
        }
        let _writer = self.writer.lock().await;
        let listing = self.store.list().await?;
        self.install(listing)
    }

    /// The generation of the served configuration: the store revision it was built from.
    pub fn generation(&self) -> u64 {
        self.view.load().revision
    }

    /// The served snapshot and the generation it was built from, read together under the writer
    /// lock (the pipeline stores the view and swaps the snapshot one after the other).
    pub async fn served(&self) -> (u64, Arc<Snapshot>) {
        let _writer = self.writer.lock().await;
        (self.generation(), self.snapshot.load_full())
    }

    /// The registry `/metrics` exposes.
    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }

    /// Every metric of the registry, the store's connection state read now.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.metrics.store_connected(self.store.connected());
        self.registry.gather()
    }

    /// Replaces the view and the snapshot with the store's content. The writer lock is held.
    fn install(&self, listing: Listing) -> Result<(), AdminError> {
        let mut set = ResourceSet::new();
        for r in listing.items {
            set.insert(r);
        }
        let Translation {
            snapshot, statuses, ..
        } = crate::translation::translate_read(
            &set,
            &self.gateway_namespace,
            self.listener_ports.get(),
        )?;
        let old = self.view.swap(Arc::new(View {
            revision: listing.revision,
            set,
            statuses: Arc::new(statuses),
        }));
        self.publish(&old, listing.revision);
        retire(self.snapshot.swap(Arc::new(snapshot)));
        self.metrics.success(listing.revision);
        Ok(())
    }

    /// Reloads from the store if it is not at our view's revision (another replica committed,
    /// or the store was restored). Returns whether the view changed.
    async fn resync(&self) -> Result<bool, AdminError> {
        let _writer = self.writer.lock().await;
        let listing = self.store.list().await?;
        // Not only `>`: a view built without someone else's interleaved commit is labelled with
        // an older revision on purpose (see `execute_once`), and a store restored from a backup
        // can be behind us; the store is the truth either way.
        if listing.revision == self.view.load().revision {
            return Ok(false);
        }
        tracing::info!(
            revision = listing.revision,
            "reloading the configuration from the store"
        );
        self.install(listing)?;
        Ok(true)
    }

    // ----- reads -----

    /// One object as the API shows it.
    pub fn get(&self, key: &ResourceKey) -> Result<Value, AdminError> {
        let view = self.view.load();
        view.set
            .get(key)
            .map(|r| render(r, &view.statuses))
            .ok_or_else(|| AdminError::not_found(key.kind, &key.name))
    }

    /// A `<Kind>List` of one kind, in one namespace or all, sorted by namespace then name.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Value {
        let (revision, items) = self.list_items(kind, namespace);
        json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.as_str()),
            "metadata": { "resourceVersion": revision.to_string() },
            "items": items,
        })
    }

    /// The objects of one kind as the API shows them, sorted by namespace then name, and the
    /// revision of the view they were read from.
    pub(crate) fn list_items(&self, kind: Kind, namespace: Option<&str>) -> (u64, Vec<Value>) {
        let view = self.view.load();
        let items = view
            .set
            .items
            .iter()
            .filter(|(k, _)| k.kind == kind && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, r)| render(r, &view.statuses))
            .collect();
        (view.revision, items)
    }

    /// Tells watchers how the view changed from `old` to the current one, at `revision`. The
    /// writer lock is held, so changes are published in commit order.
    fn publish(&self, old: &View, revision: u64) {
        let new = self.view.load();
        self.feed.publish(
            revision,
            &old.set,
            &new.set,
            |r| render(r, &new.statuses),
            |r| render(r, &old.statuses),
        );
    }

    /// A subscription to the view's changes and the history a watch may resume from.
    pub(crate) fn subscribe(&self) -> crate::feed::Subscription {
        self.feed.subscribe()
    }

    /// One object as stored (a Secret's keys included): the base a patch applies to. Never
    /// answered as it is.
    pub(crate) fn stored(&self, key: &ResourceKey) -> Option<Resource> {
        self.view.load().set.get(key).cloned()
    }

    // ----- writes -----

    /// `POST …/namespaces/{ns}/{plural}`.
    pub async fn create(
        &self,
        kind: Kind,
        namespace: &str,
        body: &[u8],
        format: Format,
        dry_run: bool,
    ) -> Result<Written, AdminError> {
        let r = self
            .write_one(kind, namespace, None, body, format, Mode::Create, dry_run)
            .await;
        self.count(&r, dry_run);
        r
    }

    /// `PUT …/namespaces/{ns}/{plural}/{name}`: create or replace.
    pub async fn replace(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        body: &[u8],
        format: Format,
        dry_run: bool,
    ) -> Result<Written, AdminError> {
        let r = self
            .write_one(
                kind,
                namespace,
                Some(name),
                body,
                format,
                Mode::Upsert,
                dry_run,
            )
            .await;
        self.count(&r, dry_run);
        r
    }

    /// `DELETE …/{name}`: a `Status` of success. `expected` is DeleteOptions'
    /// `preconditions.resourceVersion`.
    pub async fn delete(
        &self,
        key: &ResourceKey,
        expected: Option<u64>,
        dry_run: bool,
    ) -> Result<Value, AdminError> {
        let r = self
            .execute(
                vec![Step::Delete {
                    key: key.clone(),
                    expected,
                }],
                dry_run,
            )
            .await;
        self.count(&r, dry_run);
        let ex = r?;
        let uid = ex.done.iter().find_map(|d| match d {
            Done::Deleted { resource } => resource.meta().uid.clone(),
            _ => None,
        });
        let kind = key.kind;
        let mut details = json!({ "name": key.name, "kind": kind.plural() });
        if let Value::Object(m) = &mut details {
            if !kind.group().is_empty() {
                m.insert("group".into(), kind.group().into());
            }
            if let Some(uid) = uid {
                m.insert("uid".into(), uid.into());
            }
        }
        Ok(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }))
    }

    /// `POST /apply`: a List, a JSON array or multi-document YAML; all or nothing.
    pub async fn apply(
        &self,
        body: &[u8],
        format: Format,
        dry_run: bool,
    ) -> Result<Applied, AdminError> {
        let r = self.apply_inner(body, format, dry_run).await;
        self.count(&r, dry_run);
        r
    }

    /// Applies every JSON/YAML manifest in a file or folder (create or replace, unconditional),
    /// admitted as `gateway validate` admits them. Err Display lists every problem with its file,
    /// document and field path; then nothing is applied.
    pub async fn bootstrap(&self, path: &Path) -> Result<usize, AdminError> {
        let (verdict, upserts) = crate::manifests::admit_paths(&[path.to_path_buf()])?;
        if !verdict.problems.is_empty() {
            self.metrics.failure();
            return Err(AdminError::startup(format!(
                "bootstrap {}: {} problem(s), nothing applied:\n  {}",
                path.display(),
                verdict.problems.len(),
                verdict.problems.join("\n  ")
            )));
        }
        for w in &verdict.warnings {
            tracing::warn!("bootstrap: {w}");
        }
        let steps: Vec<Step> = upserts
            .into_iter()
            .map(|mut u| {
                // Bootstrap is unconditional: the files do not know the store's versions.
                u.expected = None;
                // Validation warnings were logged above with their file and document.
                u.warnings.clear();
                Step::Upsert(u)
            })
            .collect();
        let n = steps.len();
        let r = self.execute(steps, false).await;
        self.count(&r, false);
        let ex = r?;
        for (key, ws) in &ex.warnings {
            for w in ws {
                tracing::warn!(resource = %key, "{w}");
            }
        }
        Ok(n)
    }

    /// Counts a rejected change (not a precondition failure, and never a dry run).
    fn count<T>(&self, r: &Result<T, AdminError>, dry_run: bool) {
        if let Err(e) = r {
            if !dry_run && matches!(e.code().as_u16(), 400 | 422 | 500 | 503) {
                self.metrics.failure();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_one(
        &self,
        kind: Kind,
        namespace: &str,
        name: Option<&str>,
        body: &[u8],
        format: Format,
        mode: Mode,
        dry_run: bool,
    ) -> Result<Written, AdminError> {
        let mut r = model::decode_resource(body, format, Some(kind))
            .map_err(|e| AdminError::decode(&e, format, ""))?;
        let meta = r.meta_mut();
        if kind.cluster_scoped() {
            // Kubernetes drops the namespace of a cluster-scoped object.
            meta.namespace = None;
        } else if meta
            .namespace
            .as_deref()
            .is_some_and(|ns| !ns.is_empty() && ns != namespace)
        {
            return Err(AdminError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if !kind.cluster_scoped() {
            meta.namespace = Some(namespace.to_string());
        }
        if let Some(name) = name {
            if meta.name.is_empty() {
                meta.name = name.to_string();
            } else if meta.name != name {
                return Err(AdminError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta.name
                )));
            }
        }
        let obj_name = meta.name.clone();
        let (u, causes) = check(r, "", mode)?;
        if !causes.is_empty() {
            return Err(AdminError::invalid(kind, &obj_name, causes));
        }
        let ex = self.execute(vec![Step::Upsert(u)], dry_run).await?;
        let mut done = ex.done.into_iter();
        let Some(d) = done.next() else {
            return Err(AdminError::internal("write produced no result"));
        };
        let (resource, created, mut warnings) = match d {
            Done::Written {
                resource,
                created,
                warnings,
            } => (resource, created, warnings),
            Done::Unchanged { resource, warnings } => (resource, false, warnings),
            Done::Deleted { .. } => return Err(AdminError::internal("write deleted")),
        };
        if let Some(ws) = ex.warnings.get(&resource.key()) {
            warnings.extend(ws.iter().cloned());
        }
        Ok(Written {
            object: render(&resource, &ex.statuses),
            created,
            warnings,
        })
    }

    async fn apply_inner(
        &self,
        body: &[u8],
        format: Format,
        dry_run: bool,
    ) -> Result<Applied, AdminError> {
        let mut batch = model::load::Batch::new();
        batch.add("", body, format);
        if let Some((_, e)) = batch.source_errors().next() {
            return Err(AdminError::decode(e, format, ""));
        }
        let admitted = admit(&batch, Origin::Body)?;
        if admitted.problems.iter().any(|p| p.decode) {
            // Shape problems first, as Kubernetes decodes before it validates.
            let (mut causes, rest): (Vec<_>, Vec<_>) =
                admitted.problems.into_iter().partition(|p| p.decode);
            causes.extend(rest);
            return Err(AdminError::bad_request_batch(
                causes.into_iter().map(|p| p.cause).collect(),
            ));
        }
        if !admitted.problems.is_empty() {
            return Err(AdminError::invalid_batch(
                admitted.problems.into_iter().map(|p| p.cause).collect(),
            ));
        }
        let skipped: Vec<String> = admitted
            .skipped
            .iter()
            .map(|(i, w)| format!("items[{i}]: {w}"))
            .collect();
        let steps: Vec<Step> = admitted
            .upserts
            .into_iter()
            .map(|(_, u)| Step::Upsert(u))
            .collect();
        let ex = self.execute(steps, dry_run).await?;
        let mut items = Vec::new();
        let mut warnings = skipped;
        for d in &ex.done {
            let (resource, ws) = match d {
                Done::Written {
                    resource, warnings, ..
                }
                | Done::Unchanged {
                    resource, warnings, ..
                } => (resource, warnings),
                Done::Deleted { .. } => continue,
            };
            let key = resource.key();
            let label = format!("{} {}/{}", key.kind, key.namespace, key.name);
            let translated = ex.warnings.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            for w in ws.iter().chain(translated) {
                warnings.push(format!("{label}: {w}"));
            }
            items.push(render(resource, &ex.statuses));
        }
        Ok(Applied {
            list: json!({
                "apiVersion": "v1",
                "kind": "List",
                "metadata": { "resourceVersion": ex.revision.to_string() },
                "items": items,
            }),
            warnings,
        })
    }

    /// The pipeline, run again on a fresh view when a failure may only mean that our view is
    /// behind a shared store (module doc). With a local store the view never is: the reload finds
    /// the same revision and the failure stands.
    async fn execute(&self, steps: Vec<Step>, dry_run: bool) -> Result<Executed, AdminError> {
        let mut attempt = 0;
        loop {
            // The view this attempt starts from (or an older one): if the follower replaces it
            // while the attempt fails, the failure may be stale even when `resync` finds nothing
            // left to reload.
            let seen = self.view.load_full();
            match self.execute_once(steps.clone(), dry_run).await {
                Err(e)
                    if attempt < STALE_VIEW_RETRIES && matches!(e.code().as_u16(), 404 | 409) =>
                {
                    attempt += 1;
                    let reloaded = self.resync().await?;
                    if !reloaded && Arc::ptr_eq(&seen, &self.view.load_full()) {
                        return Err(e);
                    }
                    tracing::debug!(
                        attempt,
                        "the view was behind the store; running the write again"
                    );
                }
                r => return r,
            }
        }
    }

    /// The pipeline from the current set on; see the module doc.
    async fn execute_once(&self, steps: Vec<Step>, dry_run: bool) -> Result<Executed, AdminError> {
        let _writer = self.writer.lock().await;
        let view = self.view.load_full();
        let mut set = view.set.clone();
        let now = crate::time::rfc3339(SystemTime::now());
        let mut ops = Vec::new();
        let mut done = Vec::with_capacity(steps.len());
        for step in steps {
            match step {
                Step::Upsert(u) => {
                    let Upsert {
                        mut resource,
                        mode,
                        expected,
                        warnings,
                    } = u;
                    let key = resource.key();
                    let old = set.get(&key).cloned();
                    let old_rv = old.as_ref().and_then(resource_version);
                    if mode == Mode::Create && old.is_some() {
                        return Err(AdminError::already_exists(key.kind, &key.name));
                    }
                    // A create has nothing to compare a version with: existence decides.
                    if mode == Mode::Upsert && expected.is_some() && expected != old_rv {
                        return Err(AdminError::conflict(key.kind, &key.name));
                    }
                    let generation = match &old {
                        Some(o) => {
                            let g = o.meta().generation.unwrap_or(1);
                            if o.spec_value() == resource.spec_value() {
                                g
                            } else {
                                g + 1
                            }
                        }
                        None => 1,
                    };
                    let m = resource.meta_mut();
                    m.generation = Some(generation);
                    m.resource_version = old_rv.map(|v| v.to_string());
                    match &old {
                        Some(o) => {
                            m.uid = o.meta().uid.clone();
                            m.creation_timestamp = o.meta().creation_timestamp.clone();
                        }
                        None => {
                            m.uid = Some(uuid::Uuid::new_v4().to_string());
                            m.creation_timestamp = Some(now.clone());
                        }
                    }
                    if old.as_ref() == Some(&resource) {
                        done.push(Done::Unchanged { resource, warnings });
                        continue;
                    }
                    ops.push(Op::Put {
                        resource: resource.clone(),
                        expected: old_rv.map_or(Precondition::Absent, Precondition::Version),
                    });
                    set.insert(resource.clone());
                    done.push(Done::Written {
                        resource,
                        created: old.is_none(),
                        warnings,
                    });
                }
                Step::Delete { key, expected } => {
                    let Some(old) = set.remove(&key) else {
                        return Err(AdminError::not_found(key.kind, &key.name));
                    };
                    let old_rv = resource_version(&old);
                    if expected.is_some() && expected != old_rv {
                        return Err(AdminError::conflict(key.kind, &key.name));
                    }
                    ops.push(Op::Delete {
                        key,
                        expected: old_rv.map_or(Precondition::Any, Precondition::Version),
                    });
                    done.push(Done::Deleted { resource: old });
                }
            }
        }
        let Translation {
            snapshot,
            statuses,
            warnings,
        } = crate::translation::translate_read(
            &set,
            &self.gateway_namespace,
            self.listener_ports.get(),
        )?;
        let statuses = Arc::new(statuses);
        if dry_run || ops.is_empty() {
            return Ok(Executed {
                done,
                revision: view.revision,
                statuses,
                warnings,
            });
        }
        let committed = self.store.commit(ops).await?;
        // Each put comes back with its resourceVersion; deletes come back as they were.
        let mut stored = committed.objects.into_iter();
        for d in &mut done {
            match d {
                Done::Written { resource, .. } => {
                    if let Some(s) = stored.next() {
                        *resource = s;
                        set.insert(resource.clone());
                    }
                }
                Done::Deleted { .. } => {
                    stored.next();
                }
                Done::Unchanged { .. } => {}
            }
        }
        // Our set is the store's state only if nobody committed between our view and us. If
        // someone did (another replica; not yet seen), keep the old revision on the view so that
        // the follower's next event, our own commit's at the latest, reloads the whole state.
        let revision = if committed.revision == view.revision + 1 {
            committed.revision
        } else {
            view.revision
        };
        let old = self.view.swap(Arc::new(View {
            revision,
            set,
            statuses: Arc::clone(&statuses),
        }));
        self.publish(&old, committed.revision);
        retire(self.snapshot.swap(Arc::new(snapshot)));
        self.metrics.success(revision);
        Ok(Executed {
            done,
            revision: committed.revision,
            statuses,
            warnings,
        })
    }
}

impl ControlPlane {
    /// Follows the store's changes so that writes by another process sharing the store (etcd
    /// replicas) reach this one's data plane. Spawn it on a runtime that lives as long as the
    /// control plane; a single-node file store does not need it. Our own commits are already in
    /// the view when their event is looked at (the writer lock orders them): one comparison each.
    /// It subscribes first and then reloads once, so that nothing committed between `open`'s
    /// read and the subscription is missed.
    pub fn follow(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let rx = self.store.watch();
        tokio::spawn(follow_loop(Arc::downgrade(self), rx))
    }
}

async fn follow_loop(weak: Weak<ControlPlane>, mut rx: broadcast::Receiver<Change>) {
    let mut pending = true;
    loop {
        if pending && !reload(&weak).await {
            return;
        }
        pending = match rx.recv().await {
            // A change without events is the store's "relist" signal.
            Ok(change) if change.events.is_empty() => true,
            Ok(change) => match weak.upgrade() {
                Some(cp) => change.revision > cp.view.load().revision,
                None => return,
            },
            // Missed changes: only a full reload is sure to include them.
            Err(broadcast::error::RecvError::Lagged(_)) => true,
            Err(broadcast::error::RecvError::Closed) => return,
        };
    }
}

/// Reloads until it works (the data plane keeps the last good snapshot meanwhile). False when
/// the control plane is gone.
async fn reload(weak: &Weak<ControlPlane>) -> bool {
    let mut backoff = RELOAD_BACKOFF_MIN;
    loop {
        let Some(cp) = weak.upgrade() else {
            return false;
        };
        match cp.resync().await {
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "could not reload the configuration from the store; retrying");
            }
        }
        drop(cp);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RELOAD_BACKOFF_MAX);
    }
}

/// An object as the API returns it: served `apiVersion`, `status.conditions` from the latest
/// translation, and for Secrets never the private key.
fn render(r: &Resource, statuses: &BTreeMap<ResourceKey, Vec<Condition>>) -> Value {
    let mut v = match r {
        Resource::Secret(s) => Resource::Secret(Arc::new(redact_secret(s))).to_value(),
        other => other.to_value(),
    };
    if let Value::Object(m) = &mut v {
        m.insert("apiVersion".into(), r.kind().api_version().into());
        if r.kind() != Kind::Secret {
            if let Some(conds) = statuses.get(&r.key()) {
                m.insert("status".into(), json!({ "conditions": conds }));
            }
        }
    }
    v
}

/// kubectl's record of what it applied: a Secret's holds its keys too.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A Secret as it may be shown: no private key in `data`, nor in the last-applied annotation
/// (which is stored exactly as kubectl wrote it).
fn redact_secret(s: &model::Secret) -> model::Secret {
    let mut out = redact(s);
    if let Some(a) = out.metadata.annotations.get_mut(LAST_APPLIED) {
        let shown = serde_json::from_str::<Value>(a)
            .ok()
            .and_then(|v| model::resource_from_value(v, Some(Kind::Secret)).ok())
            .and_then(|r| match r {
                Resource::Secret(applied) => {
                    serde_json::to_string(&Resource::Secret(Arc::new(redact(&applied)))).ok()
                }
                _ => None,
            });
        // An annotation that does not read as a Secret is not shown at all: it may hold a key.
        *a = shown.unwrap_or_default();
    }
    out
}

/// `Secret::redacted`, and belt and braces: any other key whose value is a PEM private key.
fn redact(s: &model::Secret) -> model::Secret {
    use base64::Engine as _;
    let mut out = s.redacted();
    let is_key = |v: &[u8]| v.windows(11).any(|w| w == b"PRIVATE KEY");
    out.data.retain(|_, v| {
        base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .map_or(true, |b| !is_key(&b))
    });
    out.string_data.retain(|_, v| !is_key(v.as_bytes()));
    out
}

/// Drops a replaced snapshot off the request path: a large snapshot takes a noticeable time to
/// free, and whoever holds the last reference pays it. A request still using it must not be that
/// one, so a background thread waits until it holds the only reference and drops it there.
fn retire(old: Arc<Snapshot>) {
    let spawned = std::thread::Builder::new()
        .name("snapshot-retire".into())
        .spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            drop(old);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start a thread to free the old snapshot");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_every_private_key() {
        use base64::Engine as _;
        let pem = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"s"}},"data":{{"tls.crt":"Y2VydA==","tls.key":"{b64}","other":"{b64}","key":"a2V5"}},"stringData":{{"more":{pem:?}}}}}"#
        );
        let r = model::decode_resource(body.as_bytes(), Format::Json, None).expect("decode");
        let Resource::Secret(s) = r else {
            panic!("not a secret")
        };
        let shown = redact(&s);
        assert_eq!(shown.data.keys().collect::<Vec<_>>(), ["tls.crt"]);
        assert!(shown.string_data.is_empty());
    }
}
