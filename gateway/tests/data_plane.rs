//! End-to-end tests of Istio HTTP routing served by the real binary: host precedence, every match
//! kind, ordering and merging, weighted splits, subsets, rewrites, redirects, direct responses,
//! header operations, routing failures with their response flags, and hot reloads.

mod common;
mod upstream;

use common::{request, Gateway, Opts, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use upstream::Upstream;

fn apply(gw: &Gateway, yaml: &str) -> Response {
    let r = gw.admin_call("POST", "/apply", "application/yaml", yaml.as_bytes());
    assert_eq!(r.status, 200, "apply failed: {}", r.text());
    r
}

fn send(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut h: Vec<(&str, &str)> = vec![("Host", host)];
    h.extend_from_slice(headers);
    request(addr, "GET", path, &h, b"").expect("request")
}

fn get(gw: &Gateway, host: &str, path: &str) -> Response {
    send(gw.http, host, path, &[])
}

/// Which upstream answered (`x-upstream`), or the status and flag of a gateway-made response.
fn who(r: &Response) -> String {
    match r.header("x-upstream") {
        Some(u) => u.to_string(),
        None => format!("{} {}", r.status, r.header("x-gateway-error").unwrap_or("")),
    }
}

/// A STATIC ServiceEntry `host` whose endpoints are the upstreams, labelled `version: <name>`.
fn service(host: &str, ups: &[&Upstream]) -> String {
    let mut eps = String::new();
    for u in ups {
        eps.push_str(&format!(
            "  - address: 127.0.0.1\n    ports: {{http: {}}}\n    labels: {{version: {}}}\n",
            u.port(),
            u.name
        ));
    }
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints:\n{eps}---\n",
        name = host.replace('.', "-")
    )
}

#[test]
fn exact_host_beats_longest_wildcard_beats_any() {
    let (a, b, c, d) = (
        Upstream::start("exact"),
        Upstream::start("wild"),
        Upstream::start("any"),
        Upstream::start("deep"),
    );
    let gw = Gateway::start(Opts::default());
    let mut y = String::new();
    for (name, host, u) in [
        ("exact", "a.example.com", &a),
        ("wild", "*.example.com", &b),
        ("any", "*", &c),
        ("deep", "*.deep.example.com", &d),
    ] {
        y.push_str(&service(&format!("{name}.svc"), &[u]));
        y.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [\"{host}\"]\n  http:\n  - route:\n    - destination: {{host: {name}.svc}}\n---\n"
        ));
    }
    apply(&gw, &y);
    assert_eq!(who(&get(&gw, "a.example.com", "/")), "exact");
    assert_eq!(
        who(&get(&gw, "A.Example.COM:8080", "/")),
        "exact",
        "case and port ignored"
    );
    assert_eq!(who(&get(&gw, "b.example.com", "/")), "wild");
    assert_eq!(who(&get(&gw, "x.y.example.com", "/")), "wild");
    assert_eq!(
        who(&get(&gw, "x.deep.example.com", "/")),
        "deep",
        "longest suffix wins"
    );
    assert_eq!(
        who(&get(&gw, "example.com", "/")),
        "any",
        "*.example.com does not match the apex"
    );
    assert_eq!(who(&get(&gw, "other.org", "/")), "any");
}

