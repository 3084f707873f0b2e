//! Unit tests of the explain walk: each match kind reports the condition that failed, routes are
//! skipped in the order the proxy tries them, and the reasons for no route at all.

use crate::ir::{ExplainRequest, OneOrMany, Snapshot};
use crate::resource::{resource_from_value, ResourceSet};
use crate::translate::translate;
use serde_json::{json, Value};

fn snapshot(docs: Vec<Value>) -> Snapshot {
    let mut set = ResourceSet::new();
    for d in docs {
        set.insert(resource_from_value(d, None).expect("test resource decodes"));
    }
    translate(&set).snapshot
}

fn vs(name: &str, hosts: &[&str], http: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"hosts": hosts, "http": http}})
}

fn to(host: &str) -> Value {
    json!([{"destination": {"host": host}}])
}

fn req(host: &str, path: &str) -> ExplainRequest {
    serde_json::from_value(json!({"host": host, "path": path})).expect("request decodes")
}

fn with_header(mut r: ExplainRequest, n: &str, v: &str) -> ExplainRequest {
    r.headers
        .insert(n.to_string(), OneOrMany::One(v.to_string()));
    r
}

/// `(route, skipped as (route, reason))` of an explanation.
fn walk(s: &Snapshot, r: &ExplainRequest) -> (Option<String>, Vec<(String, String)>) {
    let e = s.explain(r).expect("explainable");
    (
        e.route.map(str::to_string),
        e.skipped.into_iter().map(|k| (k.route, k.reason)).collect(),
    )
}

fn skip(id: &str, reason: &str) -> (String, String) {
    (id.to_string(), reason.to_string())
}

#[test]
fn uri_exact_prefix_and_regex_each_name_what_failed() {
    let s = snapshot(vec![vs(
        "a",
        &["a.test"],
        json!([
            {"match": [{"uri": {"exact": "/exact"}}], "route": to("e")},
            {"match": [{"uri": {"prefix": "/api"}}], "route": to("p")},
            {"match": [{"uri": {"regex": "/r[0-9]+"}}], "route": to("r")},
            {"route": to("web")}
        ]),
    )]);
    assert_eq!(
        walk(&s, &req("a.test", "/x?q=1")),
        (
            Some("vs/default/a/http/3".to_string()),
            vec![
                skip(
                    "vs/default/a/http/0",
                    r#"uri exact "/exact" does not match "/x""#
                ),
                skip(
                    "vs/default/a/http/1",
                    r#"uri prefix "/api" does not match "/x""#
                ),
                skip(
                    "vs/default/a/http/2",
                    r#"uri regex "/r[0-9]+" does not match "/x""#
                ),
            ]
        )
    );
    let (route, skipped) = walk(&s, &req("a.test", "/r12"));
    assert_eq!(route.as_deref(), Some("vs/default/a/http/2"));
    assert_eq!(skipped.len(), 2);
}

#[test]
fn header_conditions_report_the_value_or_its_absence() {
    let s = snapshot(vec![vs(
        "a",
        &["a.test"],
        json!([
            {"match": [{"headers": {"x-ver": {"exact": "v2"}}}], "route": to("v2")},
            {"match": [{"withoutHeaders": {"x-block": {}}}], "route": to("open")}
        ]),
    )]);
    let r = with_header(
        with_header(req("a.test", "/"), "x-ver", "v3"),
        "x-block",
        "1",
    );
    assert_eq!(
        walk(&s, &r),
        (
            None,
            vec![
                skip(
                    "vs/default/a/http/0",
                    r#"header x-ver: exact "v2" does not match "v3""#
                ),
                skip(
                    "vs/default/a/http/1",
                    r#"header x-block must be absent but is "1""#
                ),
            ]
        )
    );
    let e = s.explain(&req("a.test", "/")).expect("explainable");
    assert_eq!(e.route, Some("vs/default/a/http/1"));
    assert_eq!(e.skipped[0].reason, "header x-ver is absent");
}

#[test]
fn method_query_authority_and_scheme_mismatches() {
    let s = snapshot(vec![vs(
        "a",
        &["a.test"],
        json!([
            {"match": [{"method": {"exact": "POST"}}], "route": to("m")},
            {"match": [{"queryParams": {"q": {"exact": "2"}}}], "route": to("q")},
            {"match": [{"queryParams": {"missing": {}}}], "route": to("q2")},
            {"match": [{"authority": {"prefix": "b."}}], "route": to("au")},
            {"match": [{"scheme": {"exact": "https"}}], "route": to("s")},
            {"route": to("web")}
        ]),
    )]);
    let (route, skipped) = walk(&s, &req("a.test", "/p?q=1"));
    assert_eq!(route.as_deref(), Some("vs/default/a/http/5"));
    assert_eq!(
        skipped,
        vec![
            skip("vs/default/a/http/0", "method GET is not POST"),
            skip(
                "vs/default/a/http/1",
                r#"query parameter q: exact "2" does not match "1""#
            ),
            skip("vs/default/a/http/2", "query parameter missing is absent"),
            skip(
                "vs/default/a/http/3",
                r#"authority prefix "b." does not match "a.test""#
            ),
            skip(
                "vs/default/a/http/4",
                r#"scheme exact "https" does not match "http""#
            ),
        ]
    );
}

