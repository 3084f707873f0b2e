//! The `Resource` sum type, kinds and keys, and decoding from JSON or YAML bodies: syntax errors with
//! line and column, shape errors (unknown fields, wrong types, unknown enum values) with the field path.

use super::*;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Every kind the gateway stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Kind {
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
    Secret,
    IngressClass,
    Ingress,
    RequestAuthentication,
    AuthorizationPolicy,
}

impl Kind {
    /// All kinds, in the order they are applied within a batch (credentials and registry first).
    pub const ALL: [Kind; 10] = [
        Kind::Secret,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::VirtualService,
        Kind::IngressClass,
        Kind::Ingress,
        Kind::RequestAuthentication,
        Kind::AuthorizationPolicy,
    ];

    /// The `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Secret => "Secret",
            Kind::IngressClass => "IngressClass",
            Kind::Ingress => "Ingress",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }

    /// The lowercase plural of REST paths.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Gateway => "gateways",
            Kind::VirtualService => "virtualservices",
            Kind::DestinationRule => "destinationrules",
            Kind::ServiceEntry => "serviceentries",
            Kind::WorkloadEntry => "workloadentries",
            Kind::Secret => "secrets",
            Kind::IngressClass => "ingressclasses",
            Kind::Ingress => "ingresses",
            Kind::RequestAuthentication => "requestauthentications",
            Kind::AuthorizationPolicy => "authorizationpolicies",
        }
    }

    pub fn from_plural(p: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.plural() == p)
    }

    pub fn from_kind_str(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The API group (`""` for the core group of Secrets).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Secret => "",
            Kind::Ingress | Kind::IngressClass => INGRESS_GROUP,
            Kind::RequestAuthentication | Kind::AuthorizationPolicy => SECURITY_GROUP,
            _ => NETWORKING_GROUP,
        }
    }

    /// The `apiVersion` the server answers with.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Secret => "v1",
            Kind::Ingress | Kind::IngressClass => INGRESS_API_VERSION,
            Kind::RequestAuthentication | Kind::AuthorizationPolicy => "security.istio.io/v1",
            _ => "networking.istio.io/v1",
        }
    }

    /// `VirtualService.networking.istio.io`, the qualified name Kubernetes uses in messages.
    pub fn qualified(self) -> String {
        match self {
            Kind::Secret => "Secret".to_string(),
            k => format!("{}.{}", k.as_str(), k.group()),
        }
    }

    /// Whether `api_version` is accepted for this kind.
    pub fn accepts_api_version(self, api_version: &str) -> bool {
        match self {
            Kind::Secret => api_version == "v1",
            Kind::Ingress | Kind::IngressClass => api_version == INGRESS_API_VERSION,
            Kind::RequestAuthentication | Kind::AuthorizationPolicy => api_version
                .strip_prefix("security.istio.io/")
                .is_some_and(|v| SECURITY_VERSIONS.contains(&v)),
            _ => api_version
                .strip_prefix("networking.istio.io/")
                .is_some_and(|v| NETWORKING_VERSIONS.contains(&v)),
        }
    }

    /// The accepted `apiVersion`s, for messages.
    fn accepted_api_versions(self) -> &'static str {
        match self {
            Kind::Secret => "v1",
            Kind::Ingress | Kind::IngressClass => INGRESS_API_VERSION,
            Kind::RequestAuthentication | Kind::AuthorizationPolicy => {
                "security.istio.io/v1 or v1beta1"
            }
            _ => "networking.istio.io/v1, v1beta1 or v1alpha3",
        }
    }

    /// Cluster-scoped kinds (IngressClass) are stored under the namespace `""` and answered
    /// without `metadata.namespace`, as Kubernetes does.
    pub fn cluster_scoped(self) -> bool {
        matches!(self, Kind::IngressClass)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of a stored object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ResourceKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ResourceKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One resource of any kind.
// Each object is shared (`Arc`), not owned: the store's state, the control plane's view and
// every in-flight change hold the same stored object, and a clone of a whole set is one counter
// per object. Owned variants cost two full copies of every object (store and view) plus one per
// commit, ~5 KB each for a one-rule VirtualService. Writers go through `Arc::make_mut`.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Gateway(Arc<Gateway>),
    VirtualService(Arc<VirtualService>),
    DestinationRule(Arc<DestinationRule>),
    ServiceEntry(Arc<ServiceEntry>),
    WorkloadEntry(Arc<WorkloadEntry>),
    Secret(Arc<Secret>),
    IngressClass(Arc<IngressClass>),
    Ingress(Arc<Ingress>),
    RequestAuthentication(Arc<RequestAuthentication>),
    AuthorizationPolicy(Arc<AuthorizationPolicy>),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Gateway(_) => Kind::Gateway,
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::ServiceEntry(_) => Kind::ServiceEntry,
            Resource::WorkloadEntry(_) => Kind::WorkloadEntry,
            Resource::Secret(_) => Kind::Secret,
            Resource::IngressClass(_) => Kind::IngressClass,
            Resource::Ingress(_) => Kind::Ingress,
            Resource::RequestAuthentication(_) => Kind::RequestAuthentication,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Resource::Gateway(o) => &o.metadata,
            Resource::VirtualService(o) => &o.metadata,
            Resource::DestinationRule(o) => &o.metadata,
            Resource::ServiceEntry(o) => &o.metadata,
            Resource::WorkloadEntry(o) => &o.metadata,
            Resource::Secret(o) => &o.metadata,
            Resource::IngressClass(o) => &o.metadata,
            Resource::Ingress(o) => &o.metadata,
            Resource::RequestAuthentication(o) => &o.metadata,
            Resource::AuthorizationPolicy(o) => &o.metadata,
        }
    }

    /// The metadata, for writing: the object is copied first if it is shared.
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Resource::Gateway(o) => &mut Arc::make_mut(o).metadata,
            Resource::VirtualService(o) => &mut Arc::make_mut(o).metadata,
            Resource::DestinationRule(o) => &mut Arc::make_mut(o).metadata,
            Resource::ServiceEntry(o) => &mut Arc::make_mut(o).metadata,
            Resource::WorkloadEntry(o) => &mut Arc::make_mut(o).metadata,
            Resource::Secret(o) => &mut Arc::make_mut(o).metadata,
            Resource::IngressClass(o) => &mut Arc::make_mut(o).metadata,
            Resource::Ingress(o) => &mut Arc::make_mut(o).metadata,
            Resource::RequestAuthentication(o) => &mut Arc::make_mut(o).metadata,
            Resource::AuthorizationPolicy(o) => &mut Arc::make_mut(o).metadata,
        }
    }

    pub fn key(&self) -> ResourceKey {
        let m = self.meta();
        let ns = if self.kind().cluster_scoped() {
            ""
        } else {
            m.namespace()
        };
        ResourceKey::new(self.kind(), ns, m.name.clone())
    }

    /// The `apiVersion` as sent.
    pub fn api_version(&self) -> &str {
        match self {
            Resource::Gateway(o) => &o.api_version,
            Resource::VirtualService(o) => &o.api_version,
            Resource::DestinationRule(o) => &o.api_version,
            Resource::ServiceEntry(o) => &o.api_version,
            Resource::WorkloadEntry(o) => &o.api_version,
            Resource::Secret(o) => &o.api_version,
            Resource::IngressClass(o) => &o.api_version,
            Resource::Ingress(o) => &o.api_version,
            Resource::RequestAuthentication(o) => &o.api_version,
            Resource::AuthorizationPolicy(o) => &o.api_version,
        }
    }

    /// The spec as JSON (for Secrets: `type`, `data`), to compare two versions for `generation`.
    pub fn spec_value(&self) -> Value {
        let r = match self {
            Resource::Gateway(o) => serde_json::to_value(&o.spec),
            Resource::VirtualService(o) => serde_json::to_value(&o.spec),
            Resource::DestinationRule(o) => serde_json::to_value(&o.spec),
            Resource::ServiceEntry(o) => serde_json::to_value(&o.spec),
            Resource::WorkloadEntry(o) => serde_json::to_value(&o.spec),
            Resource::IngressClass(o) => serde_json::to_value(&o.spec),
            Resource::Ingress(o) => serde_json::to_value(&o.spec),
            Resource::RequestAuthentication(o) => serde_json::to_value(&o.spec),
            Resource::AuthorizationPolicy(o) => serde_json::to_value(&o.spec),
            Resource::Secret(s) => serde_json::to_value((&s.type_, &s.data, &s.string_data)),
        };
        r.unwrap_or(Value::Null)
    }

    /// The whole object as JSON, with `status` dropped (the server computes it on read).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Drops input-only parts: `status`, and a Secret's `stringData` folded into `data`.
    pub fn normalize(&mut self) {
        fn clear<S: Clone>(o: &mut Arc<Object<S>>) {
            if o.status.is_some() {
                Arc::make_mut(o).status = None;
            }
        }
        match self {
            Resource::Gateway(o) => clear(o),
            Resource::VirtualService(o) => clear(o),
            Resource::DestinationRule(o) => clear(o),
            Resource::ServiceEntry(o) => clear(o),
            Resource::WorkloadEntry(o) => clear(o),
            Resource::IngressClass(o) => clear(o),
            Resource::Ingress(o) => clear(o),
            Resource::RequestAuthentication(o) => clear(o),
            Resource::AuthorizationPolicy(o) => clear(o),
            Resource::Secret(s) => {
                if !s.string_data.is_empty() {
                    Arc::make_mut(s).normalize();
                }
            }
        }
        if self.kind().cluster_scoped() {
            if self.meta().namespace.is_some() {
                self.meta_mut().namespace = None;
            }
        } else if self.meta().namespace.as_deref().is_none_or(str::is_empty) {
            self.meta_mut().namespace = Some("default".to_string());
        }
    }
}

