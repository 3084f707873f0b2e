//! Request-time lookup pinned two ways: unit tests named after the rule they pin, and property
//! tests where the indexed lookup must equal a naive linear scan written here from the rules
//! (CONTRACT §4), over random tables. Also: translation never panics on arbitrary resources and does
//! not depend on the order resources are inserted in.

use model::ir::{
    ExplainRequest, HeaderMatch, HostIndex, Matcher, QueryMatch, RequestView, Route, RouteAction,
    RouteMatch, Snapshot, VirtualHost,
};
use model::resource::{resource_from_value, Resource, ResourceSet};
use model::translate::translate;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Helpers

fn set_of(docs: Vec<Value>) -> ResourceSet {
    let mut set = ResourceSet::new();
    for d in docs {
        set.insert(resource_from_value(d, None).expect("test resource decodes"));
    }
    set
}

fn vs(name: &str, ts: Option<&str>, hosts: &[&str], http: Value) -> Value {
    let mut meta = json!({"name": name, "namespace": "default"});
    if let Some(ts) = ts {
        meta["creationTimestamp"] = json!(ts);
    }
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": meta, "spec": {"hosts": hosts, "http": http}})
}

struct Req {
    method: &'static str,
    authority: String,
    path: String,
    query: Option<String>,
    port: u16,
    headers: http::HeaderMap,
}

impl Req {
    fn new(authority: &str, path: &str) -> Req {
        Req {
            method: "GET",
            authority: authority.to_string(),
            path: path.to_string(),
            query: None,
            port: 80,
            headers: http::HeaderMap::new(),
        }
    }
    fn query(mut self, q: &str) -> Req {
        self.query = Some(q.to_string());
        self
    }
    fn header(mut self, n: &'static str, v: &str) -> Req {
        self.headers.append(
            http::HeaderName::from_static(n),
            http::HeaderValue::from_str(v).expect("value"),
        );
        self
    }
    fn method(mut self, m: &'static str) -> Req {
        self.method = m;
        self
    }
    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: self.method,
            scheme: "http",
            authority: &self.authority,
            path: &self.path,
            query: self.query.as_deref(),
            port: self.port,
            headers: &self.headers,
            claims: None,
        }
    }
}

/// `(domain, route id)` of a lookup.
fn hit(s: &Snapshot, r: &Req) -> Option<(String, Option<String>)> {
    s.lookup(&r.view())
        .map(|(vh, won)| (vh.domain.clone(), won.map(|w| w.route.id.clone())))
}

/// The destination host a route forwards to (test routes have one).
fn dest(s: &Snapshot, r: &Req) -> Option<String> {
    let (_, route) = s.lookup(&r.view())?;
    match &route?.route.action {
        RouteAction::Forward(f) => f.destinations.first().map(|d| d.host.clone()),
        _ => None,
    }
}

fn route_to(h: &str) -> Value {
    json!([{"destination": {"host": h}}])
}

fn vhost(domain: &str) -> VirtualHost {
    VirtualHost {
        domain: domain.to_string(),
        https_redirect: false,
        routes: Vec::new(),
    }
}

fn index(domains: &[&str]) -> HostIndex {
    let mut idx = HostIndex::default();
    for d in domains {
        idx.insert(vhost(d));
    }
    idx
}

fn found(idx: &HostIndex, host: &str) -> Option<String> {
    idx.find(host).map(|v| v.domain.clone())
}

fn exact(v: &str) -> Matcher {
    Matcher::Exact {
        value: v.into(),
        ignore_case: false,
    }
}

fn prefix(v: &str, ignore_case: bool) -> Matcher {
    Matcher::Prefix {
        value: v.into(),
        ignore_case,
    }
}

fn one_match(m: RouteMatch) -> Route {
    Route {
        id: "test".into(),
        gateway: "default/gw".into(),
        virtual_service: "default/vs".into(),
        matches: vec![m],
        action: RouteAction::Direct(model::ir::DirectResponse {
            status: 200,
            body: model::ir::bytes_body::Body(Vec::new()),
        }),
        request_headers: Default::default(),
        response_headers: Default::default(),
        timeout: None,
        retries: Default::default(),
        fault: None,
        mirrors: Vec::new(),
        cors: None,
    }
}

fn accepts(m: RouteMatch, r: &Req) -> bool {
    model::ir::route_matches(&one_match(m), &r.view())
}

// ---------------------------------------------------------------------------------------------
// Host rules

#[test]
fn exact_host_beats_wildcard() {
    let idx = index(&["*", "*.example.com", "a.example.com"]);
    assert_eq!(
        found(&idx, "a.example.com").as_deref(),
        Some("a.example.com")
    );
    assert_eq!(
        found(&idx, "b.example.com").as_deref(),
        Some("*.example.com")
    );
}

#[test]
fn longest_suffix_wins() {
    let idx = index(&["*.com", "*.example.com", "*.b.example.com"]);
    assert_eq!(
        found(&idx, "a.b.example.com").as_deref(),
        Some("*.b.example.com")
    );
    assert_eq!(
        found(&idx, "a.c.example.com").as_deref(),
        Some("*.example.com")
    );
    assert_eq!(found(&idx, "example.com").as_deref(), Some("*.com"));
}

#[test]
fn wildcard_does_not_match_apex() {
    let idx = index(&["*.example.com"]);
    assert_eq!(found(&idx, "example.com"), None);
    assert_eq!(found(&idx, "xexample.com"), None);
    assert_eq!(
        found(&idx, "a.example.com").as_deref(),
        Some("*.example.com")
    );
}

