//! What the control plane's own clients (ACME) read and add: stored objects as they are, and
//! status conditions they own, shown on reads after the translation's own.

use super::ControlPlane;
use model::translate::Condition;
use model::{Kind, Resource, ResourceKey};
use serde_json::{json, Value};
use std::sync::Arc;

impl ControlPlane {
    /// Replaces the conditions a control-plane client (ACME) adds to `key`'s status; empty
    /// removes them. Reads show them after the translation's own.
    pub fn set_extra_conditions(&self, key: &ResourceKey, conditions: Vec<Condition>) {
        let current = self.extra_conditions.load();
        if current
            .get(key)
            .map_or(conditions.is_empty(), |c| *c == conditions)
        {
            return;
        }
        let mut next = (**current).clone();
        if conditions.is_empty() {
            next.remove(key);
        } else {
            next.insert(key.clone(), conditions);
        }
        self.extra_conditions.store(Arc::new(next));
    }

    pub(super) fn with_extra(&self, mut v: Value, r: &Resource) -> Value {
        let extra = self.extra_conditions.load();
        let Some(conds) = extra.get(&r.key()) else {
            return v;
        };
        if let Value::Object(m) = &mut v {
            let status = m
                .entry("status")
                .or_insert_with(|| json!({ "conditions": [] }));
            if let Some(list) = status.as_object_mut().and_then(|s| {
                s.entry("conditions")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
            }) {
                list.extend(conds.iter().filter_map(|c| serde_json::to_value(c).ok()));
            }
        }
        v
    }

    /// One stored object as it is, Secrets unredacted (for the control plane's own clients, such
    /// as ACME, never for the API).
    pub fn resource(&self, key: &ResourceKey) -> Option<Resource> {
        self.view.load().set.get(key).cloned()
    }

    /// Every stored object of one kind, as it is.
    pub fn resources(&self, kind: Kind) -> Vec<Resource> {
        let view = self.view.load();
        view.set
            .items
            .iter()
            .filter(|(k, _)| k.kind == kind)
            .map(|(_, r)| r.clone())
            .collect()
    }
}
