//! The one error type of the admin API. Every failure becomes a Kubernetes `Status` object
//! (CONTRACT §3); internal details travel in a field that is logged and printed at startup but
//! never serialized into a response.

use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use model::validate::{Reason, Violation};
use model::{DecodeError, Kind};
use serde::Serialize;
use std::fmt;

/// One `details.causes[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    pub field: String,
    pub reason: String,
    pub message: String,
}

impl Cause {
    pub fn new(field: impl Into<String>, reason: &str, message: impl Into<String>) -> Self {
        Cause {
            field: field.into(),
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    /// A validation violation, its field prefixed (`items[2].`) when it comes from a batch.
    pub fn from_violation(prefix: &str, v: &Violation) -> Self {
        Cause {
            field: join_field(prefix, &v.field),
            reason: reason_str(v.reason).to_string(),
            message: v.message.clone(),
        }
    }
}

/// `Reason` as the string Kubernetes writes in `causes[].reason`.
pub fn reason_str(r: Reason) -> &'static str {
    match r {
        Reason::FieldValueInvalid => "FieldValueInvalid",
        Reason::FieldValueRequired => "FieldValueRequired",
        Reason::FieldValueDuplicate => "FieldValueDuplicate",
        Reason::FieldValueNotSupported => "FieldValueNotSupported",
        Reason::FieldValueForbidden => "FieldValueForbidden",
        Reason::FieldValueTooLong => "FieldValueTooLong",
    }
}

/// `prefix` + `field`, with the dot only where both are non-empty.
pub fn join_field(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if field.starts_with('[') => format!("{prefix}{field}"),
        (false, false) => format!("{prefix}.{field}"),
    }
}

/// `details` of a `Status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
}

/// An admin API failure: HTTP code, Kubernetes reason, a message for the user, optional details,
/// and (never sent) the internal cause. Boxed so that `Result<_, AdminError>` stays small.
#[derive(Debug, Clone)]
pub struct AdminError(Box<Failure>);

#[derive(Debug, Clone)]
struct Failure {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Option<Details>,
    internal: Option<String>,
    /// The `Allow` header of a 405 (RFC 9110 §15.5.6).
    allow: Option<&'static str>,
}

/// The REST resource name in messages: `virtualservices.networking.istio.io`, `secrets`.
pub fn resource_name(kind: Kind) -> String {
    match kind {
        Kind::Secret => kind.plural().to_string(),
        k => format!("{}.{}", k.plural(), k.group()),
    }
}

fn ref_details(kind: Kind, name: &str) -> Details {
    Details {
        name: Some(name.to_string()),
        group: (!kind.group().is_empty()).then(|| kind.group().to_string()),
        kind: Some(kind.plural().to_string()),
        causes: Vec::new(),
    }
}