#[test]
fn any_is_last_resort() {
    let idx = index(&["*", "a.example.com"]);
    assert_eq!(found(&idx, "zzz").as_deref(), Some("*"));
    assert_eq!(found(&idx, "").as_deref(), Some("*"));
    assert_eq!(found(&index(&["a.example.com"]), "b.example.com"), None);
}

#[test]
fn port_is_ignored_in_host() {
    let idx = index(&["a.example.com", "[::1]", "10.0.0.1"]);
    assert_eq!(
        found(&idx, "a.example.com:8080").as_deref(),
        Some("a.example.com")
    );
    assert_eq!(
        found(&idx, "a.example.com:").as_deref(),
        Some("a.example.com")
    );
    assert_eq!(found(&idx, "[::1]:8080").as_deref(), Some("[::1]"));
    assert_eq!(found(&idx, "[::1]").as_deref(), Some("[::1]"));
    assert_eq!(found(&idx, "10.0.0.1:80").as_deref(), Some("10.0.0.1"));
}

#[test]
fn host_is_case_insensitive() {
    let idx = index(&["a.example.com", "*.wild.com"]);
    assert_eq!(
        found(&idx, "A.Example.COM").as_deref(),
        Some("a.example.com")
    );
    assert_eq!(found(&idx, "X.WILD.com:81").as_deref(), Some("*.wild.com"));
}

