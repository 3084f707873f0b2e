//! ServiceEntry (hosts, addresses, ports, resolution and the endpoints each resolution allows) and
//! WorkloadEntry (standalone, and as a ServiceEntry endpoint).

use super::common::{
    check_export_to, check_fqdn, check_ip_or_cidr, check_labels, check_metadata, check_port,
    check_u32_count, check_unique, check_unix_address, check_wildcard_domain, dns1123_label, is_ip,
    is_wildcard, quoted_list, NameRule,
};
use super::findings::Findings;
use super::path::FieldPath;
use crate::resource::{Resolution, ServiceEntry, WorkloadEntry, WorkloadEntrySpec};
use std::collections::HashMap;

/// Port protocols, matched case-insensitively.
const PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "REDIS", "MYSQL",
];
const MAX_HOSTS: usize = 256;
const MAX_ADDRESSES: usize = 256;
const MAX_ENDPOINTS: usize = 4096;

fn resolution_name(r: Resolution) -> &'static str {
    match r {
        Resolution::None => "NONE",
        Resolution::Static => "STATIC",
        Resolution::Dns => "DNS",
        Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
        Resolution::DynamicDns => "DYNAMIC_DNS",
    }
}

/// Whether a port protocol is HTTP-like or TLS (the hosts can be told apart by Host or SNI).
fn tells_hosts_apart(protocol: Option<&str>) -> bool {
    matches!(
        protocol.map(str::to_ascii_uppercase).as_deref(),
        Some("HTTP" | "HTTPS" | "GRPC" | "GRPC-WEB" | "HTTP2" | "TLS")
    )
}

