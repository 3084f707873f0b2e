//! The single-writer apply pipeline. A write goes decode → validate (every
//! cause) → server-managed metadata → preconditions → candidate set → translate → (dry run stops
//! here) → one store commit → the new read view → ONE `ArcSwap::store` of the snapshot → metrics.
//! Reads are served from the last committed view, never from a half-applied change.
//!
//! Shared stores (etcd): the view may be behind the store, because another replica committed and
//! the watch has not delivered it yet. Then the store's preconditions (or the view's own checks)
//! fail; a write that failed that way reloads the view from the store and runs again, so that only
//! a real conflict (a stale `resourceVersion` sent by the client) is a 409. [`ControlPlane::follow`]
//! reloads on every change another replica commits, and on the store's "relist" signal.

use super::error::ApplyError;
use super::{ControlPlane, Statuses, View};
use crate::admission::{Mode, Upsert};
use crate::store::{resource_version, Op, Precondition};
use model::ir::Snapshot;
use model::translate::Translation;
use model::{Resource, ResourceKey};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// How many times a write whose failure may come from a stale view reloads and runs again.
/// Each retry follows a commit by someone else, so running out means a write storm on one object.
const STALE_VIEW_RETRIES: usize = 5;

#[derive(Debug, Clone)]
pub(super) enum Step {
    Upsert(Upsert),
    Delete {
        key: ResourceKey,
        expected: Option<u64>,
    },
}

/// What one step did.
#[derive(Debug)]
pub(super) enum Done {
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

pub(super) struct Executed {
    pub(super) done: Vec<Done>,
    pub(super) revision: u64,
    pub(super) statuses: Statuses,
    pub(super) warnings: BTreeMap<ResourceKey, Vec<String>>,
}

impl ControlPlane {
    /// The pipeline, run again on a fresh view when a failure may only mean that our view is
    /// behind a shared store (module doc). With a local store the view never is: the reload finds
    /// the same revision and the failure stands.
    pub(super) async fn execute(
        &self,
        steps: Vec<Step>,
        dry_run: bool,
    ) -> Result<Executed, ApplyError> {
        let mut attempt = 0;
        loop {
            // The view this attempt starts from (or an older one): if the follower replaces it
            // while the attempt fails, the failure may be stale even when `resync` finds nothing
            // left to reload.
            let seen = self.view.load_full();
            match self.execute_once(steps.clone(), dry_run).await {
                Err(e) if attempt < STALE_VIEW_RETRIES && e.may_be_stale() => {
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
    async fn execute_once(&self, steps: Vec<Step>, dry_run: bool) -> Result<Executed, ApplyError> {
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
                        return Err(ApplyError::already_exists(key.kind, &key.name));
                    }
                    // A create has nothing to compare a version with: existence decides.
                    if mode == Mode::Upsert && expected.is_some() && expected != old_rv {
                        return Err(ApplyError::conflict(key.kind, &key.name));
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
                        return Err(ApplyError::not_found(key.kind, &key.name));
                    };
                    let old_rv = resource_version(&old);
                    if expected.is_some() && expected != old_rv {
                        return Err(ApplyError::conflict(key.kind, &key.name));
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

/// Drops a replaced snapshot off the request path: a large snapshot takes a noticeable time to
/// free, and whoever holds the last reference pays it. A request still using it must not be that
/// one, so a background thread waits until it holds the only reference and drops it there.
pub(super) fn retire(old: Arc<Snapshot>) {
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