/// The whole object, with `status` dropped (the server computes it on read): what
/// [`Resource::to_value`] holds, written straight to a serializer so that a whole store can be
/// saved without building a JSON tree of every object first.
impl serde::Serialize for Resource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Resource::Gateway(o) => without_status(o, s),
            Resource::VirtualService(o) => without_status(o, s),
            Resource::DestinationRule(o) => without_status(o, s),
            Resource::ServiceEntry(o) => without_status(o, s),
            Resource::WorkloadEntry(o) => without_status(o, s),
            Resource::IngressClass(o) => without_status(o, s),
            Resource::Ingress(o) => without_status(o, s),
            Resource::RequestAuthentication(o) => without_status(o, s),
            Resource::AuthorizationPolicy(o) => without_status(o, s),
            Resource::Secret(o) => o.serialize(s),
        }
    }
}

fn without_status<T: serde::Serialize, S: serde::Serializer>(
    o: &Object<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    /// `Object` minus `status`: the same field names in the same order.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Stored<'a, T> {
        api_version: &'a str,
        kind: &'a str,
        metadata: &'a ObjectMeta,
        spec: &'a T,
    }
    serde::Serialize::serialize(
        &Stored {
            api_version: &o.api_version,
            kind: &o.kind,
            metadata: &o.metadata,
            spec: &o.spec,
        },
        s,
    )
}

