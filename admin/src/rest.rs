//! The one resource handler: every `/api/v1/…` and `/apis/<group>/<version>/…` request, parsed
//! into a target (kind, namespace, name) and dispatched on the method; discovery documents for
//! the paths that name no resource. Reads answer objects or Tables, with selectors and paging;
//! writes go through the control plane with `managedFields` recorded, patches of every kind
//! kubectl sends, `fieldValidation` and `dryRun`.

use crate::body::{read_body, read_raw};
use crate::control::{ControlPlane, Written};
use crate::error::{decode_cause, AdminError, Cause};
use crate::k8s::patch::PatchType;
use crate::k8s::{catalog, discovery, fields, patch, select, table};
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use model::{DecodeError, Format, Kind, ResourceKey};
use serde_json::{json, Value};
use std::sync::Arc;

/// What a request path names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    /// A discovery document.
    Discovery(Value),
    /// A collection (`name` None) or one object of a served kind.
    Resource {
        kind: Kind,
        namespace: Option<String>,
        name: Option<String>,
    },
}

/// Parses `/api/v1/…` and `/apis/…` paths; None for a path nothing is served at.
pub(crate) fn target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api"] => return Some(Target::Discovery(discovery::core_versions())),
        ["apis"] => return Some(Target::Discovery(discovery::groups())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g] => return discovery::group(g).map(Target::Discovery),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    if rest.is_empty() {
        return discovery::resources(group, version).map(Target::Discovery);
    }
    let served = catalog::in_group_version(group, version);
    let find = |plural: &str| served.iter().find(|s| s.plural() == plural).map(|s| s.kind);
    let (kind, namespace, name) = match rest {
        ["namespaces", ns, plural] => (find(plural)?, Some(*ns), None),
        ["namespaces", ns, plural, name] => (find(plural)?, Some(*ns), Some(*name)),
        [plural] => (find(plural)?, None, None),
        [plural, name] => (find(plural)?, None, Some(*name)),
        _ => return None,
    };
    // A namespaced path never names a cluster-scoped kind; an object of a namespaced kind is
    // only ever addressed within its namespace.
    if kind.cluster_scoped() && namespace.is_some()
        || !kind.cluster_scoped() && namespace.is_none() && name.is_some()
    {
        return None;
    }
    if namespace.is_some_and(|ns| ns.is_empty()) || name.is_some_and(|n| n.is_empty()) {
        return None;
    }
    Some(Target::Resource {
        kind,
        namespace: namespace.map(String::from),
        name: name.map(String::from),
    })
}

/// The query parameters the resource API reads.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub force: bool,
    pub field_validation: Validation,
    pub selector: select::Selector,
    pub limit: Option<usize>,
    pub continue_after: Option<(String, String)>,
    pub watch: bool,
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout_seconds: Option<u64>,
}

/// `?fieldValidation=`: what an unknown field does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validation {
    /// Refused (400), the default: the contract rejects unknown fields.
    #[default]
    Strict,
    /// Dropped, with a warning naming it.
    Warn,
    /// Dropped silently.
    Ignore,
}