#[test]
fn each_match_kind_with_istio_semantics() {
    let listen_port = common::free_port();
    let gw = Gateway::start(
        Opts::default()
            .arg("--listen")
            .arg(format!("8000=127.0.0.1:{listen_port}")),
    );
    let rule = |name: &str, m: &str| {
        format!("  - name: {name}\n    match:\n{m}    directResponse: {{status: 200, body: {{string: {name}}}}}\n")
    };
    let mut rules = String::new();
    rules.push_str(&rule("exact", "    - uri: {exact: /exact}\n"));
    rules.push_str(&rule("prefix", "    - uri: {prefix: /pre}\n"));
    rules.push_str(&rule("regex", "    - uri: {regex: \"/re/[0-9]+\"}\n"));
    rules.push_str(&rule(
        "nocase",
        "    - uri: {exact: /CaSe}\n      ignoreUriCase: true\n",
    ));
    rules.push_str(&rule("method", "    - method: {exact: POST}\n"));
    rules.push_str(&rule("header", "    - headers: {x-ver: {exact: v2}}\n"));
    rules.push_str(&rule("presence", "    - headers: {x-present: {}}\n"));
    rules.push_str(&rule(
        "without",
        "    - uri: {prefix: /without}\n      withoutHeaders: {x-block: {exact: \"yes\"}}\n",
    ));
    rules.push_str(&rule("query", "    - queryParams: {q: {exact: \"1\"}}\n"));
    rules.push_str(&rule(
        "qregex",
        "    - queryParams: {id: {regex: \"[a-z]+\"}}\n",
    ));
    rules.push_str(&rule("authority", "    - authority: {prefix: auth.}\n"));
    rules.push_str(&rule("port", "    - port: 8000\n"));
    rules.push_str(&rule("scheme", "    - scheme: {exact: https}\n"));
    rules.push_str(&rule(
        "or",
        "    - uri: {exact: /or1}\n    - uri: {exact: /or2}\n",
    ));
    rules.push_str(&rule(
        "and",
        "    - uri: {exact: /and}\n      headers: {x-and: {exact: \"1\"}}\n",
    ));
    rules.push_str(
        "  - name: fallback\n    directResponse: {status: 200, body: {string: fallback}}\n",
    );
    let y = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n  - port: {{number: 8000, name: alt, protocol: HTTP}}\n    hosts: [\"*\"]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: m}}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n{rules}"
    );
    apply(&gw, &y);
    let body = |r: Response| r.text();
    let h = "m.test";
    assert_eq!(body(get(&gw, h, "/exact")), "exact");
    assert_eq!(
        body(get(&gw, h, "/exact/more")),
        "fallback",
        "exact is whole-path"
    );
    assert_eq!(
        body(get(&gw, h, "/exact?x=1")),
        "exact",
        "query excluded from uri"
    );
    assert_eq!(
        body(get(&gw, h, "/prefix-anything")),
        "prefix",
        "plain string prefix"
    );
    assert_eq!(body(get(&gw, h, "/re/123")), "regex");
    assert_eq!(
        body(get(&gw, h, "/re/123x")),
        "fallback",
        "regex is a full match"
    );
    assert_eq!(body(get(&gw, h, "/case")), "nocase");
    assert_eq!(body(get(&gw, h, "/CASE")), "nocase");
    let post = request(gw.http, "POST", "/x", &[("Host", h)], b"").expect("post");
    assert_eq!(post.text(), "method");
    assert_eq!(
        body(send(gw.http, h, "/x", &[("X-Ver", "v2")])),
        "header",
        "names case-insensitive"
    );
    assert_eq!(body(send(gw.http, h, "/x", &[("x-ver", "v3")])), "fallback");
    assert_eq!(
        body(send(gw.http, h, "/x", &[("x-present", "")])),
        "presence"
    );
    assert_eq!(
        body(get(&gw, h, "/without")),
        "without",
        "missing header does not block"
    );
    assert_eq!(
        body(send(gw.http, h, "/without", &[("x-block", "yes")])),
        "fallback"
    );
    assert_eq!(
        body(send(gw.http, h, "/without", &[("x-block", "no")])),
        "without"
    );
    assert_eq!(body(get(&gw, h, "/x?a=2&q=1")), "query");
    assert_eq!(body(get(&gw, h, "/x?q=11")), "fallback");
    assert_eq!(body(get(&gw, h, "/x?id=abc")), "qregex");
    assert_eq!(body(get(&gw, h, "/x?id=abc1")), "fallback");
    assert_eq!(body(get(&gw, "auth.example", "/x")), "authority");
    let alt: SocketAddr = format!("127.0.0.1:{listen_port}").parse().expect("addr");
    assert_eq!(body(send(alt, h, "/x", &[])), "port");
    assert_eq!(body(get(&gw, h, "/or2")), "or", "OR across match entries");
    assert_eq!(
        body(get(&gw, h, "/and")),
        "fallback",
        "AND within one entry"
    );
    assert_eq!(body(send(gw.http, h, "/and", &[("x-and", "1")])), "and");
    assert_eq!(
        body(get(&gw, h, "/y")),
        "fallback",
        "scheme is http on the plaintext listener"
    );
}