#[test]
fn duplicate_or_unservable_domains_are_not_indexed() {
    let mut idx = HostIndex::default();
    assert_eq!(idx.insert(vhost("a.com")), Some(0));
    assert_eq!(idx.insert(vhost("a.com")), None);
    assert_eq!(idx.insert(vhost("*.")), None);
    assert_eq!(idx.insert(vhost("foo*.com")), None);
    assert_eq!(idx.insert(vhost("")), None);
    assert_eq!(idx.vhosts.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Match rules

#[test]
fn prefix_is_plain_string_prefix() {
    let m = || RouteMatch {
        uri: Some(prefix("/foo", false)),
        ..Default::default()
    };
    assert!(accepts(m(), &Req::new("h", "/foobar")));
    assert!(accepts(m(), &Req::new("h", "/foo/bar")));
    assert!(accepts(m(), &Req::new("h", "/foo")));
    assert!(!accepts(m(), &Req::new("h", "/fo")));
    assert!(!accepts(m(), &Req::new("h", "/FOO")));
}

#[test]
fn ignore_uri_case_is_ascii_case_insensitive() {
    let p = RouteMatch {
        uri: Some(prefix("/Foo", true)),
        ..Default::default()
    };
    assert!(accepts(p, &Req::new("h", "/fOObar")));
    let e = RouteMatch {
        uri: Some(Matcher::Exact {
            value: "/Foo".into(),
            ignore_case: true,
        }),
        ..Default::default()
    };
    assert!(accepts(e.clone(), &Req::new("h", "/FOO")));
    assert!(!accepts(e, &Req::new("h", "/FOO/")));
    // Multi-byte characters must not trip the byte-wise comparison.
    let u = RouteMatch {
        uri: Some(prefix("/é", true)),
        ..Default::default()
    };
    assert!(!accepts(u, &Req::new("h", "/")));
}

#[test]
fn exact_is_case_sensitive() {
    let m = RouteMatch {
        method: Some(exact("GET")),
        ..Default::default()
    };
    assert!(accepts(m.clone(), &Req::new("h", "/")));
    assert!(!accepts(m, &Req::new("h", "/").method("get")));
}

#[test]
fn regex_is_full_match() {
    let t = translate(&set_of(vec![vs(
        "r",
        None,
        &["r.com"],
        json!([{"match": [{"uri": {"regex": "/a+"}}], "route": route_to("a")}]),
    )]));
    assert_eq!(
        dest(&t.snapshot, &Req::new("r.com", "/aaa")).as_deref(),
        Some("a")
    );
    assert_eq!(dest(&t.snapshot, &Req::new("r.com", "/aaab")), None);
    assert_eq!(dest(&t.snapshot, &Req::new("r.com", "x/aaa")), None);
}

#[test]
fn query_excluded_from_uri() {
    let t = translate(&set_of(vec![vs(
        "q",
        None,
        &["q.com"],
        json!([{"match": [{"uri": {"exact": "/a"}}], "route": route_to("a")}]),
    )]));
    let r = Req::new("q.com", "/a").query("x=1");
    assert_eq!(dest(&t.snapshot, &r).as_deref(), Some("a"));
    // Defensive: a path that still carries its query is cut at `?`.
    assert_eq!(
        dest(&t.snapshot, &Req::new("q.com", "/a?x=1")).as_deref(),
        Some("a")
    );
}

#[test]
fn header_names_case_insensitive() {
    let t = translate(&set_of(vec![vs(
        "h",
        None,
        &["h.com"],
        json!([{"match": [{"headers": {"X-User": {"exact": "Jason"}}}], "route": route_to("a")}]),
    )]));
    let r = Req::new("h.com", "/").header("x-user", "Jason");
    assert_eq!(dest(&t.snapshot, &r).as_deref(), Some("a"));
    // Values stay case-sensitive.
    let r = Req::new("h.com", "/").header("x-user", "jason");
    assert_eq!(dest(&t.snapshot, &r), None);
}

#[test]
fn header_presence_and_regex_star() {
    for sm in [json!({}), json!({"regex": "*"})] {
        let t = translate(&set_of(vec![vs(
            "h",
            None,
            &["h.com"],
            json!([{"match": [{"headers": {"x-canary": sm}}], "route": route_to("a")}]),
        )]));
        let present = Req::new("h.com", "/").header("x-canary", "");
        assert_eq!(dest(&t.snapshot, &present).as_deref(), Some("a"));
        assert_eq!(dest(&t.snapshot, &Req::new("h.com", "/")), None);
    }
}

#[test]
fn repeated_header_values_join_with_comma() {
    let m = RouteMatch {
        headers: vec![HeaderMatch {
            name: "x-a".into(),
            matcher: Some(exact("1,2")),
            invert: false,
        }],
        ..Default::default()
    };
    let r = Req::new("h", "/").header("x-a", "1").header("x-a", "2");
    assert!(accepts(m, &r));
}

#[test]
fn without_headers_missing_is_empty() {
    let m = |matcher: Matcher| RouteMatch {
        headers: vec![HeaderMatch {
            name: "x-env".into(),
            matcher: Some(matcher),
            invert: true,
        }],
        ..Default::default()
    };
    // Missing header reads as "": `exact: test` does not match "", so the entry accepts.
    assert!(accepts(m(exact("test")), &Req::new("h", "/")));
    assert!(!accepts(
        m(exact("test")),
        &Req::new("h", "/").header("x-env", "test")
    ));
    assert!(accepts(
        m(exact("test")),
        &Req::new("h", "/").header("x-env", "prod")
    ));
    // `exact: ""` matches the missing header, so the entry refuses.
    assert!(!accepts(m(exact("")), &Req::new("h", "/")));
    // Presence, inverted: accepts only when absent.
    let p = RouteMatch {
        headers: vec![HeaderMatch {
            name: "x-debug".into(),
            matcher: None,
            invert: true,
        }],
        ..Default::default()
    };
    assert!(accepts(p.clone(), &Req::new("h", "/")));
    assert!(!accepts(p, &Req::new("h", "/").header("x-debug", "1")));
}

#[test]
fn query_params_exact_empty_matches_bare_key() {
    let q = |name: &str, matcher: Option<Matcher>| RouteMatch {
        query_params: vec![QueryMatch {
            name: name.into(),
            matcher,
        }],
        ..Default::default()
    };
    assert!(accepts(
        q("flag", Some(exact(""))),
        &Req::new("h", "/").query("a=1&flag")
    ));
    assert!(accepts(
        q("flag", Some(exact(""))),
        &Req::new("h", "/").query("flag=")
    ));
    assert!(!accepts(
        q("flag", Some(exact(""))),
        &Req::new("h", "/").query("flag=1")
    ));
    assert!(accepts(
        q("flag", None),
        &Req::new("h", "/").query("flag=1")
    ));
    assert!(!accepts(
        q("flag", None),
        &Req::new("h", "/").query("flagx=1")
    ));
    assert!(!accepts(q("flag", None), &Req::new("h", "/")));
    // The first occurrence decides, as in Envoy.
    assert!(accepts(
        q("a", Some(exact("1"))),
        &Req::new("h", "/").query("a=1&a=2")
    ));
    assert!(!accepts(
        q("a", Some(exact("2"))),
        &Req::new("h", "/").query("a=1&a=2")
    ));
}

#[test]
fn port_match_uses_listener_port() {
    let m = RouteMatch {
        port: Some(8080),
        ..Default::default()
    };
    let mut r = Req::new("h", "/");
    assert!(!accepts(m.clone(), &r));
    r.port = 8080;
    assert!(accepts(m, &r));
}

#[test]
fn entries_or_conditions_and() {
    let t = translate(&set_of(vec![vs(
        "o",
        None,
        &["o.com"],
        json!([{"match": [
            {"uri": {"prefix": "/a"}, "method": {"exact": "POST"}},
            {"uri": {"prefix": "/b"}}
        ], "route": route_to("x")}]),
    )]));
    let s = &t.snapshot;
    assert_eq!(
        dest(s, &Req::new("o.com", "/a").method("POST")).as_deref(),
        Some("x")
    );
    assert_eq!(dest(s, &Req::new("o.com", "/a")), None);
    assert_eq!(dest(s, &Req::new("o.com", "/b")).as_deref(), Some("x"));
}

// ---------------------------------------------------------------------------------------------
// Route order rules

#[test]
fn first_match_wins() {
    let t = translate(&set_of(vec![vs(
        "f",
        None,
        &["f.com"],
        json!([
            {"match": [{"uri": {"prefix": "/api"}}], "route": route_to("first")},
            {"match": [{"uri": {"prefix": "/api/v2"}}], "route": route_to("never")},
        ]),
    )]));
    assert_eq!(
        dest(&t.snapshot, &Req::new("f.com", "/api/v2/x")).as_deref(),
        Some("first")
    );
}

#[test]
fn catch_all_moves_last() {
    let t = translate(&set_of(vec![
        vs(
            "a",
            Some("2024-01-01T00:00:00Z"),
            &["c.com"],
            json!([{"route": route_to("old-default")}]),
        ),
        vs(
            "b",
            Some("2024-02-01T00:00:00Z"),
            &["c.com"],
            json!([{"match": [{"uri": {"prefix": "/new"}}], "route": route_to("new")}]),
        ),
    ]));
    let s = &t.snapshot;
    assert_eq!(dest(s, &Req::new("c.com", "/new")).as_deref(), Some("new"));
    assert_eq!(
        dest(s, &Req::new("c.com", "/other")).as_deref(),
        Some("old-default")
    );
}

#[test]
fn catch_all_entry_is_split_from_specific_entries() {
    // `[/api, /]` in an old VS: its `/api` entry keeps its place, its `/` entry moves last.
    let t = translate(&set_of(vec![
        vs(
            "a",
            Some("2024-01-01T00:00:00Z"),
            &["c.com"],
            json!([{"match": [{"uri": {"prefix": "/api"}}, {"uri": {"prefix": "/"}}], "route": route_to("old")}]),
        ),
        vs(
            "b",
            Some("2024-02-01T00:00:00Z"),
            &["c.com"],
            json!([{"match": [{"uri": {"prefix": "/web"}}], "route": route_to("new")}]),
        ),
    ]));
    let s = &t.snapshot;
    assert_eq!(dest(s, &Req::new("c.com", "/api")).as_deref(), Some("old"));
    assert_eq!(dest(s, &Req::new("c.com", "/web")).as_deref(), Some("new"));
    assert_eq!(dest(s, &Req::new("c.com", "/x")).as_deref(), Some("old"));
}

#[test]
fn merge_follows_creation_order_then_name() {
    let rule = |h: &str| json!([{"match": [{"uri": {"prefix": "/"}, "method": {"exact": "GET"}}], "route": route_to(h)}]);
    let t = translate(&set_of(vec![
        vs(
            "a-late",
            Some("2024-03-01T00:00:00Z"),
            &["m.com"],
            rule("late"),
        ),
        vs(
            "z-early",
            Some("2024-01-01T00:00:00Z"),
            &["m.com"],
            rule("early"),
        ),
    ]));
    assert_eq!(
        dest(&t.snapshot, &Req::new("m.com", "/")).as_deref(),
        Some("early")
    );
    let t = translate(&set_of(vec![
        vs("b", None, &["m.com"], rule("b")),
        vs("a", None, &["m.com"], rule("a")),
    ]));
    assert_eq!(
        dest(&t.snapshot, &Req::new("m.com", "/")).as_deref(),
        Some("a")
    );
}

#[test]
fn no_host_and_no_route_are_distinguished() {
    let t = translate(&set_of(vec![vs(
        "n",
        None,
        &["n.com"],
        json!([{"match": [{"uri": {"exact": "/only"}}], "route": route_to("x")}]),
    )]));
    assert_eq!(hit(&t.snapshot, &Req::new("other.com", "/only")), None);
    assert_eq!(
        hit(&t.snapshot, &Req::new("n.com", "/nope")),
        Some(("n.com".to_string(), None))
    );
    let mut r = Req::new("n.com", "/only");
    r.port = 81;
    assert_eq!(hit(&t.snapshot, &r), None);
}

// ---------------------------------------------------------------------------------------------
// Property: HostIndex::find equals a linear scan with precedence computed by hand.

fn label() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c"), Just("B")].prop_map(String::from)
}

fn name(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..=max).prop_map(|ls| ls.join("."))
}

