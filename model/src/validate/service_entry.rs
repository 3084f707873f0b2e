//! ServiceEntry, as Istio validates it: hosts, addresses, ports, the endpoints each resolution
//! allows, workloadSelector and exportTo, plus the limits of Istio's CRD schema.

use super::common::{
    check_export_to, check_fqdn, check_ip_or_cidr, check_labels, check_metadata, check_port,
    check_unique, check_wildcard_domain, is_ip, is_wildcard, NameRule,
};
use super::findings::Findings;
use super::istio::{is_label, Protocol, PROTOCOL_NAMES};
use super::path::FieldPath;
use super::workload_entry::{check_workload_entry, Ports};
use crate::resource::{Location, Resolution, ServiceEntry};
use std::collections::HashMap;

const MAX_HOSTS: usize = 256;
const MAX_ADDRESSES: usize = 256;
const MAX_PORTS: usize = 256;
const MAX_ENDPOINTS: usize = 4096;
/// The longest address the CRD schema allows.
const ADDRESS_MAX: usize = 64;

/// `networking.istio.io/enable-autoallocate-ip: "false"` opts a ServiceEntry out of Istio's
/// address allocation.
const AUTOALLOCATE_LABEL: &str = "networking.istio.io/enable-autoallocate-ip";
/// `istio.io/use-waypoint`: traffic to the service goes through a waypoint proxy (ambient mode).
const WAYPOINT_LABEL: &str = "istio.io/use-waypoint";

fn resolution_name(r: Resolution) -> &'static str {
    match r {
        Resolution::None => "NONE",
        Resolution::Static => "STATIC",
        Resolution::Dns => "DNS",
        Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
        Resolution::DynamicDns => "DYNAMIC_DNS",
    }
}

