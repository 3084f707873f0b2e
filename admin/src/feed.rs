//! The change feed watches read: each time the control plane's view changes (its own commit, or
//! a reload from a shared store), the difference as `ADDED`/`MODIFIED`/`DELETED` events, kept in
//! a bounded history so that a watch can resume from a `resourceVersion`, and sent to every
//! subscriber. Because it follows the view, not a store, it works the same on every store.

use model::{Resource, ResourceKey};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// How many events a watch can resume across.
const HISTORY: usize = 4096;

/// One change as a watch sends it.
#[derive(Debug, Clone)]
pub(crate) struct WatchEvent {
    pub revision: u64,
    /// `ADDED`, `MODIFIED`, `DELETED`, or `RESET` (history is gone: watchers must relist).
    pub type_: &'static str,
    pub key: Option<ResourceKey>,
    pub object: Value,
}

#[derive(Debug)]
struct Inner {
    history: VecDeque<Arc<WatchEvent>>,
    /// Events after this revision are all in `history`.
    floor: u64,
    last: u64,
}

#[derive(Debug)]
pub(crate) struct Feed {
    tx: broadcast::Sender<Arc<WatchEvent>>,
    inner: Mutex<Inner>,
}

/// A new watcher's view of the feed: live events, and the history before them.
pub(crate) struct Subscription {
    pub rx: broadcast::Receiver<Arc<WatchEvent>>,
    pub backlog: Vec<Arc<WatchEvent>>,
    pub floor: u64,
}

impl Feed {
    pub fn new(revision: u64) -> Feed {
        let (tx, _) = broadcast::channel(HISTORY);
        Feed {
            tx,
            inner: Mutex::new(Inner {
                history: VecDeque::new(),
                floor: revision,
                last: revision,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> Subscription {
        // Under the lock: nothing is published between the copy of the history and the
        // subscription, so a watcher neither misses nor repeats an event.
        let inner = self.lock();
        Subscription {
            rx: self.tx.subscribe(),
            backlog: inner.history.iter().cloned().collect(),
            floor: inner.floor,
        }
    }

    /// Publishes the difference between two sets, at `revision`.
    pub fn publish(
        &self,
        revision: u64,
        old: &model::ResourceSet,
        new: &model::ResourceSet,
        render_new: impl Fn(&Resource) -> Value,
        render_old: impl Fn(&Resource) -> Value,
    ) {
        let mut inner = self.lock();
        if revision < inner.last {
            // The store went back (restored): the history no longer describes it.
            inner.history.clear();
            inner.floor = revision;
            inner.last = revision;
            let _ = self.tx.send(Arc::new(WatchEvent {
                revision,
                type_: "RESET",
                key: None,
                object: Value::Null,
            }));
            return;
        }
        if revision == inner.floor && inner.history.is_empty() && old.items.is_empty() {
            // The opening load: a watch starts from a list, not from these.
            return;
        }
        let events = diff(&old.items, &new.items, revision, &render_new, &render_old);
        if events.is_empty() {
            return;
        }
        inner.last = revision;
        for e in events {
            let e = Arc::new(e);
            inner.history.push_back(Arc::clone(&e));
            while inner.history.len() > HISTORY {
                if let Some(gone) = inner.history.pop_front() {
                    inner.floor = gone.revision;
                }
            }
            // No receiver is not an error: nobody is watching.
            let _ = self.tx.send(e);
        }
    }
}

/// Whether two versions are the same object: the same allocation (what an untouched object is,
/// and so almost every object of a commit) or equal content.
fn same(a: &Resource, b: &Resource) -> bool {
    fn ptr(r: &Resource) -> *const () {
        match r {
            Resource::Gateway(o) => Arc::as_ptr(o).cast(),
            Resource::VirtualService(o) => Arc::as_ptr(o).cast(),
            Resource::DestinationRule(o) => Arc::as_ptr(o).cast(),
            Resource::ServiceEntry(o) => Arc::as_ptr(o).cast(),
            Resource::WorkloadEntry(o) => Arc::as_ptr(o).cast(),
            Resource::Secret(o) => Arc::as_ptr(o).cast(),
            Resource::IngressClass(o) => Arc::as_ptr(o).cast(),
            Resource::Ingress(o) => Arc::as_ptr(o).cast(),
            Resource::RequestAuthentication(o) => Arc::as_ptr(o).cast(),
            Resource::AuthorizationPolicy(o) => Arc::as_ptr(o).cast(),
        }
    }
    std::ptr::eq(ptr(a), ptr(b)) || a == b
}

fn diff(
    old: &BTreeMap<ResourceKey, Resource>,
    new: &BTreeMap<ResourceKey, Resource>,
    revision: u64,
    render_new: &impl Fn(&Resource) -> Value,
    render_old: &impl Fn(&Resource) -> Value,
) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    for (k, r) in new {
        let type_ = match old.get(k) {
            None => "ADDED",
            Some(o) if !same(o, r) => "MODIFIED",
            Some(_) => continue,
        };
        out.push(WatchEvent {
            revision,
            type_,
            key: Some(k.clone()),
            object: render_new(r),
        });
    }
    for (k, r) in old {
        if new.contains_key(k) {
            continue;
        }
        let mut object = render_old(r);
        // A deleted object carries the revision of its deletion, as Kubernetes sends it.
        if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), json!(revision.to_string()));
        }
        out.push(WatchEvent {
            revision,
            type_: "DELETED",
            key: Some(k.clone()),
            object,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(name: &str, host: &str) -> Resource {
        let body = format!(
            r#"{{"kind":"VirtualService","metadata":{{"name":"{name}"}},"spec":{{"hosts":["{host}"]}}}}"#
        );
        model::decode_resource(body.as_bytes(), model::Format::Json, None).expect("decode")
    }

    fn set(items: &[Resource]) -> model::ResourceSet {
        let mut s = model::ResourceSet::new();
        for r in items {
            s.insert(r.clone());
        }
        s
    }

    #[test]
    fn changes_become_events_kept_for_resuming() {
        let feed = Feed::new(1);
        let one = set(&[vs("a", "a.example.com")]);
        // The opening load is not an event.
        feed.publish(1, &set(&[]), &one, |r| r.to_value(), |r| r.to_value());
        assert!(feed.subscribe().backlog.is_empty());
        let mut sub = feed.subscribe();
        let two = set(&[vs("a", "b.example.com"), vs("c", "c.example.com")]);
        feed.publish(2, &one, &two, |r| r.to_value(), |r| r.to_value());
        feed.publish(3, &two, &set(&[]), |r| r.to_value(), |r| r.to_value());
        let types: Vec<(&str, u64)> = feed
            .subscribe()
            .backlog
            .iter()
            .map(|e| (e.type_, e.revision))
            .collect();
        assert_eq!(
            types,
            [
                ("MODIFIED", 2),
                ("ADDED", 2),
                ("DELETED", 3),
                ("DELETED", 3)
            ]
        );
        assert_eq!(sub.rx.try_recv().map(|e| e.type_).ok(), Some("MODIFIED"));
        let deleted = feed.subscribe().backlog[2].clone();
        assert_eq!(deleted.object["metadata"]["resourceVersion"], "3");
        // The store went back: watchers are told to relist, history is dropped.
        feed.publish(1, &set(&[]), &one, |r| r.to_value(), |r| r.to_value());
        let s = feed.subscribe();
        assert!(s.backlog.is_empty());
        assert_eq!(s.floor, 1);
    }
}
