//! The gateway's control plane: the admin REST API ([`router`]), the single-writer apply pipeline
//! ([`ControlPlane`]), readiness ([`Health`]) and durable storage ([`Store`], [`FileStore`]).
//! Nothing here touches traffic: the data plane only sees the `Snapshot` the pipeline swaps in.

pub mod acme;
mod admission;
mod api;
mod api_doc;
mod body;
mod control;
mod debug;
mod error;
mod feed;
mod health;
mod k8s;
pub mod linger;
pub mod manifests;
mod metrics;
mod rest;
pub mod store;
mod time;
mod translation;

pub use admission::dns_label_problem;
pub use api::router;
pub use body::MAX_BODY_BYTES;
pub use control::{Applied, ApplyError, ControlPlane, Written};
pub use error::{AdminError, Cause};
pub use health::Health;
pub use store::{FileStore, MemoryStore, Precondition, Store, StoreError};
pub use time::rfc3339;