pub(crate) fn validate_service_entry(se: &ServiceEntry, f: &mut Findings) {
    check_metadata(f, &se.metadata, NameRule::Subdomain);
    let spec = &se.spec;
    let p = FieldPath::root("spec");
    let resolution = spec.resolution();
    let rname = resolution_name(resolution);

    let hp = p.field("hosts");
    if spec.hosts.is_empty() {
        f.required(&hp, "at least one host");
    }
    if spec.hosts.len() > MAX_HOSTS {
        f.too_long(
            &hp,
            format!(
                "must have at most {MAX_HOSTS} items; it has {}",
                spec.hosts.len()
            ),
        );
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        let ip = hp.index(i);
        if h == "*" {
            f.invalid(
                &ip,
                h.as_str(),
                "\"*\" is not allowed: name the hosts of the service",
            );
            continue;
        }
        if is_ip(h) {
            f.invalid(
                &ip,
                h.as_str(),
                "must be a host name, not an IP address (list IPs in addresses)",
            );
            continue;
        }
        if let Err(e) = check_wildcard_domain(h) {
            f.invalid(&ip, h.as_str(), e);
            continue;
        }
        if h.starts_with('*') && !h.starts_with("*.") {
            f.warn(
                &ip,
                "partial wildcard: prefer a whole-label wildcard such as \"*.example.com\"",
            );
        }
        if resolution == Resolution::DynamicDns && !is_wildcard(h) {
            f.invalid(
                &ip,
                h.as_str(),
                "resolution DYNAMIC_DNS needs wildcard hosts (e.g. \"*.example.com\")",
            );
        }
        if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
            && spec.endpoints.is_empty()
            && is_wildcard(h)
        {
            f.invalid(
                &ip,
                h.as_str(),
                format!("with resolution {rname} and no endpoints the hosts themselves are resolved, so they may not be wildcards"),
            );
        }
    }
    check_unique(
        f,
        spec.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (hp.index(i), h.as_str())),
        "hosts",
    );

    let ap = p.field("addresses");
    if spec.addresses.len() > MAX_ADDRESSES {
        f.too_long(
            &ap,
            format!(
                "must have at most {MAX_ADDRESSES} items; it has {}",
                spec.addresses.len()
            ),
        );
    }
    for (i, a) in spec.addresses.iter().enumerate() {
        if let Err(e) = check_ip_or_cidr(a) {
            f.invalid(&ap.index(i), a.as_str(), e);
        } else if a.contains('/') && !matches!(resolution, Resolution::None | Resolution::Static) {
            f.forbidden(
                &ap.index(i),
                format!(
                    "CIDR addresses are only allowed with resolution NONE or STATIC, not {rname}"
                ),
            );
        }
    }
    if resolution == Resolution::DynamicDns && !spec.addresses.is_empty() {
        f.forbidden(&ap, "resolution DYNAMIC_DNS takes no addresses");
    }

    let pp = p.field("ports");
    for (i, port) in spec.ports.iter().enumerate() {
        let ip = pp.index(i);
        check_port(f, &ip.field("number"), port.number);
        if let Some(proto) = &port.protocol {
            if !proto.is_empty() && !PROTOCOLS.iter().any(|k| k.eq_ignore_ascii_case(proto)) {
                f.not_supported(&ip.field("protocol"), proto.as_str(), PROTOCOLS);
            }
        }
        if port.name.is_empty() {
            f.required(
                &ip.field("name"),
                "a port name (an RFC 1123 label, e.g. \"http\")",
            );
        } else if let Err(e) = dns1123_label(&port.name) {
            f.invalid(&ip.field("name"), port.name.as_str(), e);
        }
        if let Some(t) = port.target_port {
            check_port(f, &ip.field("targetPort"), t);
        }
    }
    check_unique(
        f,
        spec.ports
            .iter()
            .enumerate()
            .map(|(i, port)| (pp.index(i).field("name"), port.name.as_str())),
        "port names",
    );
    let mut numbers: HashMap<i64, FieldPath> = HashMap::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let np = pp.index(i).field("number");
        match numbers.get(&port.number) {
            Some(first) => f.duplicate(
                &np,
                &port.number,
                format!("port numbers must be unique; already used by {first}"),
            ),
            None => {
                numbers.insert(port.number, np);
            }
        }
    }
    if spec.hosts.len() > 1 && resolution != Resolution::None {
        if let Some((i, port)) = spec
            .ports
            .iter()
            .enumerate()
            .find(|(_, port)| !tells_hosts_apart(port.protocol.as_deref()))
        {
            let proto = port
                .protocol
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or("unset, so TCP");
            f.forbidden(
                &pp.index(i).field("protocol"),
                format!("multiple hosts with a non-HTTP, non-TLS port (protocol {proto}) need resolution NONE: such a port cannot tell the hosts apart; use one ServiceEntry per host"),
            );
        }
    }

    let ep = p.field("endpoints");
    if !spec.endpoints.is_empty() && spec.workload_selector.is_some() {
        f.forbidden(
            &p.field("workloadSelector"),
            "workloadSelector may not be combined with endpoints",
        );
    }
    if spec.endpoints.len() > MAX_ENDPOINTS {
        f.too_long(
            &ep,
            format!(
                "must have at most {MAX_ENDPOINTS} items; it has {}",
                spec.endpoints.len()
            ),
        );
    }
    match resolution {
        Resolution::None if !spec.endpoints.is_empty() => f.forbidden(
            &ep,
            "resolution NONE takes no endpoints: set resolution STATIC or DNS",
        ),
        Resolution::DynamicDns if !spec.endpoints.is_empty() => {
            f.forbidden(&ep, "resolution DYNAMIC_DNS takes no endpoints")
        }
        Resolution::DnsRoundRobin if spec.endpoints.len() > 1 => f.invalid(
            &ep,
            &spec.endpoints.len(),
            "resolution DNS_ROUND_ROBIN allows at most one endpoint",
        ),
        Resolution::Static if spec.endpoints.is_empty() && spec.workload_selector.is_none() => f
            .warn(
                &ep,
                "none: with resolution STATIC and no endpoints or workloadSelector the hosts have no endpoints",
            ),
        _ => {}
    }
    let port_names: Vec<&str> = spec
        .ports
        .iter()
        .map(|port| port.name.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    for (i, e) in spec.endpoints.iter().enumerate() {
        let ip = ep.index(i);
        check_workload_entry(f, &ip, e, Some(port_names.as_slice()));
        let Some(addr) = e.address.as_deref().filter(|a| !a.is_empty()) else {
            continue;
        };
        let unix = addr.starts_with("unix://");
        match resolution {
            Resolution::Static if !unix && !is_ip(addr) => f.invalid(
                &ip.field("address"),
                addr,
                "with resolution STATIC an endpoint address must be an IP address or a unix:// path",
            ),
            Resolution::Dns | Resolution::DnsRoundRobin if unix => f.invalid(
                &ip.field("address"),
                addr,
                format!("with resolution {rname} an endpoint address must be a hostname or an IP address"),
            ),
            _ => {}
        }
    }
    if let Some(ws) = &spec.workload_selector {
        check_labels(f, &p.field("workloadSelector").field("labels"), &ws.labels);
    }
    check_export_to(
        f,
        &p.field("exportTo"),
        &spec.export_to,
        se.metadata.namespace(),
        true,
    );
    for (i, san) in spec.subject_alt_names.iter().enumerate() {
        if san.is_empty() {
            f.invalid(
                &p.field("subjectAltNames").index(i),
                san.as_str(),
                "must not be empty",
            );
        }
    }
}

