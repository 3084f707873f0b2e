//! The gateway's pure core: Istio resource types, their validation, and the translation of a
//! resource set into one immutable compiled snapshot. No I/O, no async, no panics on user input.

pub mod acme;
pub mod ir;
pub mod load;
pub mod mesh;
pub mod resource;
pub mod translate;
pub mod validate;

pub use resource::*;
