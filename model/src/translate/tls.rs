//! TLS: Gateway HTTPS servers into per-port [`TlsListener`]s (an SNI index over every server's
//! hosts, and per server a complete `rustls::ServerConfig`), DestinationRule `tls` into
//! [`UpstreamTls`], and the expiry of every TLS Secret.
//!
//! Certificates come from Secrets or from files (`serverCertificate`, `caCertificates`, …) whose
//! bytes the caller read into [`Files`]: translation itself does no I/O. A `credentialName` is
//! looked up in the Gateway's or DestinationRule's namespace, then in the gateway's own; the
//! client CA that goes with it comes from the Secret `<credentialName>-cacert` when there is one,
//! as Istio's SDS serves it. PEM is parsed here, once per translation, so a handshake only looks
//! things up. Whatever cannot be used becomes a warning, and the server's handshakes (or the
//! cluster's connections) fail rather than fall back to something weaker.

use super::clusters::port_u16;
use super::diag::{Diag, Problem};
use super::hosts::{normalize_host, parse_server_host};
use crate::ir::{
    cert_info, parse_certificates, served_certificate, CertInfo, ClientAuth, ClientCertificate,
    SecretCertificate, ServedCertificate, TlsListener, TlsServer, TlsVersion, UpstreamTls,
};
use crate::resource::{
    ClientTlsMode, ClientTlsSettings, Gateway, KeyPair, Kind, Resource, ResourceKey, ResourceSet,
    Secret, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol, CA_CRT, CA_SECRET_SUFFIX,
    GENERIC_CACERT, GENERIC_CERT, GENERIC_KEY, TLS_CRT, TLS_KEY,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DistinguishedName, RootCertStore, SignatureScheme, SupportedCipherSuite};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// What the caller of [`translate_with_files`](super::translate_with_files) knows of its
/// environment: the bytes of the files resources name (certificate, key and CA paths; a read
/// error is kept as its message), and the Gateway ports its listeners serve.
#[derive(Debug, Clone, Default)]
pub struct Files {
    by_path: BTreeMap<String, Result<Arc<[u8]>, String>>,
    /// `None`: unknown, no server is reported as unserved.
    pub listener_ports: Option<BTreeSet<u16>>,
    /// The session-ticket keys the caller keeps from one translation to the next, so that a
    /// client resumes its TLS session across reloads. Servers that verify client certificates
    /// do not use them: a resumed session skips verification, and must not outlive the CA or
    /// `subjectAltNames` it was verified against (they keep rustls' per-configuration cache).
    /// `None`: every server keeps that per-configuration cache.
    pub tickets: Option<Arc<dyn rustls::server::ProducesTickets>>,
}

impl Files {
    /// Records what reading `path` gave.
    pub fn insert(&mut self, path: impl Into<String>, read: Result<Vec<u8>, String>) {
        self.by_path.insert(path.into(), read.map(Arc::from));
    }

    fn get(&self, path: &str) -> Result<&[u8], String> {
        match self.by_path.get(path) {
            Some(Ok(b)) => Ok(b),
            Some(Err(e)) => Err(format!("cannot read {path:?}: {e}")),
            None => Err(format!("file {path:?} was not read")),
        }
    }
}

/// Every file path the set's Gateways and DestinationRules name, for the caller to read.
pub fn referenced_files(set: &ResourceSet) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |p: &Option<String>| {
        if let Some(p) = p.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            out.insert(p.to_string());
        }
    };
    for gw in set.gateways() {
        for s in &gw.spec.servers {
            if let Some(t) = &s.tls {
                add(&t.server_certificate);
                add(&t.private_key);
                add(&t.ca_certificates);
                for c in &t.tls_certificates {
                    add(&c.server_certificate);
                    add(&c.private_key);
                    add(&c.ca_certificates);
                }
            }
        }
    }
    for dr in set.destination_rules() {
        for t in client_tls_settings(dr) {
            add(&t.client_certificate);
            add(&t.private_key);
            add(&t.ca_certificates);
        }
    }
    out
}

/// Every `tls` block of a DestinationRule: host level, port level, subsets and their ports.
fn client_tls_settings(dr: &crate::resource::DestinationRule) -> Vec<&ClientTlsSettings> {
    let mut out = Vec::new();
    let policies = dr.spec.traffic_policy.iter().chain(
        dr.spec
            .subsets
            .iter()
            .filter_map(|s| s.traffic_policy.as_ref()),
    );
    for tp in policies {
        out.extend(tp.tls.iter());
        out.extend(tp.port_level_settings.iter().filter_map(|p| p.tls.as_ref()));
    }
    out
}

/// Why a Secret's certificate is not served.
#[derive(Debug, Clone)]
enum Unserved {
    /// The Secret has no whole pair (a Gateway check reports it).
    NoPair(String),
    /// The pair does not parse, or the key does not fit.
    Invalid(String),
}

/// What a TLS Secret holds, parsed once. Messages name the Secret and the key they are about.
pub(crate) struct SecretMaterial {
    /// `ns/name` of the Secret, for messages.
    label: String,
    /// The served certificate, or why there is none (`NoPair`: not a whole pair at all).
    served: Result<ServedCertificate, Unserved>,
    /// The CA (`cacert`, else `ca.crt`), when the Secret has one.
    ca: Option<Result<Vec<CertificateDer<'static>>, String>>,
    /// The raw key, for upstream client certificates.
    chain_and_key: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

/// Why a Secret without a pair cannot serve, naming the half it lacks when it has one half.
pub(crate) fn no_pair(s: &Secret) -> String {
    let label = format!("{}/{}", s.metadata.namespace(), s.metadata.name);
    let half = KeyPair::PREFERENCE.into_iter().find_map(|p| {
        match (s.has_value(p.cert()), s.has_value(p.key())) {
            (true, false) => Some((p.cert(), p.key())),
            (false, true) => Some((p.key(), p.cert())),
            _ => None,
        }
    });
    match half {
        Some((have, missing)) => format!("Secret \"{label}\" has {have} but no {missing}"),
        None => format!("Secret \"{label}\" has no certificate and key ({TLS_CRT} and {TLS_KEY}, or {GENERIC_CERT} and {GENERIC_KEY})"),
    }
}

impl SecretMaterial {
    fn no_ca(&self) -> String {
        format!(
            "Secret \"{}\" has no CA ({CA_CRT} or {GENERIC_CACERT})",
            self.label
        )
    }
}

/// TLS Secrets by `(namespace, name)`, parsed lazily (most Secrets are used by one server), and
/// found where an Istio ingress gateway pod finds a `credentialName`.
pub(crate) struct Secrets<'a> {
    set: &'a ResourceSet,
    /// The gateway's own namespace (`--namespace`).
    gateway_namespace: &'a str,
    parsed: HashMap<(String, String), Option<Arc<SecretMaterial>>>,
}

