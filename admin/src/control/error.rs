//! Why a change was not applied, in the control plane's terms: the API layer maps it to a
//! Kubernetes `Status` and its HTTP code (`From<ApplyError> for AdminError`), the CLI and the
//! bootstrap print it.

use crate::error::{cause_message, decode_cause, syntax_message, Cause};
use crate::store::StoreError;
use model::{DecodeError, Format, Kind};
use std::fmt;

#[derive(Debug, Clone)]
pub enum ApplyError {
    /// The body is not a resource (or not the one the path names): nothing to validate.
    BadRequest {
        message: String,
        causes: Vec<Cause>,
    },
    /// One object that is not valid, with every cause.
    Invalid {
        kind: Kind,
        name: String,
        causes: Vec<Cause>,
    },
    /// A batch with invalid objects, every cause prefixed by its item.
    InvalidBatch(Vec<Cause>),
    AlreadyExists {
        kind: Kind,
        name: String,
    },
    /// A precondition (`resourceVersion`) that does not hold.
    Conflict {
        kind: Kind,
        name: String,
    },
    NotFound {
        kind: Kind,
        name: String,
    },
    /// The store failed (unreachable, I/O, corrupt) or refused a precondition.
    Store(StoreError),
    /// A bug (a panic caught in validation or translation): the detail is logged, not shown.
    Internal(String),
    /// A startup problem (bootstrap manifests, metrics registry), for the operator.
    Startup(String),
}

impl ApplyError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApplyError::BadRequest {
            message: message.into(),
            causes: Vec::new(),
        }
    }

    /// A body that does not decode; `prefix` names the batch item (`items[2]`).
    pub(crate) fn decode(err: &DecodeError, format: Format, prefix: &str) -> Self {
        match err {
            DecodeError::Syntax { .. } => Self::bad_request(syntax_message(err, format, prefix)),
            DecodeError::Field { .. } => {
                let cause = decode_cause(err, prefix);
                ApplyError::BadRequest {
                    message: cause_message(&cause),
                    causes: vec![cause],
                }
            }
        }
    }

    /// A batch in which some documents are not resources.
    pub(crate) fn bad_batch(causes: Vec<Cause>) -> Self {
        let joined: Vec<String> = causes.iter().map(cause_message).collect();
        ApplyError::BadRequest {
            message: format!("the batch could not be decoded: {}", joined.join(", ")),
            causes,
        }
    }

    pub(crate) fn not_found(kind: Kind, name: &str) -> Self {
        ApplyError::NotFound {
            kind,
            name: name.to_string(),
        }
    }

    pub(crate) fn conflict(kind: Kind, name: &str) -> Self {
        ApplyError::Conflict {
            kind,
            name: name.to_string(),
        }
    }

    pub(crate) fn already_exists(kind: Kind, name: &str) -> Self {
        ApplyError::AlreadyExists {
            kind,
            name: name.to_string(),
        }
    }

    /// A failure that a view behind a shared store could explain (the write runs again on a
    /// fresh view before it is reported).
    pub(crate) fn may_be_stale(&self) -> bool {
        matches!(
            self,
            ApplyError::NotFound { .. }
                | ApplyError::Conflict { .. }
                | ApplyError::AlreadyExists { .. }
                | ApplyError::Store(
                    StoreError::AlreadyExists { .. }
                        | StoreError::NotFound { .. }
                        | StoreError::Conflict { .. }
                )
        )
    }

    /// The store cannot be reached (a caller may wait and try again).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ApplyError::Store(StoreError::Unavailable(_)))
    }

    /// A rejected change as `gateway_config_reloads_total{result="failure"}` counts it: not a
    /// precondition that failed.
    pub(crate) fn is_rejection(&self) -> bool {
        match self {
            ApplyError::BadRequest { .. }
            | ApplyError::Invalid { .. }
            | ApplyError::InvalidBatch(_)
            | ApplyError::Internal(_)
            | ApplyError::Startup(_) => true,
            ApplyError::Store(e) => matches!(
                e,
                StoreError::Unavailable(_) | StoreError::Io(_) | StoreError::Corrupt(_)
            ),
            ApplyError::AlreadyExists { .. }
            | ApplyError::Conflict { .. }
            | ApplyError::NotFound { .. } => false,
        }
    }
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError::Store(e)
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::BadRequest { message, .. } => f.write_str(message),
            ApplyError::Invalid { kind, name, causes } => {
                let joined: Vec<String> = causes.iter().map(cause_message).collect();
                write!(
                    f,
                    "{} {name:?} is invalid: {}",
                    kind.qualified(),
                    joined.join(", ")
                )
            }
            ApplyError::InvalidBatch(causes) => {
                let joined: Vec<String> = causes.iter().map(cause_message).collect();
                write!(f, "the batch is invalid: {}", joined.join(", "))
            }
            ApplyError::AlreadyExists { kind, name } => write!(f, "{kind} {name:?} already exists"),
            ApplyError::Conflict { kind, name } => {
                write!(f, "{kind} {name:?}: the object has been modified")
            }
            ApplyError::NotFound { kind, name } => write!(f, "{kind} {name:?} not found"),
            ApplyError::Store(e) => write!(f, "{e}"),
            ApplyError::Internal(m) => write!(f, "internal error: {m}"),
            ApplyError::Startup(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ApplyError {}
