//! The follower of a shared store: every change another replica commits (or the store's
//! "relist" signal) reloads the view, with backoff while the store is unreachable.

use super::ControlPlane;
use crate::store::Change;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::broadcast;

/// Backoff of [`ControlPlane::follow`] while reloading fails (the store is unreachable).
const RELOAD_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RELOAD_BACKOFF_MAX: Duration = Duration::from_secs(2);

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