impl<'a> Secrets<'a> {
    pub(crate) fn new(set: &'a ResourceSet, gateway_namespace: &'a str) -> Secrets<'a> {
        Secrets {
            set,
            gateway_namespace,
            parsed: HashMap::new(),
        }
    }

    fn get(&mut self, ns: &str, name: &str) -> Option<Arc<SecretMaterial>> {
        let set = self.set;
        self.parsed
            .entry((ns.to_string(), name.to_string()))
            .or_insert_with(|| {
                match set.get(&ResourceKey::new(Kind::Secret, ns, name.to_string())) {
                    Some(Resource::Secret(s)) => Some(Arc::new(material(s))),
                    _ => None,
                }
            })
            .clone()
    }

    /// The Secret a `credentialName` of a resource in `ns` names (see [`find_secret`]).
    fn find(&mut self, ns: &str, name: &str) -> Option<Arc<SecretMaterial>> {
        let gateway_namespace = self.gateway_namespace;
        lookup_order(ns, gateway_namespace).find_map(|n| self.get(n, name))
    }

    /// The Secret that holds the client CA of credential `name` of a resource in `ns`, as Istio's
    /// `GetCaCert` finds it for the SDS resource `<name>-cacert`: the Secret `<name>-cacert` when
    /// there is one (even if it holds no CA: Istio does not fall back then), else the credential's
    /// own Secret; with whether it is the `-cacert` one. `None`: neither Secret exists.
    fn find_ca(&mut self, ns: &str, name: &str) -> Option<(Arc<SecretMaterial>, bool)> {
        if let Some(m) = self.find(ns, &format!("{name}{CA_SECRET_SUFFIX}")) {
            return Some((m, true));
        }
        self.find(ns, name).map(|m| (m, false))
    }

    /// `notAfter` of every Secret whose served certificate parses.
    pub(crate) fn expiries(&self) -> Vec<SecretCertificate> {
        let mut out: Vec<SecretCertificate> = self
            .set
            .secrets()
            .filter_map(|s| {
                let pem = s.value(s.key_pair()?.cert())?;
                let chain = parse_certificates(&pem).ok()?;
                let info = cert_info(chain.first()?).ok()?;
                Some(SecretCertificate {
                    namespace: s.metadata.namespace().to_string(),
                    name: s.metadata.name.clone(),
                    not_after: info.not_after,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }
}

/// Where a `credentialName` of a resource in `ns` is looked up, in order: that namespace, then
/// the gateway's own. Istio reads credentials from the gateway pod's namespace only; the
/// resource's namespace comes first here so that a Secret next to its Gateway keeps working.
pub(crate) fn lookup_order<'n>(
    ns: &'n str,
    gateway_namespace: &'n str,
) -> impl Iterator<Item = &'n str> {
    std::iter::once(ns).chain((gateway_namespace != ns).then_some(gateway_namespace))
}

/// The Secret a `credentialName` of a resource in `ns` names, in [`lookup_order`].
pub(crate) fn find_secret<'s>(
    set: &'s ResourceSet,
    ns: &str,
    gateway_namespace: &str,
    name: &str,
) -> Option<&'s Secret> {
    lookup_order(ns, gateway_namespace).find_map(|n| {
        match set.get(&ResourceKey::new(Kind::Secret, n, name.to_string())) {
            Some(Resource::Secret(s)) => Some(&**s),
            _ => None,
        }
    })
}

/// `Secret "ns/name" not found`, naming every namespace that was looked in.
pub(crate) fn secret_not_found(ns: &str, gateway_namespace: &str, name: &str) -> String {
    if ns == gateway_namespace {
        format!("Secret \"{ns}/{name}\" not found")
    } else {
        format!("Secret \"{name}\" not found in namespace \"{ns}\" or \"{gateway_namespace}\"")
    }
}

fn material(s: &Secret) -> SecretMaterial {
    let label = format!("{}/{}", s.metadata.namespace(), s.metadata.name);
    let (served, chain_and_key) = match (s.key_pair(), s.certificate_and_key()) {
        (Some(pair), Some((crt, key))) => match served_certificate(&crt, &key) {
            Ok(c) => {
                let parsed = parse_certificates(&crt)
                    .ok()
                    .zip(crate::ir::parse_private_key(&key).ok());
                (Ok(c), parsed)
            }
            Err((is_key, e)) => {
                let k = if is_key { pair.key() } else { pair.cert() };
                let msg = format!("Secret \"{label}\" {k}: {e}");
                (Err(Unserved::Invalid(msg)), None)
            }
        },
        _ => (Err(Unserved::NoPair(no_pair(s))), None),
    };
    let ca = s.ca_key().and_then(|k| {
        let pem = s.value(k)?;
        Some(parse_certificates(&pem).map_err(|e| format!("Secret \"{label}\" {k}: {e}")))
    });
    SecretMaterial {
        label,
        served,
        ca,
        chain_and_key,
    }
}

