//! The one document loop: the bytes of a manifest file or of a request body become resources.
//! `POST /apply`, `--bootstrap`, `gateway validate` and the golden tests all go through it, so
//! they agree on what a document is, how documents are numbered, which are skipped and which
//! resource is defined twice.
//!
//! Documents of kinds the gateway does not serve (Istio's `Telemetry` or `PeerAuthentication`,
//! Kubernetes' `Service` or `Deployment`, as Istio's samples bundle them) are skipped with a
//! warning. A kind of an Istio API group that Istio does not define is a typo, not a foreign kind:
//! that is an error.

use crate::resource::{parse_documents, resource_from_value, DecodeError, Format, Kind, Resource};
use crate::ResourceKey;
use serde_json::Value;

/// Istio's kinds per API group: a document of one of these groups with another kind is refused.
const ISTIO_KINDS: &[(&str, &[&str])] = &[
    (
        "networking.istio.io",
        &[
            "Gateway",
            "VirtualService",
            "DestinationRule",
            "ServiceEntry",
            "WorkloadEntry",
            "WorkloadGroup",
            "Sidecar",
            "EnvoyFilter",
            "ProxyConfig",
        ],
    ),
    (
        "security.istio.io",
        &[
            "AuthorizationPolicy",
            "PeerAuthentication",
            "RequestAuthentication",
        ],
    ),
    ("telemetry.istio.io", &["Telemetry"]),
    ("extensions.istio.io", &["WasmPlugin", "TrafficExtension"]),
];

/// A document of a kind the gateway does not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl Skipped {
    /// The warning that says so.
    pub fn warning(&self) -> String {
        let at = match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        };
        format!(
            "{} {at} ({}): skipped, this gateway does not serve the kind",
            self.kind, self.api_version
        )
    }
}

/// What one document is.
#[derive(Debug, Clone)]
pub enum Outcome {
    Resource(Resource),
    Skipped(Skipped),
    /// Not a resource: a field does not fit its type, the kind is unknown, …
    Invalid(DecodeError),
}

/// One document of a batch.
#[derive(Debug, Clone)]
pub struct Document {
    /// Which source it came from (an index into [`Batch::sources`]).
    pub source: usize,
    /// Its position in its source, from 0 (a `List`'s items are documents of their own).
    pub index: usize,
    pub outcome: Outcome,
}

/// Where documents came from: a file's path, or `""` for a request body; and whether it parsed.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    /// The source is not JSON/YAML at all: it has no documents.
    pub error: Option<DecodeError>,
}

/// Documents in the order they were read, from one source or several.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub sources: Vec<Source>,
    pub documents: Vec<Document>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every document of one source. A syntax error leaves the source without documents.
    pub fn add(&mut self, name: &str, bytes: &[u8], format: Format) {
        let source = self.sources.len();
        match parse_documents(bytes, format) {
            Ok(docs) => {
                self.sources.push(Source {
                    name: name.to_string(),
                    error: None,
                });
                for (index, v) in docs.into_iter().enumerate() {
                    self.documents.push(Document {
                        source,
                        index,
                        outcome: classify(v),
                    });
                }
            }
            Err(e) => self.sources.push(Source {
                name: name.to_string(),
                error: Some(e),
            }),
        }
    }

    /// The first source error, if any source did not parse.
    pub fn source_errors(&self) -> impl Iterator<Item = (&Source, &DecodeError)> {
        self.sources
            .iter()
            .filter_map(|s| s.error.as_ref().map(|e| (s, e)))
    }

    /// Documents that define a resource already defined by an earlier one: `(later, earlier)`,
    /// as positions in [`Batch::documents`].
    pub fn duplicates(&self) -> Vec<(usize, usize)> {
        let mut seen: std::collections::BTreeMap<ResourceKey, usize> = Default::default();
        let mut out = Vec::new();
        for (i, d) in self.documents.iter().enumerate() {
            if let Outcome::Resource(r) = &d.outcome {
                if let Some(first) = seen.insert(r.key(), i) {
                    out.push((i, first));
                    // Later copies are reported against the first one.
                    seen.insert(r.key(), first);
                }
            }
        }
        out
    }

    /// Every resource, in order.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.documents.iter().filter_map(|d| match &d.outcome {
            Outcome::Resource(r) => Some(r),
            _ => None,
        })
    }
}

/// The format of a file, by its name: `.json` is JSON, anything else YAML (JSON is YAML too, but
/// JSON's own parser gives better positions).
pub fn format_of(name: &str) -> Format {
    if name.ends_with(".json") {
        Format::Json
    } else {
        Format::Yaml
    }
}

/// Whether a file name is a manifest a folder walk reads.
pub fn is_manifest_name(name: &str) -> bool {
    name.ends_with(".json") || name.ends_with(".yaml") || name.ends_with(".yml")
}

