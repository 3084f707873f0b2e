//! RequestAuthentications and AuthorizationPolicies compiled per gateway workload.
//!
//! A gateway here is a workload the way Istio's ingress gateway pod is one: it runs in the
//! gateway's own namespace (`--namespace`, Istio's `istio-system`) with the labels its Gateway's
//! `selector` names (an Ingress or the implicit gateway: Istio's default `istio: ingressgateway`).
//! A policy applies as Istio attaches it to that pod (`pilot/pkg/model/policyattachment.go`):
//! from the workload's namespace or the root namespace (`meshConfig.rootNamespace`, the same
//! namespace unless told otherwise); without a selector to every workload there, with one when
//! its labels are a subset of the workload's; with `targetRef(s)` never (they name Services and
//! Gateway API objects, which a standalone gateway has none of). A policy that applies to no
//! gateway says so in its status.

use super::diag::{Diag, Problem};
use super::hosts::creation_order;
use crate::ir::authz::Cidr;
use crate::ir::authz::{
    Attribute, Condition, GatewaySecurity, PathTemplate, Policy, Rule, StrMatch, ValueMatch,
};
use crate::ir::jwt::{
    parse_jwks, JwksSource, JwtProvider, KeyNote, TokenLocation, CLOCK_SKEW, DEFAULT_JWKS_TIMEOUT,
    DEFAULT_SPACE_DELIMITED_CLAIMS,
};
use crate::resource::{
    AuthorizationAction, AuthorizationPolicy, JwtPresence, ObjectMeta, RequestAuthentication,
    ResourceKey, ResourceSet, Source, WorkloadSelector,
};
use crate::validate::{parse_go_bool, parse_jwks_uri, DRY_RUN_ANNOTATION};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The labels of Istio's default ingress gateway pod, which serves Ingresses
/// (`meshConfig.ingressSelector`) and here the implicit gateway.
pub const DEFAULT_INGRESS_LABELS: [(&str, &str); 1] = [("istio", "ingressgateway")];

/// One gateway workload: where it runs and its labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// Istio's attachment of a selector-or-targetRef policy in `ns` to `w`.
fn attaches(
    ns: &str,
    selector: Option<&WorkloadSelector>,
    targeted: bool,
    w: &Workload,
    root_namespace: &str,
) -> bool {
    if targeted || (ns != w.namespace && ns != root_namespace) {
        return false;
    }
    selector.is_none_or(|s| {
        s.match_labels
            .iter()
            .all(|(k, v)| w.labels.get(k) == Some(v))
    })
}

