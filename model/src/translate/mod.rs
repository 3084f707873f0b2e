//! Translation of a whole resource set into one [`Snapshot`](crate::ir::Snapshot) and per-resource
//! status conditions. Total (never fails, never panics) and deterministic (input order is irrelevant).
//!
//! The pipeline: `gateways` (servers per port), `clusters` (the registry and DestinationRules),
//! `routes` (each VirtualService rule compiled once), `ingress` (Kubernetes Ingresses as
//! Istio derives routes from them), `vhosts` (binding, host admission, merge
//! order, host index), `tls` (HTTPS and TLS servers by SNI, upstream TLS, certificates), `l4`
//! (`tcp` and `tls` rules onto TCP and TLS servers), `diag` (problems become warnings and status
//! conditions).

mod clusters;
mod diag;
mod gateways;
mod hosts;
mod ingress;
mod l4;
mod routes;
mod security;
mod tls;
mod vhosts;

pub use security::{Workload, DEFAULT_INGRESS_LABELS};
pub use tls::{referenced_files, Files};

use crate::ir::Snapshot;
use crate::resource::{ResourceKey, ResourceSet};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A `status.conditions[]` entry. Every resource has conditions at every translation, nearly all
/// of them fixed words: those are static, not allocated per resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// `Accepted`, `ResolvedRefs`, …
    #[serde(rename = "type")]
    pub type_: Cow<'static, str>,
    /// `True` or `False`.
    pub status: Cow<'static, str>,
    pub reason: Cow<'static, str>,
    pub message: String,
}

/// The result of translation.
#[derive(Debug, Default)]
pub struct Translation {
    pub snapshot: Snapshot,
    /// Conditions for every resource of the set.
    pub statuses: BTreeMap<ResourceKey, Vec<Condition>>,
    /// Per resource, one message per dangling reference or unusable part (the `Warning` headers of
    /// a write), each naming the field: `spec.http[0].route[0].destination.subset: …`.
    pub warnings: BTreeMap<ResourceKey, Vec<String>>,
}

impl Translation {
    /// The warnings of one resource.
    pub fn warnings_for(&self, key: &ResourceKey) -> &[String] {
        self.warnings.get(key).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The gateway's own namespace unless told otherwise (`--namespace`): where Istio's ingress
/// gateway runs, and so where it reads the Secrets that `credentialName`s name.
pub const DEFAULT_GATEWAY_NAMESPACE: &str = "istio-system";

/// Translates the resource set for a gateway in [`DEFAULT_GATEWAY_NAMESPACE`], with no file read:
/// certificates named by path do not load (see [`translate_with_files`]).
pub fn translate(set: &ResourceSet) -> Translation {
    translate_with_files(set, &Files::default(), DEFAULT_GATEWAY_NAMESPACE)
}

/// Translates the resource set; `files` holds the bytes of the paths [`referenced_files`] lists,
/// read by the caller (translation does no I/O). `gateway_namespace` is the gateway's own
/// namespace: a `credentialName` is looked up in its resource's namespace, then there.
pub fn translate_with_files(
    set: &ResourceSet,
    files: &Files,
    gateway_namespace: &str,
) -> Translation {
    let mut diag = diag::Diag::default();
    let gws = gateways::Gateways::collect(
        set,
        gateway_namespace,
        files.listener_ports.as_ref(),
        &mut diag,
    );
    let mut secrets = tls::Secrets::new(set, gateway_namespace);
    let mut tls_listeners = tls::listeners(set, &mut secrets, files, &mut diag);
    ingress::tls_servers(
        set,
        &mut secrets,
        files,
        gateway_namespace,
        &mut tls_listeners,
        &mut diag,
    );
    let mut reg = clusters::Registry::new(set);
    reg.upstream_tls = tls::upstream(set, &mut secrets, files, &mut diag);
    clusters::check_service_entries(set, &reg, &mut diag);
    clusters::check_destination_rules(set, &mut diag);
    let ingress_routes = ingress::routes(set, gateway_namespace, &mut reg, &mut diag);
    let mut listeners = vhosts::build(set, &gws, ingress_routes, &mut reg, &mut diag);
    for port in gws.grpc_web_ports() {
        if let Some(l) = listeners.get_mut(&port) {
            l.grpc_web = true;
        }
    }
    let l4 = l4::build(set, &gws, &mut reg, &mut diag);
    let workloads = security::workloads(set, &gws, &listeners, gateway_namespace);
    let security = security::compile(set, &workloads, gateway_namespace, &mut diag);
    let clusters = std::mem::take(&mut reg.clusters);
    for se in set.service_entries() {
        for host in se.spec.hosts.iter().filter(|h| !h.starts_with('*')) {
            for port in se
                .spec
                .ports
                .iter()
                .filter_map(|p| clusters::port_u16(p.number))
            {
                if !clusters.contains_key(&clusters::cluster_name(host, port, None)) {
                    reg.cluster(host, port, None);
                }
            }
        }
    }
    let snapshot = Snapshot {
        service_clusters: std::mem::take(&mut reg.clusters),
        listeners,
        l4,
        clusters,
        tls: tls_listeners,
        secret_certificates: secrets.expiries(),
        security,
    };
    let (statuses, warnings) = diag.finish(set);
    Translation {
        snapshot,
        statuses,
        warnings,
    }
}