/// Builds the TLS listeners of every port that has HTTPS or TLS servers terminating TLS.
pub(crate) fn listeners(
    set: &ResourceSet,
    secrets: &mut Secrets<'_>,
    files: &Files,
    diag: &mut Diag,
) -> BTreeMap<u16, TlsListener> {
    let mut out: BTreeMap<u16, TlsListener> = BTreeMap::new();
    // ResourceSet iterates in key order: namespace, then name. The first server to claim a name
    // keeps it, so the winner of a conflict does not depend on input order.
    for gw in set.gateways() {
        let ns = gw.metadata.namespace();
        let label = format!("{ns}/{}", gw.metadata.name);
        let key = ResourceKey::new(Kind::Gateway, ns, gw.metadata.name.clone());
        for (i, s) in gw.spec.servers.iter().enumerate() {
            let path = format!("spec.servers[{i}]");
            let Some(port) = s.port.as_ref().and_then(|p| port_u16(p.number)) else {
                continue;
            };
            let Some(tls) = terminated(s, &path, &key, diag) else {
                continue;
            };
            let server = server(gw, s, tls, &label, &path, &key, secrets, files, diag);
            let l = out.entry(port).or_insert_with(|| TlsListener {
                port,
                ..TlsListener::default()
            });
            index(l, server, &path, &key, diag);
        }
    }
    out
}

/// The TLS settings of a server this gateway terminates, or `None` (with a warning when the
/// server asks for something that is not served).
fn terminated<'s>(
    s: &'s Server,
    path: &str,
    key: &ResourceKey,
    diag: &mut Diag,
) -> Option<&'s ServerTlsSettings> {
    let protocol = s.port.as_ref()?.protocol.to_ascii_uppercase();
    if protocol != "HTTPS" && protocol != "TLS" {
        return None;
    }
    let tls = s.tls.as_ref()?;
    match tls.mode.unwrap_or(ServerTlsMode::Passthrough) {
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => Some(tls),
        // A TLS server's other modes are the L4 translation's (passthrough by SNI).
        _ if protocol == "TLS" => None,
        other => {
            let name = match other {
                ServerTlsMode::Passthrough => "PASSTHROUGH",
                ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
                _ => "ISTIO_MUTUAL",
            };
            diag.push(
                key,
                Problem::Part,
                &format!("{path}.tls.mode"),
                &format!("mode {name} is not served on an HTTPS server (use SIMPLE, MUTUAL or OPTIONAL_MUTUAL); its hosts fail the handshake"),
            );
            None
        }
    }
}

