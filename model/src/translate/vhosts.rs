//! VirtualServices onto listeners: gateway binding (VS-level and per-match), host admission by
//! server `ns/host` and intersection, then per listener and domain the merged route list (creation
//! order, each VirtualService up to its first catch-all, catch-alls last) behind a
//! [`HostIndex`]. Routes are shared (`Arc`) by every domain and listener they serve.

use super::clusters::Registry;
use super::diag::{Diag, Problem};
use super::gateways::{Gateways, IMPLICIT};
use super::hosts::{creation_order, intersect, normalize_host, resolve_gateway_ref, MESH};
use super::ingress::IngressPlacement;
use super::routes::{compile_rule, ActionTemplate, DestTemplate, RuleTemplate, Sink};
use crate::ir::{
    Forward, HostIndex, Listener, Mirror, Route, RouteAction, Target, VirtualHost,
    WeightedDestination,
};
use crate::resource::{Kind, ResourceKey, ResourceSet, VirtualService};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// A route placed in a virtual host, with what ordering and deduplication need.
struct Placed {
    rank: usize,
    rule: usize,
    catch_all: bool,
    entries: Vec<usize>,
    route: Arc<Route>,
}

#[derive(Default)]
struct VhostBuild {
    https_redirect: bool,
    placed: Vec<Placed>,
}

/// Identity of a compiled route: (VS rank, rule, gateway, catch-all part, listener port if the
/// route depends on it).
type RouteKey<'g> = (usize, usize, &'g str, bool, Option<u16>);

/// Builds every listener. `ingress` routes come before every VirtualService route of their
/// domain (catch-alls aside), as Istio's derived VirtualServices sort first.
pub(crate) fn build(
    set: &ResourceSet,
    gws: &Gateways,
    ingress: Vec<IngressPlacement>,
    reg: &mut Registry<'_>,
    diag: &mut Diag,
) -> BTreeMap<u16, Listener> {
    let mut vss: Vec<&VirtualService> = set.virtual_services().collect();
    vss.sort_by_cached_key(|v| creation_order(&v.metadata));
    let rules: usize = vss.iter().map(|v| v.spec.http.len()).sum();
    let mut b = Builder {
        gws,
        reg,
        diag,
        listeners: BTreeMap::new(),
        cache: HashMap::with_capacity(rules),
    };
    b.redirecting_servers();
    let offset = ingress.iter().map(|p| p.rank + 1).max().unwrap_or(0);
    for p in ingress {
        b.listeners
            .entry(p.port)
            .or_default()
            .entry(p.domain)
            .or_default()
            .placed
            .push(Placed {
                rank: p.rank,
                rule: p.rule,
                catch_all: p.catch_all,
                entries: Vec::new(),
                route: p.route,
            });
    }
    for (rank, vs) in vss.into_iter().enumerate() {
        b.virtual_service(offset + rank, vs);
    }
    b.finish()
}

struct Builder<'g, 'r, 'a> {
    gws: &'g Gateways,
    reg: &'r mut Registry<'a>,
    diag: &'r mut Diag,
    /// Port → domain → what the virtual host will hold.
    listeners: BTreeMap<u16, BTreeMap<String, VhostBuild>>,
    cache: HashMap<RouteKey<'g>, Arc<Route>>,
}

impl<'g> Builder<'g, '_, '_> {
    /// Every HTTP server has a listener; every host of a redirecting server answers (with the
    /// redirect), VirtualService or not.
    fn redirecting_servers(&mut self) {
        for servers in self.gws.by_label.values() {
            for s in servers {
                let domains = self.listeners.entry(s.port).or_default();
                if s.https_redirect {
                    for (_, h) in &s.hosts {
                        domains.entry(h.clone()).or_default().https_redirect = true;
                    }
                }
            }
        }
    }

