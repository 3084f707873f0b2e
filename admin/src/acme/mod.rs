//! ACME (RFC 8555) in the control plane: certificates for the servers of Gateways annotated
//! `acme.gateway/enabled: "true"` ([`model::acme`] says which), stored as their `credentialName`
//! Secrets through the apply pipeline, so that they are served, replicated and shown like any
//! other Secret. [`start`] runs the client on every process; on a shared store one replica
//! orders a certificate at a time (a compare-and-swap lock in the shared ACME state, see
//! [`kv`]), and every replica answers the challenges ([`Challenges`], filled from that state).

mod challenges;
mod client;
pub mod kv;
mod manager;
mod metrics;

pub use challenges::{AlpnCertificate, Challenges, ACME_TLS_ALPN, HTTP01_PREFIX};
pub use manager::start;

use std::path::PathBuf;
use std::time::Duration;

/// How long a published challenge is left for the other replicas to see before the ACME server
/// is told to validate it (they poll the shared state every [`POLL`]).
pub(crate) const PUBLISH_DELAY: Duration = Duration::from_millis(1200);
/// How often every replica reads the published challenges.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// The `--acme-*` flags.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The directory URL (`--acme-directory`).
    pub directory: String,
    /// Account contacts (`--acme-email`), without `mailto:`.
    pub email: Vec<String>,
    /// The CA the ACME server's own TLS is checked with (`--acme-ca-file`); else the system's.
    pub ca_file: Option<PathBuf>,
    /// External Account Binding: key id and the decoded HMAC key.
    pub eab: Option<(String, Vec<u8>)>,
    /// Renew once a certificate is this old instead of at two thirds of its lifetime (tests:
    /// `GATEWAY_ACME_TEST_RENEW_AFTER`).
    pub renew_after: Option<Duration>,
    /// The first retry delay after a failure (doubles up to [`AcmeConfig::backoff_max`]).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl AcmeConfig {
    pub fn new(directory: String) -> AcmeConfig {
        AcmeConfig {
            directory,
            email: Vec::new(),
            ca_file: None,
            eab: None,
            renew_after: None,
            backoff_min: Duration::from_secs(2),
            backoff_max: Duration::from_secs(600),
        }
    }
}