/// A boolean query parameter as Kubernetes converts it: `0` and `false` (any case) are false,
/// anything else, the empty value included, is true.
fn boolean(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, AdminError> {
        let pairs: Vec<(String, String)> = match raw {
            Some(r) => query_pairs(r)?,
            None => Vec::new(),
        };
        let mut q = Query::default();
        for (k, v) in pairs {
            match k.as_str() {
                // Kubernetes refuses every other value, the empty one too.
                "dryRun" => match v.as_str() {
                    "All" => q.dry_run = true,
                    other => {
                        return Err(AdminError::bad_request(format!(
                            "invalid dryRun value {other:?}: the only supported value is All"
                        )))
                    }
                },
                "fieldManager" => {
                    if v.len() > 128 {
                        return Err(AdminError::bad_request("fieldManager: Too long: may not be more than 128 bytes"));
                    }
                    q.field_manager = Some(v)
                }
                "force" => q.force = boolean(&v),
                "fieldValidation" => {
                    q.field_validation = match v.as_str() {
                        "Strict" | "" => Validation::Strict,
                        "Warn" => Validation::Warn,
                        "Ignore" => Validation::Ignore,
                        other => {
                            return Err(AdminError::bad_request(format!(
                                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
                            )))
                        }
                    }
                }
                "labelSelector" => q.selector.labels = select::LabelSelector::parse(&v)?,
                "fieldSelector" => q.selector.fields = select::FieldSelector::parse(&v)?,
                "limit" => {
                    q.limit = Some(v.parse().map_err(|_| {
                        AdminError::bad_request(format!("limit: invalid value {v:?}: must be a non-negative integer"))
                    })?)
                }
                "continue" if !v.is_empty() => q.continue_after = Some(select::parse_continue(&v)?),
                "watch" => q.watch = boolean(&v),
                "resourceVersion" if !v.is_empty() => q.resource_version = Some(v),
                "allowWatchBookmarks" => q.bookmarks = boolean(&v),
                "sendInitialEvents" => q.send_initial_events = boolean(&v),
                "timeoutSeconds" => {
                    q.timeout_seconds = Some(v.parse().map_err(|_| {
                        AdminError::bad_request(format!("timeoutSeconds: invalid value {v:?}: must be a non-negative integer"))
                    })?)
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// `a=b&c=d` with percent-decoding and `+` as space.
fn query_pairs(raw: &str) -> Result<Vec<(String, String)>, AdminError> {
    fn decode(s: &str) -> Result<String, AdminError> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = s
                        .get(i + 1..i + 3)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| {
                            AdminError::bad_request(format!("invalid query string: {s:?}"))
                        })?;
                    out.push(hex);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).map_err(|_| AdminError::bad_request("the query string is not UTF-8"))
    }
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

type ApiResult = Result<Response, AdminError>;

/// The handler of `/api/…` and `/apis/…`.
pub(crate) async fn handle(
    cp: Arc<ControlPlane>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let Some(t) = target(uri.path()) else {
        return Err(AdminError::no_route());
    };
    let (kind, namespace, name) = match t {
        Target::Discovery(doc) => {
            return if method == Method::GET {
                Ok(crate::api::json_response(StatusCode::OK, &doc, &[]))
            } else {
                Err(AdminError::method_not_allowed(Some("GET")))
            };
        }
        Target::Resource {
            kind,
            namespace,
            name,
        } => (kind, namespace, name),
    };
    let mut q = Query::parse(uri.query())?;
    if let (true, Some(n)) = (q.watch, &name) {
        // A watch of one object (`…/{name}?watch=true`) is the collection's, narrowed to it.
        q.selector.fields.restrict_name(n);
    }
    let ctx = Ctx {
        cp,
        kind,
        namespace: namespace.clone(),
        headers,
        q,
    };
    match (method, name) {
        (Method::GET, _) if ctx.q.watch => crate::k8s::watch::serve(&ctx),
        (Method::GET, None) => ctx.list(),
        (Method::GET, Some(name)) => ctx.read(&name),
        (Method::POST, None) if namespace.is_some() || kind.cluster_scoped() => {
            ctx.create(body).await
        }
        (Method::PUT, Some(name)) => ctx.replace(&name, body).await,
        (Method::PATCH, Some(name)) => ctx.patch(&name, body).await,
        (Method::DELETE, Some(name)) => ctx.delete(&name, body).await,
        (_, Some(_)) => Err(AdminError::method_not_allowed(Some(
            "GET, PUT, PATCH, DELETE",
        ))),
        (_, None) if namespace.is_some() || kind.cluster_scoped() => {
            Err(AdminError::method_not_allowed(Some("GET, POST")))
        }
        (_, None) => Err(AdminError::method_not_allowed(Some("GET"))),
    }
}

/// One resource request.
pub(crate) struct Ctx {
    pub cp: Arc<ControlPlane>,
    pub kind: Kind,
    pub namespace: Option<String>,
    pub headers: HeaderMap,
    pub q: Query,
}

/// How many times a patch whose base moved under it is applied again to the new version.
const PATCH_RETRIES: usize = 5;

impl Ctx {
    fn served(&self) -> Result<&'static catalog::Served, AdminError> {
        catalog::of(self.kind).ok_or_else(AdminError::no_route)
    }

    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    fn key(&self, name: &str) -> ResourceKey {
        ResourceKey::new(self.kind, self.ns(), name)
    }

    /// The objects a read or watch selects, in order, and the view's revision.
    pub(crate) fn selected(&self) -> (u64, Vec<Value>) {
        let (revision, items) = self.cp.list_items(self.kind, self.namespace.as_deref());
        let items = items
            .into_iter()
            .filter(|o| self.q.selector.matches(o))
            .collect();
        (revision, items)
    }

    fn list(&self) -> ApiResult {
        let (revision, items) = self.selected();
        let (items, next) = select::page(items, self.q.continue_after.as_ref(), self.q.limit);
        let mut meta = json!({ "resourceVersion": revision.to_string() });
        if let Some((token, left)) = next {
            meta["continue"] = json!(token);
            meta["remainingItemCount"] = json!(left);
        }
        let body = if table::wanted(&self.headers) {
            table::table(self.served()?, &items, meta)
        } else {
            json!({
                "apiVersion": self.kind.api_version(),
                "kind": format!("{}List", self.kind.as_str()),
                "metadata": meta,
                "items": items,
            })
        };
        Ok(crate::api::json_response(StatusCode::OK, &body, &[]))
    }

    fn read(&self, name: &str) -> ApiResult {
        let v = self.cp.get(&self.key(name))?;
        let body = if table::wanted(&self.headers) {
            let rv = v
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            table::table(
                self.served()?,
                std::slice::from_ref(&v),
                json!({ "resourceVersion": rv }),
            )
        } else {
            v
        };
        Ok(crate::api::json_response(StatusCode::OK, &body, &[]))
    }

    /// The field manager of an update: `?fieldManager=`, else the client's name as its
    /// `User-Agent` gives it (`kubectl/v1.32…` is `kubectl`), as Kubernetes defaults it.
    fn manager(&self) -> String {
        if let Some(m) = &self.q.field_manager {
            return m.clone();
        }
        self.headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.chars().take(128).collect())
            .unwrap_or_else(|| "unknown".to_string())
    }

    /// The body as a JSON object: JSON, YAML, or (Secrets) the protobuf kubectl sends.
    async fn body_value(&self, body: Body) -> Result<Value, AdminError> {
        let (bytes, format) = crate::k8s::protobuf::read_object(&self.headers, body).await?;
        match format {
            Some(format) => model::parse_document(&bytes, format)
                .map_err(|e| AdminError::decode(&e, format, "")),
            None => crate::k8s::protobuf::decode(self.kind, &bytes),
        }
    }

    /// Drops unknown fields under `?fieldValidation=Warn|Ignore` (warnings for Warn); under
    /// Strict they are refused when the object is decoded.
    fn validate_fields(&self, v: &mut Value, warnings: &mut Vec<String>) {
        if self.q.field_validation == Validation::Strict {
            return;
        }
        for _ in 0..256 {
            let Err(e) = model::resource_from_value(v.clone(), Some(self.kind)) else {
                return;
            };
            let DecodeError::Field { message, .. } = &e else {
                return;
            };
            if !message.starts_with("unknown field") {
                return;
            }
            let Cause { field, .. } = decode_cause(&e, "");
            if !remove_path(v, &field) {
                return;
            }
            if self.q.field_validation == Validation::Warn {
                warnings.push(format!("unknown field {field:?}"));
            }
        }
    }

    fn api_version(&self) -> &'static str {
        self.kind.api_version()
    }

    async fn write(
        &self,
        name: Option<&str>,
        object: &Value,
        create: bool,
    ) -> Result<Written, AdminError> {
        let bytes = serde_json::to_vec(object).map_err(|e| AdminError::internal(e.to_string()))?;
        let written = match (create, name) {
            (true, _) | (false, None) => {
                self.cp
                    .create(self.kind, self.ns(), &bytes, Format::Json, self.q.dry_run)
                    .await
            }
            (false, Some(n)) => {
                self.cp
                    .replace(
                        self.kind,
                        self.ns(),
                        n,
                        &bytes,
                        Format::Json,
                        self.q.dry_run,
                    )
                    .await
            }
        };
        Ok(written?)
    }

    async fn create(&self, body: Body) -> ApiResult {
        let mut v = self.body_value(body).await?;
        let mut warnings = Vec::new();
        self.validate_fields(&mut v, &mut warnings);
        let now = crate::time::rfc3339(std::time::SystemTime::now());
        let manager = self.manager();
        let m = fields::Manager {
            name: &manager,
            operation: "Update",
            api_version: self.api_version(),
            time: &now,
        };
        fields::update(None, &mut v, &m);
        let mut w = self.write(None, &v, true).await?;
        warnings.append(&mut w.warnings);
        Ok(crate::api::json_response(
            StatusCode::CREATED,
            &w.object,
            &warnings,
        ))
    }

    /// The stored object as a patch or an update sees it (JSON, Secrets with their keys).
    fn current(&self, name: &str) -> Option<Value> {
        self.cp.stored(&self.key(name)).map(|r| r.to_value())
    }

    async fn replace(&self, name: &str, body: Body) -> ApiResult {
        let mut v = self.body_value(body).await?;
        let mut warnings = Vec::new();
        self.validate_fields(&mut v, &mut warnings);
        let now = crate::time::rfc3339(std::time::SystemTime::now());
        let manager = self.manager();
        let m = fields::Manager {
            name: &manager,
            operation: "Update",
            api_version: self.api_version(),
            time: &now,
        };
        let current = self.current(name);
        record_update(current.as_ref(), &mut v, &m);
        let mut w = self.write(Some(name), &v, false).await?;
        warnings.append(&mut w.warnings);
        let code = if w.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(crate::api::json_response(code, &w.object, &warnings))
    }

    async fn patch(&self, name: &str, body: Body) -> ApiResult {
        let ct = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let pt = PatchType::from_content_type(&ct)?;
        if pt == PatchType::Strategic
            && !matches!(self.kind, Kind::Secret | Kind::Ingress | Kind::IngressClass)
        {
            return Err(AdminError::unsupported_patch(&ct));
        }
        let format = if pt == PatchType::Apply {
            Format::Yaml
        } else {
            Format::Json
        };
        let bytes = read_raw(&self.headers, body).await?;
        let patch_doc = model::parse_document(&bytes, format)
            .map_err(|e| AdminError::decode(&e, format, ""))?;
        let manager = match (&self.q.field_manager, pt) {
            (None, PatchType::Apply) => {
                return Err(AdminError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ))
            }
            _ => self.manager(),
        };
        if pt != PatchType::Apply && self.q.force {
            return Err(AdminError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch",
            ));
        }
        let mut attempt = 0;
        loop {
            let mut warnings = Vec::new();
            let current = self.current(name);
            let now = crate::time::rfc3339(std::time::SystemTime::now());
            let op = if pt == PatchType::Apply {
                "Apply"
            } else {
                "Update"
            };
            let m = fields::Manager {
                name: &manager,
                operation: op,
                api_version: self.api_version(),
                time: &now,
            };
            let (mut next, pinned) =
                self.patched(name, pt, &patch_doc, current.as_ref(), &m, &mut warnings)?;
            if pt != PatchType::Apply {
                self.validate_fields(&mut next, &mut warnings);
                record_update(current.as_ref(), &mut next, &m);
            }
            let created = current.is_none();
            match self.write(Some(name), &next, created).await {
                // The object moved between our read and our write: patch the new version.
                Err(e)
                    if e.code() == StatusCode::CONFLICT && !pinned && attempt < PATCH_RETRIES =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
                Ok(mut w) => {
                    warnings.append(&mut w.warnings);
                    let code = if w.created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    return Ok(crate::api::json_response(code, &w.object, &warnings));
                }
            }
        }
    }

    /// The object a patch makes of `current` (None: absent), and whether the patch pinned a
    /// `resourceVersion` (then a conflict is the client's, never retried).
    fn patched(
        &self,
        name: &str,
        pt: PatchType,
        patch_doc: &Value,
        current: Option<&Value>,
        m: &fields::Manager<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<(Value, bool), AdminError> {
        let out = match (pt, current) {
            (PatchType::Apply, _) => {
                let mut config = patch_doc.clone();
                if !config.is_object() {
                    return Err(AdminError::bad_request(
                        "an apply configuration must be an object",
                    ));
                }
                if config
                    .pointer("/metadata/managedFields")
                    .is_some_and(|m| !m.is_null())
                {
                    return Err(AdminError::bad_request(
                        "metadata.managedFields must be nil: an apply configuration does not set field ownership",
                    ));
                }
                self.validate_fields(&mut config, warnings);
                // A configuration holds only the fields its manager applies (no `spec` at
                // all, say): the merged object is what is decoded and validated.
                fill_identity(&mut config, self.kind, self.ns(), name);
                let pinned = config.pointer("/metadata/resourceVersion").is_some();
                let merged = fields::apply(current, &config, m, self.q.force).map_err(|cs| {
                    AdminError::apply_conflict(
                        self.kind,
                        name,
                        fields::conflict_message(&cs),
                        cs.iter()
                            .map(|c| {
                                Cause::new(
                                    c.field.clone(),
                                    "FieldManagerConflict",
                                    format!(
                                        "conflict with {:?} using {}",
                                        c.manager, c.api_version
                                    ),
                                )
                            })
                            .collect(),
                    )
                })?;
                (merged, pinned)
            }
            (_, None) => return Err(AdminError::not_found(self.kind, name)),
            (PatchType::Merge | PatchType::Strategic, Some(cur)) => {
                let p = if pt == PatchType::Strategic {
                    patch::strip_directives(patch_doc)
                } else {
                    patch_doc.clone()
                };
                if !p.is_object() {
                    return Err(AdminError::bad_request(
                        "a merge patch must be a JSON object",
                    ));
                }
                let pinned = p.pointer("/metadata/resourceVersion").is_some();
                let mut next = cur.clone();
                patch::merge(&mut next, &p);
                (next, pinned)
            }
            (PatchType::Json, Some(cur)) => {
                let next = patch::json_patch(cur, patch_doc)?;
                let pinned = next.pointer("/metadata/resourceVersion")
                    != cur.pointer("/metadata/resourceVersion");
                (next, pinned)
            }
        };
        Ok(out)
    }

    async fn delete(&self, name: &str, body: Body) -> ApiResult {
        let (bytes, format) = read_body(&self.headers, body).await?;
        let expected = delete_options(&bytes, format)?;
        let v = self
            .cp
            .delete(&self.key(name), expected, self.q.dry_run)
            .await?;
        Ok(crate::api::json_response(StatusCode::OK, &v, &[]))
    }
}

