//! The served kinds as a Kubernetes API server describes them: names, short names, categories,
//! printer columns and schemas. The Istio kinds come from Istio's own CRDs (`istio-crds.json`,
//! extracted from Istio's `crd-all.gen.yaml` by `scripts/extract-istio-crds.py`), so `kubectl`
//! sees what it sees in a cluster; the built-in kinds (Secret, Ingress, IngressClass) are
//! described here.

use model::{
    Kind, INGRESS_GROUP, NETWORKING_GROUP, NETWORKING_VERSIONS, SECURITY_GROUP, SECURITY_VERSIONS,
};
use serde_json::{json, Value};
use std::sync::OnceLock;

const ISTIO_CRDS: &str = include_str!("istio-crds.json");

/// One printer column of a Table (a CRD's `additionalPrinterColumns` entry).
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    pub description: String,
    pub priority: i64,
    pub source: Source,
}

/// Where a column's cell comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A simple JSON path (`.spec.hosts`), as CRDs write them.
    Path(Vec<String>),
    /// A built-in kind's computed cell (what the API server's printers compute).
    Computed(fn(&Value) -> Value),
}

/// A served kind.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub kind: Kind,
    pub group: &'static str,
    /// Served versions, the preferred first.
    pub versions: Vec<&'static str>,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub columns: Vec<Column>,
    /// The OpenAPI v3 schema of each served version.
    pub schemas: Vec<(String, Value)>,
}

impl Served {
    pub fn plural(&self) -> &'static str {
        self.kind.plural()
    }

    pub fn namespaced(&self) -> bool {
        !self.kind.cluster_scoped()
    }
}

/// Every served kind, in the order discovery lists them.
pub(crate) fn served() -> &'static [Served] {
    static CATALOG: OnceLock<Vec<Served>> = OnceLock::new();
    CATALOG.get_or_init(build)
}

/// The served kind of `kind`.
pub(crate) fn of(kind: Kind) -> Option<&'static Served> {
    served().iter().find(|s| s.kind == kind)
}

/// The groups (and their versions) discovery lists, the core group excluded.
pub(crate) fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for s in served() {
        if s.group.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(g, _)| *g == s.group) {
            Some((_, vs)) => {
                for v in &s.versions {
                    if !vs.contains(v) {
                        vs.push(v);
                    }
                }
            }
            None => out.push((s.group, s.versions.clone())),
        }
    }
    out
}

/// The kinds served at `group`/`version`.
pub(crate) fn in_group_version(group: &str, version: &str) -> Vec<&'static Served> {
    served()
        .iter()
        .filter(|s| s.group == group && s.versions.contains(&version))
        .collect()
}

fn age_column() -> Column {
    Column {
        name: "Age".into(),
        type_: "date".into(),
        description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
        priority: 0,
        source: Source::Path(vec!["metadata".into(), "creationTimestamp".into()]),
    }
}

fn computed(name: &str, type_: &str, description: &str, f: fn(&Value) -> Value) -> Column {
    Column {
        name: name.into(),
        type_: type_.into(),
        description: description.into(),
        priority: 0,
        source: Source::Computed(f),
    }
}

