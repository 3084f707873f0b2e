//! VirtualService `tcp` and `tls` rules onto the gateway ports of the TCP and TLS servers that
//! admit them: gateway binding (VS-level and per-match), host admission (a `tcp` rule needs a VS
//! host a TCP or terminating TLS server admits; a `tls` rule's `sniHosts` are narrowed to what a
//! `PASSTHROUGH` server admits), weighted destinations through the shared cluster registry, and
//! per port the ordered route lists (creation order, then rule order) behind [`L4Port`].

use super::clusters::{port_u16, Registry};
use super::diag::{Diag, Problem};
use super::gateways::{Gateways, L4Mode, L4ServerInfo};
use super::hosts::{creation_order, intersect, normalize_host, resolve_gateway_ref};
use super::routes::{destination, normalize_weights, DestTemplate, Sink};
use super::vhosts::binding;
use crate::ir::{Cidr, L4Destination, L4Match, L4Port, L4Route, PortKind, Target};
use crate::resource::{Kind, ResourceKey, ResourceSet, RouteDestination, VirtualService};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Which rules of a VirtualService: `tcp` or `tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rules {
    Tcp,
    Tls,
}

impl Rules {
    fn field(self) -> &'static str {
        match self {
            Rules::Tcp => "tcp",
            Rules::Tls => "tls",
        }
    }

    fn serves(self, mode: L4Mode) -> bool {
        match self {
            Rules::Tcp => matches!(mode, L4Mode::Tcp | L4Mode::Terminated),
            Rules::Tls => mode == L4Mode::Passthrough,
        }
    }
}

/// One `match` entry before placement: its gateways (`None`: the VS binding) and conditions.
struct Entry {
    gateways: Option<BTreeSet<String>>,
    port: Option<u16>,
    subnets: Vec<Cidr>,
    source: Option<Cidr>,
    /// A condition that cannot be compiled (a `sourceSubnet` that is no address): never matches.
    dead: bool,
    /// Normalised `sniHosts` (`tls` rules).
    sni: Vec<String>,
}

/// One rule before placement.
struct Rule {
    index: usize,
    entries: Vec<Entry>,
    destinations: Vec<DestTemplate>,
    total_weight: u32,
}

/// Builds the L4 side of every port that has TCP or TLS servers.
pub(crate) fn build(
    set: &ResourceSet,
    gws: &Gateways,
    reg: &mut Registry<'_>,
    diag: &mut Diag,
) -> BTreeMap<u16, L4Port> {
    let mut ports: BTreeMap<u16, L4Port> = BTreeMap::new();
    for servers in gws.l4.values() {
        for s in servers {
            let kind = match s.mode {
                L4Mode::Tcp => PortKind::Tcp,
                L4Mode::Passthrough | L4Mode::Terminated => PortKind::Tls,
            };
            let p = ports.entry(s.port).or_insert_with(|| L4Port {
                port: s.port,
                kind,
                tcp: Vec::new(),
                tls: Vec::new(),
            });
            // TLS wins a port shared with plain TCP servers: a ClientHello is recognisable.
            if kind == PortKind::Tls {
                p.kind = PortKind::Tls;
            }
        }
    }
    let mut vss: Vec<&VirtualService> = set
        .virtual_services()
        .filter(|v| !v.spec.tcp.is_empty() || !v.spec.tls.is_empty())
        .collect();
    vss.sort_by_cached_key(|v| creation_order(&v.metadata));
    for vs in vss {
        virtual_service(vs, gws, reg, diag, &mut ports);
    }
    ports
}

fn virtual_service(
    vs: &VirtualService,
    gws: &Gateways,
    reg: &mut Registry<'_>,
    diag: &mut Diag,
    ports: &mut BTreeMap<u16, L4Port>,
) {
    let ns = vs.metadata.namespace();
    let key = ResourceKey::new(Kind::VirtualService, ns, vs.metadata.name.clone());
    let vs_label = format!("{ns}/{}", vs.metadata.name);
    let bound: BTreeSet<String> = binding(vs, gws, diag, &key)
        .into_iter()
        .map(str::to_string)
        .collect();
    let hosts: Vec<String> = vs
        .spec
        .hosts
        .iter()
        .filter_map(|h| normalize_host(h))
        .collect();
    let tcp = vs.spec.tcp.iter().map(|r| (&r.match_, &r.route));
    for (kind, rules) in [
        (
            Rules::Tcp,
            tcp.enumerate()
                .map(|(i, (m, r))| {
                    let entries = m
                        .iter()
                        .map(|m| RawEntry {
                            gateways: &m.gateways,
                            port: m.port,
                            subnets: &m.destination_subnets,
                            source: m.source_subnet.as_deref(),
                            sni: &[],
                        })
                        .collect::<Vec<_>>();
                    compile(i, Rules::Tcp, &entries, r, ns, gws, reg, diag, &key)
                })
                .collect::<Vec<_>>(),
        ),
        (
            Rules::Tls,
            vs.spec
                .tls
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let entries = r
                        .match_
                        .iter()
                        .map(|m| RawEntry {
                            gateways: &m.gateways,
                            port: m.port,
                            subnets: &m.destination_subnets,
                            source: None,
                            sni: &m.sni_hosts,
                        })
                        .collect::<Vec<_>>();
                    compile(i, Rules::Tls, &entries, &r.route, ns, gws, reg, diag, &key)
                })
                .collect::<Vec<_>>(),
        ),
    ] {
        for rule in rules {
            let placed = place(&rule, kind, &bound, &hosts, ns, &vs_label, gws, reg, ports);
            if !placed {
                let why = match kind {
                    Rules::Tcp => "no TCP server or terminating TLS server of the bound gateways admits the VirtualService's hosts on a port this rule matches; not served",
                    Rules::Tls => "no TLS PASSTHROUGH server of the bound gateways admits its sniHosts on a port this rule matches; not served",
                };
                diag.push(
                    &key,
                    Problem::Ref("HostNotAdmitted"),
                    &format!("spec.{}[{}]", kind.field(), rule.index),
                    why,
                );
            }
        }
    }
}

/// One `match` entry as written, `tcp` or `tls`.
struct RawEntry<'a> {
    gateways: &'a [String],
    port: Option<i64>,
    subnets: &'a [String],
    source: Option<&'a str>,
    sni: &'a [String],
}

#[allow(clippy::too_many_arguments)]
fn compile(
    index: usize,
    kind: Rules,
    raw: &[RawEntry<'_>],
    route: &[RouteDestination],
    ns: &str,
    gws: &Gateways,
    reg: &Registry<'_>,
    diag: &mut Diag,
    key: &ResourceKey,
) -> Rule {
    let base = format!("spec.{}[{index}]", kind.field());
    let mut entries = Vec::with_capacity(raw.len());
    for (k, e) in raw.iter().enumerate() {
        let mp = format!("{base}.match[{k}]");
        let (gateways, subnets) = (e.gateways, e.subnets);
        let gateways = (!gateways.is_empty()).then(|| {
            let mut out = BTreeSet::new();
            for (j, g) in gateways.iter().enumerate() {
                let Some(label) = resolve_gateway_ref(g, ns) else {
                    continue;
                };
                if gws.label(&label).is_some() {
                    out.insert(label);
                } else {
                    diag.push(
                        key,
                        Problem::Ref("GatewayNotFound"),
                        &format!("{mp}.gateways[{j}]"),
                        &format!("gateway {label:?} not found"),
                    );
                }
            }
            out
        });
        let subnets = subnets
            .iter()
            .enumerate()
            .filter_map(|(j, s)| {
                let parsed = Cidr::parse(s.trim());
                if parsed.is_none() {
                    diag.push(
                        key,
                        Problem::Part,
                        &format!("{mp}.destinationSubnets[{j}]"),
                        &format!("{s:?} is not an IP address or CIDR; skipped"),
                    );
                }
                parsed
            })
            .collect();
        let source = e.source.map(str::trim).filter(|s| !s.is_empty());
        let source_cidr = source.and_then(Cidr::parse);
        let dead = source.is_some() && source_cidr.is_none();
        if dead {
            diag.push(
                key,
                Problem::Part,
                &format!("{mp}.sourceSubnet"),
                &format!(
                    "{:?} is not an IP address or CIDR; the match never matches",
                    e.source.unwrap_or_default()
                ),
            );
        }
        entries.push(Entry {
            gateways,
            port: e.port.filter(|&n| n != 0).and_then(port_u16),
            subnets,
            source: source_cidr,
            dead,
            sni: e.sni.iter().filter_map(|h| normalize_host(h)).collect(),
        });
    }
    let mut sink = Sink { diag, key };
    let mut destinations: Vec<DestTemplate> = route
        .iter()
        .enumerate()
        .filter_map(|(j, rd)| {
            let d = rd.destination.as_ref()?;
            let mut t = destination(d, &format!("{base}.route[{j}].destination"), reg, &mut sink)?;
            t.weight = rd
                .weight
                .and_then(|w| u32::try_from(w.max(0)).ok())
                .unwrap_or(0);
            Some(t)
        })
        .collect();
    let total_weight = if destinations.is_empty() {
        0
    } else {
        normalize_weights(&mut destinations)
    };
    Rule {
        index,
        entries,
        destinations,
        total_weight,
    }
}

/// Places a rule on every port where a server of a gateway it applies at admits it; `false` when
/// there is none.
#[allow(clippy::too_many_arguments)]
fn place(
    rule: &Rule,
    kind: Rules,
    bound: &BTreeSet<String>,
    hosts: &[String],
    ns: &str,
    vs_label: &str,
    gws: &Gateways,
    reg: &mut Registry<'_>,
    ports: &mut BTreeMap<u16, L4Port>,
) -> bool {
    let mut considered: BTreeSet<&str> = bound.iter().map(String::as_str).collect();
    for e in &rule.entries {
        considered.extend(e.gateways.iter().flatten().map(String::as_str));
    }
    let mut placed_on: BTreeSet<u16> = BTreeSet::new();
    for g in considered {
        // The entries that apply at this gateway; a rule without `match` applies where bound.
        let applies = |e: &&Entry| {
            !e.dead
                && match &e.gateways {
                    Some(list) => list.contains(g),
                    None => bound.contains(g),
                }
        };
        let entries: Vec<&Entry> = rule.entries.iter().filter(applies).collect();
        if !rule.entries.is_empty() && entries.is_empty() {
            continue;
        }
        for s in gws.l4.get(g).into_iter().flatten() {
            if !kind.serves(s.mode) || placed_on.contains(&s.port) {
                continue;
            }
            let Some(matches) = matches_at(kind, &entries, rule.entries.is_empty(), s, hosts, ns)
            else {
                continue;
            };
            let route = Arc::new(L4Route {
                id: format!("vs/{vs_label}/{}/{}", kind.field(), rule.index),
                gateway: g.to_string(),
                virtual_service: vs_label.to_string(),
                matches,
                destinations: rule
                    .destinations
                    .iter()
                    .map(|d| {
                        let port = d.port.unwrap_or(s.port);
                        let target = match &d.no_cluster {
                            Some(reason) => Target::NoCluster {
                                reason: reason.clone(),
                            },
                            None => {
                                Target::Cluster(reg.cluster(&d.host_key, port, d.subset.as_deref()))
                            }
                        };
                        L4Destination {
                            weight: d.weight,
                            host: d.host.clone(),
                            subset: d.subset.clone(),
                            port,
                            target,
                        }
                    })
                    .collect(),
                total_weight: rule.total_weight,
            });
            let Some(p) = ports.get_mut(&s.port) else {
                continue;
            };
            match kind {
                Rules::Tcp => p.tcp.push(route),
                Rules::Tls => p.tls.push(route),
            }
            placed_on.insert(s.port);
        }
    }
    !placed_on.is_empty()
}

/// The compiled matches of a rule on server `s`, or `None` when the server does not admit it (no
/// VS host for `tcp`, no SNI host for `tls`) or no entry can match on its port.
fn matches_at(
    kind: Rules,
    entries: &[&Entry],
    no_match: bool,
    s: &L4ServerInfo,
    hosts: &[String],
    ns: &str,
) -> Option<Vec<L4Match>> {
    let admitted = |h: &str| -> Vec<String> {
        s.hosts
            .iter()
            .filter(|(f, _)| f.admits(ns))
            .filter_map(|(_, sh)| intersect(h, sh))
            .collect()
    };
    match kind {
        Rules::Tcp => {
            if !hosts.iter().any(|h| !admitted(h).is_empty()) {
                return None;
            }
            if no_match {
                return Some(Vec::new());
            }
            let out: Vec<L4Match> = entries
                .iter()
                .filter(|e| e.port.is_none_or(|p| p == s.port))
                .map(|e| L4Match {
                    port: e.port,
                    destination_subnets: e.subnets.clone(),
                    source_subnet: e.source,
                    sni_hosts: Vec::new(),
                })
                .collect();
            (!out.is_empty()).then_some(out)
        }
        Rules::Tls => {
            let out: Vec<L4Match> = entries
                .iter()
                .filter(|e| e.port.is_none_or(|p| p == s.port))
                .filter_map(|e| {
                    let sni: BTreeSet<String> = e.sni.iter().flat_map(|h| admitted(h)).collect();
                    (!sni.is_empty()).then(|| L4Match {
                        port: e.port,
                        destination_subnets: e.subnets.clone(),
                        source_subnet: e.source,
                        sni_hosts: sni.into_iter().collect(),
                    })
                })
                .collect();
            (!out.is_empty()).then_some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{L4Conn, PortKind, Target};
    use crate::resource::{parse_documents, resource_from_value, Format, ResourceSet};

    fn translate(yaml: &str) -> super::super::Translation {
        let mut set = ResourceSet::new();
        for d in parse_documents(yaml.as_bytes(), Format::Yaml).expect("parses") {
            set.insert(resource_from_value(d, None).expect("decodes"));
        }
        super::super::translate(&set)
    }

    const GW: &str = "kind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  servers:\n  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: ['*']\n  - port: {number: 31443, name: tls, protocol: TLS}\n    hosts: ['*.example.com']\n    tls: {mode: PASSTHROUGH}\n---\n";

    fn conn(port: u16, sni: Option<&str>) -> L4Conn<'_> {
        L4Conn {
            port,
            destination: "127.0.0.1".parse().expect("ip"),
            source: "127.0.0.1".parse().expect("ip"),
            sni,
        }
    }

    #[test]
    fn tcp_and_tls_rules_land_on_their_servers_ports() {
        let t = translate(&format!("{GW}kind: VirtualService\nmetadata: {{name: v, namespace: default}}\nspec:\n  hosts: ['*']\n  gateways: [gw]\n  tcp:\n  - match: [{{port: 31400}}]\n    route:\n    - destination: {{host: a.svc, port: {{number: 9000}}}}\n      weight: 80\n    - destination: {{host: b.svc, port: {{number: 9000}}}}\n      weight: 20\n  tls:\n  - match: [{{sniHosts: [x.example.com]}}]\n    route:\n    - destination: {{host: x.svc, port: {{number: 443}}}}\n"));
        let s = &t.snapshot;
        assert_eq!(s.port_kind(31400), PortKind::Tcp);
        assert_eq!(s.port_kind(31443), PortKind::Tls);
        assert_eq!(s.port_kind(80), PortKind::Http);
        assert_eq!(s.port_kind(443), PortKind::Http, "no server there");
        let tcp = &s.l4[&31400];
        let r = tcp.tcp_route(&conn(31400, None)).expect("tcp route");
        assert_eq!(r.id, "vs/default/v/tcp/0");
        assert_eq!(r.gateway, "default/gw");
        assert_eq!(r.total_weight, 100);
        assert!(
            matches!(&r.destinations[0].target, Target::Cluster(c) if c.name == "outbound|9000||a.svc")
        );
        assert!(tcp.tls.is_empty(), "tls rules only on passthrough servers");
        let tls = &s.l4[&31443];
        assert!(tls.tcp.is_empty(), "the tcp rule's port match is 31400");
        let r = tls
            .tls_route(&conn(31443, Some("x.example.com")))
            .expect("tls route");
        assert_eq!(r.id, "vs/default/v/tls/0");
        assert!(tls.tls_route(&conn(31443, Some("y.example.com"))).is_none());
        assert!(tls.tls_route(&conn(31443, None)).is_none());
        assert!(
            t.warnings.values().flatten().next().is_none(),
            "{:?}",
            t.warnings
        );
    }

    #[test]
    fn rules_nothing_admits_are_warned_about() {
        let t = translate(&format!("{GW}kind: VirtualService\nmetadata: {{name: v, namespace: default}}\nspec:\n  hosts: ['*']\n  gateways: [gw, missing]\n  tls:\n  - match: [{{sniHosts: [x.other.org]}}]\n    route:\n    - destination: {{host: x.svc, subset: nope}}\n"));
        let w: Vec<&String> = t.warnings.values().flatten().collect();
        let has = |s: &str| w.iter().any(|m| m.contains(s));
        assert!(
            has("spec.gateways[1]: gateway \"default/missing\" not found"),
            "{w:?}"
        );
        assert!(has("spec.tls[0]: no TLS PASSTHROUGH server"), "{w:?}");
        assert!(
            has("spec.tls[0].route[0].destination.subset: subset \"nope\""),
            "{w:?}"
        );
        assert!(t.snapshot.l4[&31443].tls.is_empty());
    }

    #[test]
    fn destination_subnets_and_match_gateways_narrow_a_rule() {
        let t = translate(&format!("{GW}kind: Gateway\nmetadata: {{name: other, namespace: default}}\nspec:\n  servers:\n  - port: {{number: 31500, name: tcp, protocol: TCP}}\n    hosts: ['*']\n---\nkind: VirtualService\nmetadata: {{name: v, namespace: default}}\nspec:\n  hosts: ['*']\n  gateways: [gw]\n  tcp:\n  - match: [{{destinationSubnets: [10.0.0.0/8]}}, {{gateways: [other]}}]\n    route:\n    - destination: {{host: a.svc, port: {{number: 9000}}}}\n"));
        let s = &t.snapshot;
        let on_gw = &s.l4[&31400];
        assert!(
            on_gw.tcp_route(&conn(31400, None)).is_none(),
            "127.0.0.1 is outside 10/8"
        );
        let ten = L4Conn {
            destination: "10.1.2.3".parse().expect("ip"),
            ..conn(31400, None)
        };
        assert!(on_gw.tcp_route(&ten).is_some());
        let on_other = &s.l4[&31500];
        let r = on_other
            .tcp_route(&conn(31500, None))
            .expect("second entry, any address");
        assert_eq!(r.gateway, "default/other");
    }

    #[test]
    fn a_port_with_tcp_and_terminating_servers_is_tls() {
        let t = translate("kind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  servers:\n  - port: {number: 9443, name: tcp, protocol: TCP}\n    hosts: ['*']\n  - port: {number: 9443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: missing}\n");
        assert_eq!(t.snapshot.port_kind(9443), PortKind::Tls);
    }

    #[test]
    fn source_subnet_matches_the_client_address() {
        let t = translate(&format!("{GW}kind: VirtualService\nmetadata: {{name: v, namespace: default}}\nspec:\n  hosts: ['*']\n  tcp:\n  - match: [{{sourceSubnet: 10.0.0.0/8}}]\n    route:\n    - destination: {{host: a.svc, port: {{number: 1}}}}\n  - match: [{{sourceSubnet: not-an-ip}}]\n    route:\n    - destination: {{host: b.svc, port: {{number: 1}}}}\n"));
        let p = &t.snapshot.l4[&31400];
        assert!(
            p.tcp_route(&conn(31400, None)).is_none(),
            "127.0.0.1 is outside 10/8"
        );
        let inside = L4Conn {
            source: "10.9.9.9".parse().expect("ip"),
            ..conn(31400, None)
        };
        assert_eq!(
            p.tcp_route(&inside).map(|r| r.id.as_str()),
            Some("vs/default/v/tcp/0")
        );
        assert_eq!(
            p.tcp.len(),
            1,
            "a rule whose only match can never match is not served"
        );
        let w: Vec<&String> = t.warnings.values().flatten().collect();
        assert!(
            w.iter()
                .any(|m| m.contains("spec.tcp[1].match[0].sourceSubnet")),
            "{w:?}"
        );
    }
}
