//! `Ingress` and `IngressClass`, as the Kubernetes API server validates them
//! (`pkg/apis/networking/validation`): rule hosts and TLS hosts (DNS names, a wildcard only as the
//! whole first label, never an IP), paths by `pathType`, backends (a service by name with a port
//! name or number, or a resource, never both), the class fields; plus warnings for what Istio
//! does not serve (resource backends, TLS without `secretName`).

use super::common::{check_metadata, dns1123_label, dns1123_subdomain, is_ip, NameRule};
use super::findings::Findings;
use super::path::FieldPath;
use crate::resource::{
    Ingress, IngressBackend, IngressClass, INGRESS_CLASS_ANNOTATION, PATH_EXACT,
    PATH_IMPLEMENTATION_SPECIFIC, PATH_PREFIX,
};

const PATH_TYPES: [&str; 3] = [PATH_EXACT, PATH_IMPLEMENTATION_SPECIFIC, PATH_PREFIX];
/// Sequences Kubernetes refuses in `Exact` and `Prefix` paths.
const INVALID_PATH_SEQUENCES: [&str; 5] = ["//", "/./", "/../", "%2f", "%2F"];
const INVALID_PATH_SUFFIXES: [&str; 2] = ["/..", "/."];
/// Kubernetes' longest IngressClass `spec.controller`.
const CONTROLLER_MAX: usize = 250;
const DNS1035_HELP: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name', or 'abc-123')";
const WILDCARD_SUBDOMAIN_HELP: &str = "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com')";

pub(crate) fn validate_ingress(ing: &Ingress, f: &mut Findings) {
    check_metadata(f, &ing.metadata, NameRule::Subdomain);
    let spec = &ing.spec;
    let p = FieldPath::root("spec");

    if let Some(class) = &spec.ingress_class_name {
        if let Err(e) = dns1123_subdomain(class) {
            f.invalid(&p.field("ingressClassName"), class.as_str(), e);
        }
        if let Some(a) = ing.metadata.annotations.get(INGRESS_CLASS_ANNOTATION) {
            f.invalid(
                &FieldPath::root("metadata")
                    .field("annotations")
                    .key(INGRESS_CLASS_ANNOTATION),
                a.as_str(),
                "can not be set when the class field is also set",
            );
        }
    }

    if spec.default_backend.is_none() && spec.rules.is_empty() {
        f.invalid(
            &p,
            "",
            "either `defaultBackend` or `rules` must be specified",
        );
    }
    if let Some(b) = &spec.default_backend {
        check_backend(f, &p.field("defaultBackend"), b);
    }

    let rp = p.field("rules");
    for (i, rule) in spec.rules.iter().enumerate() {
        let ri = rp.index(i);
        if let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty()) {
            check_host(f, &ri.field("host"), host);
        }
        let Some(http) = &rule.http else {
            f.warn(&ri, "has no http paths; Istio serves nothing for this rule");
            continue;
        };
        let pp = ri.field("http").field("paths");
        if http.paths.is_empty() {
            f.required(&pp, "must have at least one path");
        }
        for (j, path) in http.paths.iter().enumerate() {
            let pj = pp.index(j);
            check_path(f, &pj, path.path.as_deref(), path.path_type.as_deref());
            check_backend(f, &pj.field("backend"), &path.backend);
        }
    }

    let tp = p.field("tls");
    for (i, tls) in spec.tls.iter().enumerate() {
        let ti = tp.index(i);
        for (j, host) in tls.hosts.iter().enumerate() {
            check_tls_host(f, &ti.field("hosts").index(j), host);
        }
        match tls.secret_name.as_deref() {
            None | Some("") => f.warn(
                &ti.field("secretName"),
                "is not set: Istio serves no certificate for these hosts",
            ),
            Some(name) => {
                if let Err(e) = dns1123_subdomain(name) {
                    f.invalid(&ti.field("secretName"), name, e);
                }
            }
        }
    }
}

/// A rule host: a DNS subdomain, or `*.` and one; never an IP address.
fn check_host(f: &mut Findings, path: &FieldPath, host: &str) {
    if is_ip(host) {
        f.invalid(path, host, "must be a DNS name, not an IP address");
        return;
    }
    check_dns_or_wildcard(f, path, host);
}

/// A TLS host: as a rule host, but Kubernetes does not refuse IP addresses there.
fn check_tls_host(f: &mut Findings, path: &FieldPath, host: &str) {
    check_dns_or_wildcard(f, path, host);
}

fn check_dns_or_wildcard(f: &mut Findings, path: &FieldPath, host: &str) {
    if host.contains('*') {
        let ok = host
            .strip_prefix("*.")
            .is_some_and(|rest| dns1123_subdomain(rest).is_ok());
        if !ok {
            f.invalid(path, host, WILDCARD_SUBDOMAIN_HELP);
        }
    } else if let Err(e) = dns1123_subdomain(host) {
        f.invalid(path, host, e);
    }
}