    fn virtual_service(&mut self, rank: usize, vs: &VirtualService) {
        let ns = vs.metadata.namespace();
        let key = ResourceKey::new(Kind::VirtualService, ns, vs.metadata.name.clone());
        // `tcp` and `tls` rules are the L4 translation's.
        if vs.spec.http.is_empty() {
            return;
        }
        if vs.spec.hosts.is_empty() {
            self.diag.push(
                &key,
                Problem::Part,
                "spec.hosts",
                "a VirtualService without hosts (a delegate) is not served",
            );
            return;
        }

        let bound = binding(vs, self.gws, self.diag, &key);
        let mut sink = Sink {
            diag: &mut *self.diag,
            key: &key,
        };
        let templates: Vec<RuleTemplate> = vs
            .spec
            .http
            .iter()
            .enumerate()
            .filter_map(|(i, r)| compile_rule(vs, i, r, self.reg, &mut sink))
            .collect();
        let considered = self.considered(&bound, &templates, &key);
        let placements = self.placements(vs, &considered, &key);

        let vs_label = format!("{ns}/{}", vs.metadata.name);
        for ((port, domain, g), redirect) in placements {
            let vb = self
                .listeners
                .entry(port)
                .or_default()
                .entry(domain)
                .or_default();
            vb.https_redirect |= redirect;
            for t in &templates {
                let (in_place, catch_all) = split_entries(t, g, &bound, self.gws.implicit);
                // Istio stops a VirtualService at its first catch-all: later rules are never
                // reached (validation warns about them), even when merging would move the
                // catch-all behind other VirtualServices' routes.
                let stops = catch_all.is_some();
                for (is_catch_all, entries) in [(false, in_place), (true, catch_all)] {
                    let Some(entries) = entries else {
                        continue;
                    };
                    let lport = t.needs_listener_port().then_some(port);
                    let reg = &mut *self.reg;
                    let route = self
                        .cache
                        .entry((rank, t.index, g, is_catch_all, lport))
                        .or_insert_with(|| {
                            Arc::new(instantiate(t, &vs_label, g, &entries, port, reg))
                        })
                        .clone();
                    vb.placed.push(Placed {
                        rank,
                        rule: t.index,
                        catch_all: is_catch_all,
                        entries,
                        route,
                    });
                }
                if stops {
                    for later in templates.iter().filter(|l| l.index > t.index) {
                        self.diag.push(
                            &key,
                            Problem::Part,
                            &format!("spec.http[{}]", later.index),
                            &format!(
                                "never reached: spec.http[{}] before it matches every request (Istio stops a VirtualService at its first catch-all)",
                                t.index
                            ),
                        );
                    }
                    break;
                }
            }
        }
    }

    /// The gateways a VirtualService is considered at: its binding plus those its matches name.
    fn considered(
        &mut self,
        bound: &BTreeSet<&'g str>,
        templates: &[RuleTemplate],
        key: &ResourceKey,
    ) -> BTreeSet<&'g str> {
        let mut considered = bound.clone();
        for t in templates {
            for (k, e) in t.entries.iter().enumerate() {
                for (j, g) in e.gateways.iter().flatten() {
                    if let Some(label) = self.gws.label(g) {
                        considered.insert(label);
                    } else {
                        self.diag.push(
                            key,
                            Problem::Ref("GatewayNotFound"),
                            &format!("spec.http[{}].match[{k}].gateways[{j}]", t.index),
                            &format!("gateway {g:?} not found"),
                        );
                    }
                }
            }
        }
        if self.gws.implicit {
            return BTreeSet::from([IMPLICIT]);
        }
        considered
    }

    /// Where each VirtualService host lands: `(port, domain, gateway)` → whether an admitting
    /// server redirects to https. Hosts no server admits are warned about.
    fn placements(
        &mut self,
        vs: &VirtualService,
        considered: &BTreeSet<&'g str>,
        key: &ResourceKey,
    ) -> BTreeMap<(u16, String, &'g str), bool> {
        let ns = vs.metadata.namespace();
        let mut placements = BTreeMap::new();
        for (j, raw) in vs.spec.hosts.iter().enumerate() {
            let Some(h) = normalize_host(raw) else {
                self.diag.push(
                    key,
                    Problem::Part,
                    &format!("spec.hosts[{j}]"),
                    &format!("host {raw:?} cannot be served (use a name, *.suffix or *); skipped"),
                );
                continue;
            };
            let mut admitted = false;
            for &g in considered {
                for s in self.gws.by_label.get(g).into_iter().flatten() {
                    for (filter, sh) in &s.hosts {
                        if !filter.admits(ns) {
                            continue;
                        }
                        if let Some(domain) = intersect(&h, sh) {
                            admitted = true;
                            *placements.entry((s.port, domain, g)).or_default() |= s.https_redirect;
                        }
                    }
                }
            }
            // With no gateway at all the gateway warnings already say why nothing is served.
            if !admitted && !considered.is_empty() {
                self.diag.push(
                    key,
                    Problem::Ref("HostNotAdmitted"),
                    &format!("spec.hosts[{j}]"),
                    &format!("host {raw:?} is admitted by no server of bound gateways"),
                );
            }
        }
        placements
    }

    fn finish(self) -> BTreeMap<u16, Listener> {
        self.listeners
            .into_iter()
            .map(|(port, domains)| {
                let mut hosts = HostIndex::default();
                for (domain, vb) in domains {
                    hosts.insert(VirtualHost {
                        domain,
                        https_redirect: vb.https_redirect,
                        routes: order(vb.placed),
                    });
                }
                (
                    port,
                    Listener {
                        port,
                        hosts,
                        grpc_web: false,
                    },
                )
            })
            .collect()
    }
}

