//! The writes the API calls: create, replace, delete and `/apply`, each decoded and admitted,
//! then run through the pipeline; a rejected change is counted (never a dry run).

use super::error::ApplyError;
use super::pipeline::{Done, Step};
use super::render::render;
use super::{Applied, ControlPlane, Written};
use crate::admission::{admit, check, Mode, Origin};
use model::{Format, Kind, ResourceKey};
use serde_json::{json, Value};

impl ControlPlane {
    /// `POST …/namespaces/{ns}/{plural}`.
    pub async fn create(
        &self,
        kind: Kind,
        namespace: &str,
        body: &[u8],
        format: Format,
        dry_run: bool,
    ) -> Result<Written, ApplyError> {
        let r = self
            .write_one(kind, namespace, None, body, format, Mode::Create, dry_run)
            .await;
        self.count(&r, dry_run);
        r
    }

    /// `PUT …/namespaces/{ns}/{plural}/{name}`: create or replace.
    pub async fn replace(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        body: &[u8],
        format: Format,
        dry_run: bool,
    ) -> Result<Written, ApplyError> {
        let r = self
            .write_one(
                kind,
                namespace,
                Some(name),
                body,
                format,
                Mode::Upsert,
                dry_run,
            )
            .await;
        self.count(&r, dry_run);
        r
    }

    /// `DELETE …/{name}`: a `Status` of success. `expected` is DeleteOptions'
    /// `preconditions.resourceVersion`.
    pub async fn delete(
        &self,
        key: &ResourceKey,
        expected: Option<u64>,
        dry_run: bool,
    ) -> Result<Value, ApplyError> {
        let r = self
            .execute(
                vec![Step::Delete {
                    key: key.clone(),
                    expected,
                }],
                dry_run,
            )
            .await;
        self.count(&r, dry_run);
        let ex = r?;
        let uid = ex.done.iter().find_map(|d| match d {
            Done::Deleted { resource } => resource.meta().uid.clone(),
            _ => None,
        });
        let kind = key.kind;
        let mut details = json!({ "name": key.name, "kind": kind.plural() });
        if let Value::Object(m) = &mut details {
            if !kind.group().is_empty() {
                m.insert("group".into(), kind.group().into());
            }
            if let Some(uid) = uid {
                m.insert("uid".into(), uid.into());
            }
        }
        Ok(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }))
    }

    /// `POST /apply`: a List, a JSON array or multi-document YAML; all or nothing.
    pub async fn apply(
        &self,
        body: &[u8],
        format: Format,
        dry_run: bool,
    ) -> Result<Applied, ApplyError> {
        let r = self.apply_inner(body, format, dry_run).await;
        self.count(&r, dry_run);
        r
    }

    /// Counts a rejected change (not a precondition failure, and never a dry run).
    pub(super) fn count<T>(&self, r: &Result<T, ApplyError>, dry_run: bool) {
        if let Err(e) = r {
            if !dry_run && e.is_rejection() {
                self.metrics.failure();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_one(
        &self,
        kind: Kind,
        namespace: &str,
        name: Option<&str>,
        body: &[u8],
        format: Format,
        mode: Mode,
        dry_run: bool,
    ) -> Result<Written, ApplyError> {
        let mut r = model::decode_resource(body, format, Some(kind))
            .map_err(|e| ApplyError::decode(&e, format, ""))?;
        let meta = r.meta_mut();
        if kind.cluster_scoped() {
            // Kubernetes drops the namespace of a cluster-scoped object.
            meta.namespace = None;
        } else if meta
            .namespace
            .as_deref()
            .is_some_and(|ns| !ns.is_empty() && ns != namespace)
        {
            return Err(ApplyError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if !kind.cluster_scoped() {
            meta.namespace = Some(namespace.to_string());
        }
        if let Some(name) = name {
            if meta.name.is_empty() {
                meta.name = name.to_string();
            } else if meta.name != name {
                return Err(ApplyError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta.name
                )));
            }
        }
        let obj_name = meta.name.clone();
        let (u, causes) = check(r, "", mode)?;
        if !causes.is_empty() {
            return Err(ApplyError::Invalid {
                kind,
                name: obj_name,
                causes,
            });
        }
        let ex = self.execute(vec![Step::Upsert(u)], dry_run).await?;
        let mut done = ex.done.into_iter();
        let Some(d) = done.next() else {
            return Err(ApplyError::Internal("write produced no result".into()));
        };
        let (resource, created, mut warnings) = match d {
            Done::Written {
                resource,
                created,
                warnings,
            } => (resource, created, warnings),
            Done::Unchanged { resource, warnings } => (resource, false, warnings),
            Done::Deleted { .. } => return Err(ApplyError::Internal("write deleted".into())),
        };
        if let Some(ws) = ex.warnings.get(&resource.key()) {
            warnings.extend(ws.iter().cloned());
        }
        Ok(Written {
            object: render(&resource, &ex.statuses),
            created,
            warnings,
        })
    }

    async fn apply_inner(
        &self,
        body: &[u8],
        format: Format,
        dry_run: bool,
    ) -> Result<Applied, ApplyError> {
        let mut batch = model::load::Batch::new();
        batch.add("", body, format);
        if let Some((_, e)) = batch.source_errors().next() {
            return Err(ApplyError::decode(e, format, ""));
        }
        let admitted = admit(&batch, Origin::Body)?;
        if admitted.problems.iter().any(|p| p.decode) {
            // Shape problems first, as Kubernetes decodes before it validates.
            let (mut causes, rest): (Vec<_>, Vec<_>) =
                admitted.problems.into_iter().partition(|p| p.decode);
            causes.extend(rest);
            return Err(ApplyError::bad_batch(
                causes.into_iter().map(|p| p.cause).collect(),
            ));
        }
        if !admitted.problems.is_empty() {
            return Err(ApplyError::InvalidBatch(
                admitted.problems.into_iter().map(|p| p.cause).collect(),
            ));
        }
        let skipped: Vec<String> = admitted
            .skipped
            .iter()
            .map(|(i, w)| format!("items[{i}]: {w}"))
            .collect();
        let steps: Vec<Step> = admitted
            .upserts
            .into_iter()
            .map(|(_, u)| Step::Upsert(u))
            .collect();
        let ex = self.execute(steps, dry_run).await?;
        let mut items = Vec::new();
        let mut warnings = skipped;
        for d in &ex.done {
            let (resource, ws) = match d {
                Done::Written {
                    resource, warnings, ..
                }
                | Done::Unchanged {
                    resource, warnings, ..
                } => (resource, warnings),
                Done::Deleted { .. } => continue,
            };
            let key = resource.key();
            let label = format!("{} {}/{}", key.kind, key.namespace, key.name);
            let translated = ex.warnings.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            for w in ws.iter().chain(translated) {
                warnings.push(format!("{label}: {w}"));
            }
            items.push(render(resource, &ex.statuses));
        }
        Ok(Applied {
            list: json!({
                "apiVersion": "v1",
                "kind": "List",
                "metadata": { "resourceVersion": ex.revision.to_string() },
                "items": items,
            }),
            warnings,
        })
    }
}