/// The body's media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// Why a body is not a resource. Every variant is a 400 at the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The text is not JSON/YAML at all.
    #[error("{message} at line {line} column {column}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// The document parses but a field does not fit its type, or is unknown.
    #[error("{path}: {message}")]
    Field { path: String, message: String },
}

impl DecodeError {
    fn field(path: impl Into<String>, message: impl Into<String>) -> Self {
        DecodeError::Field {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Parses one document into a JSON value.
pub fn parse_document(bytes: &[u8], format: Format) -> Result<Value, DecodeError> {
    match format {
        Format::Json => serde_json::from_slice(bytes).map_err(|e| DecodeError::Syntax {
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        }),
        Format::Yaml => super::yaml::document(utf8(bytes)?).map_err(yaml_error),
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|e| DecodeError::Syntax {
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count(),
        column: 1 + bytes[..e.valid_up_to()]
            .iter()
            .rev()
            .take_while(|b| **b != b'\n')
            .count(),
        message: "body is not UTF-8".to_string(),
    })
}

/// Parses a batch for `/apply`: a `List` (`items`), a JSON array, or multi-document YAML.
pub fn parse_documents(bytes: &[u8], format: Format) -> Result<Vec<Value>, DecodeError> {
    let docs = match format {
        Format::Json => vec![parse_document(bytes, format)?],
        Format::Yaml => super::yaml::documents(utf8(bytes)?).map_err(yaml_error)?,
    };
    let mut out = Vec::new();
    for d in docs {
        match d {
            Value::Array(items) => out.extend(items),
            Value::Object(mut m)
                if m.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k == "List" || k.ends_with("List")) =>
            {
                match m.get_mut("items").map(Value::take) {
                    Some(Value::Array(items)) => out.extend(items),
                    _ => return Err(DecodeError::field("items", "a List needs an items array")),
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn yaml_error(e: super::yaml::YamlError) -> DecodeError {
    DecodeError::Syntax {
        line: e.line,
        column: e.column,
        message: e.message,
    }
}

fn strip_position(s: &str) -> String {
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// Reads `kind` and `apiVersion` and decodes the typed resource. `expected` is the kind of the REST
/// path; a body of another kind is refused.
pub fn resource_from_value(v: Value, expected: Option<Kind>) -> Result<Resource, DecodeError> {
    let Value::Object(map) = &v else {
        return Err(DecodeError::field("", "expected an object"));
    };
    let kind_str = match map.get("kind") {
        Some(Value::String(s)) => s.clone(),
        None => match expected {
            Some(k) => k.as_str().to_string(),
            None => return Err(DecodeError::field("kind", "Required value")),
        },
        Some(_) => return Err(DecodeError::field("kind", "must be a string")),
    };
    let Some(kind) = Kind::from_kind_str(&kind_str) else {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(DecodeError::field(
            "kind",
            format!(
                "unsupported kind {kind_str:?}: expected one of {}",
                names.join(", ")
            ),
        ));
    };
    if let Some(e) = expected {
        if e != kind {
            return Err(DecodeError::field(
                "kind",
                format!("kind {kind_str:?} does not match the path, which is for {e}"),
            ));
        }
    }
    let mut v = v;
    if let Value::Object(m) = &mut v {
        m.insert("kind".into(), Value::String(kind_str));
        match m.get("apiVersion") {
            None => {
                m.insert(
                    "apiVersion".into(),
                    Value::String(kind.api_version().to_string()),
                );
            }
            Some(Value::String(av)) if kind.accepts_api_version(av) => {}
            Some(other) => {
                let want = kind.accepted_api_versions();
                return Err(DecodeError::field(
                    "apiVersion",
                    format!("unsupported apiVersion {other} for {kind}: use {want}"),
                ));
            }
        }
    }
    let r = match kind {
        Kind::Gateway => Resource::Gateway(Arc::new(typed(v)?)),
        Kind::VirtualService => Resource::VirtualService(Arc::new(typed(v)?)),
        Kind::DestinationRule => Resource::DestinationRule(Arc::new(typed(v)?)),
        Kind::ServiceEntry => Resource::ServiceEntry(Arc::new(typed(v)?)),
        Kind::WorkloadEntry => Resource::WorkloadEntry(Arc::new(typed(v)?)),
        Kind::Secret => Resource::Secret(Arc::new(typed(v)?)),
        Kind::IngressClass => Resource::IngressClass(Arc::new(typed(v)?)),
        Kind::Ingress => Resource::Ingress(Arc::new(typed(v)?)),
        Kind::RequestAuthentication => Resource::RequestAuthentication(Arc::new(typed(v)?)),
        Kind::AuthorizationPolicy => Resource::AuthorizationPolicy(Arc::new(typed(v)?)),
    };
    Ok(r)
}

fn typed<T: DeserializeOwned>(v: Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        DecodeError::field(path, e.into_inner().to_string())
    })
}

/// Decodes one body (JSON or YAML) into a resource.
pub fn decode_resource(
    bytes: &[u8],
    format: Format,
    expected: Option<Kind>,
) -> Result<Resource, DecodeError> {
    resource_from_value(parse_document(bytes, format)?, expected)
}

/// Every stored resource, keyed and ordered; the input of validation of references and translation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSet {
    pub items: BTreeMap<ResourceKey, Resource>,
}

impl ResourceSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, r: Resource) -> Option<Resource> {
        self.items.insert(r.key(), r)
    }

    pub fn remove(&mut self, key: &ResourceKey) -> Option<Resource> {
        self.items.remove(key)
    }

    pub fn get(&self, key: &ResourceKey) -> Option<&Resource> {
        self.items.get(key)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.items.values()
    }

    pub fn gateways(&self) -> impl Iterator<Item = &Gateway> {
        self.items.values().filter_map(|r| match r {
            Resource::Gateway(o) => Some(&**o),
            _ => None,
        })
    }

    pub fn virtual_services(&self) -> impl Iterator<Item = &VirtualService> {
        self.items.values().filter_map(|r| match r {
            Resource::VirtualService(o) => Some(&**o),
            _ => None,
        })
    }

    pub fn destination_rules(&self) -> impl Iterator<Item = &DestinationRule> {
        self.items.values().filter_map(|r| match r {
            Resource::DestinationRule(o) => Some(&**o),
            _ => None,
        })
    }

    pub fn service_entries(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.items.values().filter_map(|r| match r {
            Resource::ServiceEntry(o) => Some(&**o),
            _ => None,
        })
    }

    pub fn workload_entries(&self) -> impl Iterator<Item = &WorkloadEntry> {
        self.items.values().filter_map(|r| match r {
            Resource::WorkloadEntry(o) => Some(&**o),
            _ => None,
        })
    }

    pub fn ingresses(&self) -> impl Iterator<Item = &Ingress> {
        self.items.values().filter_map(|r| match r {
            Resource::Ingress(o) => Some(&**o),
            _ => None,
        })
    }

    pub fn ingress_classes(&self) -> impl Iterator<Item = &IngressClass> {
        self.items.values().filter_map(|r| match r {
            Resource::IngressClass(o) => Some(&**o),
            _ => None,
        })
    }

    pub fn request_authentications(&self) -> impl Iterator<Item = &RequestAuthentication> {
        self.items.values().filter_map(|r| match r {
            Resource::RequestAuthentication(o) => Some(&**o),
            _ => None,
        })
    }

    pub fn authorization_policies(&self) -> impl Iterator<Item = &AuthorizationPolicy> {
        self.items.values().filter_map(|r| match r {
            Resource::AuthorizationPolicy(o) => Some(&**o),
            _ => None,
        })
    }

    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.items.values().filter_map(|r| match r {
            Resource::Secret(o) => Some(&**o),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let body = br#"{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"a"},"spec":{"hosts":["a"],"http":[{"route":[{"destination":{"host":"x"},"wieght":3}]}]}}"#;
        let e = decode_resource(body, Format::Json, None).expect_err("must fail");
        let DecodeError::Field { path, message } = e else {
            panic!("wrong error {e:?}")
        };
        assert!(path.starts_with("spec.http[0].route[0]"), "{path}");
        assert!(message.contains("wieght"), "{message}");
    }

    #[test]
    fn serialized_is_the_value_without_status() {
        let body = br#"{"apiVersion":"networking.istio.io/v1beta1","kind":"VirtualService","metadata":{"name":"a","labels":{"x":"y"}},"spec":{"hosts":["a"],"http":[{"route":[{"destination":{"host":"x"},"weight":3}],"mirrorPercentage":{"value":12.5}}]},"status":{"x":1}}"#;
        let r = decode_resource(body, Format::Json, None).expect("decode");
        let v = r.to_value();
        assert!(v.get("status").is_none());
        assert_eq!(v["apiVersion"], "networking.istio.io/v1beta1");
        let mut expected: Value = serde_json::from_slice(body).expect("json");
        if let Value::Object(m) = &mut expected {
            m.remove("status");
        }
        assert_eq!(v, expected);
        assert_eq!(
            serde_json::to_string(&r).expect("encode"),
            serde_json::to_string(&expected).expect("encode")
        );
    }

    #[test]
    fn a_shared_object_is_copied_before_a_write() {
        let body = br#"{"kind":"Gateway","metadata":{"name":"g"},"spec":{}}"#;
        let a = decode_resource(body, Format::Json, None).expect("decode");
        let mut b = a.clone();
        b.meta_mut().name = "h".into();
        b.normalize();
        assert_eq!(a.meta().name, "g");
        assert_eq!(a.meta().namespace, None);
        assert_eq!(b.meta().namespace.as_deref(), Some("default"));
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let e = decode_resource(b"{\n  \"kind\": ,\n}", Format::Json, None).expect_err("fail");
        assert!(matches!(e, DecodeError::Syntax { line: 2, .. }), "{e:?}");
    }

    #[test]
    fn all_api_versions_are_accepted() {
        for v in ["v1", "v1beta1", "v1alpha3"] {
            let body = format!(
                r#"{{"apiVersion":"networking.istio.io/{v}","kind":"Gateway","metadata":{{"name":"g"}},"spec":{{}}}}"#
            );
            decode_resource(body.as_bytes(), Format::Json, Some(Kind::Gateway)).expect(v);
        }
    }

    #[test]
    fn security_kinds_take_security_versions_only() {
        for (v, ok) in [("v1", true), ("v1beta1", true), ("v1alpha3", false)] {
            for kind in ["RequestAuthentication", "AuthorizationPolicy"] {
                let body = format!(
                    r#"{{"apiVersion":"security.istio.io/{v}","kind":"{kind}","metadata":{{"name":"a"}},"spec":{{}}}}"#
                );
                let r = decode_resource(body.as_bytes(), Format::Json, None);
                assert_eq!(r.is_ok(), ok, "{kind} {v}: {r:?}");
            }
        }
        let wrong = br#"{"apiVersion":"networking.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"a"},"spec":{}}"#;
        assert!(decode_resource(wrong, Format::Json, None).is_err());
        assert_eq!(
            Kind::from_plural("authorizationpolicies"),
            Some(Kind::AuthorizationPolicy)
        );
        assert_eq!(
            Kind::RequestAuthentication.qualified(),
            "RequestAuthentication.security.istio.io"
        );
    }

    #[test]
    fn unknown_security_fields_and_actions_are_decode_errors() {
        let body = br#"{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"a"},"spec":{"rules":[{"from":[{"source":{"principal":["x"]}}]}]}}"#;
        let Err(DecodeError::Field { path, .. }) = decode_resource(body, Format::Json, None) else {
            panic!("must fail")
        };
        assert_eq!(path, "spec.rules[0].from[0].source.principal");
        let body = br#"{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"a"},"spec":{"action":"REJECT"}}"#;
        let Err(DecodeError::Field { path, .. }) = decode_resource(body, Format::Json, None) else {
            panic!("must fail")
        };
        assert_eq!(path, "spec.action");
    }

    #[test]
    fn yaml_multi_document_and_lists() {
        let y = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: a}\nspec: {}\n---\nkind: List\nitems:\n- {kind: Gateway, metadata: {name: b}, spec: {}}\n";
        let docs = parse_documents(y.as_bytes(), Format::Yaml).expect("parse");
        assert_eq!(docs.len(), 2);
    }
}
