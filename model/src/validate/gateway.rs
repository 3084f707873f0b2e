//! Gateway, as Istio validates it: servers (port, protocol, unique port names, `[namespace/]host`
//! hosts, bind) and the TLS settings (certificate sources, modes, CRLs, cipher suites), plus the
//! limits of Istio's CRD schema (at most two `credentialNames` or `tlsCertificates`).

use super::common::{
    check_labels, check_metadata, check_port, check_unique, check_wildcard_domain,
    is_dns1123_label, is_ip, join_and, NameRule,
};
use super::findings::Findings;
use super::istio::{
    is_cipher_expression, is_label, is_valid_cipher_suite, unix_address, Protocol, PROTOCOL_NAMES,
};
use super::path::FieldPath;
use crate::resource::{Gateway, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol};
// Cipher suites Envoy (and so Istio) knows; others are ignored with a warning. Shared with
// translation, which maps the ones the TLS library implements.
use crate::ir::ENVOY_CIPHER_SUITES as CIPHER_SUITES;
use std::collections::HashMap;

/// The most `credentialNames` or `tlsCertificates` Istio's CRD schema allows (one RSA and one
/// ECDSA certificate).
const MAX_CERTIFICATES: usize = 2;

const UNIX_PREFIX: &str = "unix://";

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
    // Opted in to ACME: the servers and hosts it cannot manage are said, not skipped silently.
    for (path, text) in crate::acme::servers(g).1 {
        f.warn_text(&path, text);
    }
    // Port names compare case-sensitively, as Istio's do.
    let mut port_names: HashMap<&str, FieldPath> = HashMap::new();
    for (i, s) in g.spec.servers.iter().enumerate() {
        let Some(port) = &s.port else { continue };
        let http = Protocol::parse(&port.protocol).is_some_and(Protocol::is_http);
        if !http && s.tls.as_ref().is_some_and(|t| t.https_redirect) {
            f.warn(
                &sp.index(i).field("tls").field("httpsRedirect"),
                "should only be used with HTTP servers: it is ignored here",
            );
        }
        if port.name.is_empty() {
            continue;
        }
        let np = sp.index(i).field("port").field("name");
        match port_names.get(port.name.as_str()) {
            Some(first) => f.duplicate(
                &np,
                port.name.as_str(),
                format!("port names across servers must be unique; already used by {first}"),
            ),
            None => {
                port_names.insert(&port.name, np);
            }
        }
    }
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
    let hp = p.field("hosts");
    if s.hosts.is_empty() {
        f.required(&hp, "at least one host (e.g. \"*\" or \"example.com\")");
    }
    for (i, h) in s.hosts.iter().enumerate() {
        check_server_host(f, &hp.index(i), h);
    }

    let bind = s.bind.as_deref().unwrap_or_default();
    let unix_bind = bind.strip_prefix(UNIX_PREFIX);
    let mut protocol = None;
    match &s.port {
        None => f.required(&p.field("port"), "the port: number, protocol and name"),
        Some(port) => {
            let pp = p.field("port");
            // A unix socket listener has no port number.
            if port.number > 0 || unix_bind.is_none() {
                check_port(f, &pp.field("number"), port.number);
            }
            protocol = Protocol::parse(&port.protocol);
            if port.protocol.is_empty() {
                f.required(
                    &pp.field("protocol"),
                    format!("one of {}", PROTOCOL_NAMES.join(", ")),
                );
            } else if protocol.is_none() {
                f.not_supported(
                    &pp.field("protocol"),
                    port.protocol.as_str(),
                    PROTOCOL_NAMES,
                );
            }
            if port.name.is_empty() {
                f.required(
                    &pp.field("name"),
                    "a port name, unique among the servers of this Gateway",
                );
            }
            if port.target_port.is_some_and(|t| t > 0) {
                f.forbidden(
                    &pp.field("targetPort"),
                    "targetPort has no effect on a Gateway",
                );
            }
        }
    }

    let bp = p.field("bind");
    match unix_bind {
        Some(_) => {
            if let Err(e) = unix_address(bind) {
                f.invalid(&bp, bind, e);
            }
            if let Some(port) = s.port.as_ref().filter(|port| port.number != 0) {
                f.invalid(
                    &p.field("port").field("number"),
                    &port.number,
                    "must be 0 (or unset) with a unix domain socket bind",
                );
            }
        }
        None if !bind.is_empty() && !is_ip(bind) => {
            f.invalid(&bp, bind, "must be an IP address or a unix:// socket path")
        }
        None => {}
    }

    let tp = p.field("tls");
    if let Some(t) = &s.tls {
        check_server_tls(f, &tp, t);
    }
    let Some(protocol) = protocol else { return };
    let name = protocol_name(s);
    match &s.tls {
        None if protocol.is_tls() => f.required(
            &tp,
            format!("{name} servers need tls settings (e.g. mode: SIMPLE with credentialName)"),
        ),
        Some(t) if !protocol.is_tls() && protocol.is_http() => {
            let terminates = !matches!(
                t.mode,
                None | Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
            );
            let files: Vec<&str> = [
                ("caCertificates", &t.ca_certificates),
                ("privateKey", &t.private_key),
                ("serverCertificate", &t.server_certificate),
            ]
            .into_iter()
            .filter_map(|(n, v)| non_empty(v).then_some(n))
            .collect();
            if terminates || !files.is_empty() {
                let what = if terminates {
                    format!("mode {}", mode_name(t.mode.unwrap_or(ServerTlsMode::Passthrough)))
                } else {
                    join_and(&files)
                };
                f.forbidden(
                    &tp,
                    format!("a plain-text {name} server cannot terminate TLS (found {what}); only tls.httpsRedirect belongs here"),
                );
            }
        }
        Some(_) if !protocol.is_tls() => f.forbidden(
            &tp,
            format!("a {name} server may not have tls settings; use protocol TLS to terminate or pass through TLS"),
        ),
        _ => {}
    }
}

