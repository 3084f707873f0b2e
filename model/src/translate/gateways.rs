//! Gateways to the servers that carry HTTP: port, admitted `ns/host` filters, `httpsRedirect`;
//! the servers that carry TCP and TLS (for the L4 translation); the implicit port-80 `*` gateway
//! while the store holds none; and the Gateway's own problems (servers the gateway cannot serve,
//! `credentialName`s with no Secret).

use super::clusters::port_u16;
use super::diag::{Diag, Problem};
use super::hosts::{normalize_host, parse_server_host, NsFilter};
use super::tls::{find_secret, no_pair, secret_not_found};
use crate::resource::{Gateway, Kind, ResourceKey, ResourceSet, ServerTlsMode};
use std::collections::{BTreeMap, BTreeSet};

/// The gateway label of the implicit gateway (CONTRACT §2).
pub(crate) const IMPLICIT: &str = "implicit";

/// Protocols whose traffic is routed by VirtualService `http` rules.
const HTTP_PROTOCOLS: [&str; 5] = ["HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB"];

/// One HTTP-ish server of a Gateway.
#[derive(Debug)]
pub(crate) struct ServerInfo {
    pub port: u16,
    /// Normalised hosts with the namespaces they admit.
    pub hosts: Vec<(NsFilter, String)>,
    pub https_redirect: bool,
    /// The server's protocol is GRPC-WEB.
    pub grpc_web: bool,
}

/// How an L4 server treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L4Mode {
    /// Protocol `TCP`: `tcp` routes.
    Tcp,
    /// Protocol `TLS`, mode `PASSTHROUGH`: `tls` routes by SNI.
    Passthrough,
    /// Protocol `TLS`, mode `SIMPLE`, `MUTUAL` or `OPTIONAL_MUTUAL`: terminated, then `tcp` routes.
    Terminated,
}

/// One TCP or TLS server of a Gateway.
#[derive(Debug)]
pub(crate) struct L4ServerInfo {
    pub port: u16,
    pub hosts: Vec<(NsFilter, String)>,
    pub mode: L4Mode,
}

/// Every Gateway by `ns/name`, with its HTTP servers.
#[derive(Debug, Default)]
pub(crate) struct Gateways {
    pub by_label: BTreeMap<String, Vec<ServerInfo>>,
    /// Every Gateway by `ns/name`, with its TCP and TLS servers.
    pub l4: BTreeMap<String, Vec<L4ServerInfo>>,
    /// No Gateway exists: every VirtualService binds to the implicit one.
    pub implicit: bool,
}

impl Gateways {
    /// `gateway_namespace`: where `credentialName`s are looked up after the Gateway's own;
    /// `served`: the ports the listeners serve, when known.
    pub(crate) fn collect(
        set: &ResourceSet,
        gateway_namespace: &str,
        served: Option<&BTreeSet<u16>>,
        diag: &mut Diag,
    ) -> Gateways {
        let mut out = Gateways::default();
        for gw in set.gateways() {
            let label = format!("{}/{}", gw.metadata.namespace(), gw.metadata.name);
            let (servers, l4) = servers(gw, set, gateway_namespace, served, diag);
            out.l4.insert(label.clone(), l4);
            out.by_label.insert(label, servers);
        }
        if out.by_label.is_empty() {
            out.implicit = true;
            out.by_label.insert(
                IMPLICIT.to_string(),
                vec![ServerInfo {
                    port: 80,
                    hosts: vec![(NsFilter::Any, "*".to_string())],
                    https_redirect: false,
                    grpc_web: false,
                }],
            );
        }
        out
    }

    /// The ports where some server's protocol is GRPC-WEB.
    pub(crate) fn grpc_web_ports(&self) -> BTreeSet<u16> {
        self.by_label
            .values()
            .flatten()
            .filter(|s| s.grpc_web)
            .map(|s| s.port)
            .collect()
    }

    /// The stored label of an existing (non-implicit) Gateway, borrowed for cheap keys.
    pub(crate) fn label(&self, label: &str) -> Option<&str> {
        if self.implicit {
            return None;
        }
        self.by_label.get_key_value(label).map(|(k, _)| k.as_str())
    }
}