impl AdminError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        AdminError(Box::new(Failure {
            code,
            reason,
            message: message.into(),
            details: None,
            internal: None,
            allow: None,
        }))
    }

    fn with_details(mut self, details: Details) -> Self {
        self.0.details = Some(details);
        self
    }

    /// 400 with a plain message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 400 with causes (decode failures of one or several documents).
    pub fn bad_request_causes(message: impl Into<String>, causes: Vec<Cause>) -> Self {
        let e = Self::bad_request(message);
        if causes.is_empty() {
            return e;
        }
        e.with_details(Details {
            causes,
            ..Details::default()
        })
    }

    /// 400 for a body that is not a resource; `prefix` names the batch item (`items[2]`).
    pub fn decode(err: &DecodeError, format: model::Format, prefix: &str) -> Self {
        match err {
            DecodeError::Syntax { .. } => Self::bad_request(syntax_message(err, format, prefix)),
            DecodeError::Field { .. } => {
                let cause = decode_cause(err, prefix);
                let message = cause_message(&cause);
                Self::bad_request_causes(message, vec![cause])
            }
        }
    }

    /// 400 for a batch in which some documents are not resources, every cause prefixed by its item.
    pub fn bad_request_batch(causes: Vec<Cause>) -> Self {
        let message = format!("the batch could not be decoded: {}", join_causes(&causes));
        Self::bad_request_causes(message, causes)
    }

    /// 422 `Invalid` for one object, with every cause.
    pub fn invalid(kind: Kind, name: &str, causes: Vec<Cause>) -> Self {
        let message = format!(
            "{} {:?} is invalid: {}",
            kind.qualified(),
            name,
            join_causes(&causes)
        );
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message).with_details(Details {
            name: Some(name.to_string()),
            group: (!kind.group().is_empty()).then(|| kind.group().to_string()),
            kind: Some(kind.as_str().to_string()),
            causes,
        })
    }

    /// 422 `Invalid` for a batch (`/apply`), causes prefixed by their item.
    pub fn invalid_batch(causes: Vec<Cause>) -> Self {
        let message = format!("the batch is invalid: {}", join_causes(&causes));
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message).with_details(Details {
            kind: Some("List".to_string()),
            causes,
            ..Details::default()
        })
    }

    pub fn not_found(kind: Kind, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} {:?} not found", resource_name(kind), name),
        )
        .with_details(ref_details(kind, name))
    }

    /// 404 for a path the API does not serve.
    pub fn no_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(kind: Kind, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} {:?} already exists", resource_name(kind), name),
        )
        .with_details(ref_details(kind, name))
    }

    pub fn conflict(kind: Kind, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {:?}: the object has been modified; please apply your changes to the latest version and try again",
                resource_name(kind),
                name
            ),
        )
        .with_details(ref_details(kind, name))
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized: send the admin token as \"Authorization: Bearer <token>\"",
        )
    }

    /// 405, with the methods the path does allow (`GET, POST`); None where the router writes
    /// the `Allow` header itself.
    pub fn method_not_allowed(allow: Option<&'static str>) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
        e.0.allow = allow;
        e
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("the request body is too large: the limit is {limit} bytes"),
        )
    }

    pub fn unsupported_media_type(got: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("unsupported media type {got:?}: send application/json or application/yaml"),
        )
    }

    /// 415 for a PATCH whose `Content-Type` is not a patch format the server knows.
    pub fn unsupported_patch(got: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {got:?})"),
        )
    }

    /// 422 for a patch that does not apply to the object (a JSON patch path that is missing, a
    /// failed `test`).
    pub fn unprocessable_patch(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!(
                "the server rejected our request due to an error in our request: {}",
                message.into()
            ),
        )
    }

    /// 409 for a server-side apply that would change fields other managers own; one cause per
    /// field, as Kubernetes reports them (kubectl prints its advice on `FieldManagerConflict`).
    pub fn apply_conflict(kind: Kind, name: &str, message: String, causes: Vec<Cause>) -> Self {
        let mut d = ref_details(kind, name);
        d.causes = causes;
        Self::new(StatusCode::CONFLICT, "Conflict", message).with_details(d)
    }

    /// 406 for an `Accept` the server cannot answer in.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, "NotAcceptable", message)
    }

    /// 410 `Expired`: a watch or a list asked for a `resourceVersion` whose history is gone.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    /// 503: the store cannot be reached; `internal` is logged, not sent.
    pub fn unavailable(internal: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the configuration store is unavailable; nothing was changed, try again later",
        );
        e.0.internal = Some(internal.into());
        e
    }

    /// 500: `internal` is logged, not sent.
    pub fn internal(internal: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "Internal error occurred: the change was not applied",
        );
        e.0.internal = Some(internal.into());
        e
    }

    /// A startup problem (bootstrap manifests, registry): the message is for the operator.
    pub fn startup(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// Maps a store failure on `kind`/`name` (for the conflict messages).
    pub fn from_store(err: StoreError) -> Self {
        match &err {
            StoreError::AlreadyExists { key } => Self::already_exists(key.kind, &key.name),
            StoreError::NotFound { key } => Self::not_found(key.kind, &key.name),
            StoreError::Conflict { key, .. } => Self::conflict(key.kind, &key.name),
            StoreError::Unavailable(_) => Self::unavailable(err.to_string()),
            StoreError::Io(_) | StoreError::Corrupt(_) => Self::internal(err.to_string()),
        }
    }

    pub fn code(&self) -> StatusCode {
        self.0.code
    }

    pub fn reason(&self) -> &'static str {
        self.0.reason
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn causes(&self) -> &[Cause] {
        self.0
            .details
            .as_ref()
            .map(|d| d.causes.as_slice())
            .unwrap_or(&[])
    }

    /// The `Status` object sent to the client, fields in the order of CONTRACT §3.
    pub fn status_body(&self) -> serde_json::Value {
        use serde_json::Value;
        let mut m = serde_json::Map::new();
        m.insert("kind".into(), Value::from("Status"));
        m.insert("apiVersion".into(), Value::from("v1"));
        m.insert("status".into(), Value::from("Failure"));
        m.insert("code".into(), Value::from(self.0.code.as_u16()));
        m.insert("reason".into(), Value::from(self.0.reason));
        m.insert("message".into(), Value::from(self.0.message.as_str()));
        if let Some(d) = &self.0.details {
            m.insert(
                "details".into(),
                serde_json::to_value(d).unwrap_or(Value::Null),
            );
        }
        Value::Object(m)
    }
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)?;
        if let Some(i) = &self.0.internal {
            write!(f, " ({i})")?;
        }
        Ok(())
    }
}

impl std::error::Error for AdminError {}