#[test]
fn first_match_wins_the_first_catch_all_ends_a_virtual_service_and_merges_last() {
    let gw = Gateway::start(Opts::default());
    let vs = |name: &str, rules: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [merge.test]\n  http:\n{rules}---\n")
    };
    let dr = |name: &str, m: &str| {
        format!("  - match: [{m}]\n    directResponse: {{status: 200, body: {{string: {name}}}}}\n")
    };
    // `first` is created before `second`: its catch-all must still come after second's rules.
    apply(
        &gw,
        &vs(
            "first",
            &format!(
                "{}{}{}{}",
                dr("first-a", "{uri: {prefix: /a}}"),
                dr("first-a-again", "{uri: {prefix: /a}}"),
                dr("first-catch-all", "{uri: {prefix: /}}"),
                // Istio stops a VirtualService at its first catch-all: never reached.
                dr("first-after-catch-all", "{uri: {prefix: /d}}")
            ),
        ),
    );
    apply(&gw, &vs("second", &dr("second-b", "{uri: {prefix: /b}}")));
    assert_eq!(
        get(&gw, "merge.test", "/a").text(),
        "first-a",
        "first match wins"
    );
    assert_eq!(
        get(&gw, "merge.test", "/b").text(),
        "second-b",
        "catch-all moved last"
    );
    assert_eq!(get(&gw, "merge.test", "/c").text(), "first-catch-all");
    assert_eq!(
        get(&gw, "merge.test", "/d").text(),
        "first-catch-all",
        "a rule after the first catch-all of its VirtualService is never reached"
    );
}

#[test]
fn weighted_split_is_within_three_percent_over_2000_requests() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let gw = Gateway::start(Opts::default());
    let y = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r}}\nspec:\n  host: split.svc\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: s}}\nspec:\n  hosts: [split.test]\n  http:\n  - route:\n    - destination: {{host: split.svc, subset: v1}}\n      weight: 90\n    - destination: {{host: split.svc, subset: v2}}\n      weight: 10\n    - destination: {{host: split.svc, subset: v2}}\n      weight: 0\n",
        service("split.svc", &[&v1, &v2])
    );
    apply(&gw, &y);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..2000 {
        *counts.entry(who(&get(&gw, "split.test", "/"))).or_default() += 1;
    }
    let n1 = counts.get("v1").copied().unwrap_or(0);
    let n2 = counts.get("v2").copied().unwrap_or(0);
    assert_eq!(n1 + n2, 2000, "{counts:?}");
    assert!((1740..=1860).contains(&n1), "90% ± 3%: {counts:?}");
}

#[test]
fn subsets_select_endpoints_by_label_and_unknown_subset_is_503_nc() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let gw = Gateway::start(Opts::default());
    let y = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r}}\nspec:\n  host: sub.svc\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n  - {{name: none, labels: {{version: v9}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: s}}\nspec:\n  hosts: [sub.test]\n  http:\n  - match: [{{uri: {{prefix: /two}}}}]\n    route: [{{destination: {{host: sub.svc, subset: v2}}}}]\n  - match: [{{uri: {{prefix: /missing}}}}]\n    route: [{{destination: {{host: sub.svc, subset: v3}}}}]\n  - match: [{{uri: {{prefix: /empty}}}}]\n    route: [{{destination: {{host: sub.svc, subset: none}}}}]\n  - match: [{{uri: {{prefix: /dead}}}}]\n    route: [{{destination: {{host: 127.0.0.1, port: {{number: {dead}}}}}}}]\n  - match: [{{uri: {{prefix: /nxdomain}}}}]\n    route: [{{destination: {{host: no-such-host.invalid}}}}]\n  - route: [{{destination: {{host: sub.svc, subset: v1}}}}]\n",
        service("sub.svc", &[&v1, &v2]),
        dead = common::free_port()
    );
    let r = apply(&gw, &y);
    assert!(
        r.headers_named("warning").iter().any(|w| w.contains("v3")),
        "a dangling subset is a warning: {:?}",
        r.headers
    );
    for _ in 0..20 {
        assert_eq!(who(&get(&gw, "sub.test", "/two")), "v2");
        assert_eq!(who(&get(&gw, "sub.test", "/one")), "v1");
    }
    let nc = get(&gw, "sub.test", "/missing");
    assert_eq!((nc.status, nc.header("x-gateway-error")), (503, Some("NC")));
    let uh = get(&gw, "sub.test", "/empty");
    assert_eq!((uh.status, uh.header("x-gateway-error")), (503, Some("UH")));
    let uh = get(&gw, "sub.test", "/nxdomain");
    assert_eq!((uh.status, uh.header("x-gateway-error")), (503, Some("UH")));
    let uf = get(&gw, "sub.test", "/dead");
    assert_eq!(uf.status, 503);
    assert!(
        uf.header("x-gateway-error")
            .is_some_and(|f| f.starts_with("UF")),
        "{:?}",
        uf.headers
    );
    let nr = get(&gw, "nothing.test", "/");
    assert_eq!((nr.status, nr.header("x-gateway-error")), (404, Some("NR")));
}

