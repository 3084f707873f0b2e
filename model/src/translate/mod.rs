//! Translation of a whole resource set into one [`Snapshot`](crate::ir::Snapshot) and per-resource
//! status conditions. Total (never fails, never panics) and deterministic (input order is irrelevant).

use crate::ir::Snapshot;
use crate::resource::{ResourceKey, ResourceSet};
use serde::Serialize;
use std::collections::BTreeMap;

/// A `status.conditions[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// `Accepted`, `ResolvedRefs`, …
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// The result of translation.
#[derive(Debug, Default)]
pub struct Translation {
    pub snapshot: Snapshot,
    /// Conditions for every resource of the set.
    pub statuses: BTreeMap<ResourceKey, Vec<Condition>>,
}

impl Translation {
    /// Messages of every condition that is not `True` for one resource: the `Warning` headers of a write.
    pub fn warnings_for(&self, key: &ResourceKey) -> Vec<String> {
        self.statuses
            .get(key)
            .map(|cs| {
                cs.iter()
                    .filter(|c| c.status != "True")
                    .map(|c| c.message.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Translates the resource set.
pub fn translate(set: &ResourceSet) -> Translation {
    let _ = set;
    Translation::default()
}