/// Records an update in `managedFields`, unless the client rewrote them itself (kubectl does,
/// migrating a client-side apply to server-side apply): then its record is kept, as Kubernetes
/// keeps it.
fn record_update(current: Option<&Value>, next: &mut Value, m: &fields::Manager<'_>) {
    let sent = next
        .pointer("/metadata/managedFields")
        .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()));
    let stored = current.and_then(|c| c.pointer("/metadata/managedFields"));
    if sent.is_some() && sent != stored {
        return;
    }
    fields::update(current, next, m);
}

/// Sets `kind`, `apiVersion`, `metadata.name` and `metadata.namespace` where the configuration
/// leaves them out (an apply configuration names them, but the path is the authority).
fn fill_identity(v: &mut Value, kind: Kind, ns: &str, name: &str) {
    let Value::Object(m) = v else {
        return;
    };
    m.entry("apiVersion")
        .or_insert_with(|| json!(kind.api_version()));
    m.entry("kind").or_insert_with(|| json!(kind.as_str()));
    let meta = m.entry("metadata").or_insert_with(|| json!({}));
    if let Value::Object(meta) = meta {
        meta.entry("name").or_insert_with(|| json!(name));
        if !kind.cluster_scoped() {
            meta.entry("namespace").or_insert_with(|| json!(ns));
        }
    }
}