/// Compiles the security of every gateway: `gateways` maps each gateway label (`ns/name`) to its
/// workload. Gateways with the same workload share one [`GatewaySecurity`]; gateways with nothing
/// that applies are left out.
pub(crate) fn compile(
    set: &ResourceSet,
    gateways: &BTreeMap<String, Workload>,
    root_namespace: &str,
    diag: &mut Diag,
) -> BTreeMap<String, Arc<GatewaySecurity>> {
    let mut ras: Vec<&RequestAuthentication> = set.request_authentications().collect();
    ras.sort_by_key(|r| creation_order(&r.metadata));
    let mut aps: Vec<&AuthorizationPolicy> = set.authorization_policies().collect();
    aps.sort_by_key(|a| creation_order(&a.metadata));

    let providers: Vec<Vec<Arc<JwtProvider>>> = ras.iter().map(|r| providers(r, diag)).collect();
    let policies: Vec<Arc<Policy>> = aps.iter().map(|a| Arc::new(policy(a, diag))).collect();

    let mut by_workload: BTreeMap<&Workload, Arc<GatewaySecurity>> = BTreeMap::new();
    let mut used_ra = vec![false; ras.len()];
    let mut used_ap = vec![false; aps.len()];
    let mut out = BTreeMap::new();
    for (label, w) in gateways {
        let sec = by_workload.entry(w).or_insert_with(|| {
            let mut sec = GatewaySecurity::default();
            for (i, ra) in ras.iter().enumerate() {
                let targeted = ra.spec.target_ref.is_some() || !ra.spec.target_refs.is_empty();
                let ns = ra.metadata.namespace();
                if attaches(ns, ra.spec.selector.as_ref(), targeted, w, root_namespace) {
                    used_ra[i] = true;
                    sec.jwt.extend(providers[i].iter().cloned());
                }
            }
            for (i, ap) in aps.iter().enumerate() {
                let targeted = ap.spec.target_ref.is_some() || !ap.spec.target_refs.is_empty();
                let ns = ap.metadata.namespace();
                if !attaches(ns, ap.spec.selector.as_ref(), targeted, w, root_namespace) {
                    continue;
                }
                used_ap[i] = true;
                let p = policies[i].clone();
                match p.action {
                    AuthorizationAction::Custom => sec.custom.push(p),
                    AuthorizationAction::Deny => sec.deny.push(p),
                    AuthorizationAction::Allow => sec.allow.push(p),
                    AuthorizationAction::Audit => sec.audit.push(p),
                }
            }
            Arc::new(sec)
        });
        if !sec.is_empty() {
            out.insert(label.clone(), sec.clone());
        }
    }
    let unattached = |meta: &ObjectMeta, targeted: bool| {
        if targeted {
            format!("applies to no gateway: targetRef(s) name Services and Gateway API objects, which this gateway does not have; use a selector matching the Gateway's selector in namespace {root_namespace}")
        } else if meta.namespace() != root_namespace
            && !gateways.values().any(|w| w.namespace == meta.namespace())
        {
            format!("applies to no gateway: the gateway's workload runs in namespace {root_namespace}, and a policy applies only to workloads of its own namespace or, from the root namespace {root_namespace}, to all")
        } else {
            "applies to no gateway: the selector matches no Gateway's selector".to_string()
        }
    };
    for (i, ra) in ras.iter().enumerate() {
        if !used_ra[i] {
            let targeted = ra.spec.target_ref.is_some() || !ra.spec.target_refs.is_empty();
            diag.push(
                &key_of(&ra.metadata, true),
                Problem::Part,
                "spec",
                &unattached(&ra.metadata, targeted),
            );
        }
    }
    for (i, ap) in aps.iter().enumerate() {
        if !used_ap[i] {
            let targeted = ap.spec.target_ref.is_some() || !ap.spec.target_refs.is_empty();
            diag.push(
                &key_of(&ap.metadata, false),
                Problem::Part,
                "spec",
                &unattached(&ap.metadata, targeted),
            );
        }
    }
    for (label, sec) in &out {
        let providers: std::collections::BTreeSet<&str> = sec
            .custom
            .iter()
            .filter_map(|p| p.provider.as_deref())
            .collect();
        if providers.len() > 1 {
            for p in &sec.custom {
                if let Some(k) = key_from_id(&p.id) {
                    diag.push(&k, Problem::Part, "spec.provider.name", &format!("gateway {label} has CUSTOM policies of several providers; Istio allows one provider per workload, and each request asks the provider of the first matching policy"));
                }
            }
        }
    }
    out
}

fn key_of(meta: &ObjectMeta, ra: bool) -> ResourceKey {
    let kind = if ra {
        crate::resource::Kind::RequestAuthentication
    } else {
        crate::resource::Kind::AuthorizationPolicy
    };
    ResourceKey::new(kind, meta.namespace(), meta.name.clone())
}

fn key_from_id(id: &str) -> Option<ResourceKey> {
    let rest = id.strip_prefix("ap/")?;
    let (ns, name) = rest.split_once('/')?;
    Some(ResourceKey::new(
        crate::resource::Kind::AuthorizationPolicy,
        ns,
        name,
    ))
}

