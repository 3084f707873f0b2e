//! Wire types of every resource kind, as Istio's JSON (lowerCamelCase, enums as strings) and the
//! envelope they share; decoding from JSON or YAML with the path of the first field that does not fit.

mod common;
mod decode;
mod destination_rule;
mod gateway;
mod ingress;
mod secret;
mod security;
mod service_entry;
mod virtual_service;
pub mod yaml;

pub use common::*;
pub use decode::*;
pub use destination_rule::*;
pub use gateway::*;
pub use ingress::*;
pub use secret::*;
pub use security::*;
pub use service_entry::*;
pub use virtual_service::*;