fn domain() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => name(3),
        3 => name(3).prop_map(|n| format!("*.{n}")),
        1 => Just("*".to_string()),
    ]
}

fn request_host() -> impl Strategy<Value = String> {
    (name(4), prop_oneof![Just(""), Just(":8080"), Just(":")]).prop_map(|(n, p)| format!("{n}{p}"))
}

/// Host precedence by hand: exact, then the longest matching `*.suffix`, then `*`.
fn oracle_domain<'a>(domains: &'a [String], authority: &str) -> Option<&'a str> {
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
    .to_ascii_lowercase();
    let mut best: Option<(u8, usize, &str)> = None;
    for d in domains {
        let score = if *d == host {
            Some((3, d.len()))
        } else if let Some(s) = d.strip_prefix("*.") {
            host.ends_with(&format!(".{s}")).then_some((2, s.len()))
        } else if d == "*" {
            Some((1, 0))
        } else {
            None
        };
        if let Some((class, len)) = score {
            if best.is_none_or(|(bc, bl, _)| (class, len) > (bc, bl)) {
                best = Some((class, len, d));
            }
        }
    }
    best.map(|(_, _, d)| d)
}

/// Failures print their minimal input; nothing is persisted next to the sources.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]
    #[test]
    fn host_index_equals_linear_scan(
        domains in prop::collection::vec(domain(), 0..12),
        hosts in prop::collection::vec(request_host(), 1..12),
    ) {
        let mut idx = HostIndex::default();
        let mut kept = Vec::new();
        for d in &domains {
            let d = d.to_ascii_lowercase();
            if idx.insert(vhost(&d)).is_some() {
                kept.push(d);
            }
        }
        for h in &hosts {
            let got = found(&idx, h);
            prop_assert_eq!(got.as_deref(), oracle_domain(&kept, h), "host {}", h);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Property: Snapshot::lookup over translated VirtualServices equals a scan of the input.

#[derive(Debug, Clone)]
enum Uri {
    Prefix(&'static str),
    Exact(&'static str),
    Regex(&'static str),
}

#[derive(Debug, Clone)]
struct Entry {
    uri: Option<Uri>,
    header: Option<Option<&'static str>>,
    method: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Rule {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Vs {
    ts: Option<&'static str>,
    hosts: Vec<String>,
    rules: Vec<Rule>,
}

fn uri() -> impl Strategy<Value = Uri> {
    prop_oneof![
        prop_oneof![Just("/"), Just("/a"), Just("/ab"), Just("/b")].prop_map(Uri::Prefix),
        prop_oneof![Just("/a"), Just("/b/c"), Just("/")].prop_map(Uri::Exact),
        prop_oneof![Just("/a.*"), Just(".*"), Just("/[ab]+")].prop_map(Uri::Regex),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        prop::option::of(uri()),
        prop::option::of(prop::option::of(prop_oneof![Just("1"), Just("2")])),
        prop::option::of(prop_oneof![Just("GET"), Just("POST")]),
    )
        .prop_map(|(uri, header, method)| Entry {
            uri,
            header,
            method,
        })
}

fn rule() -> impl Strategy<Value = Rule> {
    prop::collection::vec(entry(), 0..3).prop_map(|entries| Rule { entries })
}

fn vs_table() -> impl Strategy<Value = Vec<Vs>> {
    prop::collection::vec(
        (
            prop::option::of(prop_oneof![
                Just("2024-01-01T00:00:00Z"),
                Just("2024-02-01T00:00:00Z")
            ]),
            prop::collection::btree_set(domain().prop_map(|d| d.to_ascii_lowercase()), 1..3),
            prop::collection::vec(rule(), 1..4),
        )
            .prop_map(|(ts, hosts, rules)| Vs {
                ts,
                hosts: hosts.into_iter().collect(),
                rules,
            }),
        1..8,
    )
}

fn entry_json(e: &Entry) -> Value {
    let mut m = serde_json::Map::new();
    match &e.uri {
        Some(Uri::Prefix(p)) => {
            m.insert("uri".into(), json!({"prefix": p}));
        }
        Some(Uri::Exact(p)) => {
            m.insert("uri".into(), json!({"exact": p}));
        }
        Some(Uri::Regex(p)) => {
            m.insert("uri".into(), json!({"regex": p}));
        }
        None => {}
    }
    match e.header {
        Some(Some(v)) => {
            m.insert("headers".into(), json!({"x-h": {"exact": v}}));
        }
        Some(None) => {
            m.insert("headers".into(), json!({"x-h": {}}));
        }
        None => {}
    }
    if let Some(me) = e.method {
        m.insert("method".into(), json!({"exact": me}));
    }
    Value::Object(m)
}

fn table_set(table: &[Vs]) -> ResourceSet {
    set_of(
        table
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let http: Vec<Value> = v
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(j, r)| {
                        let mut rj = json!({"route": route_to(&format!("d{i}-{j}"))});
                        if !r.entries.is_empty() {
                            rj["match"] = Value::Array(r.entries.iter().map(entry_json).collect());
                        }
                        rj
                    })
                    .collect();
                let hosts: Vec<&str> = v.hosts.iter().map(String::as_str).collect();
                vs(&format!("vs{i}"), v.ts, &hosts, Value::Array(http))
            })
            .collect(),
    )
}

fn entry_accepts(e: &Entry, r: &Req) -> bool {
    let uri_ok = match &e.uri {
        None => true,
        Some(Uri::Prefix(p)) => r.path.starts_with(p),
        Some(Uri::Exact(p)) => r.path == *p,
        Some(Uri::Regex(p)) => regex::Regex::new(&format!("^(?:{p})$"))
            .map(|re| re.is_match(&r.path))
            .unwrap_or(false),
    };
    let header_ok = match e.header {
        None => true,
        Some(None) => r.headers.contains_key("x-h"),
        Some(Some(v)) => r
            .headers
            .get("x-h")
            .is_some_and(|h| h.as_bytes() == v.as_bytes()),
    };
    let method_ok = e.method.is_none_or(|m| r.method == m);
    uri_ok && header_ok && method_ok
}

fn entry_is_catch_all(e: &Entry) -> bool {
    let uri_all = match &e.uri {
        None => true,
        Some(Uri::Prefix(p)) => *p == "/",
        Some(Uri::Regex(p)) => *p == ".*",
        Some(Uri::Exact(_)) => false,
    };
    uri_all && e.header.is_none() && e.method.is_none()
}

/// Linear scan: the best domain by hand, then every rule of every VS with that host in creation
/// order (then name), each VS up to its first catch-all entry (Istio stops there), specific
/// entries in place and catch-all entries after all of them.
fn oracle_lookup(table: &[Vs], r: &Req) -> Option<(String, Option<String>)> {
    let all: Vec<String> = table.iter().flat_map(|v| v.hosts.clone()).collect();
    let domain = oracle_domain(&all, &r.authority)?.to_string();
    let mut order: Vec<usize> = (0..table.len())
        .filter(|i| table[*i].hosts.contains(&domain))
        .collect();
    order.sort_by_key(|i| (table[*i].ts.unwrap_or(""), format!("vs{i}")));
    let mut head: Vec<(String, Vec<&Entry>, bool)> = Vec::new();
    let mut tail: Vec<(String, Vec<&Entry>, bool)> = Vec::new();
    for i in order {
        for (j, rule) in table[i].rules.iter().enumerate() {
            let id = format!("vs/default/vs{i}/http/{j}");
            if rule.entries.is_empty() {
                tail.push((id, Vec::new(), true));
                break;
            }
            let first_catch_all = rule.entries.iter().position(entry_is_catch_all);
            let reached = first_catch_all.map_or(rule.entries.len(), |k| k + 1);
            let (c, n): (Vec<&Entry>, Vec<&Entry>) = rule.entries[..reached]
                .iter()
                .partition(|e| entry_is_catch_all(e));
            if !n.is_empty() {
                head.push((id.clone(), n, false));
            }
            if !c.is_empty() {
                tail.push((id, c, false));
                break;
            }
        }
    }
    let route = head
        .into_iter()
        .chain(tail)
        .find(|(_, entries, all)| *all || entries.iter().any(|e| entry_accepts(e, r)))
        .map(|(id, _, _)| id);
    Some((domain, route))
}

fn request() -> impl Strategy<Value = (String, &'static str, Option<&'static str>, &'static str)> {
    (
        request_host(),
        prop_oneof![
            Just("/"),
            Just("/a"),
            Just("/ab"),
            Just("/abc"),
            Just("/b"),
            Just("/b/c"),
            Just("/A"),
            Just("/ba")
        ],
        prop::option::of(prop_oneof![Just("1"), Just("2"), Just("3")]),
        prop_oneof![Just("GET"), Just("POST")],
    )
}

/// The request a generated `(host, path, header, method)` stands for.
fn generated(host: &str, path: &str, header: Option<&str>, method: &'static str) -> Req {
    let r = Req::new(host, path).method(method);
    match header {
        Some(h) => r.header("x-h", h),
        None => r,
    }
}

proptest! {
    #![proptest_config(config(200))]
    #[test]
    fn lookup_equals_linear_scan(
        table in vs_table(),
        reqs in prop::collection::vec(request(), 1..16),
    ) {
        let t = translate(&table_set(&table));
        for (host, path, header, method) in reqs {
            let r = generated(&host, path, header, method);
            prop_assert_eq!(hit(&t.snapshot, &r), oracle_lookup(&table, &r), "{} {} {:?}", host, path, header);
        }
    }
}

/// The explain walk over the same request as [`hit`]'s: its route, virtual host, and the routes
/// it passed over.
fn explained(s: &Snapshot, r: &Req) -> (Option<String>, Option<String>, Vec<String>) {
    let mut headers = serde_json::Map::new();
    for (n, v) in &r.headers {
        headers.insert(n.to_string(), json!(v.to_str().expect("test header")));
    }
    let path = match &r.query {
        Some(q) => format!("{}?{q}", r.path),
        None => r.path.clone(),
    };
    let req: ExplainRequest = serde_json::from_value(json!({
        "port": r.port, "host": r.authority, "method": r.method, "path": path, "headers": headers,
    }))
    .expect("request decodes");
    let e = s.explain(&req).expect("explainable");
    (
        e.virtual_host.map(str::to_string),
        e.route.map(str::to_string),
        e.skipped.into_iter().map(|k| k.route).collect(),
    )
}

proptest! {
    #![proptest_config(config(200))]
    /// Explain walks the proxy's lookup: the same winner, and exactly the routes before it in the
    /// virtual host, each with a reason.
    #[test]
    fn explain_equals_lookup(
        table in vs_table(),
        reqs in prop::collection::vec(request(), 1..16),
    ) {
        let t = translate(&table_set(&table));
        for (host, path, header, method) in reqs {
            let r = generated(&host, path, header, method);
            let looked = hit(&t.snapshot, &r);
            let (vhost, route, skipped) = explained(&t.snapshot, &r);
            prop_assert_eq!(vhost.clone(), looked.as_ref().map(|(d, _)| d.clone()));
            prop_assert_eq!(route.clone(), looked.and_then(|(_, r)| r));
            // By position, not id: a rule whose catch-all entry is moved last appears twice.
            let expected: Vec<String> = match t.snapshot.lookup(&r.view()) {
                None => Vec::new(),
                Some((vh, winner)) => vh
                    .routes
                    .iter()
                    .take_while(|x| winner.is_none_or(|w| !Arc::ptr_eq(x, w.route)))
                    .map(|x| x.id.clone())
                    .collect(),
            };
            prop_assert_eq!(skipped, expected);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Totality and determinism over arbitrary (also invalid) resources.

fn weird() -> impl Strategy<Value = String> {
    let pool: Vec<&'static str> = vec![
        "",
        "*",
        "*.",
        "*.a.com",
        "a.com",
        "A.COM",
        "[::1]",
        "::1",
        "10.0.0.1",
        "foo*.com",
        "a..b",
        ".",
        "/",
        "ns/host",
        "./a.com",
        "*/b.a.com",
        "mesh",
        "(",
        ".*",
        "x y",
        ":authority",
        "\u{1}",
        "é",
        "a.com:80",
        "gw",
        "default/gw",
        "v1",
        "\\1",
        "$1",
        "1s",
        "0s",
        "-1s",
        "99999999999999h",
        "UNAVAILABLE",
        "503,5xx",
    ];
    prop_oneof![
        4 => prop::sample::select(pool).prop_map(String::from),
        1 => "[a-z.*]{0,4}",
    ]
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(-1i64),
        Just(0),
        Just(1),
        Just(80),
        Just(443),
        Just(599),
        Just(65535),
        Just(65536),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(301),
        Just(100)
    ]
}

/// Mostly servable hosts, so that generated tables reach the data path; sometimes anything.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["a.com", "*", "*.a.com", "b.a.com", "A.COM"]).prop_map(String::from),
        1 => weird(),
    ]
}

fn string_match() -> impl Strategy<Value = Value> {
    (0..8u8, weird()).prop_map(|(k, s)| match k {
        0 => json!({"exact": s}),
        1 => json!({"prefix": s}),
        2 => json!({"regex": s}),
        3 => json!({}),
        4 => json!({"exact": s, "regex": s}),
        5 => json!({"prefix": "/"}),
        6 => json!({"regex": ".*"}),
        _ => json!({"prefix": "/a"}),
    })
}

fn condition_map() -> impl Strategy<Value = BTreeMap<String, Value>> {
    prop_oneof![
        3 => Just(BTreeMap::new()),
        1 => prop::collection::btree_map(weird(), string_match(), 1..3),
    ]
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop::option::of(s).boxed()
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop_oneof![Just("app"), Just("version"), Just("")].prop_map(String::from),
        weird(),
        0..3,
    )
}

fn destination() -> impl Strategy<Value = Value> {
    (host(), opt(weird()), opt(int())).prop_map(|(h, s, p)| {
        let mut d = json!({"host": h});
        if let Some(s) = s {
            d["subset"] = json!(s);
        }
        if let Some(p) = p {
            d["port"] = json!({"number": p});
        }
        d
    })
}

fn header_ops() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map(weird(), weird(), 0..3),
        prop::collection::vec(weird(), 0..2),
    )
        .prop_map(|(set, remove)| json!({"set": set, "add": set, "remove": remove}))
}