/// The JWT rules of one RequestAuthentication.
fn providers(ra: &RequestAuthentication, diag: &mut Diag) -> Vec<Arc<JwtProvider>> {
    let key = key_of(&ra.metadata, true);
    let mut out = Vec::new();
    for (i, r) in ra.spec.jwt_rules.iter().enumerate() {
        let field = format!("spec.jwtRules[{i}]");
        let timeout = r
            .timeout
            .as_ref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(DEFAULT_JWKS_TIMEOUT);
        let keys = if !r.jwks.is_empty() {
            match parse_jwks(&r.jwks) {
                Ok(set) => {
                    for (k, note) in set.notes() {
                        if let KeyNote::Unsupported(why) = note {
                            diag.push(
                                &key,
                                Problem::Part,
                                &format!("{field}.jwks"),
                                &format!("key {k}: {why}; tokens signed with it are refused"),
                            );
                        }
                    }
                    JwksSource::Inline(Arc::new(set))
                }
                Err(e) => {
                    diag.push(
                        &key,
                        Problem::Part,
                        &format!("{field}.jwks"),
                        &format!("{e}: every token of this rule is refused"),
                    );
                    JwksSource::Inline(Arc::default())
                }
            }
        } else if !r.jwks_uri.is_empty() {
            match parse_jwks_uri(&r.jwks_uri) {
                Ok((https, host, port)) => JwksSource::Uri {
                    uri: r.jwks_uri.clone(),
                    https,
                    host,
                    port,
                    timeout,
                },
                Err(e) => {
                    diag.push(
                        &key,
                        Problem::Part,
                        &format!("{field}.jwksUri"),
                        &format!("{e}: every token of this rule is refused"),
                    );
                    JwksSource::Inline(Arc::default())
                }
            }
        } else {
            JwksSource::Discovery {
                issuer: r.issuer.clone(),
                timeout,
            }
        };
        let mut locations: Vec<TokenLocation> = r
            .from_headers
            .iter()
            .map(|h| TokenLocation::Header {
                name: h.name.to_ascii_lowercase(),
                prefix: h.prefix.clone(),
            })
            .collect();
        locations.extend(r.from_params.iter().cloned().map(TokenLocation::Param));
        locations.extend(r.from_cookies.iter().cloned().map(TokenLocation::Cookie));
        if locations.is_empty() {
            locations = TokenLocation::defaults();
        }
        let header_name = |h: &str, at: String, diag: &mut Diag| -> Option<String> {
            let lower = h.to_ascii_lowercase();
            if http::HeaderName::from_bytes(lower.as_bytes()).is_ok() {
                Some(lower)
            } else {
                diag.push(
                    &key,
                    Problem::Part,
                    &at,
                    &format!("{h:?} is not a header name: not added"),
                );
                None
            }
        };
        let output_payload_to_header = (!r.output_payload_to_header.is_empty())
            .then(|| {
                header_name(
                    &r.output_payload_to_header,
                    format!("{field}.outputPayloadToHeader"),
                    diag,
                )
            })
            .flatten();
        let output_claim_to_headers = r
            .output_claim_to_headers
            .iter()
            .enumerate()
            .filter_map(|(j, c)| {
                let h = header_name(
                    &c.header,
                    format!("{field}.outputClaimToHeaders[{j}].header"),
                    diag,
                )?;
                Some((h, c.claim.clone()))
            })
            .collect();
        let mut space_delimited_claims: Vec<String> = DEFAULT_SPACE_DELIMITED_CLAIMS
            .iter()
            .map(|s| s.to_string())
            .collect();
        for c in &r.space_delimited_claims {
            if !space_delimited_claims.contains(c) {
                space_delimited_claims.push(c.clone());
            }
        }
        space_delimited_claims.sort();
        out.push(Arc::new(JwtProvider {
            id: format!(
                "ra/{}/{}/jwtRules/{i}",
                ra.metadata.namespace(),
                ra.metadata.name
            ),
            issuer: r.issuer.clone(),
            audiences: r.audiences.clone(),
            keys,
            locations,
            forward_original_token: r.forward_original_token,
            output_payload_to_header,
            output_claim_to_headers,
            clock_skew: CLOCK_SKEW,
            space_delimited_claims,
            required: r.presence == Some(JwtPresence::Required),
        }));
    }
    out
}

