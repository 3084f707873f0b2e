//! `MemoryStore`: the same semantics as the file store without durability, for tests and for
//! running without a data dir. It can be switched "unavailable" to exercise the 503 path.

use super::{Change, Committed, Listing, Op, State, Store, StoreError};
use async_trait::async_trait;
use model::{Resource, ResourceKey};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tokio::sync::broadcast;

/// A store held in memory only.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    unavailable: AtomicBool,
    changes: broadcast::Sender<Change>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            unavailable: AtomicBool::new(false),
            changes: broadcast::channel(256).0,
        }
    }

    /// While set, every operation fails with [`StoreError::Unavailable`].
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    fn available(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("memory store switched off".into()));
        }
        // State is only replaced whole after a successful apply, so a poisoned lock still
        // guards a consistent value.
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn list(&self) -> Result<Listing, StoreError> {
        Ok(self.available()?.listing())
    }

    async fn get(&self, key: &ResourceKey) -> Result<Option<Resource>, StoreError> {
        Ok(self.available()?.objects.get(key).cloned())
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<Committed, StoreError> {
        let mut state = self.available()?;
        if ops.is_empty() {
            return Ok(Committed {
                revision: state.revision,
                objects: Vec::new(),
            });
        }
        let (next, committed, change) = state.apply(ops)?;
        *state = next;
        let _ = self.changes.send(change);
        Ok(committed)
    }

    fn watch(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.available()?.revision)
    }
}