fn protocol_name(s: &Server) -> String {
    s.port
        .as_ref()
        .map(|p| p.protocol.to_ascii_uppercase())
        .unwrap_or_default()
}

/// Istio's `ValidateNamespaceSlashWildcardHostname` for Gateways: `[namespace/]host`, the namespace
/// `*`, `.` or a label; the host `*`, an IP address, an FQDN or `*.suffix`; no short names, no
/// partial wildcards.
fn check_server_host(f: &mut Findings, p: &FieldPath, h: &str) {
    let host = match h.split_once('/') {
        None => h,
        Some((ns, host)) => {
            if ns.is_empty() || host.is_empty() {
                f.invalid(
                    p,
                    h,
                    "the namespace and the host in namespace/host must not be empty",
                );
            } else if ns != "*" && ns != "." && !is_label(ns) {
                f.invalid(
                    p,
                    h,
                    format!("the namespace part {ns:?} must be \"*\", \".\" or a namespace name"),
                );
            } else if ns != "*" && ns != "." && !is_dns1123_label(ns) {
                // Istio accepts any case here, but a namespace name is lowercase.
                f.warn(
                    p,
                    format!("matches no namespace: namespace names are lowercase, not {ns:?}"),
                );
            }
            host
        }
    };
    if host.is_empty() {
        return;
    }
    if host != "*" && !host.contains('.') {
        f.invalid(
            p,
            h,
            "short names are not allowed: use a fully qualified name (e.g. \"app.example.com\") or \"*\"",
        );
        return;
    }
    if host.contains('*') && host != "*" && !host.starts_with("*.") {
        f.invalid(
            p,
            h,
            "partial wildcards are not allowed: a wildcard must be the whole first label (e.g. \"*.example.com\")",
        );
        return;
    }
    if let Err(e) = check_wildcard_domain(host) {
        if !is_ip(host) {
            f.invalid(p, h, e);
        }
    }
}

