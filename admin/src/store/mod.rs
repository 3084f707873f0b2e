//! The `Store` trait: where resources live between restarts. A store-wide revision (etcd's
//! `mod_revision`) grows by one per commit; each object's `resourceVersion` is the revision of its
//! last write. A commit of several operations is all-or-nothing and checks every precondition
//! first, which is exactly one etcd transaction: [`EtcdStore`] implements the same trait for
//! replicas that share one configuration.

mod etcd;
mod file;
mod memory;

pub use etcd::{EtcdConfig, EtcdStore};
pub use file::FileStore;
pub use memory::MemoryStore;

use async_trait::async_trait;
use model::{Resource, ResourceKey};
use std::collections::BTreeMap;
use std::fmt;
use tokio::sync::broadcast;

/// What a write expects of the object it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Nothing: create or replace (a delete still needs the object to exist).
    Any,
    /// The object must not exist (create).
    Absent,
    /// The object must exist with exactly this `resourceVersion`.
    Version(u64),
}

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precondition::Any => f.write_str("any"),
            Precondition::Absent => f.write_str("absent"),
            Precondition::Version(v) => write!(f, "resourceVersion {v}"),
        }
    }
}

/// One operation of a commit.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create or replace; the store sets `metadata.resourceVersion`.
    Put {
        resource: Resource,
        expected: Precondition,
    },
    Delete {
        key: ResourceKey,
        expected: Precondition,
    },
}

impl Op {
    pub fn key(&self) -> ResourceKey {
        match self {
            Op::Put { resource, .. } => resource.key(),
            Op::Delete { key, .. } => key.clone(),
        }
    }
}

/// The outcome of a commit.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The store revision after the commit.
    pub revision: u64,
    /// Per operation, in order: the stored object (with its new `resourceVersion`) for a put,
    /// the object as it was for a delete.
    pub objects: Vec<Resource>,
}

/// Every object and the revision they were read at.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub revision: u64,
    pub items: Vec<Resource>,
}

/// One change in a [`Change`].
#[derive(Debug, Clone)]
pub enum Event {
    Put(Resource),
    Delete(ResourceKey),
}

/// What one commit changed, as watchers see it. A change with no events says "you may have
/// missed changes up to `revision`": the watcher must relist (the etcd store sends one when its
/// history was compacted past what it had seen, or after its watch reconnected).
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: u64,
    pub events: Vec<Event>,
}

/// Why a store operation failed. Precondition failures carry the key so that the API can name it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{key} already exists")]
    AlreadyExists { key: ResourceKey },
    #[error("{key} not found")]
    NotFound { key: ResourceKey },
    #[error("{key}: expected {expected}, found resourceVersion {found:?}")]
    Conflict {
        key: ResourceKey,
        expected: Precondition,
        found: Option<u64>,
    },
    /// The backend cannot be reached (etcd down): a 503, nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store I/O error: {0}")]
    Io(String),
    #[error("stored state is corrupt: {0}")]
    Corrupt(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// Durable storage of resources.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Every object, with the revision of the read.
    async fn list(&self) -> Result<Listing, StoreError>;

    /// One object.
    async fn get(&self, key: &ResourceKey) -> Result<Option<Resource>, StoreError>;

    /// Writes one object; returns it with its new `resourceVersion`.
    async fn put(
        &self,
        resource: Resource,
        expected: Precondition,
    ) -> Result<Resource, StoreError> {
        let c = self.commit(vec![Op::Put { resource, expected }]).await?;
        c.objects
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Io("commit returned no object".into()))
    }

    /// Deletes one object; returns it as it was.
    async fn delete(
        &self,
        key: &ResourceKey,
        expected: Precondition,
    ) -> Result<Resource, StoreError> {
        let c = self
            .commit(vec![Op::Delete {
                key: key.clone(),
                expected,
            }])
            .await?;
        c.objects
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Io("commit returned no object".into()))
    }

    /// Applies every operation or none. Acknowledged means durable.
    async fn commit(&self, ops: Vec<Op>) -> Result<Committed, StoreError>;

    /// Changes committed from now on (by anyone sharing the store).
    fn watch(&self) -> broadcast::Receiver<Change>;

    /// The current store revision.
    async fn revision(&self) -> Result<u64, StoreError>;

    /// Whether the store is reachable as far as it knows (`gateway_store_connected`). A local
    /// store always is.
    fn connected(&self) -> bool {
        true
    }
}

