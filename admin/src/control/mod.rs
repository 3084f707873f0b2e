//! The control plane of one process: the committed view reads are served from, and the rooms of
//! its jobs: the write operations the API calls (`writes`), the single-writer pipeline they run
//! (`pipeline`), the follower of a shared store (`follow`), the bootstrap manifests (`bootstrap`)
//! and how an object is shown (`render`). Admission (what may be written) is `crate::admission`.
//! Every failure is an [`ApplyError`]; only the API layer turns it into HTTP.

mod bootstrap;
mod error;
mod extra;
mod follow;
mod pipeline;
mod render;
mod writes;

pub use error::ApplyError;

use crate::metrics::ConfigMetrics;
use crate::store::{Listing, Store};
use arc_swap::ArcSwap;
use model::ir::Snapshot;
use model::translate::{Condition, Translation};
use model::{Kind, Resource, ResourceKey, ResourceSet};
use pipeline::retire;
use render::render;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

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
    /// Conditions a control-plane client adds to a resource's status (ACME, per Gateway).
    extra_conditions: ArcSwap<BTreeMap<ResourceKey, Vec<Condition>>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("revision", &self.view.load().revision)
            .finish_non_exhaustive()
    }
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
    ) -> Result<Arc<ControlPlane>, ApplyError> {
        // Read first: a caller may retry `open` while the store is unreachable, and the metrics
        // can be registered only once.
        let listing = store.list().await?;
        let metrics = ConfigMetrics::register(&registry)
            .map_err(|e| ApplyError::Startup(format!("registering config metrics: {e}")))?;
        let cp = Arc::new(ControlPlane {
            store,
            snapshot,
            view: ArcSwap::from_pointee(View::default()),
            writer: tokio::sync::Mutex::new(()),
            metrics,
            registry,
            gateway_namespace,
            listener_ports: std::sync::OnceLock::new(),
            extra_conditions: ArcSwap::from_pointee(BTreeMap::new()),
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
    ) -> Result<(), ApplyError> {
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
    fn install(&self, listing: Listing) -> Result<(), ApplyError> {
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
    async fn resync(&self) -> Result<bool, ApplyError> {
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
    pub fn get(&self, key: &ResourceKey) -> Result<Value, ApplyError> {
        let view = self.view.load();
        view.set
            .get(key)
            .map(|r| self.with_extra(render(r, &view.statuses), r))
            .ok_or_else(|| ApplyError::not_found(key.kind, &key.name))
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
            .map(|(_, r)| self.with_extra(render(r, &view.statuses), r))
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
}
