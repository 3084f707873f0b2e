//! Gateway: servers (port, protocol, unique port names, `[namespace/]host` hosts, bind) and the TLS
//! settings each protocol allows or needs (certificate sources, modes, CRLs, protocol versions,
//! cipher suites).

use super::common::{
    check_labels, check_metadata, check_port, check_unique, check_unix_address,
    check_wildcard_domain, dns1123_label, is_dns1123_label, is_ip, join_and, NameRule,
};
use super::findings::Findings;
use super::path::FieldPath;
use crate::resource::{Gateway, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol};
// Cipher suites Envoy (and so Istio) knows; others are ignored with a warning. Shared with
// translation, which maps the ones the TLS library implements.
use crate::ir::ENVOY_CIPHER_SUITES as CIPHER_SUITES;
use std::collections::HashMap;

/// Server protocols, matched case-insensitively.
pub(crate) const PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "REDIS", "MYSQL",
];

/// What a protocol means for `tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// HTTP, HTTP2, GRPC, GRPC-WEB: plain text; `tls` may only carry `httpsRedirect`.
    PlainHttp,
    /// HTTPS and TLS: `tls` is required.
    Secure,
    /// TCP and the other opaque protocols: no `tls`.
    Opaque,
    /// Missing or unknown protocol (already reported).
    Unknown,
}

fn family(protocol: &str) -> Family {
    match protocol.to_ascii_uppercase().as_str() {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Family::PlainHttp,
        "HTTPS" | "TLS" => Family::Secure,
        "TCP" | "MONGO" | "REDIS" | "MYSQL" => Family::Opaque,
        _ => Family::Unknown,
    }
}

fn mode_name(m: ServerTlsMode) -> &'static str {
    match m {
        ServerTlsMode::Passthrough => "PASSTHROUGH",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

fn non_empty(o: &Option<String>) -> bool {
    o.as_deref().is_some_and(|s| !s.is_empty())
}

pub(crate) fn validate_gateway(g: &Gateway, f: &mut Findings) {
    check_metadata(f, &g.metadata, NameRule::Label);
    let p = FieldPath::root("spec");
    let sp = p.field("servers");
    if g.spec.servers.is_empty() {
        f.required(&sp, "at least one server");
    }
    for (i, s) in g.spec.servers.iter().enumerate() {
        check_server(f, &sp.index(i), s);
    }
    check_unique(
        f,
        g.spec.servers.iter().enumerate().filter_map(|(i, s)| {
            s.port
                .as_ref()
                .map(|port| (sp.index(i).field("port").field("name"), port.name.as_str()))
        }),
        "port names across servers",
    );
    check_unique(
        f,
        g.spec
            .servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.name.as_deref().map(|n| (sp.index(i).field("name"), n))),
        "server names",
    );
    check_labels(f, &p.field("selector"), &g.spec.selector);
}

fn check_server(f: &mut Findings, p: &FieldPath, s: &Server) {
    let unix_bind = s.bind.as_deref().is_some_and(|b| b.starts_with("unix://"));
    let (family, protocol) = match &s.port {
        None => {
            f.required(&p.field("port"), "the port: number, protocol and name");
            (Family::Unknown, String::new())
        }
        Some(port) => {
            let pp = p.field("port");
            if !(unix_bind && port.number == 0) {
                check_port(f, &pp.field("number"), port.number);
            }
            let fam = family(&port.protocol);
            if port.protocol.is_empty() {
                f.required(
                    &pp.field("protocol"),
                    format!("one of {}", PROTOCOLS.join(", ")),
                );
            } else if fam == Family::Unknown {
                f.not_supported(&pp.field("protocol"), port.protocol.as_str(), PROTOCOLS);
            }
            if port.name.is_empty() {
                f.required(
                    &pp.field("name"),
                    "a port name, unique among the servers of this Gateway",
                );
            }
            if port.target_port.is_some() {
                f.forbidden(
                    &pp.field("targetPort"),
                    "targetPort is not supported on a Gateway",
                );
            }
            (fam, port.protocol.to_ascii_uppercase())
        }
    };

    let hp = p.field("hosts");
    if s.hosts.is_empty() {
        f.required(&hp, "at least one host (e.g. \"*\" or \"example.com\")");
    }
    for (i, h) in s.hosts.iter().enumerate() {
        check_server_host(f, &hp.index(i), h);
    }

    if let Some(b) = &s.bind {
        if !b.is_empty() {
            let ok = if b.starts_with("unix://") {
                check_unix_address(b)
            } else if is_ip(b) {
                Ok(())
            } else {
                Err("must be an IP address or a unix:// socket path".to_string())
            };
            if let Err(e) = ok {
                f.invalid(&p.field("bind"), b.as_str(), e);
            }
        }
    }

    let tp = p.field("tls");
    match (family, &s.tls) {
        (Family::Secure, None) => f.required(
            &tp,
            format!("{protocol} servers need tls settings (e.g. mode: SIMPLE with credentialName)"),
        ),
        (Family::PlainHttp, Some(t)) => {
            let extra = set_fields_besides_redirect(t);
            if !extra.is_empty() {
                f.forbidden(
                    &tp,
                    format!(
                        "a plain-text {protocol} server may only set tls.httpsRedirect, found {}",
                        join_and(&extra)
                    ),
                );
            }
        }
        (Family::Opaque, Some(_)) => f.forbidden(
            &tp,
            format!("a {protocol} server may not have tls settings; use protocol TLS to terminate or pass through TLS"),
        ),
        (Family::Secure, Some(t)) => {
            if t.https_redirect {
                f.warn(
                    &tp.field("httpsRedirect"),
                    "ignored: only plain HTTP servers redirect to HTTPS",
                );
            }
            check_server_tls(f, &tp, t);
        }
        _ => {}
    }
}