/// Puts a server's hosts in the SNI index; a name another server already claims stays with it.
pub(crate) fn index(
    l: &mut TlsListener,
    server: TlsServer,
    path: &str,
    key: &ResourceKey,
    diag: &mut Diag,
) {
    let i = l.servers.len();
    let mut claimed = false;
    for h in &server.hosts {
        let slot = if h == "*" {
            if l.any.is_some() {
                None
            } else {
                l.any = Some(i);
                Some(())
            }
        } else if let Some(suffix) = h.strip_prefix("*.") {
            match l.suffix.entry(suffix.to_string()) {
                std::collections::hash_map::Entry::Occupied(_) => None,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                    Some(())
                }
            }
        } else {
            match l.exact.entry(h.clone()) {
                std::collections::hash_map::Entry::Occupied(_) => None,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                    Some(())
                }
            }
        };
        match slot {
            Some(()) => claimed = true,
            None => diag.push(
                key,
                Problem::Part,
                &format!("{path}.hosts"),
                &format!("host {h:?} is already claimed by another HTTPS server on port {}; SNI {h:?} selects that one", l.port),
            ),
        }
    }
    if claimed {
        l.servers.push(Arc::new(server));
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn server(
    gw: &Gateway,
    s: &Server,
    tls: &ServerTlsSettings,
    label: &str,
    path: &str,
    key: &ResourceKey,
    secrets: &mut Secrets<'_>,
    files: &Files,
    diag: &mut Diag,
) -> TlsServer {
    let ns = gw.metadata.namespace();
    let tp = format!("{path}.tls");
    let hosts: Vec<String> = s
        .hosts
        .iter()
        .filter_map(|raw| normalize_host(&parse_server_host(raw, ns).1))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let client_auth = match tls.mode {
        Some(ServerTlsMode::Mutual) => ClientAuth::Required,
        Some(ServerTlsMode::OptionalMutual) => ClientAuth::Optional,
        _ => ClientAuth::None,
    };
    let mut problems: Vec<String> = Vec::new();

    // Certificates.
    let mut certs: Vec<ServedCertificate> = Vec::new();
    let credentials: Vec<(String, &String)> = tls
        .credential_name
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| (format!("{tp}.credentialName"), n))
        .chain(
            tls.credential_names
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("{tp}.credentialNames[{i}]"), n)),
        )
        .collect();
    for (field, name) in &credentials {
        match secrets.find(ns, name) {
            // Already reported by the Gateway checks (SecretNotFound).
            None => problems.push(secret_not_found(ns, secrets.gateway_namespace, name)),
            Some(m) => match &m.served {
                Ok(c) => certs.push(c.clone()),
                // Already reported by the Gateway checks (InvalidSecret).
                Err(Unserved::NoPair(msg)) => problems.push(msg.clone()),
                Err(Unserved::Invalid(msg)) => {
                    diag.push(key, Problem::Ref("InvalidSecret"), field, msg);
                    problems.push(msg.clone());
                }
            },
        }
    }
    let mut file_pairs: Vec<(String, &Option<String>, &Option<String>)> = Vec::new();
    if tls.server_certificate.is_some() || tls.private_key.is_some() {
        file_pairs.push((tp.clone(), &tls.server_certificate, &tls.private_key));
    }
    for (i, c) in tls.tls_certificates.iter().enumerate() {
        file_pairs.push((
            format!("{tp}.tlsCertificates[{i}]"),
            &c.server_certificate,
            &c.private_key,
        ));
    }
    for (field, crt, pk) in file_pairs {
        let (Some(crt), Some(pk)) = (crt.as_deref(), pk.as_deref()) else {
            continue;
        };
        let read = files.get(crt).and_then(|c| files.get(pk).map(|k| (c, k)));
        let msg = match read {
            Err(e) => Some((Problem::Ref("FileNotFound"), e)),
            Ok((c, k)) => match served_certificate(c, k) {
                Ok(sc) => {
                    certs.push(sc);
                    None
                }
                Err((is_key, e)) => {
                    let what = if is_key { pk } else { crt };
                    Some((Problem::Ref("InvalidCertificate"), format!("{what:?}: {e}")))
                }
            },
        };
        if let Some((p, m)) = msg {
            diag.push(key, p, &field, &m);
            problems.push(m);
        }
    }
    if certs.is_empty() && problems.is_empty() {
        problems.push("no certificate".to_string());
    }

    // Client CA. Istio takes it from the SDS resource `<credentialName>-cacert` (of the first of
    // credentialNames) and then ignores caCertificates; here the files are the fallback for a
    // credential without a CA.
    let mut client_ca: Option<Vec<CertificateDer<'static>>> = None;
    if client_auth != ClientAuth::None {
        let mut ca_from: Option<String> = None;
        if let Some((field, name)) = credentials.first() {
            if let Some((m, split)) = secrets.find_ca(ns, name) {
                match &m.ca {
                    Some(Ok(ca)) => {
                        client_ca = Some(ca.clone());
                        ca_from = Some(m.label.clone());
                    }
                    Some(Err(msg)) => {
                        diag.push(key, Problem::Ref("InvalidSecret"), field, msg);
                        problems.push(msg.clone());
                    }
                    // A `-cacert` Secret without a CA is not passed over (Istio's GetCaCert).
                    None if split => {
                        let msg = m.no_ca();
                        diag.push(key, Problem::Ref("InvalidSecret"), field, &msg);
                        problems.push(msg);
                    }
                    None => {}
                }
            }
        }
        let ca_paths: Vec<(String, &str)> = tls
            .ca_certificates
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| (format!("{tp}.caCertificates"), p))
            .into_iter()
            .chain(
                tls.tls_certificates
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| {
                        c.ca_certificates
                            .as_deref()
                            .filter(|p| !p.is_empty())
                            .map(|p| (format!("{tp}.tlsCertificates[{i}].caCertificates"), p))
                    }),
            )
            .collect();
        for (field, p) in ca_paths {
            if let Some(from) = &ca_from {
                diag.push(
                    key,
                    Problem::Part,
                    &field,
                    &format!("ignored: the client CA comes from Secret \"{from}\" (as in Istio)"),
                );
                continue;
            }
            match files
                .get(p)
                .and_then(|b| parse_certificates(b).map_err(|e| format!("{p:?}: {e}")))
            {
                Ok(ca) => client_ca.get_or_insert_with(Vec::new).extend(ca),
                Err(e) => {
                    diag.push(key, Problem::Ref("InvalidCertificate"), &field, &e);
                    problems.push(e);
                }
            }
        }
        if client_ca.is_none() && problems.is_empty() {
            let msg = match credentials.first() {
                Some((_, name)) => format!("no CA to verify client certificates: add {CA_CRT} (or {GENERIC_CACERT}) to the credential's Secret, create a Secret \"{name}{CA_SECRET_SUFFIX}\" holding one, or set caCertificates"),
                None => "no CA to verify client certificates: set caCertificates".to_string(),
            };
            diag.push(key, Problem::Part, &format!("{tp}.caCertificates"), &msg);
            problems.push(msg);
        }
    }

    let versions = versions(tls, &tp, key, diag, &mut problems);
    let (suites, suite_names) = cipher_suites(tls, &tp, key, diag);
    let sans: Vec<String> = tls
        .subject_alt_names
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();

    let ca_info: Vec<CertInfo> = client_ca
        .iter()
        .flatten()
        .filter_map(|c| cert_info(c).ok())
        .collect();
    let tcp = s
        .port
        .as_ref()
        .is_some_and(|p| p.protocol.eq_ignore_ascii_case("TLS"));
    let config = if problems.is_empty() {
        match server_config(
            tcp,
            certs.iter().map(|c| c.key.clone()).collect(),
            client_auth,
            client_ca.unwrap_or_default(),
            sans.clone(),
            &versions,
            suites,
        ) {
            Ok(mut c) => {
                // A resumed session is not verified again: only servers without client
                // certificates share the caller's ticket keys across translations.
                if let (ClientAuth::None, Some(t)) = (client_auth, &files.tickets) {
                    c.ticketer = t.clone();
                }
                Some(Arc::new(c))
            }
            Err(e) => {
                diag.push(key, Problem::Part, &tp, &e);
                problems.push(e);
                None
            }
        }
    } else {
        None
    };
    TlsServer {
        name: format!("{label} {path}"),
        gateway: label.to_string(),
        hosts,
        client_auth,
        versions,
        cipher_suites: suite_names,
        certificates: certs.into_iter().map(|c| c.info).collect(),
        client_ca: ca_info,
        subject_alt_names: sans,
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
        tcp,
        config,
    }
}