/// The one place a control-plane failure becomes HTTP.
impl From<crate::control::ApplyError> for AdminError {
    fn from(e: crate::control::ApplyError) -> Self {
        use crate::control::ApplyError as E;
        match e {
            E::BadRequest { message, causes } => AdminError::bad_request_causes(message, causes),
            E::Invalid { kind, name, causes } => AdminError::invalid(kind, &name, causes),
            E::InvalidBatch(causes) => AdminError::invalid_batch(causes),
            E::AlreadyExists { kind, name } => AdminError::already_exists(kind, &name),
            E::Conflict { kind, name } => AdminError::conflict(kind, &name),
            E::NotFound { kind, name } => AdminError::not_found(kind, &name),
            E::Store(s) => AdminError::from_store(s),
            E::Internal(i) => AdminError::internal(i),
            E::Startup(m) => AdminError::startup(m),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::from_store(e)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if let Some(i) = &self.0.internal {
            tracing::error!(code = self.0.code.as_u16(), reason = self.0.reason, error = %i, "admin request failed");
        }
        let body = serde_json::to_vec(&self.status_body()).unwrap_or_default();
        let mut resp = (self.0.code, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(allow) = self.0.allow {
            h.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.0.code == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"gateway-admin\""),
            );
        }
        resp
    }
}

fn join_causes(causes: &[Cause]) -> String {
    causes
        .iter()
        .map(cause_message)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `field: message`, or the message alone when it already quotes the field (strict decoding).
pub(crate) fn cause_message(c: &Cause) -> String {
    if c.field.is_empty() || c.message.contains(&format!("{:?}", c.field)) {
        c.message.clone()
    } else {
        format!("{}: {}", c.field, c.message)
    }
}

fn format_name(format: model::Format) -> &'static str {
    match format {
        model::Format::Json => "JSON",
        model::Format::Yaml => "YAML",
    }
}

/// `body is not valid JSON: expected value at line 2 column 11`.
pub fn syntax_message(err: &DecodeError, format: model::Format, prefix: &str) -> String {
    let where_ = if prefix.is_empty() {
        "body".to_string()
    } else {
        prefix.to_string()
    };
    format!("{where_} is not valid {}: {err}", format_name(format))
}

/// The cause of a shape error, with the message Kubernetes' strict decoding writes for unknown
/// fields (`strict decoding error: unknown field "spec.http[0].foo"`).
pub fn decode_cause(err: &DecodeError, prefix: &str) -> Cause {
    match err {
        DecodeError::Syntax { .. } => Cause::new(prefix, "FieldValueInvalid", err.to_string()),
        DecodeError::Field { path, message } => {
            if let Some(name) = backticked(message, "unknown field `") {
                // serde_path_to_error stops at the parent object: append the field itself.
                let parent = join_field(prefix, path);
                let full = if parent.ends_with(name) {
                    parent
                } else {
                    join_field(&parent, name)
                };
                let msg = format!("strict decoding error: unknown field {full:?}");
                Cause::new(full, "FieldValueInvalid", msg)
            } else if message.starts_with("unknown variant") {
                Cause::new(
                    join_field(prefix, path),
                    "FieldValueNotSupported",
                    format!("Unsupported value: {message}"),
                )
            } else {
                Cause::new(
                    join_field(prefix, path),
                    "FieldValueInvalid",
                    message.clone(),
                )
            }
        }
    }
}

fn backticked<'a>(message: &'a str, after: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(after)?;
    rest.split('`').next()
}

/// Every cause of a report with `prefix`.
pub fn violation_causes(prefix: &str, errors: &[Violation]) -> Vec<Cause> {
    errors
        .iter()
        .map(|v| Cause::from_violation(prefix, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_lists_every_cause() {
        let e = AdminError::invalid(
            Kind::VirtualService,
            "reviews",
            vec![
                Cause::new(
                    "spec.http[0].route[1].weight",
                    "FieldValueInvalid",
                    "Invalid value: -10: must be >= 0",
                ),
                Cause::new("spec.hosts", "FieldValueRequired", "Required value"),
            ],
        );
        assert_eq!(
            e.message(),
            "VirtualService.networking.istio.io \"reviews\" is invalid: spec.http[0].route[1].weight: Invalid value: -10: must be >= 0, spec.hosts: Required value"
        );
        let v = e.status_body();
        assert_eq!(v["code"], 422);
        assert_eq!(v["reason"], "Invalid");
        assert_eq!(v["details"]["kind"], "VirtualService");
        assert_eq!(v["details"]["causes"][1]["field"], "spec.hosts");
    }

    #[test]
    fn internal_details_are_not_serialized() {
        let e = AdminError::internal("disk on fire at /var/secret/path");
        let body = e.status_body().to_string();
        assert!(!body.contains("disk on fire"), "{body}");
        assert!(e.to_string().contains("disk on fire"));
    }

    #[test]
    fn unknown_field_cause_has_the_full_path() {
        let err = DecodeError::Field {
            path: "spec.http[0]".into(),
            message: "unknown field `foo`, expected one of `match`, `route`".into(),
        };
        let c = decode_cause(&err, "items[1]");
        assert_eq!(c.field, "items[1].spec.http[0].foo");
        assert_eq!(
            c.message,
            "strict decoding error: unknown field \"items[1].spec.http[0].foo\""
        );
    }
}
