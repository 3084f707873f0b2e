//! Admission: what the server checks before a resource may be written, whichever way it comes
//! (a REST write, `POST /apply`, `--bootstrap`, `gateway validate`): Istio's validation, the
//! server's own metadata rules, the clock (expired certificates), and for a batch the documents
//! that are not resources, that are skipped, or that define a resource twice.

use crate::control::ApplyError;
use crate::error::{decode_cause, join_field, violation_causes, Cause};
use model::load::{Batch, Outcome};
use model::validate::validate;
use model::{Resource, ResourceKey};
use std::sync::Arc;
use std::time::SystemTime;

/// How an upsert treats an object that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// POST: 409 AlreadyExists if it does.
    Create,
    /// PUT and apply: replace it.
    Upsert,
}

/// A decoded, valid object on its way in.
#[derive(Debug, Clone)]
pub(crate) struct Upsert {
    pub(crate) resource: Resource,
    pub(crate) mode: Mode,
    /// `metadata.resourceVersion` as sent: the write must replace exactly that version.
    pub(crate) expected: Option<u64>,
    /// Validation warnings.
    pub(crate) warnings: Vec<String>,
}

/// Validation plus the server's own metadata rules; then the stored form (normalized, served
/// `apiVersion`, server-managed fields cleared for the pipeline to set).
pub(crate) fn check(
    mut r: Resource,
    prefix: &str,
    mode: Mode,
) -> Result<(Upsert, Vec<Cause>), ApplyError> {
    let report = guarded("validation", || validate(&r))?;
    let mut causes = violation_causes(prefix, &report.errors);
    if report.errors.is_empty() {
        causes.extend(expired_secret(&r, prefix));
    }
    let reported = |f: &str| report.errors.iter().any(|v| v.field == f);
    let meta = r.meta();
    if !reported("metadata.name") {
        if meta.name.is_empty() {
            causes.push(Cause::new(
                join_field(prefix, "metadata.name"),
                "FieldValueRequired",
                "Required value: name is required",
            ));
        } else if let Some(msg) = dns_subdomain_problem(&meta.name) {
            causes.push(Cause::new(
                join_field(prefix, "metadata.name"),
                "FieldValueInvalid",
                format!("Invalid value: {:?}: {msg}", meta.name),
            ));
        }
    }
    if !reported("metadata.namespace") {
        if let Some(msg) = dns_label_problem(meta.namespace()) {
            causes.push(Cause::new(
                join_field(prefix, "metadata.namespace"),
                "FieldValueInvalid",
                format!("Invalid value: {:?}: {msg}", meta.namespace()),
            ));
        }
    }
    let expected = match meta.resource_version.as_deref() {
        None | Some("") => None,
        Some(s) => match s.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                causes.push(Cause::new(
                    join_field(prefix, "metadata.resourceVersion"),
                    "FieldValueInvalid",
                    format!("Invalid value: {s:?}: must be the resourceVersion of a read, a decimal number"),
                ));
                None
            }
        },
    };
    r.normalize();
    set_api_version(&mut r);
    let m = r.meta_mut();
    m.uid = None;
    m.creation_timestamp = None;
    m.generation = None;
    m.resource_version = None;
    Ok((
        Upsert {
            resource: r,
            mode,
            expected,
            warnings: report.warnings,
        },
        causes,
    ))
}

/// A TLS Secret whose certificate has expired is refused (validation is pure, the clock is here):
/// the cause names the key that holds the served certificate (`cert` or `tls.crt`).
fn expired_secret(r: &Resource, prefix: &str) -> Option<Cause> {
    let Resource::Secret(s) = r else {
        return None;
    };
    let key = s.key_pair()?.cert();
    let root = s.source(key);
    let not_after = model::ir::leaf_not_after(&s.value(key)?)?;
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if not_after > now {
        return None;
    }
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(not_after).unwrap_or(0));
    Some(Cause::new(
        join_field(prefix, &format!("{root}[{key}]")),
        "FieldValueInvalid",
        format!(
            "Invalid value: \"<redacted>\": the certificate expired at {}",
            crate::time::rfc3339(at)
        ),
    ))
}

/// Runs a pure model function, turning a panic (a bug) into a 500 for this request instead of a
/// dropped connection; the writer lock is released on the way out either way.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, ApplyError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| ApplyError::Internal(format!("{what} panicked")))
}

fn dns_subdomain_problem(s: &str) -> Option<&'static str> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters");
    }
    let ok = s
        .split('.')
        .all(|l| !l.is_empty() && dns_label_problem(l).is_none());
    (!ok).then_some("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")
}

/// Why `s` is not an RFC 1123 label (a namespace name), if it is not.
pub fn dns_label_problem(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| alnum(c) || *c == b'-')
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum);
    (!ok).then_some("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', start and end with an alphanumeric character, and be at most 63 characters")
}