/// Istio's `validateTLSOptions`, which every server's `tls` goes through whatever its protocol.
fn check_server_tls(f: &mut Findings, p: &FieldPath, t: &ServerTlsSettings) {
    check_cipher_suites(f, p, t);
    for (field, len) in [
        ("credentialNames", t.credential_names.len()),
        ("tlsCertificates", t.tls_certificates.len()),
    ] {
        if len > MAX_CERTIFICATES {
            f.too_long(
                &p.field(field),
                format!(
                    "must have at most {MAX_CERTIFICATES} items (one RSA and one ECDSA certificate); it has {len}"
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

    let mode = t.mode.unwrap_or(ServerTlsMode::Passthrough);
    let name = mode_name(mode);
    let credential = non_empty(&t.credential_name);
    let credentials = !t.credential_names.is_empty();
    let certificates = !t.tls_certificates.is_empty();
    if mode == ServerTlsMode::IstioMutual {
        for (field, set) in [
            ("serverCertificate", non_empty(&t.server_certificate)),
            ("privateKey", non_empty(&t.private_key)),
            ("caCertificates", non_empty(&t.ca_certificates)),
            ("tlsCertificates", certificates),
            ("credentialName", credential),
            ("credentialNames", credentials),
        ] {
            if set {
                f.forbidden(
                    &p.field(field),
                    format!("{field} may not be set with mode ISTIO_MUTUAL, which uses the mesh's certificates"),
                );
            }
        }
        return;
    }
    if matches!(
        mode,
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
    ) {
        let used = non_empty(&t.ca_crl)
            || non_empty(&t.server_certificate)
            || non_empty(&t.private_key)
            || non_empty(&t.ca_certificates)
            || certificates
            || credential
            || credentials;
        if used {
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

    let sources: Vec<&str> = [
        (
            "serverCertificate/privateKey",
            non_empty(&t.server_certificate) && non_empty(&t.private_key),
        ),
        ("credentialName", credential),
        ("credentialNames", credentials),
        ("tlsCertificates", certificates),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();
    if sources.len() > 1 {
        f.forbidden(
            p,
            format!(
                "{} are mutually exclusive: set only one certificate source",
                join_and(&sources)
            ),
        );
    }

    let terminating = matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    // A credential brings the certificate, the key and the client CA: the file fields are not
    // needed (and are ignored).
    if terminating && (credential || credentials) {
        return;
    }
    if terminating {
        let mutual = mode != ServerTlsMode::Simple;
        if mutual && !non_empty(&t.ca_certificates) {
            f.required(
                &p.field("caCertificates"),
                format!("mode {name} needs caCertificates (or a credentialName whose Secret has ca.crt) to verify client certificates"),
            );
        }
        let need = format!("mode {name} needs a certificate: credentialName (a Secret), credentialNames, tlsCertificates, or serverCertificate with privateKey");
        if certificates {
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
        } else {
            let missing: Vec<&str> = [
                ("serverCertificate", &t.server_certificate),
                ("privateKey", &t.private_key),
            ]
            .into_iter()
            .filter_map(|(field, v)| (!non_empty(v)).then_some(field))
            .collect();
            match missing.as_slice() {
                [] => {}
                [field] => f.required(
                    &p.field(field),
                    format!("mode {name} needs serverCertificate and privateKey together"),
                ),
                _ => f.required(p, need),
            }
        }
    }
    if non_empty(&t.ca_crl) {
        if credential {
            f.forbidden(
                &p.field("caCrl"),
                "caCrl may not be combined with credentialName: put the CRL in the credential's Secret",
            );
        }
        if mode == ServerTlsMode::Simple {
            f.forbidden(
                &p.field("caCrl"),
                "caCrl may not be set with mode SIMPLE, which does not verify client certificates",
            );
        }
    }
}

/// Unknown and repeated names are ignored with a warning, as Istio does; TLS 1.0 and 1.1 need
/// suites set explicitly. Operator expressions (`-NAME`) pass Istio's check but are not applied.
fn check_cipher_suites(f: &mut Findings, p: &FieldPath, t: &ServerTlsSettings) {
    let old = matches!(
        t.min_protocol_version,
        Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1)
    );
    if old && t.cipher_suites.is_empty() {
        f.warn(
            &p.field("minProtocolVersion"),
            "TLS versions below TLSV1_2 need cipherSuites set: the default suites no longer include ones they can use",
        );
    }
    let cp = p.field("cipherSuites");
    let mut valid: HashMap<&str, usize> = HashMap::new();
    for (i, c) in t.cipher_suites.iter().enumerate() {
        if !is_valid_cipher_suite(c, CIPHER_SUITES) {
            f.warn(
                &cp.index(i),
                format!("unsupported cipher suite {c:?}; ignored"),
            );
        } else if let Some(first) = valid.get(c.as_str()) {
            f.warn(
                &cp.index(i),
                format!(
                    "duplicate cipher suite {c:?} (also {}); ignored",
                    cp.index(*first)
                ),
            );
        } else if valid.insert(c, i).is_none() && is_cipher_expression(c) {
            f.warn(&cp.index(i), "accepted but not enforced yet");
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