fn build() -> Vec<Served> {
    let mut out = Vec::new();
    let crds: Vec<Value> = match serde_json::from_str(ISTIO_CRDS) {
        Ok(v) => v,
        Err(e) => {
            // Only a broken build gets here (a unit test parses the file).
            tracing::error!(error = %e, "the embedded Istio CRDs do not parse");
            Vec::new()
        }
    };
    for (kind, group, group_versions) in [
        (Kind::Gateway, NETWORKING_GROUP, &NETWORKING_VERSIONS[..]),
        (
            Kind::VirtualService,
            NETWORKING_GROUP,
            &NETWORKING_VERSIONS[..],
        ),
        (
            Kind::DestinationRule,
            NETWORKING_GROUP,
            &NETWORKING_VERSIONS[..],
        ),
        (
            Kind::ServiceEntry,
            NETWORKING_GROUP,
            &NETWORKING_VERSIONS[..],
        ),
        (
            Kind::WorkloadEntry,
            NETWORKING_GROUP,
            &NETWORKING_VERSIONS[..],
        ),
        (
            Kind::RequestAuthentication,
            SECURITY_GROUP,
            &SECURITY_VERSIONS[..],
        ),
        (
            Kind::AuthorizationPolicy,
            SECURITY_GROUP,
            &SECURITY_VERSIONS[..],
        ),
    ] {
        let crd = crds
            .iter()
            .find(|c| c.pointer("/names/kind").and_then(Value::as_str) == Some(kind.as_str()));
        let strings = |p: &str| -> Vec<String> {
            crd.and_then(|c| c.pointer(p))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let versions: Vec<&Value> = crd
            .and_then(|c| c.get("versions"))
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let columns = versions
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some("v1"))
            .and_then(|v| v.get("additionalPrinterColumns"))
            .and_then(Value::as_array)
            .map(|cols| cols.iter().filter_map(crd_column).collect::<Vec<_>>())
            .filter(|cols| !cols.is_empty())
            // A CRD without printer columns gets Age, as the API server gives it.
            .unwrap_or_else(|| vec![age_column()]);
        let schemas = versions
            .iter()
            .filter_map(|v| {
                Some((
                    v.get("name")?.as_str()?.to_string(),
                    v.get("schema")?.clone(),
                ))
            })
            .collect();
        out.push(Served {
            kind,
            group,
            versions: group_versions.to_vec(),
            singular: kind.as_str().to_ascii_lowercase(),
            short_names: strings("/names/shortNames"),
            categories: strings("/names/categories"),
            columns,
            schemas,
        });
    }
    out.push(Served {
        kind: Kind::Secret,
        group: "",
        versions: vec!["v1"],
        singular: "secret".into(),
        short_names: Vec::new(),
        categories: Vec::new(),
        columns: vec![
            computed("Type", "string", "The type of the secret", |o| {
                o.get("type").cloned().unwrap_or_else(|| json!("Opaque"))
            }),
            computed(
                "Data",
                "integer",
                "The number of keys in the secret (private keys are never shown)",
                |o| {
                    let n = |k: &str| o.get(k).and_then(Value::as_object).map_or(0, |m| m.len());
                    json!(n("data") + n("stringData"))
                },
            ),
            age_column(),
        ],
        schemas: vec![("v1".into(), secret_schema())],
    });
    out.push(Served {
        kind: Kind::Ingress,
        group: INGRESS_GROUP,
        versions: vec!["v1"],
        singular: "ingress".into(),
        short_names: vec!["ing".into()],
        categories: Vec::new(),
        columns: vec![
            computed(
                "Class",
                "string",
                "The name of the IngressClass resource",
                |o| {
                    o.pointer("/spec/ingressClassName")
                        .cloned()
                        .unwrap_or_else(|| json!("<none>"))
                },
            ),
            computed(
                "Hosts",
                "string",
                "Hosts that incoming requests are matched against before the ingress rule",
                ingress_hosts,
            ),
            computed(
                "Address",
                "string",
                "Address is a list of IP addresses for the load balancer",
                |_| json!(""),
            ),
            computed(
                "Ports",
                "string",
                "Ports of TLS configurations that open",
                |o| {
                    let tls = o
                        .pointer("/spec/tls")
                        .and_then(Value::as_array)
                        .is_some_and(|a| !a.is_empty());
                    json!(if tls { "80, 443" } else { "80" })
                },
            ),
            age_column(),
        ],
        schemas: vec![("v1".into(), ingress_schema())],
    });
    out.push(Served {
        kind: Kind::IngressClass,
        group: INGRESS_GROUP,
        versions: vec!["v1"],
        singular: "ingressclass".into(),
        short_names: Vec::new(),
        categories: Vec::new(),
        columns: vec![
            computed(
                "Controller",
                "string",
                "Controller that is responsible for handling this class",
                |o| {
                    o.pointer("/spec/controller")
                        .cloned()
                        .unwrap_or_else(|| json!(""))
                },
            ),
            computed(
                "Parameters",
                "string",
                "A reference to a resource with additional parameters",
                |o| match o.pointer("/spec/parameters") {
                    Some(p) => json!(format!(
                        "{}/{}",
                        p.get("kind").and_then(Value::as_str).unwrap_or(""),
                        p.get("name").and_then(Value::as_str).unwrap_or("")
                    )),
                    None => json!("<none>"),
                },
            ),
            age_column(),
        ],
        schemas: vec![("v1".into(), ingress_class_schema())],
    });
    out
}