/// The gateways a VirtualService binds to by its own `gateways` (all of them when it names none).
pub(crate) fn binding<'g>(
    vs: &VirtualService,
    gws: &'g Gateways,
    diag: &mut Diag,
    key: &ResourceKey,
) -> BTreeSet<&'g str> {
    let ns = vs.metadata.namespace();
    let mut bound = BTreeSet::new();
    for (i, raw) in vs.spec.gateways.iter().enumerate() {
        let Some(label) = resolve_gateway_ref(raw, ns) else {
            continue;
        };
        if let Some(existing) = gws.label(&label) {
            bound.insert(existing);
        } else {
            diag.push(
                key,
                Problem::Ref("GatewayNotFound"),
                &format!("spec.gateways[{i}]"),
                &format!("gateway {label:?} not found"),
            );
        }
    }
    if gws.implicit {
        return BTreeSet::from([IMPLICIT]);
    }
    if vs.spec.gateways.is_empty() {
        return gws.by_label.keys().map(String::as_str).collect();
    }
    if vs.spec.gateways.iter().all(|g| g.trim() == MESH) {
        diag.push(
            key,
            Problem::Part,
            "spec.gateways",
            "only \"mesh\" is listed and there is no mesh here: no gateway serves this VirtualService",
        );
    }
    bound
}

/// The match entries of a rule that apply at gateway `g`, split into the part that stays in place
/// and the catch-all part that moves to the end (as Envoy routes are one per match entry). `None`
/// means that part is not served; `Some(vec![])` on a rule without `match` means "everything".
/// Entries after the first catch-all are never reached, and are dropped (as Istio drops them).
fn split_entries(
    t: &RuleTemplate,
    g: &str,
    bound: &BTreeSet<&str>,
    implicit: bool,
) -> (Option<Vec<usize>>, Option<Vec<usize>>) {
    if !t.has_match {
        return (None, (implicit || bound.contains(g)).then(Vec::new));
    }
    let mut in_place = Vec::new();
    let mut catch_all = Vec::new();
    for (k, e) in t.entries.iter().enumerate() {
        let applies = implicit
            || match &e.gateways {
                Some(list) => list.iter().any(|(_, x)| x == g),
                None => bound.contains(g),
            };
        if !applies || e.compiled.is_none() {
            continue;
        }
        if e.catch_all {
            catch_all.push(k);
            break;
        }
        in_place.push(k);
    }
    (
        (!in_place.is_empty()).then_some(in_place),
        (!catch_all.is_empty()).then_some(catch_all),
    )
}

/// Creation order then rule order; duplicates (one rule reached through several servers or
/// gateways with the same entries) once; catch-alls last, keeping their relative order.
fn order(mut placed: Vec<Placed>) -> Vec<Arc<Route>> {
    placed.sort_by_key(|p| (p.rank, p.rule));
    let mut seen: HashSet<(usize, usize, bool, Vec<usize>)> = HashSet::new();
    placed.retain(|p| seen.insert((p.rank, p.rule, p.catch_all, p.entries.clone())));
    let (head, tail): (Vec<Placed>, Vec<Placed>) = placed.into_iter().partition(|p| !p.catch_all);
    head.into_iter().chain(tail).map(|p| p.route).collect()
}

pub(crate) fn instantiate(
    t: &RuleTemplate,
    vs_label: &str,
    gateway: &str,
    entries: &[usize],
    listener_port: u16,
    reg: &mut Registry<'_>,
) -> Route {
    // Sized up front: a collect through `filter_map` starts at four entries (864 bytes) where
    // almost every route has one, and routes are the bulk of a large snapshot.
    let mut matches = Vec::with_capacity(entries.len());
    matches.extend(
        entries
            .iter()
            .filter_map(|k| t.entries.get(*k).and_then(|e| e.compiled.clone())),
    );
    let mut target = |d: &DestTemplate| -> (u16, Target) {
        let port = d.port.unwrap_or(listener_port);
        let target = match &d.no_cluster {
            Some(reason) => Target::NoCluster {
                reason: reason.clone(),
            },
            None => Target::Cluster(reg.cluster(&d.host_key, port, d.subset.as_deref())),
        };
        (port, target)
    };
    let action = match &t.action {
        ActionTemplate::Redirect(r) => RouteAction::Redirect(r.clone()),
        ActionTemplate::Direct(d) => RouteAction::Direct(d.clone()),
        ActionTemplate::Forward {
            destinations,
            total_weight,
            rewrite,
        } => RouteAction::Forward(Forward {
            destinations: destinations
                .iter()
                .map(|d| {
                    let (port, target) = target(d);
                    WeightedDestination {
                        weight: d.weight,
                        host: d.host.clone(),
                        subset: d.subset.clone(),
                        port,
                        target,
                        request_headers: d.request_headers.clone(),
                        response_headers: d.response_headers.clone(),
                    }
                })
                .collect(),
            total_weight: *total_weight,
            rewrite: rewrite.clone(),
        }),
    };
    let mirrors = t
        .mirrors
        .iter()
        .map(|d| {
            let (port, target) = target(d);
            Mirror {
                host: d.host.clone(),
                port,
                target,
                percent: d.percent,
            }
        })
        .collect();
    Route {
        id: t.id.clone(),
        gateway: gateway.to_string(),
        virtual_service: vs_label.to_string(),
        matches,
        action,
        request_headers: t.request_headers.clone(),
        response_headers: t.response_headers.clone(),
        timeout: t.timeout,
        retries: t.retries.clone().unwrap_or_default(),
        fault: t.fault.clone(),
        mirrors,
        cors: t.cors.clone(),
    }
}