/// One AuthorizationPolicy.
fn policy(ap: &AuthorizationPolicy, diag: &mut Diag) -> Policy {
    let key = key_of(&ap.metadata, false);
    let action = ap.spec.action();
    let dry_run = ap
        .metadata
        .annotations
        .get(DRY_RUN_ANNOTATION)
        .and_then(|v| parse_go_bool(v))
        .unwrap_or(false);
    let mut warn = |field: String, msg: &str| diag.push(&key, Problem::Part, &field, msg);
    let rules = ap
        .spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let rp = format!("spec.rules[{i}]");
            let from = r
                .from
                .iter()
                .filter_map(|f| {
                    f.source
                        .as_ref()
                        .map(|s| source(s, &ap.metadata))
                })
                .collect();
            let to = r
                .to
                .iter()
                .filter_map(|t| t.operation.as_ref())
                .map(|o| {
                    let mut cs = Vec::new();
                    push(&mut cs, Attribute::Host, &o.hosts, &o.not_hosts, |v| {
                        ValueMatch::Str(StrMatch::header(v, true))
                    });
                    push(&mut cs, Attribute::Port, &o.ports, &o.not_ports, port);
                    push(&mut cs, Attribute::Method, &o.methods, &o.not_methods, |v| {
                        ValueMatch::Str(StrMatch::header(v, false))
                    });
                    push(&mut cs, Attribute::Path, &o.paths, &o.not_paths, path);
                    cs
                })
                .collect();
            let when = r
                .when
                .iter()
                .enumerate()
                .filter_map(|(k, c)| {
                    let at = format!("{rp}.when[{k}].key");
                    let attr = when_attribute(&c.key)?;
                    if let Attribute::EnvoyMetadata(_) = attr {
                        warn(at, "Envoy filter metadata does not exist at this gateway: the condition never matches its values");
                    }
                    let ns = ap.metadata.namespace();
                    let compile = |v: &str| when_value(&c.key, &attr, v, ns);
                    Some(Condition {
                        values: c.values.iter().map(|v| compile(v)).collect(),
                        not_values: c.not_values.iter().map(|v| compile(v)).collect(),
                        attribute: attr,
                    })
                })
                .collect();
            Rule { from, to, when }
        })
        .collect();
    Policy {
        id: format!("ap/{}/{}", ap.metadata.namespace(), ap.metadata.name),
        action,
        provider: ap.spec.provider.as_ref().map(|p| p.name.clone()),
        dry_run,
        rules,
    }
}

fn push(
    cs: &mut Vec<Condition>,
    attribute: Attribute,
    values: &[String],
    not_values: &[String],
    compile: impl Fn(&str) -> ValueMatch,
) {
    if values.is_empty() && not_values.is_empty() {
        return;
    }
    cs.push(Condition {
        attribute,
        values: values.iter().map(|v| compile(v)).collect(),
        not_values: not_values.iter().map(|v| compile(v)).collect(),
    });
}

fn source(s: &Source, meta: &ObjectMeta) -> Vec<Condition> {
    let mut cs = Vec::new();
    push(
        &mut cs,
        Attribute::Principal,
        &s.principals,
        &s.not_principals,
        principal,
    );
    push(
        &mut cs,
        Attribute::RequestPrincipal,
        &s.request_principals,
        &s.not_request_principals,
        request_principal,
    );
    push(
        &mut cs,
        Attribute::Principal,
        &s.service_accounts,
        &s.not_service_accounts,
        |v| service_account(meta.namespace(), v),
    );
    push(
        &mut cs,
        Attribute::Principal,
        &s.trust_domains,
        &s.not_trust_domains,
        trust_domain,
    );
    push(
        &mut cs,
        Attribute::Principal,
        &s.namespaces,
        &s.not_namespaces,
        namespace,
    );
    push(
        &mut cs,
        Attribute::RemoteIp,
        &s.remote_ip_blocks,
        &s.not_remote_ip_blocks,
        cidr,
    );
    push(
        &mut cs,
        Attribute::SourceIp,
        &s.ip_blocks,
        &s.not_ip_blocks,
        cidr,
    );
    cs
}

fn cidr(v: &str) -> ValueMatch {
    Cidr::parse(v).map_or(ValueMatch::Never, ValueMatch::Cidr)
}

fn port(v: &str) -> ValueMatch {
    v.parse::<u16>().map_or(ValueMatch::Never, ValueMatch::Port)
}

/// Istio's `pathGenerator`: a template with `{*}`/`{**}`, else the string forms.
pub(crate) fn path(v: &str) -> ValueMatch {
    if v.contains("{*}") || v.contains("{**}") {
        PathTemplate::compile(v).map_or(ValueMatch::Never, ValueMatch::Template)
    } else {
        ValueMatch::Str(StrMatch::istio(v, false))
    }
}

fn anchored(re: &str) -> ValueMatch {
    regex::Regex::new(&format!("^(?:{re})$"))
        .map_or(ValueMatch::Never, |r| ValueMatch::Str(StrMatch::Regex(r)))
}

