//! The hash map of the request path: std's map with foldhash (seeded per process) instead of
//! SipHash, for the lookups every request makes (listener by port, cluster state by name,
//! endpoint state by address, TLS handshake by connection).

/// A `HashMap` with foldhash.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