/// `[namespace/]host`: namespace `*`, `.` or a label; host `*`, an IP, an FQDN or `*.suffix`; no
/// short names, no partial wildcards.
fn check_server_host(f: &mut Findings, p: &FieldPath, h: &str) {
    let (ns, host) = match h.split_once('/') {
        Some((ns, host)) => (Some(ns), host),
        None => (None, h),
    };
    if let Some(ns) = ns {
        if ns != "*" && ns != "." && !is_dns1123_label(ns) {
            let detail = match dns1123_label(ns) {
                Err(e) => e,
                Ok(()) => String::new(),
            };
            f.invalid(
                p,
                h,
                format!(
                    "the namespace part {ns:?} must be \"*\", \".\" or a namespace name: {detail}"
                ),
            );
        }
    }
    if host == "*" || is_ip(host) {
        return;
    }
    if host.is_empty() {
        f.invalid(p, h, "the host part must not be empty");
        return;
    }
    if host.contains('/') {
        f.invalid(p, h, "must be host or namespace/host, with at most one '/'");
        return;
    }
    if host.starts_with('*') && !host.starts_with("*.") {
        f.invalid(
            p,
            h,
            "partial wildcards are not allowed: a wildcard must be the whole first label (e.g. \"*.example.com\")",
        );
        return;
    }
    if let Err(e) = check_wildcard_domain(host) {
        f.invalid(p, h, e);
        return;
    }
    if !host.trim_end_matches('.').contains('.') {
        f.invalid(
            p,
            h,
            "short names are not allowed: use a fully qualified name (e.g. \"app.example.com\") or \"*\"",
        );
    }
}