/// The whole state of a single-node store, and the pure commit logic both local stores share.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct State {
    pub revision: u64,
    pub objects: BTreeMap<ResourceKey, Resource>,
}

/// The `resourceVersion` of a stored object as a number.
pub fn resource_version(r: &Resource) -> Option<u64> {
    r.meta()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
}

fn check(
    key: &ResourceKey,
    expected: Precondition,
    current: Option<u64>,
) -> Result<(), StoreError> {
    match (expected, current) {
        (Precondition::Any, _) | (Precondition::Absent, None) => Ok(()),
        (Precondition::Absent, Some(_)) => Err(StoreError::AlreadyExists { key: key.clone() }),
        (Precondition::Version(v), Some(c)) if v == c => Ok(()),
        (Precondition::Version(_), found) => Err(StoreError::Conflict {
            key: key.clone(),
            expected,
            found,
        }),
    }
}

impl State {
    /// The state after `ops`, or the first precondition that fails. `self` is left untouched.
    pub fn apply(&self, ops: Vec<Op>) -> Result<(State, Committed, Change), StoreError> {
        let revision = self.revision + 1;
        let mut next = self.clone();
        let mut objects = Vec::with_capacity(ops.len());
        let mut events = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put {
                    mut resource,
                    expected,
                } => {
                    let key = resource.key();
                    check(
                        &key,
                        expected,
                        next.objects.get(&key).and_then(resource_version),
                    )?;
                    resource.meta_mut().resource_version = Some(revision.to_string());
                    next.objects.insert(key, resource.clone());
                    events.push(Event::Put(resource.clone()));
                    objects.push(resource);
                }
                Op::Delete { key, expected } => {
                    let current = next.objects.get(&key).and_then(resource_version);
                    if current.is_none() && !matches!(expected, Precondition::Version(_)) {
                        return Err(StoreError::NotFound { key });
                    }
                    check(&key, expected, current)?;
                    let old = next
                        .objects
                        .remove(&key)
                        .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
                    events.push(Event::Delete(key));
                    objects.push(old);
                }
            }
        }
        next.revision = revision;
        Ok((
            next,
            Committed { revision, objects },
            Change { revision, events },
        ))
    }

    pub fn listing(&self) -> Listing {
        Listing {
            revision: self.revision,
            items: self.objects.values().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Kind;

    fn vs(name: &str) -> Resource {
        let body = format!(
            r#"{{"kind":"VirtualService","metadata":{{"name":"{name}"}},"spec":{{"hosts":["a"]}}}}"#
        );
        model::decode_resource(body.as_bytes(), model::Format::Json, None).expect("decode")
    }

    #[test]
    fn a_commit_is_all_or_nothing() {
        let s = State::default();
        let (s, c, _) = s
            .apply(vec![Op::Put {
                resource: vs("a"),
                expected: Precondition::Absent,
            }])
            .expect("create");
        assert_eq!(c.revision, 1);
        let err = s
            .apply(vec![
                Op::Put {
                    resource: vs("b"),
                    expected: Precondition::Absent,
                },
                Op::Put {
                    resource: vs("a"),
                    expected: Precondition::Version(7),
                },
            ])
            .expect_err("stale");
        assert!(
            matches!(err, StoreError::Conflict { found: Some(1), .. }),
            "{err:?}"
        );
        assert_eq!(s.objects.len(), 1);
        assert_eq!(s.revision, 1);
    }

    #[test]
    fn resource_version_is_the_revision_of_the_last_write() {
        let (s, _, _) = State::default()
            .apply(vec![
                Op::Put {
                    resource: vs("a"),
                    expected: Precondition::Any,
                },
                Op::Put {
                    resource: vs("b"),
                    expected: Precondition::Any,
                },
            ])
            .expect("put");
        let (s, c, _) = s
            .apply(vec![Op::Put {
                resource: vs("b"),
                expected: Precondition::Version(1),
            }])
            .expect("replace");
        assert_eq!(c.revision, 2);
        let key = |n: &str| ResourceKey::new(Kind::VirtualService, "default", n);
        assert_eq!(s.objects.get(&key("a")).and_then(resource_version), Some(1));
        assert_eq!(s.objects.get(&key("b")).and_then(resource_version), Some(2));
        let err = s
            .apply(vec![Op::Delete {
                key: key("zz"),
                expected: Precondition::Any,
            }])
            .expect_err("missing");
        assert!(matches!(err, StoreError::NotFound { .. }));
    }
}
