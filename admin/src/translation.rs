//! Translation with the certificate and key files a resource set references read from disk first
//! (the model does no I/O): the one translation of the control plane and of the offline commands.

use crate::admission::guarded;
use crate::control::ApplyError;
use model::translate::{referenced_files, translate_with_files, Files, Translation};
use model::ResourceSet;

/// Translates with the certificate and key files the set names read first (translation does no
/// I/O): they are read again at every change, so a rewritten file is picked up by the next apply.
pub(crate) fn translate_read(
    set: &ResourceSet,
    gateway_namespace: &str,
    listener_ports: Option<&std::collections::BTreeSet<u16>>,
) -> Result<Translation, ApplyError> {
    let mut files = Files::default();
    files.listener_ports = listener_ports.cloned();
    for path in referenced_files(set) {
        let read = std::fs::read(&path).map_err(|e| e.to_string());
        files.insert(path, read);
    }
    guarded("translation", || {
        translate_with_files(set, &files, gateway_namespace)
    })
}
