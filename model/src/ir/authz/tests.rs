//! Unit tests of authorization through translation: policies in YAML, compiled for a gateway,
//! decided for request facts. Each test names the rule it pins.

use super::*;
use crate::ir::jwt::Claims;
use crate::ir::Snapshot;
use crate::resource::{resource_from_value, ResourceSet};
use crate::translate::translate;
use serde_json::{json, Value};

fn gateway() -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
           "metadata": {"name": "gw", "namespace": "istio-system"},
           "spec": {"selector": {"istio": "ingressgateway"},
                    "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}})
}

fn ap(name: &str, ns: &str, spec: Value) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn snapshot(docs: Vec<Value>) -> Snapshot {
    let mut set = ResourceSet::new();
    for d in docs {
        set.insert(resource_from_value(d, None).expect("test resource decodes"));
    }
    translate(&set).snapshot
}

fn security(docs: Vec<Value>) -> Arc<GatewaySecurity> {
    let mut all = vec![gateway()];
    all.extend(docs);
    snapshot(all)
        .security
        .get("istio-system/gw")
        .cloned()
        .unwrap_or_default()
}

struct Req {
    host: &'static str,
    method: &'static str,
    path: &'static str,
    headers: http::HeaderMap,
    source: Option<IpAddr>,
    remote: Option<IpAddr>,
    principal: Option<&'static str>,
    claims: Option<Claims>,
}

fn req(method: &'static str, path: &'static str) -> Req {
    Req {
        host: "shop.example.com",
        method,
        path,
        headers: http::HeaderMap::new(),
        source: Some("10.0.0.9".parse().expect("ip")),
        remote: Some("203.0.113.7".parse().expect("ip")),
        principal: None,
        claims: None,
    }
}

fn decide(sec: &GatewaySecurity, r: &Req) -> Outcome {
    let none: Vec<String> = Vec::new();
    let facts = RequestFacts {
        host: r.host,
        port: 8080,
        method: r.method,
        path: r.path,
        headers: &r.headers,
        source_ip: r.source,
        remote_ip: r.remote,
        destination_ip: None,
        principal: r.principal,
        jwt: r.claims.as_ref(),
        space_delimited_claims: &none,
        sni: None,
    };
    sec.authorize(&facts).outcome
}

fn allowed(o: &Outcome) -> bool {
    matches!(o, Outcome::Allow { .. })
}

#[test]
fn no_policy_allows_everything() {
    assert!(allowed(&decide(&security(vec![]), &req("GET", "/"))));
}

#[test]
fn with_an_allow_policy_a_request_no_rule_matches_is_denied() {
    let sec = security(vec![ap(
        "a",
        "istio-system",
        json!({"rules": [{"to": [{"operation": {"paths": ["/public/*"]}}]}]}),
    )]);
    assert_eq!(
        decide(&sec, &req("GET", "/public/x?y=1")),
        Outcome::Allow {
            policy: Some("ap/istio-system/a".into())
        }
    );
    assert_eq!(
        decide(&sec, &req("GET", "/private")),
        Outcome::Deny { policy: None }
    );
}

#[test]
fn an_allow_policy_without_rules_denies_all() {
    let sec = security(vec![ap("a", "istio-system", json!({}))]);
    assert_eq!(
        decide(&sec, &req("GET", "/")),
        Outcome::Deny { policy: None }
    );
}

#[test]
fn deny_beats_allow() {
    let sec = security(vec![
        ap("allow-all", "istio-system", json!({"rules": [{}]})),
        ap(
            "no-delete",
            "istio-system",
            json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["DELETE"]}}]}]}),
        ),
    ]);
    assert!(allowed(&decide(&sec, &req("GET", "/"))));
    assert_eq!(
        decide(&sec, &req("DELETE", "/")),
        Outcome::Deny {
            policy: Some("ap/istio-system/no-delete".into())
        }
    );
}