fn http_rule() -> impl Strategy<Value = Value> {
    let matches = prop::collection::vec(
        (
            opt(string_match()),
            opt(string_match()),
            condition_map(),
            condition_map(),
            prop_oneof![4 => Just(None), 1 => int().prop_map(Some)],
            prop::collection::vec(weird(), 0..2),
            any::<bool>(),
        )
            .prop_map(|(uri, method, headers, query, port, gateways, ic)| {
                let mut m = json!({"headers": headers, "withoutHeaders": headers.clone(),
                    "queryParams": query, "gateways": gateways, "ignoreUriCase": ic});
                if let Some(u) = uri {
                    m["uri"] = u;
                }
                if let Some(me) = method {
                    m["method"] = me;
                }
                if let Some(p) = port {
                    m["port"] = json!(p);
                }
                m
            }),
        0..3,
    );
    let routes = prop::collection::vec(
        (opt(destination()), opt(int()), opt(header_ops())).prop_map(|(d, w, h)| {
            let mut r = json!({});
            if let Some(d) = d {
                r["destination"] = d;
            }
            if let Some(w) = w {
                r["weight"] = json!(w);
            }
            if let Some(h) = h {
                r["headers"] = json!({"request": h, "response": h});
            }
            r
        }),
        1..3,
    );
    (
        matches,
        routes,
        0..4u8,
        (weird(), int(), weird()),
        (opt(weird()), opt(int()), opt(weird())),
        (opt(destination()), opt(int()), opt(header_ops())),
        (weird(), weird(), int()),
    )
        .prop_map(|(matches, routes, kind, (s1, n1, s2), (timeout, attempts, retry_on), (mirror, pct, headers), (rw_match, rw, status))| {
            let mut r = json!({"match": matches});
            match kind {
                0 => r["route"] = json!(routes),
                1 => r["redirect"] = json!({"uri": s1, "authority": s2, "port": n1, "redirectCode": n1, "derivePort": "FROM_REQUEST_PORT"}),
                2 => r["directResponse"] = json!({"status": status, "body": {"bytes": s1}}),
                _ => {
                    r["route"] = json!(routes);
                    r["redirect"] = json!({"prefixRewrite": s1});
                }
            }
            r["rewrite"] = json!({"uri": s1, "authority": s2, "uriRegexRewrite": {"match": rw_match, "rewrite": rw}});
            if let Some(t) = timeout {
                r["timeout"] = json!(t);
            }
            if let Some(a) = attempts {
                r["retries"] = json!({"attempts": a, "retryOn": retry_on.clone().unwrap_or_default(), "perTryTimeout": s1, "backoff": s2});
            }
            r["fault"] = json!({"delay": {"fixedDelay": s1, "percentage": {"value": n1}}, "abort": {"grpcStatus": s2, "percentage": {"value": status}}});
            if let Some(m) = mirror {
                r["mirror"] = m.clone();
                r["mirrorPercentage"] = json!({"value": pct.unwrap_or(0)});
                r["mirrors"] = json!([{"destination": m, "percentage": {"value": n1}}, {}]);
            }
            if let Some(h) = headers {
                r["headers"] = json!({"request": h, "response": h});
            }
            r["corsPolicy"] = json!({"allowOrigins": [{"regex": s1}, {"exact": s2}], "maxAge": s2, "allowMethods": [s1]});
            r
        })
}