/// `minProtocolVersion`/`maxProtocolVersion` as the versions rustls offers (1.2 and 1.3).
fn versions(
    tls: &ServerTlsSettings,
    tp: &str,
    key: &ResourceKey,
    diag: &mut Diag,
    problems: &mut Vec<String>,
) -> Vec<TlsVersion> {
    let min = match tls.min_protocol_version {
        None | Some(TlsProtocol::TlsAuto) | Some(TlsProtocol::TlsV1_2) => TlsVersion::Tls12,
        Some(TlsProtocol::TlsV1_3) => TlsVersion::Tls13,
        Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1) => {
            diag.push(
                key,
                Problem::Part,
                &format!("{tp}.minProtocolVersion"),
                "TLS 1.0 and 1.1 are not supported; the minimum is TLS 1.2",
            );
            TlsVersion::Tls12
        }
    };
    let max = match tls.max_protocol_version {
        None | Some(TlsProtocol::TlsAuto) | Some(TlsProtocol::TlsV1_3) => Some(TlsVersion::Tls13),
        Some(TlsProtocol::TlsV1_2) => Some(TlsVersion::Tls12),
        Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1) => None,
    };
    let out: Vec<TlsVersion> = [TlsVersion::Tls12, TlsVersion::Tls13]
        .into_iter()
        .filter(|v| *v >= min && max.is_some_and(|m| *v <= m))
        .collect();
    if out.is_empty() {
        let msg = "no supported TLS version between minProtocolVersion and maxProtocolVersion (TLS 1.2 and 1.3 are); handshakes fail".to_string();
        diag.push(
            key,
            Problem::Part,
            &format!("{tp}.maxProtocolVersion"),
            &msg,
        );
        problems.push(msg);
    }
    out
}

/// Envoy's (OpenSSL) names of the TLS 1.2 suites rustls implements.
const SUITES: &[(&str, SupportedCipherSuite)] = {
    use rustls::crypto::aws_lc_rs::cipher_suite::*;
    &[
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
};

/// `cipherSuites` as rustls suites, in the order given; names rustls lacks are warned about and
/// skipped. An empty result means rustls' defaults.
fn cipher_suites(
    tls: &ServerTlsSettings,
    tp: &str,
    key: &ResourceKey,
    diag: &mut Diag,
) -> (Vec<SupportedCipherSuite>, Vec<String>) {
    let mut suites = Vec::new();
    let mut names = Vec::new();
    for (i, c) in tls.cipher_suites.iter().enumerate() {
        let wanted = c.trim().to_ascii_uppercase();
        match SUITES.iter().find(|(n, _)| *n == wanted) {
            // A duplicate was already warned about by validation.
            Some((n, s)) if !names.iter().any(|x: &String| x == n) => {
                suites.push(*s);
                names.push(n.to_string());
            }
            Some(_) => {}
            // Validation already warned about names it does not know at all.
            None if crate::ir::ENVOY_CIPHER_SUITES.contains(&wanted.as_str()) => diag
                .push(
                    key,
                    Problem::Part,
                    &format!("{tp}.cipherSuites[{i}]"),
                    &format!("cipher suite {c:?} is not implemented by the gateway's TLS library (only ECDHE with AES-GCM or CHACHA20-POLY1305 is); ignored"),
                ),
            None => {}
        }
    }
    if !tls.cipher_suites.is_empty() && suites.is_empty() {
        diag.push(
            key,
            Problem::Part,
            &format!("{tp}.cipherSuites"),
            "none of the cipher suites can be used; TLS 1.2 uses the default suites",
        );
    }
    (suites, names)
}

/// A whole handshake configuration for one server.
fn server_config(
    tcp: bool,
    certs: Vec<Arc<CertifiedKey>>,
    client_auth: ClientAuth,
    ca: Vec<CertificateDer<'static>>,
    sans: Vec<String>,
    versions: &[TlsVersion],
    suites: Vec<SupportedCipherSuite>,
) -> Result<rustls::ServerConfig, String> {
    let mut provider = crate::ir::server_crypto();
    if !suites.is_empty() {
        // TLS 1.3 suites are not configurable (as in Envoy); the TLS 1.2 ones follow the list.
        let tls13: Vec<SupportedCipherSuite> = provider
            .cipher_suites
            .iter()
            .copied()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
            .collect();
        provider.cipher_suites = tls13.into_iter().chain(suites).collect();
    }
    let provider: Arc<CryptoProvider> = Arc::new(provider);
    let protocol_versions: Vec<&'static rustls::SupportedProtocolVersion> = versions
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&protocol_versions)
        .map_err(|e| format!("these versions and cipher suites cannot work together: {e}"))?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            let mut roots = RootCertStore::empty();
            for c in ca {
                roots
                    .add(c)
                    .map_err(|e| format!("a client CA certificate is not usable: {e}"))?;
            }
            let mut b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if client_auth == ClientAuth::Optional {
                b = b.allow_unauthenticated();
            }
            let inner = b
                .build()
                .map_err(|e| format!("cannot verify client certificates: {e}"))?;
            let verifier: Arc<dyn ClientCertVerifier> = if sans.is_empty() {
                inner
            } else {
                Arc::new(SanVerifier { inner, sans })
            };
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(ServerCertificates(certs)));
    // A TLS server proxies bytes: it has no application protocol to offer.
    if !tcp {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    Ok(config)
}

/// The certificates of one server: the first whose key can sign with a scheme the client offers
/// (an ECDSA and an RSA certificate side by side serve both kinds of client).
#[derive(Debug)]
struct ServerCertificates(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for ServerCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0
            .iter()
            .find(|c| c.key.choose_scheme(schemes).is_some())
            .or_else(|| self.0.first())
            .cloned()
    }
}

/// Client verification plus `subjectAltNames`: the verified certificate must carry one of them.
#[derive(Debug)]
struct SanVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<String>,
}

