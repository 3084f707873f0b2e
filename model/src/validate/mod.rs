//! Validation of every resource kind: collects every problem with its field path, never panics.
//!
//! Errors are Kubernetes `StatusCause`s: `field` is a path from the object root
//! (`spec.http[0].route[1].weight`, `metadata.name`, `data[tls.crt]`), `message` starts with
//! Kubernetes' prefix for the reason (`Invalid value: -10: must be >= 0`, `Required value: …`,
//! `Duplicate value: …`, `Unsupported value: …: supported values: …`, `Forbidden: …`, `Too long: …`).
//! Warnings are `<field path>: <text>`, for fields that are accepted but ignored, rules that can never
//! match, deprecated fields, and the fields of [`NOT_ENFORCED`].
//!
//! Only one resource is looked at: references to other resources are translation's business.

mod common;
mod destination_rule;
mod findings;
mod gateway;
mod ingress;
mod istio;
mod locality;
mod path;
mod secret;
mod security;
mod service_entry;
mod unenforced;
mod virtual_service;
mod workload_entry;

pub use common::decode_proto_bytes;
pub(crate) use istio::Protocol;
pub use path::FieldPath;
pub use security::{parse_go_bool, parse_jwks_uri, DRY_RUN_ANNOTATION};
pub use unenforced::{unenforced_warnings, NOT_ENFORCED};
pub(crate) use virtual_service::GRPC_CODES;

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
/// The warnings end with [`unenforced_warnings`].
pub fn validate(resource: &Resource) -> Report {
    let mut f = findings::Findings::default();
    match resource {
        Resource::Gateway(o) => gateway::validate_gateway(o, &mut f),
        Resource::VirtualService(o) => virtual_service::validate_virtual_service(o, &mut f),
        Resource::DestinationRule(o) => destination_rule::validate_destination_rule(o, &mut f),
        Resource::ServiceEntry(o) => service_entry::validate_service_entry(o, &mut f),
        Resource::WorkloadEntry(o) => workload_entry::validate_workload_entry(o, &mut f),
        Resource::Secret(o) => secret::validate_secret(o, &mut f),
        Resource::Ingress(o) => ingress::validate_ingress(o, &mut f),
        Resource::IngressClass(o) => ingress::validate_ingress_class(o, &mut f),
        Resource::RequestAuthentication(o) => security::validate_request_authentication(o, &mut f),
        Resource::AuthorizationPolicy(o) => security::validate_authorization_policy(o, &mut f),
    }
    let mut report = f.into_report();
    report.warnings.extend(unenforced_warnings(resource));
    report
}