#[test]
fn rewrites_replace_prefix_whole_path_regex_and_authority() {
    let up = Upstream::start("up");
    let gw = Gateway::start(Opts::default());
    let y = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: rw}}\nspec:\n  hosts: [rw.test]\n  http:\n  - match: [{{uri: {{prefix: /api}}}}]\n    rewrite: {{uri: /v2}}\n    route: [{{destination: {{host: up.svc}}}}]\n  - match: [{{uri: {{exact: /old}}}}]\n    rewrite: {{uri: /new/place}}\n    route: [{{destination: {{host: up.svc}}}}]\n  - match: [{{uri: {{prefix: /re}}}}]\n    rewrite:\n      uriRegexRewrite: {{match: \"^/re/([a-z]+)/(.*)$\", rewrite: \"/\\\\2/\\\\1\"}}\n    route: [{{destination: {{host: up.svc}}}}]\n  - match: [{{uri: {{prefix: /auth}}}}]\n    rewrite: {{authority: internal.example}}\n    route: [{{destination: {{host: up.svc}}}}]\n",
        service("up.svc", &[&up])
    );
    apply(&gw, &y);
    let uri = |p: &str| {
        get(&gw, "rw.test", p).json()["uri"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(uri("/api/users?x=1"), "/v2/users?x=1");
    assert_eq!(uri("/old?k=v"), "/new/place?k=v");
    assert_eq!(uri("/re/abc/def"), "/def/abc");
    let r = get(&gw, "rw.test", "/auth/x").json();
    assert_eq!(r["headers"]["host"], "internal.example");
    assert_eq!(r["uri"], "/auth/x");
}

#[test]
fn redirects_set_every_field_and_keep_the_query() {
    let gw = Gateway::start(Opts::default());
    let y = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: rd}\nspec:\n  hosts: [rd.test]\n  http:\n  - match: [{uri: {exact: /uri}}]\n    redirect: {uri: /elsewhere}\n  - match: [{uri: {prefix: /pre}}]\n    redirect: {prefixRewrite: /post, redirectCode: 302}\n  - match: [{uri: {prefix: /full}}]\n    redirect: {authority: other.example, scheme: https, port: 8443, uri: /x, redirectCode: 308}\n  - match: [{uri: {prefix: /default-port}}]\n    redirect: {scheme: https, authority: secure.example, port: 443}\n  - match: [{uri: {prefix: /derive}}]\n    redirect: {authority: d.example, derivePort: FROM_PROTOCOL_DEFAULT}\n";
    apply(&gw, y);
    let r = get(&gw, "rd.test", "/uri?a=1");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://rd.test/elsewhere?a=1"));
    let r = get(&gw, "rd.test", "/pre/fix?b=2");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://rd.test/post/fix?b=2"));
    let r = get(&gw, "rd.test", "/full");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://other.example:8443/x"));
    let r = get(&gw, "rd.test", "/default-port");
    assert_eq!(
        r.header("location"),
        Some("https://secure.example/default-port")
    );
    let r = get(&gw, "rd.test:8080", "/derive");
    assert_eq!(r.header("location"), Some("http://d.example/derive"));
}

#[test]
fn direct_responses_and_header_operations() {
    let up = Upstream::start("up");
    let gw = Gateway::start(Opts::default());
    let y = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: h}}\nspec:\n  hosts: [h.test]\n  http:\n  - match: [{{uri: {{exact: /text}}}}]\n    directResponse: {{status: 418, body: {{string: teapot}}}}\n  - match: [{{uri: {{exact: /bytes}}}}]\n    directResponse: {{status: 200, body: {{bytes: aGVsbG8=}}}}\n  - match: [{{uri: {{exact: /empty}}}}]\n    directResponse: {{status: 204}}\n  - headers:\n      request:\n        set: {{x-set: route}}\n        add: {{x-add: route}}\n        remove: [x-remove-me]\n      response:\n        set: {{x-resp-set: route}}\n        add: {{x-resp-add: route}}\n        remove: [x-upstream]\n    route:\n    - destination: {{host: up.svc}}\n      headers:\n        request:\n          set: {{x-dest: dest}}\n        response:\n          add: {{x-resp-dest: dest}}\n",
        service("up.svc", &[&up])
    );
    apply(&gw, &y);
    let r = get(&gw, "h.test", "/text");
    assert_eq!((r.status, r.text().as_str()), (418, "teapot"));
    assert_eq!(get(&gw, "h.test", "/bytes").text(), "hello");
    assert_eq!(get(&gw, "h.test", "/empty").status, 204);
    let r = send(
        gw.http,
        "h.test",
        "/fwd",
        &[
            ("x-add", "client"),
            ("x-remove-me", "1"),
            ("x-set", "client"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-resp-set"), Some("route"));
    assert_eq!(r.header("x-resp-add"), Some("route"));
    assert_eq!(r.header("x-resp-dest"), Some("dest"));
    assert_eq!(r.header("x-upstream"), None, "response header removed");
    let seen = r.json();
    let hdr = |n: &str| seen["headers"][n].as_str().map(str::to_string);
    assert_eq!(hdr("x-set").as_deref(), Some("route"));
    assert_eq!(hdr("x-add").as_deref(), Some("client, route"));
    assert_eq!(hdr("x-remove-me"), None);
    assert_eq!(hdr("x-dest").as_deref(), Some("dest"));
    assert_eq!(hdr("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(hdr("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert!(hdr("x-request-id").is_some_and(|v| v.len() >= 32));
    let r = send(
        gw.http,
        "h.test",
        "/fwd",
        &[
            ("x-request-id", "given-id"),
            ("x-forwarded-for", "10.1.2.3"),
        ],
    )
    .json();
    assert_eq!(r["headers"]["x-request-id"], "given-id");
    assert_eq!(r["headers"]["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
}

#[test]
fn metrics_count_requests_by_route_with_bounded_labels() {
    let up = Upstream::start("m");
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &format!(
            "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: mv}}\nspec:\n  hosts: [metrics.test]\n  http:\n  - route: [{{destination: {{host: m.svc}}}}]\n",
            service("m.svc", &[&up])
        ),
    );
    for i in 0..5 {
        assert_eq!(
            get(&gw, "metrics.test", &format!("/unique/path/{i}?q={i}")).status,
            200
        );
    }
    assert_eq!(get(&gw, "unrouted.test", "/x").status, 404);
    // Requests are counted when they are logged, just after the response is written: poll.
    let routed_needle = [
        "gateway_requests_total{",
        "route=\"vs/default/mv/http/0\"",
        "destination_service=\"m.svc\"",
        "response_code=\"200\"",
    ];
    let nr_needle = [
        "gateway_requests_total{",
        "response_flags=\"NR\"",
        "response_code=\"404\"",
    ];
    let find = |text: &str, needle: &[&str]| {
        text.lines()
            .find(|l| needle.iter().all(|n| l.contains(n)))
            .map(str::to_string)
    };
    let text = common::eventually(std::time::Duration::from_secs(5), || {
        let t = gw.get("/metrics").text();
        let done = find(&t, &routed_needle).is_some_and(|l| l.ends_with(" 5"))
            && find(&t, &nr_needle).is_some();
        done.then_some(t)
    })
    .expect("5 routed requests and one 404 counted");
    let bucket = [
        "gateway_request_duration_seconds_bucket{",
        "route=\"vs/default/mv/http/0\"",
    ];
    assert!(find(&text, &bucket).is_some());
    assert!(
        !text.contains("/unique/path"),
        "raw paths never become labels"
    );
    for series in [
        "gateway_config_generation ",
        "gateway_config_reloads_total{result=\"success\"}",
        "gateway_config_last_reload_success_timestamp_seconds ",
        "gateway_build_info{",
    ] {
        assert!(text.contains(series), "missing {series}");
    }
}