pub(crate) fn set_api_version(r: &mut Resource) {
    let v = r.kind().api_version();
    if r.api_version() == v {
        return;
    }
    let v = v.to_string();
    match r {
        Resource::Gateway(o) => Arc::make_mut(o).api_version = v,
        Resource::VirtualService(o) => Arc::make_mut(o).api_version = v,
        Resource::DestinationRule(o) => Arc::make_mut(o).api_version = v,
        Resource::ServiceEntry(o) => Arc::make_mut(o).api_version = v,
        Resource::WorkloadEntry(o) => Arc::make_mut(o).api_version = v,
        Resource::Secret(o) => Arc::make_mut(o).api_version = v,
        Resource::IngressClass(o) => Arc::make_mut(o).api_version = v,
        Resource::Ingress(o) => Arc::make_mut(o).api_version = v,
        Resource::RequestAuthentication(o) => Arc::make_mut(o).api_version = v,
        Resource::AuthorizationPolicy(o) => Arc::make_mut(o).api_version = v,
    }
}

/// Where a batch came from, which decides how its documents are named in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A request body: document `i` is `items[i]`, its fields `items[i].spec…`.
    Body,
    /// Files: document `i` is `<file>: document <n>` (from 1), its fields `spec…`.
    Files,
}

/// One problem of a batch: the document it belongs to, and the cause as the API reports it.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The document's position in the batch, if the problem is not with a whole source.
    pub document: Option<usize>,
    pub cause: Cause,
    /// A document that is not a resource (400), as opposed to an invalid resource (422).
    pub decode: bool,
}

/// A batch after admission.
#[derive(Debug, Default)]
pub(crate) struct Admitted {
    /// The resources to write, in document order, with their positions in the batch.
    pub(crate) upserts: Vec<(usize, Upsert)>,
    pub(crate) problems: Vec<Problem>,
    /// Documents skipped (their positions), and why (`Warning` headers, log lines).
    pub(crate) skipped: Vec<(usize, String)>,
}

/// Every document of a batch through [`check`]: the one admission of `/apply`, `--bootstrap`
/// and `gateway validate`.
pub(crate) fn admit(batch: &Batch, origin: Origin) -> Result<Admitted, ApplyError> {
    let mut out = Admitted::default();
    for (s, e) in batch.source_errors() {
        out.problems.push(Problem {
            document: None,
            cause: decode_cause(e, &s.name),
            decode: true,
        });
    }
    let prefix = |i: usize| match origin {
        Origin::Body => format!("items[{i}]"),
        Origin::Files => String::new(),
    };
    let duplicates: std::collections::BTreeMap<usize, usize> =
        batch.duplicates().into_iter().collect();
    for (i, doc) in batch.documents.iter().enumerate() {
        match &doc.outcome {
            Outcome::Skipped(s) => out.skipped.push((i, s.warning())),
            Outcome::Invalid(e) => out.problems.push(Problem {
                document: Some(i),
                cause: decode_cause(e, &prefix(i)),
                decode: true,
            }),
            Outcome::Resource(r) => {
                let (u, causes) = check(r.clone(), &prefix(i), Mode::Upsert)?;
                out.problems.extend(causes.into_iter().map(|cause| Problem {
                    document: Some(i),
                    cause,
                    decode: false,
                }));
                if let Some(first) = duplicates.get(&i) {
                    let key = u.resource.key();
                    out.problems.push(Problem {
                        document: Some(i),
                        cause: Cause::new(
                            join_field(&prefix(i), "metadata.name"),
                            "FieldValueDuplicate",
                            format!(
                                "Duplicate value: {:?}: {} is the same {} in namespace {:?}",
                                key.name,
                                locate(batch, origin, *first),
                                key.kind,
                                key.namespace
                            ),
                        ),
                        decode: false,
                    });
                }
                out.upserts.push((i, u));
            }
        }
    }
    Ok(out)
}

/// How a message names a document of a batch.
pub(crate) fn locate(batch: &Batch, origin: Origin, i: usize) -> String {
    let Some(doc) = batch.documents.get(i) else {
        return format!("document {i}");
    };
    let label = match &doc.outcome {
        Outcome::Resource(r) => {
            let ResourceKey {
                kind,
                namespace,
                name,
            } = r.key();
            format!(" ({kind} {namespace}/{name})")
        }
        _ => String::new(),
    };
    match origin {
        Origin::Body => format!("items[{i}]"),
        Origin::Files => {
            let source = batch
                .sources
                .get(doc.source)
                .map_or("", |s| s.name.as_str());
            format!("{source}: document {}{label}", doc.index + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123() {
        assert!(dns_subdomain_problem("reviews").is_none());
        assert!(dns_subdomain_problem("a.b-c.d9").is_none());
        assert!(dns_subdomain_problem("Reviews").is_some());
        assert!(dns_subdomain_problem("a/b").is_some());
        assert!(dns_subdomain_problem("-a").is_some());
        assert!(dns_subdomain_problem("a..b").is_some());
        assert!(dns_label_problem("default").is_none());
        assert!(dns_label_problem("a.b").is_some());
    }
}