pub(crate) fn validate_service_entry(se: &ServiceEntry, f: &mut Findings) {
    check_metadata(f, &se.metadata, NameRule::Subdomain);
    let spec = &se.spec;
    let p = FieldPath::root("spec");
    let resolution = spec.resolution();
    let rname = resolution_name(resolution);

    let wp = p.field("workloadSelector");
    if let Some(ws) = &spec.workload_selector {
        check_labels(f, &wp.field("labels"), &ws.labels);
        if ws.labels.is_empty() {
            f.warn(
                &wp,
                "has no labels: it selects every workload in the namespace",
            );
        }
        if !spec.endpoints.is_empty() {
            f.forbidden(&wp, "workloadSelector may not be combined with endpoints");
        }
        if resolution == Resolution::None {
            f.warn(
                &wp,
                "should not be set with resolution NONE, which uses no endpoints",
            );
        }
    }

    check_hosts(f, &p.field("hosts"), se);

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
        if a.len() > ADDRESS_MAX {
            f.too_long(
                &ap.index(i),
                format!("may not be more than {ADDRESS_MAX} bytes"),
            );
        } else if let Err(e) = check_ip_or_cidr(a) {
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
        f.forbidden(
            &ap,
            "resolution DYNAMIC_DNS takes no addresses: routes come from the hosts",
        );
    }

    let port_names = check_ports(f, &p.field("ports"), se);

    let ep = p.field("endpoints");
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
        Resolution::DynamicDns if !spec.endpoints.is_empty() => f.forbidden(
            &ep,
            "resolution DYNAMIC_DNS takes no endpoints: the destination comes from the request's host",
        ),
        Resolution::DnsRoundRobin if spec.endpoints.len() > 1 => f.invalid(
            &ep,
            &spec.endpoints.len(),
            "resolution DNS_ROUND_ROBIN allows at most one endpoint",
        ),
        _ => {}
    }
    // Endpoints of NONE and DYNAMIC_DNS are refused as a whole above.
    if matches!(
        resolution,
        Resolution::Static | Resolution::Dns | Resolution::DnsRoundRobin
    ) {
        let ports = Ports::OfService(&port_names);
        for (i, e) in spec.endpoints.iter().enumerate() {
            check_workload_entry(f, &ep.index(i), e, ports, resolution);
        }
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

fn check_hosts(f: &mut Findings, hp: &FieldPath, se: &ServiceEntry) {
    let spec = &se.spec;
    let resolution = spec.resolution();
    let rname = resolution_name(resolution);
    if spec.hosts.is_empty() {
        f.required(hp, "at least one host");
    }
    if spec.hosts.len() > MAX_HOSTS {
        f.too_long(
            hp,
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
        if let Err(e) = check_wildcard_domain(h) {
            let e = if is_ip(h) {
                "must be a host name, not an IP address (list IPs in addresses)".to_string()
            } else {
                e
            };
            f.invalid(&ip, h.as_str(), e);
            continue;
        }
        if resolution == Resolution::DynamicDns {
            if !is_wildcard(h) {
                f.invalid(
                    &ip,
                    h.as_str(),
                    "resolution DYNAMIC_DNS needs wildcard hosts (e.g. \"*.example.com\")",
                );
            }
        } else if h.starts_with('*') && !h.starts_with("*.") {
            f.warn(
                &ip,
                "partial wildcard: prefer a whole-label wildcard such as \"*.example.com\"",
            );
        }
    }
    // With DNS and no endpoints the hosts themselves are looked up.
    if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
        && spec.endpoints.is_empty()
    {
        if let Some((i, h)) = spec
            .hosts
            .iter()
            .enumerate()
            .find(|(_, h)| check_wildcard_domain(h).is_ok() && check_fqdn(h).is_err())
        {
            f.invalid(
                &hp.index(i),
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
    if resolution == Resolution::DynamicDns
        && spec.location == Some(Location::MeshInternal)
        && se
            .metadata
            .labels
            .get(WAYPOINT_LABEL)
            .is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("none"))
    {
        f.forbidden(
            &FieldPath::root("spec").field("location"),
            format!("MESH_INTERNAL with resolution DYNAMIC_DNS does not work through a waypoint ({WAYPOINT_LABEL})"),
        );
    }
}

/// The ports, and the names endpoints may use.
fn check_ports<'a>(f: &mut Findings, pp: &FieldPath, se: &'a ServiceEntry) -> Vec<&'a str> {
    let spec = &se.spec;
    let resolution = spec.resolution();
    let rname = resolution_name(resolution);
    if spec.ports.len() > MAX_PORTS {
        f.too_long(
            pp,
            format!(
                "must have at most {MAX_PORTS} items; it has {}",
                spec.ports.len()
            ),
        );
    }
    // Istio gives addresses to ServiceEntries without any, unless the resolution is NONE or the
    // label opts out; without an address a TCP port can only be told apart by port number.
    let allocated = resolution != Resolution::None
        && spec.addresses.is_empty()
        && !se
            .metadata
            .labels
            .get(AUTOALLOCATE_LABEL)
            .is_some_and(|v| v.eq_ignore_ascii_case("false"));
    let mut names: HashMap<&str, FieldPath> = HashMap::new();
    let mut numbers: HashMap<i64, FieldPath> = HashMap::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let ip = pp.index(i);
        let np = ip.field("name");
        match names.get(port.name.as_str()) {
            Some(first) => f.duplicate(
                &np,
                port.name.as_str(),
                format!("port names must be unique; already used by {first}"),
            ),
            None => {
                names.insert(&port.name, np.clone());
            }
        }
        if port.name.is_empty() {
            f.required(&np, "a port name (a DNS label, e.g. \"http\")");
        } else if !is_label(&port.name) {
            f.invalid(
                &np,
                port.name.as_str(),
                "a port name must be a DNS label: letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
            );
        }
        let nump = ip.field("number");
        check_port(f, &nump, port.number);
        match numbers.get(&port.number) {
            Some(first) => f.duplicate(
                &nump,
                &port.number,
                format!("port numbers must be unique; already used by {first}"),
            ),
            None => {
                numbers.insert(port.number, nump);
            }
        }
        if let Some(t) = port.target_port {
            check_port(f, &ip.field("targetPort"), t);
        }
        let raw = port.protocol.as_deref().unwrap_or_default();
        let protocol = Protocol::parse(raw);
        if !raw.is_empty() && protocol.is_none() {
            f.not_supported(&ip.field("protocol"), raw, PROTOCOL_NAMES);
        }
        // Istio compares the exact text here: "tcp" does not count.
        if spec.addresses.is_empty() && !allocated && (raw.is_empty() || raw == "TCP") {
            f.warn(
                &ip,
                "a TCP port (or one without protocol) needs addresses: without them its traffic cannot be told apart from other services on the same port",
            );
        }
        if resolution == Resolution::DynamicDns
            && !matches!(
                protocol,
                Some(Protocol::Http | Protocol::Tls | Protocol::Grpc | Protocol::Http2)
            )
        {
            f.invalid(
                &ip.field("protocol"),
                raw,
                "resolution DYNAMIC_DNS serves only HTTP, TLS, GRPC and HTTP2 ports",
            );
        }
    }
    let plain: Vec<(usize, &str)> = spec
        .ports
        .iter()
        .enumerate()
        .filter_map(|(i, port)| {
            let raw = port.protocol.as_deref().unwrap_or_default();
            let parsed = Protocol::parse(raw);
            (!parsed.is_some_and(|p| p.is_http() || p.is_tls())).then_some((i, raw))
        })
        .collect();
    if spec.hosts.len() > 1 && resolution != Resolution::None {
        if let Some((i, raw)) = plain.first() {
            let proto = if raw.is_empty() { "unset" } else { raw };
            f.forbidden(
                &pp.index(*i).field("protocol"),
                format!("multiple hosts with a non-HTTP, non-TLS port (protocol {proto}) need resolution NONE: such a port cannot tell the hosts apart; use one ServiceEntry per host"),
            );
        }
    }
    let tcp = spec.ports.iter().any(|port| {
        Protocol::parse(port.protocol.as_deref().unwrap_or_default()).is_some_and(Protocol::is_tcp)
    });
    if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
        && !spec.addresses.is_empty()
        && spec.hosts.len() > 1
        && tcp
    {
        f.warn(
            &FieldPath::root("spec").field("addresses"),
            format!("with resolution {rname}, addresses and a TCP port, several hosts share the addresses: use one ServiceEntry per host"),
        );
    }
    spec.ports.iter().map(|port| port.name.as_str()).collect()
}
