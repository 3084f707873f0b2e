//! WorkloadEntry, standalone and as a ServiceEntry endpoint, as Istio validates it: the address
//! each use allows (IP, hostname, `unix://` socket, or none beside a network), port names and
//! numbers, labels, and the limits of Istio's CRD schema.

use super::common::{
    check_fqdn, check_labels, check_metadata, check_port, check_u32_count, is_ip, quoted_list,
    NameRule,
};
use super::findings::Findings;
use super::istio::{is_label, unix_address};
use super::path::FieldPath;
use crate::resource::{Resolution, WorkloadEntry, WorkloadEntrySpec};
use std::collections::BTreeSet;

const UNIX_PREFIX: &str = "unix://";
/// The CRD schema wants port names shorter than this.
const PORT_NAME_LIMIT: usize = 63;
const ADDRESS_MAX: usize = 256;
const SERVICE_ACCOUNT_MAX: usize = 253;
const NETWORK_MAX: usize = 2048;

/// Where a workload is declared, which decides the addresses and port names it may use.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ports<'a> {
    /// A WorkloadEntry of its own: any port name, any address.
    Standalone,
    /// An endpoint of a ServiceEntry: the port names of its `ports`.
    OfService(&'a [&'a str]),
}

pub(crate) fn validate_workload_entry(we: &WorkloadEntry, f: &mut Findings) {
    check_metadata(f, &we.metadata, NameRule::Subdomain);
    // Without a ServiceEntry Istio cannot tell STATIC from DNS use, so hostnames are allowed.
    check_workload_entry(
        f,
        &FieldPath::root("spec"),
        &we.spec,
        Ports::Standalone,
        Resolution::Dns,
    );
}

/// One workload. `resolution` is the ServiceEntry's (only STATIC, DNS and DNS_ROUND_ROBIN take
/// endpoints); a standalone entry passes DNS.
pub(crate) fn check_workload_entry(
    f: &mut Findings,
    p: &FieldPath,
    w: &WorkloadEntrySpec,
    ports: Ports<'_>,
    resolution: Resolution,
) {
    let ap = p.field("address");
    let address = w.address.as_deref().unwrap_or_default();
    let network = w.network.as_deref().unwrap_or_default();
    let dns_endpoint = matches!(ports, Ports::OfService(_))
        && matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin);
    let unix = address.strip_prefix(UNIX_PREFIX);
    if address.len() > ADDRESS_MAX {
        f.too_long(&ap, format!("may not be more than {ADDRESS_MAX} bytes"));
    } else if dns_endpoint {
        // DNS endpoints are looked up: they need a hostname or an IP, whatever the network.
        if !is_ip(address) && check_fqdn(address).is_err() {
            f.invalid(
                &ap,
                address,
                "with resolution DNS an endpoint address must be a hostname or an IP address",
            );
        }
    } else if address.is_empty() {
        if network.is_empty() {
            f.required(
                &ap,
                "an address (an IP address, a hostname, or unix:///path), unless network is set",
            );
            return;
        }
        f.warn(
            &ap,
            format!("unset: the workload is reached through network {network:?}'s gateway"),
        );
    } else if unix.is_some() {
        if let Err(e) = unix_address(address) {
            f.invalid(&ap, address, e);
        }
    } else if !is_ip(address) {
        match ports {
            Ports::OfService(_) => f.invalid(
                &ap,
                address,
                "with resolution STATIC an endpoint address must be an IP address or a unix:// path",
            ),
            Ports::Standalone => {
                if check_fqdn(address).is_err() {
                    f.invalid(
                        &ap,
                        address,
                        "must be an IP address, a hostname, or a unix:// path",
                    );
                }
            }
        }
    }

    let pp = p.field("ports");
    if unix.is_some() && !w.ports.is_empty() {
        f.forbidden(&pp, "a unix:// address takes no ports");
    }
    if let (Some(_), Ports::OfService(names), false) = (unix, ports, dns_endpoint) {
        let distinct: BTreeSet<&&str> = names.iter().collect();
        if distinct.len() != 1 {
            f.invalid(
                &FieldPath::root("spec").field("ports"),
                &distinct.len(),
                "a unix:// endpoint needs exactly one service port",
            );
        }
    }
    for (name, number) in &w.ports {
        let kp = pp.key(name);
        if let Ports::OfService(names) = ports {
            if names.is_empty() {
                f.invalid(&kp, name.as_str(), "the ServiceEntry defines no ports");
            } else if !names.contains(&name.as_str()) {
                f.not_supported_text(
                    &kp,
                    name.as_str(),
                    format!("{} (the names of spec.ports)", quoted_list(names)),
                );
            }
        }
        if !is_label(name) || name.len() >= PORT_NAME_LIMIT {
            f.invalid(
                &kp,
                name.as_str(),
                "a port name must be a DNS label shorter than 63 characters: letters, digits and '-', starting and ending with a letter or digit",
            );
        }
        check_port(f, &kp, *number);
    }
    check_labels(f, &p.field("labels"), &w.labels);
    if let Some(weight) = w.weight {
        check_u32_count(f, &p.field("weight"), weight);
    }
    for (field, v, max) in [
        ("serviceAccount", &w.service_account, SERVICE_ACCOUNT_MAX),
        ("network", &w.network, NETWORK_MAX),
        ("locality", &w.locality, NETWORK_MAX),
    ] {
        if v.as_deref().is_some_and(|s| s.len() > max) {
            f.too_long(&p.field(field), format!("may not be more than {max} bytes"));
        }
    }
}