/// `srcPrincipalGenerator`: `StringMatcherWithPrefix(v, "spiffe://")`.
fn principal(v: &str) -> ValueMatch {
    const P: &str = "spiffe://";
    if v == "*" {
        ValueMatch::Str(StrMatch::NonEmpty)
    } else if let Some(s) = v.strip_prefix('*') {
        anchored(&format!("{}.*{}", regex::escape(P), regex::escape(s)))
    } else if let Some(p) = v.strip_suffix('*') {
        ValueMatch::Str(StrMatch::Prefix(format!("{P}{p}"), false))
    } else {
        ValueMatch::Str(StrMatch::Exact(format!("{P}{v}"), false))
    }
}

/// `srcNamespaceGenerator`: `.*/ns/<ns>/.*` with `*` as `.*`.
fn namespace(v: &str) -> ValueMatch {
    let ns: Vec<String> = v.split('*').map(regex::escape).collect();
    anchored(&format!(".*/ns/{}/.*", ns.join(".*")))
}

/// `serviceAccountRegex`: `ns/sa`, or `sa` in the policy's namespace.
fn service_account(policy_ns: &str, v: &str) -> ValueMatch {
    let (ns, sa) = v.split_once('/').unwrap_or((policy_ns, v));
    anchored(&format!(
        "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
        regex::escape(ns),
        regex::escape(sa)
    ))
}

/// `srcTrustDomainGenerator`.
fn trust_domain(v: &str) -> ValueMatch {
    if v == "*" {
        ValueMatch::Str(StrMatch::Prefix("spiffe://".into(), false))
    } else if !v.contains('*') {
        ValueMatch::Str(StrMatch::Prefix(format!("spiffe://{v}/"), false))
    } else {
        let (a, b) = v.split_once('*').unwrap_or((v, ""));
        anchored(&format!(
            "spiffe://{}[^/]*{}/.*",
            regex::escape(a),
            regex::escape(b)
        ))
    }
}

/// `requestPrincipalGenerator`: `iss/sub`, split at the last `/` (issuers are often URLs).
fn request_principal(v: &str) -> ValueMatch {
    let exact = |s: &str| StrMatch::Exact(s.to_string(), false);
    let (iss, sub) = match v.rfind('/') {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let (iss, sub) = if v == "*" {
        (StrMatch::NonEmpty, StrMatch::NonEmpty)
    } else if v.starts_with('*') {
        match sub {
            Some(sub) if iss == "*" => (StrMatch::NonEmpty, exact(sub)),
            Some(sub) => (
                StrMatch::Suffix(iss.trim_start_matches('*').to_string(), false),
                exact(sub),
            ),
            None => (
                StrMatch::NonEmpty,
                StrMatch::Suffix(v.trim_start_matches('*').to_string(), false),
            ),
        }
    } else if v.ends_with('*') {
        match sub {
            Some("*") => (exact(iss), StrMatch::NonEmpty),
            Some(sub) => (
                exact(iss),
                StrMatch::Prefix(sub.trim_end_matches('*').to_string(), false),
            ),
            None => (
                StrMatch::Prefix(v.trim_end_matches('*').to_string(), false),
                StrMatch::NonEmpty,
            ),
        }
    } else {
        (exact(iss), exact(sub.unwrap_or_default()))
    };
    ValueMatch::RequestPrincipal { iss, sub }
}

/// The attribute of a `when` key (validation has refused unknown ones).
fn when_attribute(key: &str) -> Option<Attribute> {
    let inner = |prefix: &str| -> Option<String> {
        key.strip_prefix(prefix)?
            .strip_prefix('[')?
            .strip_suffix(']')
            .map(str::to_string)
    };
    Some(match key {
        "source.ip" => Attribute::SourceIp,
        "remote.ip" => Attribute::RemoteIp,
        "destination.ip" => Attribute::DestinationIp,
        "destination.port" => Attribute::Port,
        "source.principal"
        | "source.namespace"
        | "source.serviceAccount"
        | "source.trustDomain" => Attribute::Principal,
        "request.auth.principal" => Attribute::RequestPrincipal,
        "request.auth.audiences" => Attribute::Audiences,
        "request.auth.presenter" => Attribute::Presenter,
        "connection.sni" => Attribute::Sni,
        k if k.starts_with("request.headers") => {
            Attribute::Header(inner("request.headers")?.to_ascii_lowercase())
        }
        k if k.starts_with("request.auth.claims") => {
            Attribute::Claim(claim_path(k.strip_prefix("request.auth.claims")?))
        }
        k if k.starts_with("experimental.envoy.filters.") => {
            Attribute::EnvoyMetadata(k.to_string())
        }
        _ => return None,
    })
}

/// Istio's `extractNameInNestedBrackets`: `[a][b]` is `["a", "b"]`; anything else is one name
/// between the outer brackets (`[a.b]` is `["a.b"]`).
pub(crate) fn claim_path(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let Some(r) = rest.strip_prefix('[') else {
            break;
        };
        match r.find(['[', ']']) {
            Some(i) if r.as_bytes()[i] == b']' => {
                out.push(r[..i].to_string());
                rest = &r[i + 1..];
            }
            _ => break,
        }
    }
    if rest.is_empty() && !out.is_empty() {
        return out;
    }
    let whole = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    vec![whole.to_string()]
}