fn servers(
    gw: &Gateway,
    set: &ResourceSet,
    gateway_namespace: &str,
    served: Option<&BTreeSet<u16>>,
    diag: &mut Diag,
) -> (Vec<ServerInfo>, Vec<L4ServerInfo>) {
    let ns = gw.metadata.namespace();
    let key = ResourceKey::new(Kind::Gateway, ns, gw.metadata.name.clone());
    let mut out = Vec::new();
    let mut l4 = Vec::new();
    for (i, s) in gw.spec.servers.iter().enumerate() {
        let path = format!("spec.servers[{i}]");
        check_credentials(s, (ns, gateway_namespace), &path, &key, set, diag);
        let Some(port) = &s.port else {
            diag.push(
                &key,
                Problem::Part,
                &format!("{path}.port"),
                "no port; server not served",
            );
            continue;
        };
        let protocol = port.protocol.to_ascii_uppercase();
        let mode = match protocol.as_str() {
            p if HTTP_PROTOCOLS.contains(&p) => None,
            "TCP" => Some(L4Mode::Tcp),
            "TLS" => match s.tls.as_ref().and_then(|t| t.mode) {
                None | Some(ServerTlsMode::Passthrough) => Some(L4Mode::Passthrough),
                Some(
                    ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual,
                ) => Some(L4Mode::Terminated),
                Some(other) => {
                    let name = if other == ServerTlsMode::AutoPassthrough {
                        "AUTO_PASSTHROUGH (it routes by mesh SNI names, which a standalone gateway does not have)"
                    } else {
                        "ISTIO_MUTUAL (it needs mesh certificates)"
                    };
                    diag.push(
                        &key,
                        Problem::Part,
                        &format!("{path}.tls.mode"),
                        &format!("mode {name} is not served; server not served"),
                    );
                    continue;
                }
            },
            _ => {
                diag.push(
                    &key,
                    Problem::Part,
                    &format!("{path}.port.protocol"),
                    &format!(
                        "protocol {:?} is not served (only HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP and TLS are)",
                        port.protocol
                    ),
                );
                continue;
            }
        };
        let Some(number) = port_u16(port.number) else {
            diag.push(
                &key,
                Problem::Part,
                &format!("{path}.port.number"),
                &format!("invalid port {}; server not served", port.number),
            );
            continue;
        };
        if let Some(served) = served.filter(|p| !p.contains(&number)) {
            let list: Vec<String> = served.iter().map(u16::to_string).collect();
            diag.push(
                &key,
                Problem::Part,
                &format!("{path}.port.number"),
                &format!(
                    "no listener serves port {number} (the listeners serve {}); the server receives no traffic",
                    list.join(", ")
                ),
            );
        }
        let mut hosts = Vec::new();
        for (j, raw) in s.hosts.iter().enumerate() {
            let (filter, host) = parse_server_host(raw, ns);
            match normalize_host(&host) {
                Some(h) => hosts.push((filter, h)),
                None => diag.push(
                    &key,
                    Problem::Part,
                    &format!("{path}.hosts[{j}]"),
                    &format!("host {raw:?} cannot be served; skipped"),
                ),
            }
        }
        match mode {
            Some(mode) => l4.push(L4ServerInfo {
                port: number,
                hosts,
                mode,
            }),
            None => out.push(ServerInfo {
                port: number,
                hosts,
                https_redirect: s.tls.as_ref().is_some_and(|t| t.https_redirect),
                grpc_web: protocol == "GRPC-WEB",
            }),
        }
    }
    (out, l4)
}

/// A `credentialName` names a Secret with a certificate and key, in the Gateway's namespace `ns`
/// or the gateway's own (see `tls::lookup_order`).
fn check_credentials(
    s: &crate::resource::Server,
    (ns, gateway_namespace): (&str, &str),
    path: &str,
    key: &ResourceKey,
    set: &ResourceSet,
    diag: &mut Diag,
) {
    let Some(tls) = &s.tls else {
        return;
    };
    let names = tls
        .credential_name
        .iter()
        .map(|n| (format!("{path}.tls.credentialName"), n))
        .chain(
            tls.credential_names
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("{path}.tls.credentialNames[{i}]"), n)),
        );
    for (field, name) in names {
        if name.is_empty() {
            continue;
        }
        match find_secret(set, ns, gateway_namespace, name) {
            None => diag.push(
                key,
                Problem::Ref("SecretNotFound"),
                &field,
                &secret_not_found(ns, gateway_namespace, name),
            ),
            Some(sec) => {
                let needs_key = !matches!(tls.mode, Some(ServerTlsMode::Passthrough));
                if needs_key && sec.key_pair().is_none() {
                    diag.push(key, Problem::Ref("InvalidSecret"), &field, &no_pair(sec));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{parse_documents, resource_from_value, Format};

    fn collect(yaml: &str, served: Option<&BTreeSet<u16>>) -> Vec<String> {
        let mut set = ResourceSet::new();
        for d in parse_documents(yaml.as_bytes(), Format::Yaml).expect("parses") {
            set.insert(resource_from_value(d, None).expect("decodes"));
        }
        let mut diag = Diag::default();
        let gws = Gateways::collect(&set, "istio-system", served, &mut diag);
        assert_eq!(gws.by_label["default/g"].len(), 2, "both servers are kept");
        let (_, warnings) = diag.finish(&set);
        warnings.into_values().flatten().collect()
    }

    const TWO_SERVERS: &str = "kind: Gateway\nmetadata: {name: g, namespace: default}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n  - port: {number: 8080, name: alt, protocol: HTTP}\n    hosts: ['*']\n";

    #[test]
    fn a_server_on_a_port_no_listener_serves_is_reported() {
        let served = BTreeSet::from([80, 443]);
        assert_eq!(
            collect(TWO_SERVERS, Some(&served)),
            vec!["spec.servers[1].port.number: no listener serves port 8080 (the listeners serve 80, 443); the server receives no traffic"]
        );
        let served = BTreeSet::from([80, 443, 8080]);
        assert!(collect(TWO_SERVERS, Some(&served)).is_empty());
        assert!(
            collect(TWO_SERVERS, None).is_empty(),
            "unknown listeners: nothing said"
        );
    }
}
