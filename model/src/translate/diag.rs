//! Problems found while translating, per resource, and the status conditions they become. A
//! problem is either a reference that does not resolve (`ResolvedRefs` False), a part that cannot
//! be compiled and is skipped (`Accepted` stays True with reason `PartiallyInvalid`), or the whole
//! resource is not served (`Accepted` False, e.g. an Ingress of another class).

use super::Condition;
use crate::resource::{ResourceKey, ResourceSet};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// What a problem is about, which decides the condition it lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    /// A cross-resource reference that does not resolve; the reason of `ResolvedRefs`.
    Ref(&'static str),
    /// A part that was skipped or ignored.
    Part,
    /// The whole resource is not served; the reason of `Accepted` False.
    NotAccepted(&'static str),
}

#[derive(Debug, Default)]
struct Entry {
    messages: Vec<(Problem, String)>,
    seen: BTreeSet<String>,
}

/// Collects problems in the order found, one message once.
#[derive(Debug, Default)]
pub(crate) struct Diag {
    entries: BTreeMap<ResourceKey, Entry>,
}

impl Diag {
    /// Records `field: message` for a resource.
    pub(crate) fn push(&mut self, key: &ResourceKey, problem: Problem, field: &str, message: &str) {
        let text = if field.is_empty() {
            message.to_string()
        } else {
            format!("{field}: {message}")
        };
        let e = self.entries.entry(key.clone()).or_default();
        if e.seen.insert(text.clone()) {
            e.messages.push((problem, text));
        }
    }

    /// Moves every problem of `other` onto `key`, with `from` in a message replaced by `to` (a
    /// check run on a derived object reports against the resource it came from).
    pub(crate) fn absorb(&mut self, other: Diag, key: &ResourceKey, from: &str, to: &str) {
        for (_, e) in other.entries {
            for (p, m) in e.messages {
                self.push(key, p, "", &m.replace(from, to));
            }
        }
    }

    /// Conditions for every resource of the set, and the warnings of those that have problems.
    pub(crate) fn finish(
        self,
        set: &ResourceSet,
    ) -> (
        BTreeMap<ResourceKey, Vec<Condition>>,
        BTreeMap<ResourceKey, Vec<String>>,
    ) {
        let mut statuses = BTreeMap::new();
        let mut warnings = BTreeMap::new();
        for key in set.items.keys() {
            let msgs = self
                .entries
                .get(key)
                .map(|e| e.messages.as_slice())
                .unwrap_or(&[]);
            let parts: Vec<&str> = msgs
                .iter()
                .filter(|(p, _)| *p == Problem::Part)
                .map(|(_, m)| m.as_str())
                .collect();
            let refs: Vec<(&'static str, &str)> = msgs
                .iter()
                .filter_map(|(p, m)| match p {
                    Problem::Ref(reason) => Some((*reason, m.as_str())),
                    Problem::Part | Problem::NotAccepted(_) => None,
                })
                .collect();
            let refused: Vec<(&'static str, &str)> = msgs
                .iter()
                .filter_map(|(p, m)| match p {
                    Problem::NotAccepted(reason) => Some((*reason, m.as_str())),
                    _ => None,
                })
                .collect();
            let accepted = if let Some((reason, _)) = refused.first() {
                let all: Vec<&str> = refused.iter().map(|(_, m)| *m).collect();
                condition("Accepted", false, reason, &all.join("; "))
            } else if parts.is_empty() {
                condition("Accepted", true, "Accepted", "")
            } else {
                condition("Accepted", true, "PartiallyInvalid", &parts.join("; "))
            };
            let resolved = match refs.first() {
                None => condition("ResolvedRefs", true, "ResolvedRefs", ""),
                Some((reason, _)) => {
                    let all: Vec<&str> = refs.iter().map(|(_, m)| *m).collect();
                    condition("ResolvedRefs", false, reason, &all.join("; "))
                }
            };
            statuses.insert(key.clone(), vec![accepted, resolved]);
            if !msgs.is_empty() {
                warnings.insert(key.clone(), msgs.iter().map(|(_, m)| m.clone()).collect());
            }
        }
        (statuses, warnings)
    }
}

fn condition(type_: &'static str, ok: bool, reason: &'static str, message: &str) -> Condition {
    Condition {
        type_: Cow::Borrowed(type_),
        status: Cow::Borrowed(if ok { "True" } else { "False" }),
        reason: Cow::Borrowed(reason),
        message: message.to_string(),
    }
}