/// One document: a resource of a served kind, a skipped one, or why it is neither.
pub fn classify(v: Value) -> Outcome {
    if let Some(skipped) = foreign(&v) {
        return Outcome::Skipped(skipped);
    }
    match resource_from_value(v, None) {
        Ok(r) => Outcome::Resource(r),
        Err(e) => Outcome::Invalid(e),
    }
}

/// A document that names a kind and an API version the gateway does not serve, and that is not a
/// typo of an Istio kind.
fn foreign(v: &Value) -> Option<Skipped> {
    let m = v.as_object()?;
    let kind = m.get("kind")?.as_str()?;
    let api_version = m.get("apiVersion")?.as_str()?;
    if kind.is_empty() || api_version.is_empty() {
        return None;
    }
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    // A served kind in its own group, at any version: decoding decides (and names a wrong one).
    if Kind::from_kind_str(kind).is_some_and(|k| k.group() == group) {
        return None;
    }
    // In an Istio group, a kind Istio does not define is a typo: decoding names it.
    if let Some((_, kinds)) = ISTIO_KINDS.iter().find(|(g, _)| *g == group) {
        if !kinds.contains(&kind) {
            return None;
        }
    }
    let meta = m.get("metadata").and_then(Value::as_object);
    let text = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Some(Skipped {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        namespace: text("namespace"),
        name: text("name").unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(yaml: &str) -> Batch {
        let mut b = Batch::new();
        b.add("bundle.yaml", yaml.as_bytes(), Format::Yaml);
        b
    }

    #[test]
    fn foreign_kinds_are_skipped_and_served_ones_kept() {
        let b = batch(
            "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: r, namespace: x}\n---\n\
             apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n\
             spec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}\n",
        );
        let kinds: Vec<String> = b
            .documents
            .iter()
            .map(|d| match &d.outcome {
                Outcome::Skipped(s) => format!("skip {}", s.kind),
                Outcome::Resource(r) => format!("keep {}", r.kind()),
                Outcome::Invalid(e) => format!("invalid {e}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "skip Service",
                "skip Deployment",
                "skip Telemetry",
                "keep Gateway"
            ]
        );
        let Outcome::Skipped(s) = &b.documents[1].outcome else {
            panic!("skipped");
        };
        assert_eq!(
            s.warning(),
            "Deployment x/r (apps/v1): skipped, this gateway does not serve the kind"
        );
    }

    #[test]
    fn ingress_and_ingress_class_are_resources_not_skipped() {
        let b = batch(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: istio, namespace: x}\n\
             spec: {controller: istio.io/ingress-controller}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\n\
             spec: {defaultBackend: {service: {name: a, port: {number: 80}}}}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\n",
        );
        let keys: Vec<String> = b
            .documents
            .iter()
            .map(|d| match &d.outcome {
                Outcome::Resource(r) => format!("keep {}", r.key()),
                Outcome::Skipped(s) => format!("skip {}", s.kind),
                Outcome::Invalid(e) => format!("invalid {e}"),
            })
            .collect();
        // IngressClass is cluster-scoped: its key has no namespace, whatever the document says.
        assert_eq!(
            keys,
            [
                "keep IngressClass /istio",
                "keep Ingress default/web",
                "skip NetworkPolicy"
            ]
        );
        let b = batch(
            "apiVersion: networking.k8s.io/v1beta1\nkind: Ingress\nmetadata: {name: a}\nspec: {}\n",
        );
        assert!(matches!(b.documents[0].outcome, Outcome::Invalid(_)));
    }

    #[test]
    fn a_typo_of_an_istio_kind_is_an_error_not_a_skip() {
        let b =
            batch("apiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: a}\n");
        assert!(matches!(b.documents[0].outcome, Outcome::Invalid(_)));
        let b = batch("apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: a}\n");
        assert!(matches!(b.documents[0].outcome, Outcome::Invalid(_)));
    }

    #[test]
    fn duplicates_are_reported_against_the_first() {
        let doc = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\n";
        let mut b = Batch::new();
        b.add(
            "a.yaml",
            format!("{doc}---\n{doc}").as_bytes(),
            Format::Yaml,
        );
        b.add("b.yaml", doc.as_bytes(), Format::Yaml);
        assert_eq!(b.duplicates(), vec![(1, 0), (2, 0)]);
        assert_eq!(b.documents[2].source, 1);
        assert_eq!(b.documents[2].index, 0);
    }

    #[test]
    fn a_source_that_does_not_parse_has_no_documents() {
        let mut b = Batch::new();
        b.add("bad.yaml", b"a: [1, 2\n", Format::Yaml);
        b.add("good.json", b"[]", Format::Json);
        assert_eq!(b.source_errors().count(), 1);
        assert!(b.documents.is_empty());
    }
}