fn ns() -> impl Strategy<Value = String> {
    prop_oneof![Just("default"), Just("other"), Just("")].prop_map(String::from)
}

fn object(kind: &str, name: String, ns: String, ts: Option<String>, spec: Value) -> Value {
    let mut meta = json!({"name": name, "namespace": ns});
    if let Some(ts) = ts {
        meta["creationTimestamp"] = json!(ts);
    }
    json!({"apiVersion": "networking.istio.io/v1", "kind": kind, "metadata": meta, "spec": spec})
}

fn endpoint() -> impl Strategy<Value = Value> {
    (opt(weird()), labels(), opt(int()), int()).prop_map(|(address, labels, weight, port)| {
        let mut e = json!({"labels": labels, "ports": {"http": port}});
        if let Some(a) = address {
            e["address"] = json!(a);
        }
        if let Some(w) = weight {
            e["weight"] = json!(w);
        }
        e
    })
}

fn resource() -> impl Strategy<Value = Value> {
    let name = prop_oneof![Just("gw"), Just("a"), Just("b"), Just("")].prop_map(String::from);
    let ts = opt(
        prop_oneof![Just("2024-01-01T00:00:00Z"), Just("2023"), Just("")].prop_map(String::from),
    );
    let gateway = (
        prop::collection::vec(
            (opt(int()), prop_oneof![Just("HTTP"), Just("https"), Just("TCP"), Just("grpc-web"), Just(""), Just("x")], prop::collection::vec(host(), 0..3), any::<bool>(), opt(weird())),
            0..3,
        ),
    )
        .prop_map(|(servers,)| {
            let servers: Vec<Value> = servers
                .into_iter()
                .map(|(port, proto, hosts, redirect, cred)| {
                    let mut s = json!({"hosts": hosts, "tls": {"httpsRedirect": redirect, "mode": "SIMPLE"}});
                    if let Some(p) = port {
                        s["port"] = json!({"number": p, "protocol": proto, "name": "p"});
                    }
                    if let Some(c) = cred {
                        s["tls"]["credentialName"] = json!(c);
                    }
                    s
                })
                .collect();
            ("Gateway", json!({"servers": servers}))
        });
    let virtual_service = (
        prop::collection::vec(host(), 1..3),
        prop_oneof![2 => Just(Vec::new()), 1 => prop::collection::vec(weird(), 1..3)],
        prop::collection::vec(http_rule(), 0..3),
    )
        .prop_map(|(hosts, gateways, http)| {
            (
                "VirtualService",
                json!({"hosts": hosts, "gateways": gateways, "http": http}),
            )
        });
    let destination_rule = (host(), prop::collection::vec((weird(), labels(), any::<bool>()), 0..3), int(), weird())
        .prop_map(|(host, subsets, n, s)| {
            let policy = json!({
                "loadBalancer": {"simple": "ROUND_ROBIN", "consistentHash": {"httpHeaderName": s}},
                "connectionPool": {"tcp": {"maxConnections": n, "connectTimeout": s}, "http": {"http2MaxRequests": n, "idleTimeout": s}},
                "portLevelSettings": [{"port": {"number": n}, "loadBalancer": {"simple": "RANDOM"}}]
            });
            let subsets: Vec<Value> = subsets
                .into_iter()
                .map(|(name, labels, tp)| {
                    let mut v = json!({"name": name, "labels": labels});
                    if tp {
                        v["trafficPolicy"] = policy.clone();
                    }
                    v
                })
                .collect();
            ("DestinationRule", json!({"host": host, "subsets": subsets, "trafficPolicy": policy}))
        });
    let service_entry = (
        prop::collection::vec(host(), 0..3),
        prop::collection::vec((int(), opt(int())), 0..3),
        prop_oneof![Just("NONE"), Just("STATIC"), Just("DNS"), Just("DNS_ROUND_ROBIN"), Just("DYNAMIC_DNS")],
        prop::collection::vec(endpoint(), 0..3),
        opt(labels()),
    )
        .prop_map(|(hosts, ports, resolution, endpoints, selector)| {
            let ports: Vec<Value> = ports
                .into_iter()
                .map(|(n, t)| json!({"number": n, "name": "http", "protocol": "HTTP", "targetPort": t}))
                .collect();
            let mut s = json!({"hosts": hosts, "ports": ports, "resolution": resolution, "endpoints": endpoints});
            if let Some(l) = selector {
                s["workloadSelector"] = json!({"labels": l});
            }
            ("ServiceEntry", s)
        });
    let workload_entry = endpoint().prop_map(|e| ("WorkloadEntry", e));
    (
        prop_oneof![
            1 => gateway,
            3 => virtual_service,
            1 => destination_rule,
            1 => service_entry,
            1 => workload_entry,
        ],
        name,
        ns(),
        ts,
    )
        .prop_map(|((kind, spec), name, ns, ts)| object(kind, name, ns, ts, spec))
}

