//! Translation with the certificate and key files a resource set references read from disk first
//! (the model does no I/O): the one translation of the control plane and of the offline commands.

use crate::admission::guarded;
use crate::control::ApplyError;
use model::translate::{referenced_files, translate_with_files, Files, Translation};
use model::ResourceSet;
use std::sync::{Arc, OnceLock};

/// The process's TLS session-ticket keys, made once and kept across translations (rustls' aws-lc-rs
/// ticketer: random keys in memory, a new one every 6 hours with the previous still accepted,
/// tickets valid 12 hours), so that a reload does not end every client's session; a restart
/// does. TLS 1.3 resumption is psk_dhe_ke only in rustls, so resumed sessions keep forward
/// secrecy.
fn session_tickets() -> Option<Arc<dyn rustls::server::ProducesTickets>> {
    static TICKETS: OnceLock<Option<Arc<dyn rustls::server::ProducesTickets>>> = OnceLock::new();
    TICKETS
        .get_or_init(|| match rustls::crypto::aws_lc_rs::Ticketer::new() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "no TLS session tickets: sessions resume only until the next reload");
                None
            }
        })
        .clone()
}

/// Translates with the certificate and key files the set names read first (translation does no
/// I/O): they are read again at every change, so a rewritten file is picked up by the next apply.
pub(crate) fn translate_read(
    set: &ResourceSet,
    gateway_namespace: &str,
    listener_ports: Option<&std::collections::BTreeSet<u16>>,
) -> Result<Translation, ApplyError> {
    let mut files = Files::default();
    files.listener_ports = listener_ports.cloned();
    files.tickets = session_tickets();
    for path in referenced_files(set) {
        let read = std::fs::read(&path).map_err(|e| e.to_string());
        files.insert(path, read);
    }
    guarded("translation", || {
        translate_with_files(set, &files, gateway_namespace)
    })
}