#[test]
fn port_condition_names_both_ports() {
    let s = snapshot(vec![vs(
        "a",
        &["a.test"],
        json!([
            {"match": [{"port": 8080}], "route": to("p")},
            {"route": to("web")}
        ]),
    )]);
    let (route, skipped) = walk(&s, &req("a.test", "/"));
    assert_eq!(route.as_deref(), Some("vs/default/a/http/1"));
    assert_eq!(
        skipped,
        vec![skip("vs/default/a/http/0", "port 80 is not 8080")]
    );
}

#[test]
fn every_entry_of_a_skipped_rule_gives_its_reason() {
    let s = snapshot(vec![vs(
        "a",
        &["a.test"],
        json!([{"match": [{"uri": {"prefix": "/api"}}, {"method": {"exact": "PUT"}}],
                "route": to("x")}]),
    )]);
    let (route, skipped) = walk(&s, &req("a.test", "/x"));
    assert_eq!(route, None);
    assert_eq!(
        skipped,
        vec![skip(
            "vs/default/a/http/0",
            r#"uri prefix "/api" does not match "/x"; method GET is not PUT"#
        )]
    );
}

#[test]
fn a_request_no_host_serves_says_so() {
    let s = snapshot(vec![vs("a", &["a.test"], json!([{"route": to("web")}]))]);
    let e = s.explain(&req("other.test", "/")).expect("explainable");
    assert_eq!(e.action, "notFound");
    assert_eq!(e.status, Some(404));
    assert!(e.listener.served);
    assert_eq!(e.virtual_host, None);
    assert_eq!(
        e.reason.as_deref(),
        Some(r#"no virtual host on port 80 matches host "other.test""#)
    );
    let mut on_81 = req("a.test", "/");
    on_81.port = 81;
    let e = s.explain(&on_81).expect("explainable");
    assert!(!e.listener.served);
    assert_eq!(e.reason.as_deref(), Some("no Gateway server on port 81"));
}

#[test]
fn catch_all_after_a_skipped_rule_wins_with_the_skip_recorded() {
    let s = snapshot(vec![vs(
        "a",
        &["a.test"],
        json!([
            {"match": [{"uri": {"prefix": "/api"}}], "route": to("api")},
            {"match": [{"uri": {"prefix": "/"}}], "route": to("web")}
        ]),
    )]);
    let e = s.explain(&req("A.test:80", "/home")).expect("explainable");
    assert_eq!(e.route, Some("vs/default/a/http/1"));
    assert_eq!(e.rule, Some(1));
    assert_eq!(e.matched.as_deref(), Some(r#"uri prefix "/""#));
    assert_eq!(e.virtual_host, Some("a.test"));
    assert_eq!(e.action, "route");
    assert_eq!(e.destinations.len(), 1);
    assert_eq!(e.destinations[0].host, "web");
    assert_eq!(e.destinations[0].port, 80);
    assert_eq!(e.destinations[0].dns.as_deref(), Some("web:80"));
    assert_eq!(e.skipped.len(), 1);
    assert_eq!(e.skipped[0].route, "vs/default/a/http/0");
}

#[test]
fn the_first_catch_all_ends_a_virtual_service() {
    // Rule 1 of `a` comes after its catch-all: never considered. `b` (created later) is merged
    // before `a`'s catch-all, since catch-alls go last.
    let mut a = vs(
        "a",
        &["a.test"],
        json!([
            {"route": to("all")},
            {"match": [{"uri": {"prefix": "/x"}}], "route": to("never")}
        ]),
    );
    a["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
    let mut b = vs(
        "b",
        &["a.test"],
        json!([{"match": [{"uri": {"prefix": "/b"}}], "route": to("b")}]),
    );
    b["metadata"]["creationTimestamp"] = json!("2024-02-01T00:00:00Z");
    let s = snapshot(vec![a, b]);
    assert_eq!(
        walk(&s, &req("a.test", "/x")),
        (
            Some("vs/default/a/http/0".to_string()),
            vec![skip(
                "vs/default/b/http/0",
                r#"uri prefix "/b" does not match "/x""#
            )]
        )
    );
}

#[test]
fn explain_agrees_with_lookup_on_the_winner() {
    let s = snapshot(vec![vs(
        "a",
        &["a.test", "*.wild.test"],
        json!([
            {"match": [{"uri": {"prefix": "/api"}, "headers": {"x-v": {"exact": "2"}}}], "route": to("v2")},
            {"match": [{"uri": {"prefix": "/api"}}], "route": to("api")}
        ]),
    )]);
    let headers = http::HeaderMap::new();
    for (host, path) in [
        ("a.test", "/api"),
        ("x.wild.test", "/api/1"),
        ("a.test", "/"),
    ] {
        let view = crate::ir::RequestView {
            method: "GET",
            scheme: "http",
            authority: host,
            path,
            query: None,
            port: 80,
            headers: &headers,
            claims: None,
        };
        let looked = s
            .lookup(&view)
            .and_then(|(_, r)| r)
            .map(|w| w.route.id.as_str());
        assert_eq!(s.explain(&req(host, path)).expect("ok").route, looked);
    }
}

#[test]
fn a_bad_request_names_the_field() {
    let s = Snapshot::default();
    let mut r = req("a.test", "/");
    r.method = "G ET".to_string();
    assert_eq!(s.explain(&r).expect_err("bad method").field, "method");
    let r = with_header(req("a.test", "/"), "bad name", "v");
    assert_eq!(
        s.explain(&r).expect_err("bad header").field,
        "headers.bad name"
    );
    let r = req("a.test", "nope");
    assert_eq!(s.explain(&r).expect_err("bad path").field, "path");
}