fn rendered(set: &ResourceSet) -> String {
    let t = translate(set);
    let statuses: BTreeMap<String, _> =
        t.statuses.iter().map(|(k, v)| (k.to_string(), v)).collect();
    let warnings: BTreeMap<String, _> =
        t.warnings.iter().map(|(k, v)| (k.to_string(), v)).collect();
    serde_json::to_string(
        &json!({"snapshot": &t.snapshot, "statuses": statuses, "warnings": warnings}),
    )
    .expect("serialize")
}

proptest! {
    #![proptest_config(config(300))]
    #[test]
    fn translation_is_total_and_order_independent(
        docs in prop::collection::vec(resource(), 0..8),
        reqs in prop::collection::vec(request(), 1..4),
    ) {
        let decoded: Vec<Resource> = docs.into_iter().filter_map(|d| resource_from_value(d, None).ok()).collect();
        let mut forward = ResourceSet::new();
        for r in &decoded {
            forward.insert(r.clone());
        }
        let mut backward = ResourceSet::new();
        // Later duplicates win in `forward`; insert so that the same one wins here.
        let mut seen = std::collections::BTreeSet::new();
        for r in decoded.iter().rev() {
            if seen.insert(r.key()) {
                backward.insert(r.clone());
            }
        }
        prop_assert_eq!(rendered(&forward), rendered(&backward));
        let t = translate(&forward);
        for (host, path, header, method) in reqs {
            let mut r = Req::new(&host, path).method(method).query("a=1&b");
            if let Some(h) = header {
                r = r.header("x-h", h);
            }
            for port in [80u16, 443, 8080] {
                r.port = port;
                let _ = t.snapshot.lookup(&r.view());
            }
        }
        // Statuses cover every resource, with both conditions.
        for key in forward.items.keys() {
            prop_assert_eq!(t.statuses.get(key).map(Vec::len), Some(2));
        }
        // Every routed cluster is in the snapshot, and shared by name.
        for l in t.snapshot.listeners.values() {
            for vh in &l.hosts.vhosts {
                for route in &vh.routes {
                    if let RouteAction::Forward(f) = &route.action {
                        prop_assert!(f.total_weight > 0);
                        for d in &f.destinations {
                            if let model::ir::Target::Cluster(c) = &d.target {
                                let shared = t.snapshot.clusters.get(&c.name);
                                prop_assert!(shared.is_some_and(|s| Arc::ptr_eq(s, c)));
                            }
                        }
                    }
                }
            }
        }
    }
}