pub(crate) fn validate_workload_entry(we: &WorkloadEntry, f: &mut Findings) {
    check_metadata(f, &we.metadata, NameRule::Subdomain);
    check_workload_entry(f, &FieldPath::root("spec"), &we.spec, None);
}

/// A workload: `address` (IP, hostname, or unix path) unless `network` is set; ports by name (the
/// ServiceEntry's port names when `service_ports` is given); labels; weight.
fn check_workload_entry(
    f: &mut Findings,
    p: &FieldPath,
    w: &WorkloadEntrySpec,
    service_ports: Option<&[&str]>,
) {
    let ap = p.field("address");
    let address = w.address.as_deref().filter(|a| !a.is_empty());
    let has_network = w.network.as_deref().is_some_and(|n| !n.is_empty());
    let unix = address.is_some_and(|a| a.starts_with("unix://"));
    match address {
        None if !has_network => f.required(
            &ap,
            "an address (an IP address, a hostname, or unix:///path), unless network is set",
        ),
        None => {}
        Some(a) if unix => {
            if let Err(e) = check_unix_address(a) {
                f.invalid(&ap, a, e);
            }
        }
        Some(a) if !is_ip(a) && check_fqdn(a).is_err() => f.invalid(
            &ap,
            a,
            "must be an IP address, a hostname, or a unix:// path",
        ),
        Some(_) => {}
    }
    let pp = p.field("ports");
    if unix && !w.ports.is_empty() {
        f.forbidden(&pp, "a unix:// address takes no ports");
    }
    for (name, number) in &w.ports {
        let kp = pp.key(name);
        match service_ports {
            Some(names) if !names.contains(&name.as_str()) => {
                if names.is_empty() {
                    f.invalid(&kp, name.as_str(), "the ServiceEntry defines no ports");
                } else {
                    f.not_supported_text(
                        &kp,
                        name.as_str(),
                        format!("{} (the names of spec.ports)", quoted_list(names)),
                    );
                }
            }
            Some(_) => {}
            None => {
                if let Err(e) = dns1123_label(name) {
                    f.invalid(&kp, name.as_str(), format!("port name: {e}"));
                }
            }
        }
        check_port(f, &kp, *number);
    }
    check_labels(f, &p.field("labels"), &w.labels);
    if let Some(weight) = w.weight {
        check_u32_count(f, &p.field("weight"), weight);
    }
}