#[test]
fn custom_is_asked_before_deny() {
    let sec = security(vec![
        ap(
            "deny",
            "istio-system",
            json!({"action": "DENY", "rules": [{}]}),
        ),
        ap(
            "ext",
            "istio-system",
            json!({"action": "CUSTOM", "provider": {"name": "authz"}, "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}),
        ),
    ]);
    assert_eq!(
        decide(&sec, &req("GET", "/admin/x")),
        Outcome::Custom {
            provider: "authz".into(),
            policy: "ap/istio-system/ext".into()
        }
    );
    assert!(matches!(
        decide(&sec, &req("GET", "/other")),
        Outcome::Deny { .. }
    ));
}

#[test]
fn audit_only_marks_and_dry_run_is_not_enforced() {
    let mut dry = ap(
        "dry",
        "istio-system",
        json!({"action": "DENY", "rules": [{}]}),
    );
    dry["metadata"]["annotations"] = json!({"istio.io/dry-run": "true"});
    let sec = security(vec![
        dry,
        ap(
            "audit",
            "istio-system",
            json!({"action": "AUDIT", "rules": [{}]}),
        ),
    ]);
    let none: Vec<String> = Vec::new();
    let r = req("GET", "/");
    let facts = RequestFacts {
        host: r.host,
        port: 80,
        method: r.method,
        path: r.path,
        headers: &r.headers,
        source_ip: r.source,
        remote_ip: r.remote,
        destination_ip: None,
        principal: None,
        jwt: None,
        space_delimited_claims: &none,
        sni: None,
    };
    let d = sec.authorize(&facts);
    assert_eq!(d.outcome, Outcome::Allow { policy: None });
    assert_eq!(d.audited_by.as_deref(), Some("ap/istio-system/audit"));
    assert_eq!(d.dry_run_denied_by.as_deref(), Some("ap/istio-system/dry"));
}

#[test]
fn hosts_ignore_case_and_keep_the_port_as_sent() {
    let sec = security(vec![ap(
        "h",
        "istio-system",
        json!({"action": "DENY", "rules": [{"to": [{"operation": {"hosts": ["SHOP.example.com"]}}]}]}),
    )]);
    assert!(!allowed(&decide(&sec, &req("GET", "/"))));
    let mut r = req("GET", "/");
    r.host = "shop.example.com:8080";
    assert!(
        allowed(&decide(&sec, &r)),
        "a host with a port needs `host:*`, as in Istio"
    );
}

#[test]
fn ip_blocks_match_the_peer_and_remote_ip_blocks_the_client() {
    let sec = security(vec![
        ap(
            "peer",
            "istio-system",
            json!({"action": "DENY", "rules": [{"from": [{"source": {"ipBlocks": ["203.0.113.0/24"]}}]}]}),
        ),
        ap(
            "client",
            "istio-system",
            json!({"action": "DENY", "rules": [{"from": [{"source": {"remoteIpBlocks": ["198.51.100.0/24"]}}]}]}),
        ),
    ]);
    assert!(
        allowed(&decide(&sec, &req("GET", "/"))),
        "the peer is 10.0.0.9"
    );
    let mut r = req("GET", "/");
    r.remote = Some("198.51.100.20".parse().expect("ip"));
    assert!(!allowed(&decide(&sec, &r)));
    r.remote = Some("::ffff:198.51.100.20".parse().expect("ip"));
    assert!(
        !allowed(&decide(&sec, &r)),
        "an IPv4-mapped client is its IPv4"
    );
}

#[test]
fn not_values_exclude_and_values_any_of() {
    let sec = security(vec![ap(
        "a",
        "istio-system",
        json!({"rules": [{"to": [{"operation": {"methods": ["GET", "HEAD"], "notPaths": ["/secret*"]}}]}]}),
    )]);
    assert!(allowed(&decide(&sec, &req("HEAD", "/x"))));
    assert!(!allowed(&decide(&sec, &req("GET", "/secret/x"))));
    assert!(!allowed(&decide(&sec, &req("POST", "/x"))));
}

#[test]
fn path_templates_match_one_or_many_segments() {
    let sec = security(vec![ap(
        "a",
        "istio-system",
        json!({"rules": [{"to": [{"operation": {"paths": ["/api/{*}/items", "/files/{**}"]}}]}]}),
    )]);
    assert!(allowed(&decide(&sec, &req("GET", "/api/v1/items"))));
    assert!(!allowed(&decide(&sec, &req("GET", "/api/v1/v2/items"))));
    assert!(allowed(&decide(&sec, &req("GET", "/files/a/b/c.txt"))));
    assert!(!allowed(&decide(&sec, &req("GET", "/files"))));
}

#[test]
fn request_principals_and_nested_claims_come_from_the_verified_token() {
    let sec = security(vec![ap(
        "a",
        "istio-system",
        json!({"rules": [{
        "from": [{"source": {"requestPrincipals": ["https://issuer.example/*"]}}],
        "when": [{"key": "request.auth.claims[realm][roles]", "values": ["admin"]}]}]}),
    )]);
    let mut r = req("GET", "/");
    assert!(!allowed(&decide(&sec, &r)), "no token, no principal");
    let c = json!({"iss": "https://issuer.example", "sub": "alice", "realm": {"roles": ["user", "admin"]}});
    r.claims = Some(Claims(c.as_object().cloned().unwrap_or_default()));
    assert!(allowed(&decide(&sec, &r)));
}

#[test]
fn principals_are_client_certificate_spiffe_ids_and_namespaces_match_within_them() {
    let sec = security(vec![ap(
        "a",
        "istio-system",
        json!({"rules": [
        {"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}]},
        {"from": [{"source": {"namespaces": ["pay*"]}}]}]}),
    )]);
    let mut r = req("GET", "/");
    r.principal = Some("spiffe://cluster.local/ns/shop/sa/web");
    assert!(allowed(&decide(&sec, &r)));
    r.principal = Some("spiffe://cluster.local/ns/payments/sa/x");
    assert!(allowed(&decide(&sec, &r)));
    r.principal = Some("spiffe://cluster.local/ns/other/sa/web");
    assert!(!allowed(&decide(&sec, &r)));
}

#[test]
fn headers_in_when_are_matched_by_lowercase_name_with_presence() {
    let sec = security(vec![ap(
        "a",
        "istio-system",
        json!({"action": "DENY", "rules": [{"when": [{"key": "request.headers[X-Debug]", "values": ["*"]}]}]}),
    )]);
    let mut r = req("GET", "/");
    assert!(allowed(&decide(&sec, &r)));
    r.headers
        .insert("x-debug", http::HeaderValue::from_static(""));
    assert!(
        !allowed(&decide(&sec, &r)),
        "`*` on a header is presence, even empty"
    );
}

#[test]
fn policies_attach_from_the_gateway_namespace_or_root_and_by_selector() {
    let sel = |labels: Value| json!({"selector": {"matchLabels": labels}, "rules": []});
    let docs = vec![
        ap("other-ns", "default", json!({})),
        ap(
            "wrong-selector",
            "istio-system",
            sel(json!({"istio": "egress"})),
        ),
    ];
    let mut all = vec![gateway()];
    all.extend(docs);
    let mut set = ResourceSet::new();
    for d in all {
        set.insert(resource_from_value(d, None).expect("decodes"));
    }
    let t = translate(&set);
    assert!(
        t.snapshot.security.is_empty(),
        "neither applies: {:?}",
        t.snapshot.security
    );
    let key = crate::ResourceKey::new(crate::Kind::AuthorizationPolicy, "default", "other-ns");
    assert!(
        t.warnings_for(&key)
            .iter()
            .any(|w| w.contains("applies to no gateway")),
        "{:?}",
        t.warnings_for(&key)
    );
    let sec = security(vec![ap(
        "mine",
        "istio-system",
        sel(json!({"istio": "ingressgateway"})),
    )]);
    assert_eq!(sec.allow.len(), 1);
}
