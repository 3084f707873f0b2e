//! What makes the admin API a Kubernetes API server as far as kubectl can tell: the catalog of
//! served kinds, discovery, Tables, selectors and paging, patches and server-side apply, watches,
//! OpenAPI documents, and the protobuf bodies kubectl sends for built-in kinds.

pub(crate) mod catalog;
pub(crate) mod discovery;
pub(crate) mod fields;
pub(crate) mod openapi;
pub(crate) mod patch;
pub(crate) mod protobuf;
pub(crate) mod select;
pub(crate) mod table;
pub(crate) mod watch;