fn when_value(key: &str, attr: &Attribute, v: &str, policy_ns: &str) -> ValueMatch {
    match attr {
        Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => cidr(v),
        Attribute::Port => port(v),
        Attribute::RequestPrincipal => request_principal(v),
        Attribute::Header(_) => ValueMatch::Str(StrMatch::header(v, false)),
        Attribute::EnvoyMetadata(_) => ValueMatch::Never,
        // The four `source.*` identity keys share the attribute; the key picks the generator.
        Attribute::Principal => match key {
            "source.principal" => principal(v),
            "source.namespace" => namespace(v),
            "source.serviceAccount" => service_account(policy_ns, v),
            "source.trustDomain" => trust_domain(v),
            _ => ValueMatch::Never,
        },
        _ => ValueMatch::Str(StrMatch::istio(v, false)),
    }
}

/// Every gateway label routes carry, with its workload: a Gateway's selector, or Istio's default
/// ingress gateway labels for Ingresses and the implicit gateway.
pub(crate) fn workloads(
    set: &ResourceSet,
    gws: &super::gateways::Gateways,
    listeners: &BTreeMap<u16, crate::ir::Listener>,
    gateway_namespace: &str,
) -> BTreeMap<String, Workload> {
    let selectors: BTreeMap<String, &BTreeMap<String, String>> = set
        .gateways()
        .map(|g| {
            (
                format!("{}/{}", g.metadata.namespace(), g.metadata.name),
                &g.spec.selector,
            )
        })
        .collect();
    let default_labels: BTreeMap<String, String> = DEFAULT_INGRESS_LABELS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut labels: Vec<&str> = gws.by_label.keys().map(String::as_str).collect();
    for l in listeners.values() {
        for vh in &l.hosts.vhosts {
            labels.extend(vh.routes.iter().map(|r| r.gateway.as_str()));
        }
    }
    labels
        .into_iter()
        .map(|label| {
            let labels = selectors
                .get(label)
                .map_or_else(|| default_labels.clone(), |s| (*s).clone());
            (
                label.to_string(),
                Workload {
                    namespace: gateway_namespace.to_string(),
                    labels,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::resource_from_value;
    use crate::translate::translate;
    use serde_json::{json, Value};

    fn gateway(name: &str, selector: Value) -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
               "metadata": {"name": name, "namespace": "default"},
               "spec": {"selector": selector,
                        "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}})
    }

    fn set(docs: Vec<Value>) -> ResourceSet {
        let mut s = ResourceSet::new();
        for d in docs {
            s.insert(resource_from_value(d, None).expect("test resource decodes"));
        }
        s
    }

    fn ra(ns: &str, spec: Value) -> Value {
        json!({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
               "metadata": {"name": "jwt", "namespace": ns}, "spec": spec})
    }

    #[test]
    fn jwt_rules_compile_with_istios_defaults() {
        let t = translate(&set(vec![
            gateway("gw", json!({"istio": "ingressgateway"})),
            ra(
                "istio-system",
                json!({"jwtRules": [
                    {"issuer": "https://a", "jwksUri": "https://keys.example/jwks"},
                    {"issuer": "https://b", "fromHeaders": [{"name": "X-Token"}], "fromCookies": ["t"],
                     "outputClaimToHeaders": [{"header": "X-Sub", "claim": "sub"}],
                     "spaceDelimitedClaims": ["roles"], "timeout": "2s"},
                ]}),
            ),
        ]));
        let sec = t.snapshot.security_for("default/gw").expect("applies");
        let (a, b) = (&sec.jwt[0], &sec.jwt[1]);
        assert_eq!(a.id, "ra/istio-system/jwt/jwtRules/0");
        assert_eq!(a.locations, TokenLocation::defaults());
        assert!(
            matches!(&a.keys, JwksSource::Uri { host, port: 443, https: true, timeout, .. }
            if host == "keys.example" && *timeout == DEFAULT_JWKS_TIMEOUT)
        );
        assert_eq!(a.clock_skew, CLOCK_SKEW);
        assert!(
            matches!(&b.keys, JwksSource::Discovery { issuer, timeout } if issuer == "https://b" && timeout.as_secs() == 2)
        );
        assert_eq!(
            b.locations,
            [
                TokenLocation::Header {
                    name: "x-token".into(),
                    prefix: String::new()
                },
                TokenLocation::Cookie("t".into())
            ]
        );
        assert_eq!(
            b.output_claim_to_headers,
            [("x-sub".to_string(), "sub".to_string())]
        );
        assert_eq!(b.space_delimited_claims, ["permission", "roles", "scope"]);
    }

    #[test]
    fn a_root_namespace_policy_without_selector_applies_to_every_gateway_and_selectors_pick() {
        let ap = |name: &str, spec: Value| {
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                   "metadata": {"name": name, "namespace": "istio-system"}, "spec": spec})
        };
        let t = translate(&set(vec![
            gateway("public", json!({"istio": "ingressgateway"})),
            gateway("internal", json!({"istio": "internal"})),
            ap(
                "all",
                json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/debug*"]}}]}]}),
            ),
            ap(
                "internal-only",
                json!({"selector": {"matchLabels": {"istio": "internal"}}, "rules": [{}]}),
            ),
        ]));
        let public = t.snapshot.security_for("default/public").expect("public");
        let internal = t
            .snapshot
            .security_for("default/internal")
            .expect("internal");
        assert_eq!((public.deny.len(), public.allow.len()), (1, 0));
        assert_eq!((internal.deny.len(), internal.allow.len()), (1, 1));
    }

    #[test]
    fn the_implicit_gateway_has_istios_default_ingress_labels() {
        let t = translate(&set(vec![ra(
            "istio-system",
            json!({"selector": {"matchLabels": {"istio": "ingressgateway"}}, "jwtRules": [{"issuer": "i", "jwks": "{\"keys\":[]}"}]}),
        )]));
        assert_eq!(
            t.snapshot.security_for("implicit").map(|s| s.jwt.len()),
            Some(1)
        );
    }

    #[test]
    fn a_targeted_policy_applies_to_no_gateway_and_says_so() {
        let t = translate(&set(vec![
            gateway("gw", json!({"istio": "ingressgateway"})),
            ra(
                "istio-system",
                json!({"targetRefs": [{"kind": "Service", "name": "x"}]}),
            ),
        ]));
        assert!(t.snapshot.security.is_empty());
        let key = ResourceKey::new(
            crate::resource::Kind::RequestAuthentication,
            "istio-system",
            "jwt",
        );
        assert!(
            t.warnings_for(&key)[0].contains("targetRef"),
            "{:?}",
            t.warnings_for(&key)
        );
    }

    #[test]
    fn claim_keys_follow_istios_bracket_rules() {
        assert_eq!(claim_path("[a][b]"), ["a", "b"]);
        assert_eq!(claim_path("[a.b]"), ["a.b"]);
        assert_eq!(claim_path("[groups]"), ["groups"]);
    }

    #[test]
    fn request_principal_values_split_at_the_last_slash() {
        let m = |v: &str, iss: &str, sub: &str| match request_principal(v) {
            ValueMatch::RequestPrincipal { iss: i, sub: s } => i.matches(iss) && s.matches(sub),
            _ => false,
        };
        assert!(m(
            "https://a.example/x/alice",
            "https://a.example/x",
            "alice"
        ));
        assert!(m("*/alice", "anything", "alice"));
        assert!(!m("*/alice", "anything", "bob"));
        assert!(m("https://a.example/*", "https://a.example", "bob"));
        assert!(m("*", "x", "y"));
        assert!(!m("*", "", "y"));
        assert!(m("*example", "i", "my.example"));
    }
}