/// Removes the field at a decode path (`spec.http[0].foo`); false if there is none.
fn remove_path(v: &mut Value, path: &str) -> bool {
    let mut tokens: Vec<String> = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            tokens.push(rest[..i].to_string());
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                tokens.push(rest[..=end].to_string());
                rest = &rest[end + 1..];
            }
        } else {
            tokens.push(rest.to_string());
        }
    }
    let Some((last, parent)) = tokens.split_last() else {
        return false;
    };
    let mut cur = v;
    for t in parent {
        let next = match t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            Some(i) => i.parse::<usize>().ok().and_then(|i| cur.get_mut(i)),
            None => cur.get_mut(t.as_str()),
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    cur.as_object_mut()
        .is_some_and(|m| m.remove(last).is_some())
}

/// The optional `DeleteOptions` body (kubectl sends one): `preconditions.resourceVersion` is
/// checked; `propagationPolicy` must be one of Kubernetes' values (nothing here owns dependents).
pub(crate) fn delete_options(bytes: &[u8], format: Format) -> Result<Option<u64>, AdminError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v = model::parse_document(bytes, format).map_err(|e| AdminError::decode(&e, format, ""))?;
    if !v.is_object() {
        return Err(AdminError::bad_request("DeleteOptions must be an object"));
    }
    match v.get("propagationPolicy") {
        None | Some(Value::Null) => {}
        Some(Value::String(p)) if matches!(p.as_str(), "Orphan" | "Background" | "Foreground") => {}
        Some(other) => {
            return Err(AdminError::bad_request(format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: {other}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )))
        }
    }
    match v.pointer("/preconditions/resourceVersion") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| {
            AdminError::bad_request(format!(
                "preconditions.resourceVersion: invalid value {s:?}: must be a decimal number"
            ))
        }),
        Some(_) => Err(AdminError::bad_request(
            "preconditions.resourceVersion must be a string",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_kinds_and_discovery() {
        let r = |p: &str| target(p);
        assert!(matches!(r("/api"), Some(Target::Discovery(_))));
        assert!(matches!(
            r("/apis/networking.istio.io/v1beta1"),
            Some(Target::Discovery(_))
        ));
        assert_eq!(
            r("/apis/networking.istio.io/v1/namespaces/ns/virtualservices/x"),
            Some(Target::Resource {
                kind: Kind::VirtualService,
                namespace: Some("ns".into()),
                name: Some("x".into())
            })
        );
        assert_eq!(
            r("/api/v1/secrets"),
            Some(Target::Resource {
                kind: Kind::Secret,
                namespace: None,
                name: None
            })
        );
        assert_eq!(
            r("/apis/networking.k8s.io/v1/ingressclasses/c"),
            Some(Target::Resource {
                kind: Kind::IngressClass,
                namespace: None,
                name: Some("c".into())
            })
        );
        assert_eq!(
            r("/apis/networking.k8s.io/v1/namespaces/a/ingressclasses/c"),
            None
        );
        assert_eq!(r("/apis/networking.istio.io/v1/virtualservices/x"), None);
        assert_eq!(r("/apis/networking.istio.io/v2/virtualservices"), None);
        assert_eq!(r("/apis/networking.k8s.io/v1beta1/ingresses"), None);
        assert_eq!(r("/api/v1/namespaces/a/virtualservices"), None);
    }

    #[test]
    fn queries() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb&limit=2&dryRun=All&fieldValidation=Warn",
        ))
        .expect("parses");
        assert!(q.dry_run);
        assert_eq!(q.limit, Some(2));
        assert_eq!(q.field_validation, Validation::Warn);
        assert!(Query::parse(Some("fieldValidation=Loose")).is_err());
        assert!(Query::parse(Some("dryRun=Some")).is_err());
        assert!(Query::parse(Some("dryRun=")).is_err());
        assert!(Query::parse(Some("a=b&dryRun=All")).is_ok_and(|q| q.dry_run));
    }

    #[test]
    fn unknown_fields_are_removed_by_path() {
        let mut v = json!({"spec": {"http": [{"foo": 1, "route": []}]}});
        assert!(remove_path(&mut v, "spec.http[0].foo"));
        assert_eq!(v, json!({"spec": {"http": [{"route": []}]}}));
        assert!(!remove_path(&mut v, "spec.nope.x"));
    }
}