fn string(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

fn object(description: &str, properties: Value) -> Value {
    json!({ "type": "object", "description": description, "properties": properties })
}

fn array_of(description: &str, items: Value) -> Value {
    json!({ "type": "array", "description": description, "items": items })
}

fn ingress_backend_schema() -> Value {
    object(
        "IngressBackend describes all endpoints for a given service and port.",
        json!({
            "service": object("service references a service as a backend.", json!({
                "name": string("name is the referenced service."),
                "port": object("port of the referenced service: a number or a name.", json!({
                    "name": string("name is the name of the port on the Service."),
                    "number": { "type": "integer", "format": "int32", "description": "number is the numerical port number (e.g. 80) on the Service." },
                })),
            })),
            "resource": object("resource is an ObjectRef to another Kubernetes resource (not served by the gateway: warned about).", json!({
                "apiGroup": string("APIGroup is the group for the resource being referenced."),
                "kind": string("Kind is the type of resource being referenced."),
                "name": string("Name is the name of resource being referenced."),
            })),
        }),
    )
}

/// The fields of a `networking.k8s.io/v1` Ingress the gateway reads (Kubernetes' descriptions).
fn ingress_schema() -> Value {
    object(
        "Ingress is a collection of rules that allow inbound connections to reach the endpoints defined by a backend.",
        json!({
            "spec": object("spec is the desired state of the Ingress.", json!({
                "ingressClassName": string("ingressClassName is the name of an IngressClass cluster resource."),
                "defaultBackend": ingress_backend_schema(),
                "tls": array_of("tls represents the TLS configuration.", object("IngressTLS describes the transport layer security associated with an ingress.", json!({
                    "hosts": array_of("hosts is a list of hosts included in the TLS certificate.", json!({ "type": "string" })),
                    "secretName": string("secretName is the name of the secret used to terminate TLS traffic on port 443."),
                }))),
                "rules": array_of("rules is a list of host rules used to configure the Ingress.", object("IngressRule represents the rules mapping the paths under a specified host to the related backend services.", json!({
                    "host": string("host is the fully qualified domain name of a network host, as defined by RFC 3986; a wildcard is allowed as the first label."),
                    "http": object("HTTPIngressRuleValue is a list of http selectors pointing to backends.", json!({
                        "paths": array_of("paths is a collection of paths that map requests to backends.", object("HTTPIngressPath associates a path with a backend.", json!({
                            "path": string("path is matched against the path of an incoming request."),
                            "pathType": string("pathType determines the interpretation of the path matching: Exact, Prefix or ImplementationSpecific."),
                            "backend": ingress_backend_schema(),
                        }))),
                    })),
                }))),
            })),
            "status": { "type": "object", "description": "status is the current state of the Ingress.", "x-kubernetes-preserve-unknown-fields": true },
        }),
    )
}

fn ingress_class_schema() -> Value {
    object(
        "IngressClass represents the class of the Ingress, referenced by the Ingress Spec.",
        json!({
            "spec": object("spec is the desired state of the IngressClass.", json!({
                "controller": string("controller refers to the name of the controller that should handle this class (istio.io/ingress-controller for this gateway)."),
                "parameters": object("parameters is a link to a custom resource containing additional configuration for the controller.", json!({
                    "apiGroup": string("apiGroup is the group for the resource being referenced."),
                    "kind": string("kind is the type of resource being referenced."),
                    "name": string("name is the name of resource being referenced."),
                    "namespace": string("namespace is the namespace of the resource being referenced."),
                    "scope": string("scope represents if this refers to a cluster or namespace scoped resource."),
                })),
            })),
        }),
    )
}

/// The hosts column of an Ingress, as `kubectl get ingress` prints it.
fn ingress_hosts(o: &Value) -> Value {
    let hosts: Vec<&str> = o
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| r.get("host").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if hosts.is_empty() {
        json!("*")
    } else {
        json!(hosts.join(","))
    }
}

fn crd_column(c: &Value) -> Option<Column> {
    let path = c.get("jsonPath")?.as_str()?;
    Some(Column {
        name: c.get("name")?.as_str()?.to_string(),
        type_: c.get("type")?.as_str()?.to_string(),
        description: c
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
        source: Source::Path(
            path.trim_start_matches('.')
                .split('.')
                .map(String::from)
                .collect(),
        ),
    })
}

/// The schema of a Secret as the gateway reads it (the core kind's fields it accepts).
fn secret_schema() -> Value {
    json!({
        "type": "object",
        "description": "Secret holds secret data of a certain type. The gateway reads TLS credentials from it (tls.crt/tls.key/ca.crt or cert/key/cacert).",
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "metadata": {"type": "object", "description": "Standard object's metadata."},
            "type": {"type": "string", "description": "Used to facilitate programmatic handling of secret data: kubernetes.io/tls or Opaque."},
            "data": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}, "description": "Data contains the secret data, base64 encoded."},
            "stringData": {"type": "object", "additionalProperties": {"type": "string"}, "description": "stringData allows specifying non-binary secret data in string form; merged into data on write."},
            "immutable": {"type": "boolean", "description": "Immutable, if set to true, ensures that data stored in the Secret cannot be updated."}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_istio_crds_give_names_columns_and_schemas() {
        let vs = of(Kind::VirtualService).expect("served");
        assert_eq!(vs.short_names, ["vs"]);
        assert_eq!(vs.categories, ["istio-io", "networking-istio-io"]);
        let cols: Vec<&str> = vs.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(cols, ["Gateways", "Hosts", "Age"]);
        assert_eq!(vs.schemas.len(), 3);
        let se = of(Kind::ServiceEntry).expect("served");
        let cols: Vec<&str> = se.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(cols, ["Hosts", "Location", "Resolution", "Age"]);
        for (k, short) in [
            (Kind::Gateway, "gw"),
            (Kind::DestinationRule, "dr"),
            (Kind::ServiceEntry, "se"),
            (Kind::WorkloadEntry, "we"),
        ] {
            assert_eq!(of(k).expect("served").short_names, [short]);
        }
        assert!(of(Kind::Gateway)
            .and_then(|g| g.schemas.first())
            .and_then(|(_, s)| s.pointer("/properties/spec/properties/servers"))
            .is_some());
    }
}