/// The fields of `tls` other than `httpsRedirect` that are set.
fn set_fields_besides_redirect(t: &ServerTlsSettings) -> Vec<&'static str> {
    [
        ("mode", t.mode.is_some()),
        ("serverCertificate", t.server_certificate.is_some()),
        ("privateKey", t.private_key.is_some()),
        ("caCertificates", t.ca_certificates.is_some()),
        ("caCrl", t.ca_crl.is_some()),
        ("credentialName", t.credential_name.is_some()),
        ("credentialNames", !t.credential_names.is_empty()),
        ("tlsCertificates", !t.tls_certificates.is_empty()),
        ("subjectAltNames", !t.subject_alt_names.is_empty()),
        (
            "verifyCertificateSpki",
            !t.verify_certificate_spki.is_empty(),
        ),
        (
            "verifyCertificateHash",
            !t.verify_certificate_hash.is_empty(),
        ),
        ("minProtocolVersion", t.min_protocol_version.is_some()),
        ("maxProtocolVersion", t.max_protocol_version.is_some()),
        ("cipherSuites", !t.cipher_suites.is_empty()),
        ("caCertCredentialName", t.ca_cert_credential_name.is_some()),
        ("insecureSkipVerify", t.insecure_skip_verify.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect()
}

fn check_server_tls(f: &mut Findings, p: &FieldPath, t: &ServerTlsSettings) {
    let mode = t.mode.unwrap_or(ServerTlsMode::Passthrough);
    let name = mode_name(mode);
    let files = non_empty(&t.server_certificate) || non_empty(&t.private_key);
    let credential = non_empty(&t.credential_name);
    let sources: Vec<&str> = [
        ("serverCertificate/privateKey", files),
        ("credentialName", credential),
        ("credentialNames", !t.credential_names.is_empty()),
        ("tlsCertificates", !t.tls_certificates.is_empty()),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();

    match mode {
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            if !sources.is_empty() || non_empty(&t.ca_certificates) {
                let unset = if t.mode.is_none() {
                    " (the mode when unset)"
                } else {
                    ""
                };
                f.warn(
                    p,
                    format!("certificates are ignored with mode {name}{unset}: TLS is passed through, not terminated; set mode: SIMPLE to terminate"),
                );
            }
            if mode == ServerTlsMode::AutoPassthrough {
                f.warn(
                    &p.field("mode"),
                    "AUTO_PASSTHROUGH routes by mesh cluster names in the SNI, which a standalone gateway does not have",
                );
            }
        }
        ServerTlsMode::IstioMutual => {
            for (field, set) in [
                ("serverCertificate", non_empty(&t.server_certificate)),
                ("privateKey", non_empty(&t.private_key)),
                ("caCertificates", non_empty(&t.ca_certificates)),
                ("credentialName", credential),
                ("credentialNames", !t.credential_names.is_empty()),
                ("tlsCertificates", !t.tls_certificates.is_empty()),
            ] {
                if set {
                    f.forbidden(
                        &p.field(field),
                        format!("{field} may not be set with mode ISTIO_MUTUAL, which uses the mesh's certificates"),
                    );
                }
            }
        }
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            if sources.len() > 1 {
                f.forbidden(
                    p,
                    format!(
                        "{} are mutually exclusive: set exactly one certificate source",
                        join_and(&sources)
                    ),
                );
            }
            if sources.is_empty() {
                f.required(
                    p,
                    format!("mode {name} needs a certificate: credentialName (a Secret), credentialNames, tlsCertificates, or serverCertificate with privateKey"),
                );
            } else if files {
                for (field, v) in [
                    ("serverCertificate", &t.server_certificate),
                    ("privateKey", &t.private_key),
                ] {
                    if !non_empty(v) {
                        f.required(
                            &p.field(field),
                            format!("mode {name} needs serverCertificate and privateKey together"),
                        );
                    }
                }
            }
            let mutual = matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
            let ca_source = non_empty(&t.ca_certificates)
                || credential
                || !t.credential_names.is_empty()
                || non_empty(&t.ca_cert_credential_name)
                || t.tls_certificates
                    .iter()
                    .any(|c| non_empty(&c.ca_certificates));
            if mutual && !ca_source {
                f.required(
                    &p.field("caCertificates"),
                    format!("mode {name} needs caCertificates to verify client certificates (or a credentialName whose Secret has ca.crt)"),
                );
            }
            if non_empty(&t.ca_crl) {
                if mode == ServerTlsMode::Simple {
                    f.forbidden(
                        &p.field("caCrl"),
                        "caCrl may not be set with mode SIMPLE, which does not verify client certificates",
                    );
                }
                if credential {
                    f.forbidden(
                        &p.field("caCrl"),
                        "caCrl may not be combined with credentialName",
                    );
                }
            }
        }
    }

    for (field, len) in [
        ("credentialNames", t.credential_names.len()),
        ("tlsCertificates", t.tls_certificates.len()),
    ] {
        if len > 2 {
            f.too_long(
                &p.field(field),
                format!(
                    "must have at most 2 items (one RSA and one ECDSA certificate); it has {len}"
                ),
            );
        }
    }
    for (i, c) in t.credential_names.iter().enumerate() {
        if c.is_empty() {
            f.invalid(
                &p.field("credentialNames").index(i),
                c.as_str(),
                "must not be empty",
            );
        }
    }
    for (i, c) in t.tls_certificates.iter().enumerate() {
        let cp = p.field("tlsCertificates").index(i);
        for (field, v) in [
            ("serverCertificate", &c.server_certificate),
            ("privateKey", &c.private_key),
        ] {
            if !non_empty(v) {
                f.required(
                    &cp.field(field),
                    "each tlsCertificates entry needs serverCertificate and privateKey",
                );
            }
        }
    }

    if let (Some(min), Some(max)) = (t.min_protocol_version, t.max_protocol_version) {
        if min != TlsProtocol::TlsAuto && max != TlsProtocol::TlsAuto && max < min {
            f.invalid(
                &p.field("maxProtocolVersion"),
                tls_protocol_name(max),
                format!(
                    "must not be lower than minProtocolVersion {}",
                    tls_protocol_name(min)
                ),
            );
        }
    }

    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, c) in t.cipher_suites.iter().enumerate() {
        let cp = p.field("cipherSuites").index(i);
        if let Some(first) = seen.get(c.as_str()) {
            f.warn(
                &cp,
                format!(
                    "duplicate cipher suite {c:?} (also {}); ignored",
                    p.field("cipherSuites").index(*first)
                ),
            );
            continue;
        }
        seen.insert(c, i);
        if !CIPHER_SUITES.contains(&c.as_str()) {
            f.warn(&cp, format!("unsupported cipher suite {c:?}; ignored"));
        }
    }
}

fn tls_protocol_name(v: TlsProtocol) -> &'static str {
    match v {
        TlsProtocol::TlsAuto => "TLS_AUTO",
        TlsProtocol::TlsV1_0 => "TLSV1_0",
        TlsProtocol::TlsV1_1 => "TLSV1_1",
        TlsProtocol::TlsV1_2 => "TLSV1_2",
        TlsProtocol::TlsV1_3 => "TLSV1_3",
    }
}