impl ClientCertVerifier for SanVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let info = cert_info(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if crate::ir::sans_match(&info.sans, &self.sans) {
            Ok(ok)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// DestinationRule `tls` blocks compiled once each, by address of the settings in the set (a
/// cluster looks its effective block up after Istio's policy merge).
pub(crate) type UpstreamTlsByBlock = HashMap<usize, Option<Arc<UpstreamTls>>>;

/// The address that identifies a `tls` block of the set.
pub(crate) fn block_id(t: &ClientTlsSettings) -> usize {
    t as *const ClientTlsSettings as usize
}

/// Compiles every DestinationRule `tls` block, warning (on the DestinationRule) about what cannot
/// be used.
pub(crate) fn upstream(
    set: &ResourceSet,
    secrets: &mut Secrets<'_>,
    files: &Files,
    diag: &mut Diag,
) -> UpstreamTlsByBlock {
    let mut out = HashMap::new();
    for dr in set.destination_rules() {
        let ns = dr.metadata.namespace();
        let key = ResourceKey::new(Kind::DestinationRule, ns, dr.metadata.name.clone());
        let mut blocks: Vec<(String, &ClientTlsSettings)> = Vec::new();
        if let Some(tp) = &dr.spec.traffic_policy {
            collect_blocks("spec.trafficPolicy", tp, &mut blocks);
        }
        for (i, s) in dr.spec.subsets.iter().enumerate() {
            if let Some(tp) = &s.traffic_policy {
                collect_blocks(&format!("spec.subsets[{i}].trafficPolicy"), tp, &mut blocks);
            }
        }
        for (path, t) in blocks {
            let compiled = upstream_block(t, ns, &path, &key, secrets, files, diag);
            out.insert(block_id(t), compiled);
        }
    }
    out
}

fn collect_blocks<'a>(
    base: &str,
    tp: &'a crate::resource::TrafficPolicy,
    out: &mut Vec<(String, &'a ClientTlsSettings)>,
) {
    if let Some(t) = &tp.tls {
        out.push((format!("{base}.tls"), t));
    }
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        if let Some(t) = &p.tls {
            out.push((format!("{base}.portLevelSettings[{i}].tls"), t));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn upstream_block(
    t: &ClientTlsSettings,
    ns: &str,
    path: &str,
    key: &ResourceKey,
    secrets: &mut Secrets<'_>,
    files: &Files,
    diag: &mut Diag,
) -> Option<Arc<UpstreamTls>> {
    let mutual = match t.mode.unwrap_or(ClientTlsMode::Disable) {
        ClientTlsMode::Disable => return None,
        ClientTlsMode::IstioMutual => {
            diag.push(
                key,
                Problem::Part,
                &format!("{path}.mode"),
                "ISTIO_MUTUAL uses the mesh's certificates, which a standalone gateway does not have; connections are plain text",
            );
            return None;
        }
        ClientTlsMode::Simple => false,
        ClientTlsMode::Mutual => true,
    };
    let mut problems = Vec::new();
    let mut ca: Option<Vec<CertificateDer<'static>>> = None;
    let mut client: Option<ClientCertificate> = None;
    let mut push = |problem: Problem, field: &str, msg: String, problems: &mut Vec<String>| {
        diag.push(key, problem, &format!("{path}.{field}"), &msg);
        problems.push(msg);
    };
    // Istio reads the client certificate from the Secret (MUTUAL only) and the CA from the SDS
    // resource `<credentialName>-cacert`: the Secret of that name, else the credential's own CA.
    if let Some(name) = t.credential_name.as_deref().filter(|n| !n.is_empty()) {
        let main = secrets.find(ns, name);
        match secrets.find_ca(ns, name) {
            None => push(
                Problem::Ref("SecretNotFound"),
                "credentialName",
                secret_not_found(ns, secrets.gateway_namespace, name),
                &mut problems,
            ),
            Some((m, split)) => match &m.ca {
                Some(Ok(c)) => ca = Some(c.clone()),
                Some(Err(msg)) => push(
                    Problem::Ref("InvalidSecret"),
                    "credentialName",
                    msg.clone(),
                    &mut problems,
                ),
                None if split => push(
                    Problem::Ref("InvalidSecret"),
                    "credentialName",
                    m.no_ca(),
                    &mut problems,
                ),
                None => {}
            },
        }
        match (mutual, main) {
            (false, _) => {}
            (true, None) => {
                let msg = secret_not_found(ns, secrets.gateway_namespace, name);
                // Said once when neither Secret exists.
                if !problems.contains(&msg) {
                    push(
                        Problem::Ref("SecretNotFound"),
                        "credentialName",
                        msg,
                        &mut problems,
                    );
                }
            }
            (true, Some(m)) => match (&m.served, &m.chain_and_key) {
                (Ok(_), Some((chain, k))) => {
                    client = Some(ClientCertificate {
                        chain: chain.clone(),
                        key: k.clone_key(),
                    })
                }
                (Err(Unserved::NoPair(msg) | Unserved::Invalid(msg)), _) => push(
                    Problem::Ref("InvalidSecret"),
                    "credentialName",
                    msg.clone(),
                    &mut problems,
                ),
                (Ok(_), None) => push(
                    Problem::Ref("InvalidSecret"),
                    "credentialName",
                    format!(
                        "Secret \"{}\" cannot be used as a client certificate",
                        m.label
                    ),
                    &mut problems,
                ),
            },
        }
    }
    if let Some(p) = t.ca_certificates.as_deref().filter(|p| !p.is_empty()) {
        match files
            .get(p)
            .and_then(|b| parse_certificates(b).map_err(|e| format!("{p:?}: {e}")))
        {
            Ok(c) => ca = Some(c),
            Err(e) => push(
                Problem::Ref("InvalidCertificate"),
                "caCertificates",
                e,
                &mut problems,
            ),
        }
    }
    if mutual && client.is_none() {
        if let (Some(crt), Some(pk)) = (
            t.client_certificate.as_deref().filter(|p| !p.is_empty()),
            t.private_key.as_deref().filter(|p| !p.is_empty()),
        ) {
            let read = files.get(crt).and_then(|c| files.get(pk).map(|k| (c, k)));
            match read {
                Err(e) => push(
                    Problem::Ref("FileNotFound"),
                    "clientCertificate",
                    e,
                    &mut problems,
                ),
                Ok((c, k)) => match served_certificate(c, k) {
                    Err((is_key, e)) => {
                        let (field, p) = if is_key {
                            ("privateKey", pk)
                        } else {
                            ("clientCertificate", crt)
                        };
                        push(
                            Problem::Ref("InvalidCertificate"),
                            field,
                            format!("{p:?}: {e}"),
                            &mut problems,
                        )
                    }
                    Ok(_) => {
                        let chain = parse_certificates(c).ok();
                        let key = crate::ir::parse_private_key(k).ok();
                        if let (Some(chain), Some(key)) = (chain, key) {
                            client = Some(ClientCertificate { chain, key });
                        }
                    }
                },
            }
        }
        if client.is_none() && problems.is_empty() {
            push(
                Problem::Part,
                "mode",
                "mode MUTUAL has no client certificate; connections fail".to_string(),
                &mut problems,
            );
        }
    }
    // The data plane hands the key to the TLS client as DER of a known kind; check it is one.
    if let Some(c) = &client {
        if PrivateKeyDer::try_from(c.key.secret_der().to_vec()).is_err() {
            push(
                Problem::Ref("InvalidCertificate"),
                "privateKey",
                "the private key is not PKCS#8, SEC1 or PKCS#1 DER".to_string(),
                &mut problems,
            );
            client = None;
        }
    }
    let client_certificate = client
        .as_ref()
        .and_then(|c| c.chain.first())
        .and_then(|c| cert_info(c).ok());
    let sans: Vec<String> = t
        .subject_alt_names
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let insecure = t.insecure_skip_verify == Some(true);
    // The TLS client verifies the certificate against the one name it sends as SNI. So with
    // subjectAltNames and no sni, the first DNS name among them is sent (and verified); what else
    // the list asks cannot be checked, and is said so.
    let explicit_sni = t
        .sni
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let sni = explicit_sni
        .clone()
        .or_else(|| sans.iter().find(|s| is_dns_name(s)).cloned());
    if !insecure && !sans.is_empty() {
        let checked = sni
            .as_deref()
            .filter(|n| sans.iter().any(|s| s.eq_ignore_ascii_case(n)));
        let unchecked: Vec<&String> = sans
            .iter()
            .filter(|s| checked.is_none_or(|c| !s.eq_ignore_ascii_case(c)))
            .collect();
        if !unchecked.is_empty() {
            let what = match (checked, &sni) {
                (Some(c), _) => format!("the certificate is verified for {c:?} (the SNI) only"),
                (None, Some(n)) => format!(
                    "the certificate is verified for the SNI {n:?}, which is not among them"
                ),
                (None, None) => {
                    "the certificate is verified for the downstream Host (the SNI)".to_string()
                }
            };
            diag.push(
                key,
                Problem::Part,
                &format!("{path}.subjectAltNames"),
                &format!(
                    "{what}; {} not checked",
                    unchecked
                        .iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    Some(Arc::new(UpstreamTls {
        sni,
        subject_alt_names: sans,
        insecure_skip_verify: insecure,
        ca,
        client,
        client_certificate,
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
        data_plane: Default::default(),
    }))
}

/// A name that can be sent as SNI: no scheme, no `@`, not an IP.
fn is_dns_name(s: &str) -> bool {
    !s.contains("://")
        && !s.contains('@')
        && s.parse::<std::net::IpAddr>().is_err()
        && rustls::pki_types::ServerName::try_from(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{parse_documents, resource_from_value, Format};

    fn set(yaml: &str) -> ResourceSet {
        let mut s = ResourceSet::new();
        for d in parse_documents(yaml.as_bytes(), Format::Yaml).expect("yaml") {
            s.insert(resource_from_value(d, None).expect("resource"));
        }
        s
    }

    fn cert(names: &[&str]) -> (String, String) {
        let k = rcgen::KeyPair::generate().expect("key");
        let p =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let c = p.self_signed(&k).expect("cert");
        (c.pem(), k.serialize_pem())
    }

    fn secret(name: &str, crt: &str, key: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: {crt:?}\n  tls.key: {key:?}\n---\n"
        )
    }

    fn gateway(servers: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  servers:\n{servers}---\n")
    }

    fn https(name: &str, hosts: &str, tls: &str) -> String {
        format!("  - port: {{number: 443, name: {name}, protocol: HTTPS}}\n    hosts: {hosts}\n    tls: {tls}\n")
    }

    #[test]
    fn sni_picks_exact_then_longest_suffix_then_any() {
        let (c, k) = cert(&["x.test"]);
        let y = secret("c", &c, &k)
            + &gateway(
                &(https("a", "[a.example.com]", "{mode: SIMPLE, credentialName: c}")
                    + &https(
                        "b",
                        "[\"*.example.com\"]",
                        "{mode: SIMPLE, credentialName: c}",
                    )
                    + &https(
                        "c",
                        "[\"*.deep.example.com\"]",
                        "{mode: SIMPLE, credentialName: c}",
                    )
                    + &https("d", "[\"*\"]", "{mode: SIMPLE, credentialName: c}")),
            );
        let t = super::super::translate(&set(&y));
        let l = t.snapshot.tls.get(&443).expect("listener");
        let pick = |sni: Option<&str>| {
            l.server_for(sni)
                .map(|s| s.name.rsplit('[').next().unwrap_or_default().to_string())
        };
        assert_eq!(pick(Some("A.example.com")).as_deref(), Some("0]"));
        assert_eq!(pick(Some("b.example.com")).as_deref(), Some("1]"));
        assert_eq!(pick(Some("x.deep.example.com")).as_deref(), Some("2]"));
        assert_eq!(pick(Some("example.com")).as_deref(), Some("3]"));
        assert_eq!(pick(None).as_deref(), Some("3]"));
        assert!(l.servers.iter().all(|s| s.config.is_some()));
    }

    #[test]
    fn missing_secret_keeps_the_hosts_but_fails_them() {
        let y = gateway(&https(
            "a",
            "[a.example.com]",
            "{mode: SIMPLE, credentialName: nope}",
        ));
        let t = super::super::translate(&set(&y));
        let l = t.snapshot.tls.get(&443).expect("listener");
        let s = l.server_for(Some("a.example.com")).expect("claimed");
        assert!(s.config.is_none());
        assert!(l.server_for(Some("b.example.com")).is_none());
    }

    /// A Secret in Istio's generic layout in namespace `ns`.
    fn generic_in(ns: &str, name: &str, crt: &str, key: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: Opaque\nstringData:\n  cert: {crt:?}\n  key: {key:?}\n---\n"
        )
    }

    /// The first SAN of the certificate served for `sni` on port 443, if it can be served.
    fn served_subject(t: &super::super::Translation, sni: &str) -> Option<String> {
        let s = t.snapshot.tls.get(&443)?.server_for(Some(sni))?;
        s.config.as_ref()?;
        s.certificates.first().and_then(|c| c.sans.first().cloned())
    }

    #[test]
    fn credentials_are_looked_up_in_the_gateways_namespace_then_the_gateways_own() {
        let (here, here_key) = cert(&["here.test"]);
        let (own, own_key) = cert(&["own.test"]);
        let (third, third_key) = cert(&["third.test"]);
        let y = generic_in("istio-system", "c", &own, &own_key)
            + &generic_in("other", "c", &third, &third_key)
            + &gateway(&https("a", "[a.test]", "{mode: SIMPLE, credentialName: c}"));
        for (gateway_ns, want) in [
            ("istio-system", Some("own.test")),
            ("other", Some("third.test")),
            ("elsewhere", None),
            // The Gateway's own namespace: the one lookup.
            ("default", None),
        ] {
            let t = super::super::translate_with_files(&set(&y), &Files::default(), gateway_ns);
            assert_eq!(
                served_subject(&t, "a.test").as_deref(),
                want,
                "--namespace {gateway_ns}"
            );
        }
        let y = y + &generic_in("default", "c", &here, &here_key);
        for gateway_ns in ["istio-system", "other"] {
            let t = super::super::translate_with_files(&set(&y), &Files::default(), gateway_ns);
            assert_eq!(
                served_subject(&t, "a.test").as_deref(),
                Some("here.test"),
                "the Gateway's namespace comes first (--namespace {gateway_ns})"
            );
        }
        assert_eq!(
            lookup_order("default", "default").collect::<Vec<_>>(),
            ["default"]
        );
    }

    #[test]
    fn the_cacert_secret_gives_the_client_ca_and_wins_over_the_credentials_own() {
        let (c, k) = cert(&["m.test"]);
        let (ca1, _) = cert(&["first-ca.test"]);
        let (ca2, _) = cert(&["second-ca.test"]);
        let ca_secret = |ns: &str, name: &str, ca: &str| {
            format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\nstringData:\n  cacert: {ca:?}\n---\n")
        };
        let gw = gateway(&https("m", "[m.test]", "{mode: MUTUAL, credentialName: m}"));
        let client_ca = |y: &str| {
            let t = super::super::translate(&set(y));
            let s = t
                .snapshot
                .tls
                .get(&443)
                .and_then(|l| l.server_for(Some("m.test")))
                .cloned()
                .expect("server");
            (
                s.client_ca
                    .iter()
                    .flat_map(|c| c.sans.clone())
                    .collect::<Vec<_>>(),
                s.problem.clone(),
            )
        };
        // No CA anywhere: handshakes fail, and the warning says where a CA may come from.
        let (ca, problem) = client_ca(&(secret("m", &c, &k) + &gw));
        assert!(ca.is_empty());
        assert!(problem.is_some_and(|p| p.contains("\"m-cacert\"")));
        // The -cacert Secret, in the gateway's namespace.
        let y = secret("m", &c, &k) + &ca_secret("istio-system", "m-cacert", &ca1) + &gw;
        assert_eq!(client_ca(&y), (vec!["first-ca.test".to_string()], None));
        // It wins over the credential's own CA.
        let own = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: m}}\nstringData:\n  tls.crt: {c:?}\n  tls.key: {k:?}\n  ca.crt: {ca2:?}\n---\n"
        );
        assert_eq!(
            client_ca(&(own.clone() + &ca_secret("default", "m-cacert", &ca1) + &gw)),
            (vec!["first-ca.test".to_string()], None)
        );
        assert_eq!(
            client_ca(&(own + &gw)),
            (vec!["second-ca.test".to_string()], None)
        );
    }

    #[test]
    fn mismatched_key_is_reported_on_the_key() {
        let (c, _) = cert(&["a.test"]);
        let (_, k) = cert(&["a.test"]);
        let e = served_certificate(c.as_bytes(), k.as_bytes()).expect_err("mismatch");
        assert_eq!(e, (true, crate::ir::PemError::KeyMismatch));
    }

    #[test]
    fn versions_and_suites_shape_the_config() {
        let (c, k) = cert(&["a.test"]);
        let y = secret("c", &c, &k)
            + &gateway(&https(
                "a",
                "[a.test]",
                "{mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_2, maxProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384, AES128-SHA]}",
            ));
        let t = super::super::translate(&set(&y));
        let s = t
            .snapshot
            .tls
            .get(&443)
            .and_then(|l| l.server_for(Some("a.test")))
            .expect("server");
        assert_eq!(s.versions, vec![TlsVersion::Tls12]);
        assert_eq!(s.cipher_suites, vec!["ECDHE-ECDSA-AES256-GCM-SHA384"]);
        assert!(s.config.is_some());
        let w = t.warnings_for(&ResourceKey::new(
            Kind::Gateway,
            "default",
            "gw".to_string(),
        ));
        assert!(w.iter().any(|w| w.contains("AES128-SHA")), "{w:?}");
    }
}