fn check_path(f: &mut Findings, p: &FieldPath, path: Option<&str>, path_type: Option<&str>) {
    let Some(pt) = path_type else {
        f.required(&p.field("pathType"), "pathType must be specified");
        return;
    };
    let path = path.unwrap_or_default();
    let fp = p.field("path");
    match pt {
        PATH_EXACT | PATH_PREFIX => {
            if !path.starts_with('/') {
                f.invalid(&fp, path, "must be an absolute path");
            }
            if !path.is_empty() {
                for seq in INVALID_PATH_SEQUENCES {
                    if path.contains(seq) {
                        f.invalid(&fp, path, format!("must not contain '{seq}'"));
                    }
                }
                for suffix in INVALID_PATH_SUFFIXES {
                    if path.ends_with(suffix) {
                        f.invalid(&fp, path, format!("cannot end with '{suffix}'"));
                    }
                }
            }
        }
        PATH_IMPLEMENTATION_SPECIFIC => {
            if !path.is_empty() && !path.starts_with('/') {
                f.invalid(&fp, path, "must be an absolute path");
            }
        }
        other => f.not_supported(&p.field("pathType"), other, &PATH_TYPES),
    }
}

fn check_backend(f: &mut Findings, p: &FieldPath, b: &IngressBackend) {
    match (&b.service, &b.resource) {
        (Some(_), Some(_)) => f.invalid(p, "", "cannot set both resource and service backends"),
        (None, Some(r)) => {
            let rp = p.field("resource");
            if r.kind.is_empty() {
                f.required(&rp.field("kind"), "kind is required");
            }
            if r.name.is_empty() {
                f.required(&rp.field("name"), "name is required");
            }
            f.warn(
                &rp,
                "a resource backend is not served by Istio; requests for this path are not routed",
            );
        }
        (Some(s), None) => {
            let sp = p.field("service");
            if s.name.is_empty() {
                f.required(&sp.field("name"), "");
            } else if dns1123_label(&s.name).is_err()
                || !s.name.starts_with(|c: char| c.is_ascii_lowercase())
            {
                f.invalid(&sp.field("name"), s.name.as_str(), DNS1035_HELP);
            }
            let has_name = !s.port.name.is_empty();
            let has_number = s.port.number != 0;
            let pp = sp.field("port");
            match (has_name, has_number) {
                (true, true) => f.invalid(p, "", "cannot set both port name & port number"),
                (true, false) => {
                    if let Err(e) = port_name(&s.port.name) {
                        f.invalid(&pp.field("name"), s.port.name.as_str(), e);
                    }
                }
                (false, true) => {
                    if !(1..=65535).contains(&s.port.number) {
                        f.invalid(
                            &pp.field("number"),
                            &s.port.number,
                            "must be between 1 and 65535, inclusive",
                        );
                    }
                }
                (false, false) => f.required(p, "port name or number is required"),
            }
        }
        (None, None) => f.invalid(p, "", "resource or service backend is required"),
    }
}

/// Kubernetes' `IsValidPortName`: an IANA service name.
fn port_name(s: &str) -> Result<(), &'static str> {
    if s.len() > 15 {
        return Err("must be no more than 15 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if s.contains("--") {
        return Err("must not contain consecutive hyphens");
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err("must contain at least one letter (a-z)");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must not begin or end with a hyphen");
    }
    Ok(())
}

pub(crate) fn validate_ingress_class(c: &IngressClass, f: &mut Findings) {
    check_metadata(f, &c.metadata, NameRule::Subdomain);
    let p = FieldPath::root("spec");
    let cp = p.field("controller");
    let ctl = &c.spec.controller;
    if ctl.is_empty() {
        f.required(&cp, "");
    } else {
        if ctl.len() > CONTROLLER_MAX {
            f.too_long(&cp, format!("may not be more than {CONTROLLER_MAX} bytes"));
        }
        match ctl.split_once('/') {
            Some((domain, rest)) if !rest.is_empty() => {
                if let Err(e) = dns1123_subdomain(domain) {
                    f.invalid(&cp, ctl.as_str(), e);
                }
            }
            _ => f.invalid(
                &cp,
                ctl.as_str(),
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            ),
        }
    }
    if let Some(params) = &c.spec.parameters {
        let pp = p.field("parameters");
        if params.kind.is_empty() {
            f.required(&pp.field("kind"), "kind is required");
        }
        if params.name.is_empty() {
            f.required(&pp.field("name"), "name is required");
        }
        match params.scope.as_deref() {
            Some("Cluster") if params.namespace.is_some() => f.forbidden(
                &pp.field("namespace"),
                "`parameters.scope` is set to 'Cluster'",
            ),
            Some("Namespace") if params.namespace.as_deref().is_none_or(str::is_empty) => f
                .required(
                    &pp.field("namespace"),
                    "`parameters.scope` is set to 'Namespace'",
                ),
            None | Some("Cluster" | "Namespace") => {}
            Some(other) => f.not_supported(&pp.field("scope"), other, &["Cluster", "Namespace"]),
        }
    }
}
