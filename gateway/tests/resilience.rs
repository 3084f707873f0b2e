//! End-to-end tests of traffic policy against the real binary: timeouts, retries (default policy,
//! status retries, body replay, exhaustion), fault injection, mirroring, CORS, load-balancing
//! policies and endpoint weights, circuit breaking and outlier detection.

mod common;
mod upstream;

use common::{request, Gateway, Opts, Response};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use upstream::Upstream;

fn apply(gw: &Gateway, yaml: &str) -> Response {
    let r = gw.admin_call("POST", "/apply", "application/yaml", yaml.as_bytes());
    assert_eq!(r.status, 200, "apply failed: {}", r.text());
    r
}

fn send(gw: &Gateway, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut h: Vec<(&str, &str)> = vec![("Host", host)];
    h.extend_from_slice(headers);
    request(gw.http, "GET", path, &h, b"").expect("request")
}

/// A STATIC ServiceEntry whose endpoints are the given ports, labelled `version: <label>`.
fn service(host: &str, eps: &[(u16, &str)]) -> String {
    let mut s = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {n}}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints:\n",
        n = host.replace('.', "-")
    );
    for (port, label) in eps {
        s.push_str(&format!(
            "  - address: 127.0.0.1\n    ports: {{http: {port}}}\n    labels: {{version: {label}}}\n"
        ));
    }
    s.push_str("---\n");
    s
}

fn vs(name: &str, host: &str, rule: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: '{name}'}}\nspec:\n  hosts: [{host}]\n  http:\n  - {rule}\n---\n")
}

fn counts(gw: &Gateway, host: &str, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for _ in 0..n {
        let r = send(gw, host, "/", headers);
        let k = r
            .header("x-upstream")
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!("{} {}", r.status, r.header("x-gateway-error").unwrap_or(""))
            });
        *c.entry(k).or_default() += 1;
    }
    c
}

fn metric(gw: &Gateway, prefix: &str) -> f64 {
    gw.get("/metrics")
        .text()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn route_timeout_answers_504_ut() {
    let up = Upstream::start("slow");
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(service("slow.svc", &[(up.port(), "v1")])
            + &vs(
                "t",
                "t.test",
                "timeout: 300ms\n    route: [{destination: {host: slow.svc}}]",
            )),
    );
    let start = Instant::now();
    let r = send(&gw, "t.test", "/", &[("x-delay-ms", "2000")]);
    assert_eq!((r.status, r.header("x-gateway-error")), (504, Some("UT")));
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        send(&gw, "t.test", "/", &[("x-delay-ms", "50")]).status,
        200
    );
}

#[test]
fn default_policy_retries_connect_failures_onto_another_endpoint() {
    let up = Upstream::start("live");
    let dead = common::free_port();
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(service("mixed.svc", &[(up.port(), "v1"), (dead, "v1")])
            + &vs("r", "r.test", "route: [{destination: {host: mixed.svc}}]")),
    );
    let c = counts(&gw, "r.test", 50, &[]);
    assert_eq!(c.get("live"), Some(&50), "{c:?}");
    assert!(metric(&gw, "gateway_upstream_retries_total") >= 1.0);
    assert!(metric(&gw, "gateway_upstream_connect_failures_total") >= 1.0);
}

#[test]
fn status_retries_replay_the_body_and_exhaustion_returns_the_last_reply() {
    let good = Upstream::start("good");
    let bad = Upstream::start_status("bad", 503);
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(service("s.svc", &[(good.port(), "v1"), (bad.port(), "v1")])
            + &service("bad.svc", &[(bad.port(), "v1")])
            + &vs(
                "r",
                "r.test",
                "retries: {attempts: 3, retryOn: 5xx, perTryTimeout: 2s}\n    route: [{destination: {host: s.svc}}]",
            )
            + &vs(
                "off",
                "off.test",
                "retries: {attempts: 0}\n    route: [{destination: {host: s.svc}}]",
            )
            + &vs(
                "x",
                "x.test",
                "retries: {attempts: 2, retryOn: gateway-error}\n    route: [{destination: {host: bad.svc}}]",
            )),
    );
    let body = vec![b'x'; 10_000];
    for _ in 0..20 {
        let r = request(gw.http, "POST", "/", &[("Host", "r.test")], &body).expect("post");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json()["body_len"],
            10_000,
            "the body is replayed on retry"
        );
    }
    let c = counts(&gw, "off.test", 60, &[]);
    assert!(c.contains_key("bad"), "attempts 0 disables retries: {c:?}");
    let before = bad.hits();
    let r = send(&gw, "x.test", "/", &[]);
    assert_eq!(
        r.status, 503,
        "retries exhausted: the upstream's last reply"
    );
    assert_eq!(r.header("x-upstream"), Some("bad"));
    assert_eq!(bad.hits() - before, 3, "one try and two retries");
}

#[test]
fn two_503s_become_a_200_after_exactly_three_upstream_hits() {
    let flaky = Upstream::start_flaky("flaky", 2);
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(service("flaky.svc", &[(flaky.port(), "v1")])
            + &vs(
                "f",
                "flaky.test",
                "retries: {attempts: 3, retryOn: 5xx}\n    route: [{destination: {host: flaky.svc}}]",
            )),
    );
    let r = send(&gw, "flaky.test", "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(flaky.hits(), 3);
}

#[test]
fn faults_delay_and_abort_by_percentage() {
    let up = Upstream::start("up");
    let gw = Gateway::start(Opts::default().arg("--access-log").arg("off"));
    apply(
        &gw,
        &(service("f.svc", &[(up.port(), "v1")])
            + &vs("abort", "abort.test", "fault: {abort: {httpStatus: 418, percentage: {value: 100}}}\n    route: [{destination: {host: f.svc}}]")
            + &vs("half", "half.test", "fault: {abort: {httpStatus: 503, percentage: {value: 50}}}\n    route: [{destination: {host: f.svc}}]")
            + &vs("none", "none.test", "fault: {abort: {httpStatus: 503}}\n    route: [{destination: {host: f.svc}}]")
            + &vs("grpc", "grpc.test", "fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}\n    route: [{destination: {host: f.svc}}]")
            + &vs("delay", "delay.test", "fault: {delay: {fixedDelay: 400ms, percentage: {value: 100}}}\n    route: [{destination: {host: f.svc}}]")
            + &vs("halfdelay", "halfdelay.test", "fault: {delay: {fixedDelay: 1ms, percentage: {value: 50}}}\n    route: [{destination: {host: f.svc}}]")),
    );
    let r = send(&gw, "abort.test", "/", &[]);
    assert_eq!((r.status, r.header("x-gateway-error")), (418, Some("FI")));
    assert_eq!(r.text(), "fault filter abort");
    let c = counts(&gw, "half.test", 1000, &[]);
    let aborted = c.get("503 FI").copied().unwrap_or(0);
    assert!((450..=550).contains(&aborted), "50% ± 5% over 1,000: {c:?}");
    counts(&gw, "halfdelay.test", 1000, &[]);
    let delayed = common::eventually(Duration::from_secs(5), || {
        // Delayed responses come from the upstream: the `DI` flag shows in the metrics.
        let text = gw.get("/metrics").text();
        let d: f64 = text
            .lines()
            .filter(|l| {
                l.contains("route=\"vs/default/halfdelay/http/0\"")
                    && l.contains("response_flags=\"DI\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let all: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("gateway_requests_total{")
                    && l.contains("route=\"vs/default/halfdelay/http/0\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (all as usize == 1000).then_some(d as usize)
    })
    .expect("1,000 delayed-route requests counted");
    assert!(
        (450..=550).contains(&delayed),
        "delay at 50% ± 5%: {delayed}"
    );
    assert_eq!(
        counts(&gw, "none.test", 50, &[]).get("up"),
        Some(&50),
        "absent percentage: 0%"
    );
    let g = send(&gw, "grpc.test", "/", &[]);
    assert_eq!((g.status, g.header("grpc-status")), (200, Some("14")));
    let start = Instant::now();
    let d = send(&gw, "delay.test", "/", &[]);
    assert_eq!(d.status, 200);
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn mirrors_get_a_shadow_copy_and_never_slow_the_client() {
    let primary = Upstream::start("primary");
    let shadow = Upstream::start("shadow");
    let dead = common::free_port();
    // Accepts connections (kernel backlog) but never answers.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hole = blackhole.local_addr().expect("addr").port();
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(service("p.svc", &[(primary.port(), "v1")])
            + &service("shadow.svc", &[(shadow.port(), "v1")])
            + &service("dead.svc", &[(dead, "v1")])
            + &service("hole.svc", &[(hole, "v1")])
            + &vs("m", "m.test", "mirror: {host: shadow.svc}\n    route: [{destination: {host: p.svc}}]")
            + &vs("z", "zero.test", "mirror: {host: shadow.svc}\n    mirrorPercentage: {value: 0}\n    route: [{destination: {host: p.svc}}]")
            + &vs("d", "slow.test", "mirrors: [{destination: {host: dead.svc}}, {destination: {host: hole.svc}}]\n    route: [{destination: {host: p.svc}}]")),
    );
    let r = request(
        gw.http,
        "POST",
        "/copy?q=1",
        &[("Host", "m.test")],
        b"hello mirror",
    )
    .expect("post");
    assert_eq!(r.header("x-upstream"), Some("primary"));
    let seen = common::eventually(Duration::from_secs(5), || shadow.seen().into_iter().next())
        .expect("the mirror received a copy");
    assert_eq!(seen["headers"]["host"], "m.test-shadow");
    assert_eq!(seen["uri"], "/copy?q=1");
    assert_eq!(seen["body_len"], 12);
    for _ in 0..20 {
        send(&gw, "zero.test", "/", &[]);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(shadow.hits(), 1, "mirrorPercentage 0 mirrors nothing");
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(send(&gw, "slow.test", "/", &[]).status, 200);
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "dead or stuck mirrors delayed the client: {:?}",
        start.elapsed()
    );
    drop(blackhole);
}

#[test]
fn cors_preflights_are_answered_and_responses_carry_cors_headers() {
    let up = Upstream::start("up");
    let gw = Gateway::start(Opts::default());
    let cors = "corsPolicy:\n      allowOrigins: [{exact: \"https://app.example\"}, {regex: \"https://.*\\\\.trusted\\\\.example\"}]\n      allowMethods: [GET, POST]\n      allowHeaders: [x-token]\n      exposeHeaders: [x-upstream]\n      maxAge: 600s\n      allowCredentials: true\n";
    apply(
        &gw,
        &(service("c.svc", &[(up.port(), "v1")])
            + &vs("c", "c.test", &format!("{cors}    route: [{{destination: {{host: c.svc}}}}]"))
            + &vs("i", "i.test", &format!("{cors}      unmatchedPreflights: IGNORE\n    route: [{{destination: {{host: c.svc}}}}]"))),
    );
    let pre = |host: &str, origin: &str| {
        request(
            gw.http,
            "OPTIONS",
            "/",
            &[
                ("Host", host),
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
            ],
            b"",
        )
        .expect("preflight")
    };
    let hits = up.hits();
    let r = pre("c.test", "https://app.example");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-token"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let r = pre("c.test", "https://a.trusted.example");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.trusted.example")
    );
    assert_eq!(up.hits(), hits, "allowed preflights are not forwarded");
    let r = pre("c.test", "https://evil.example");
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(
        up.hits(),
        hits + 1,
        "unmatched preflights are forwarded by default"
    );
    let r = pre("i.test", "https://evil.example");
    assert_eq!(
        (r.status, r.header("access-control-allow-origin")),
        (200, None)
    );
    assert_eq!(up.hits(), hits + 1, "IGNORE answers without forwarding");
    let r = send(&gw, "c.test", "/", &[("Origin", "https://app.example")]);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-upstream")
    );
    let r = send(&gw, "c.test", "/", &[("Origin", "https://evil.example")]);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn load_balancing_policies_and_endpoint_weights() {
    let ups: Vec<Upstream> = ["a", "b", "c"].iter().map(|n| Upstream::start(n)).collect();
    let eps: Vec<(u16, &str)> = ups.iter().map(|u| (u.port(), "v1")).collect();
    let gw = Gateway::start(Opts::default());
    let dr = |name: &str, host: &str, lb: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}}}\nspec:\n  host: {host}\n  trafficPolicy:\n    loadBalancer: {lb}\n---\n")
    };
    let mut y = String::new();
    for (name, lb) in [
        ("rr", "{simple: ROUND_ROBIN}"),
        ("random", "{simple: RANDOM}"),
        ("header", "{consistentHash: {httpHeaderName: x-user}}"),
        (
            "maglev",
            "{consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}",
        ),
        (
            "cookie",
            "{consistentHash: {httpCookie: {name: sticky, ttl: 60s, path: /}}}",
        ),
        ("srcip", "{consistentHash: {useSourceIp: true}}"),
        ("query", "{consistentHash: {httpQueryParameterName: user}}"),
    ] {
        let host = format!("{name}.svc");
        y.push_str(&service(&host, &eps));
        y.push_str(&dr(name, &host, lb));
        y.push_str(&vs(
            name,
            &format!("{name}.test"),
            &format!("route: [{{destination: {{host: {host}}}}}]"),
        ));
    }
    // Endpoint weights from WorkloadEntries selected by a ServiceEntry.
    y.push_str(&format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: weighted}}\nspec:\n  hosts: [weighted.svc]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  workloadSelector: {{labels: {{app: w}}}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: w1}}\nspec: {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{app: w}}, weight: 3}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: w2}}\nspec: {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{app: w}}, weight: 1}}\n---\n",
        ups[0].port(),
        ups[1].port()
    ));
    y.push_str(&vs(
        "weighted",
        "weighted.test",
        "route: [{destination: {host: weighted.svc}}]",
    ));
    apply(&gw, &y);

    let rr = counts(&gw, "rr.test", 300, &[]);
    assert!(
        rr.values().all(|n| *n == 100),
        "round robin is even: {rr:?}"
    );
    let random = counts(&gw, "random.test", 300, &[]);
    assert_eq!(random.len(), 3, "{random:?}");
    for host in ["header.test", "maglev.test"] {
        let c = counts(&gw, host, 1000, &[("x-user", "alice")]);
        assert_eq!(
            c.len(),
            1,
            "{host}: one header value sticks to one endpoint: {c:?}"
        );
        for user in ["bob", "carol", "dave"] {
            let c = counts(&gw, host, 20, &[("x-user", user)]);
            assert_eq!(c.len(), 1, "{host} {user} sticks to one endpoint: {c:?}");
        }
        let spread: std::collections::HashSet<String> = (0..20)
            .map(|i| {
                send(&gw, host, "/", &[("x-user", &format!("user-{i}"))])
                    .header("x-upstream")
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert!(
            spread.len() >= 2,
            "{host}: keys spread over endpoints: {spread:?}"
        );
    }
    let first = send(&gw, "cookie.test", "/", &[]);
    let cookie = first
        .header("set-cookie")
        .expect("the gateway sets the hash cookie")
        .to_string();
    assert!(
        cookie.starts_with("sticky=") && cookie.contains("Max-Age=60") && cookie.contains("Path=/"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap_or("").to_string();
    let c = counts(&gw, "cookie.test", 1000, &[("Cookie", &pair)]);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        c.keys().next().map(String::as_str),
        first.header("x-upstream")
    );
    assert_eq!(counts(&gw, "srcip.test", 20, &[]).len(), 1);
    let q: std::collections::HashSet<String> = (0..10)
        .map(|_| {
            send(&gw, "query.test", "/?user=zed", &[])
                .header("x-upstream")
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(q.len(), 1, "{q:?}");
    let w = counts(&gw, "weighted.test", 800, &[]);
    let a = w.get("a").copied().unwrap_or(0) as f64 / 800.0;
    assert!((0.68..=0.82).contains(&a), "weights 3:1: {w:?}");
}

#[test]
fn pool_overflow_answers_503_uo_at_once_and_is_not_retried() {
    let up = Upstream::start("slow");
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(service("cb.svc", &[(up.port(), "v1")])
            + "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: cb}\nspec:\n  host: cb.svc\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1}\n---\n"
            + &vs("cb", "cb.test", "retries: {attempts: 3, retryOn: 5xx}\n    route: [{destination: {host: cb.svc}}]")),
    );
    let http = gw.http;
    let slow: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let headers = [("Host", "cb.test"), ("x-delay-ms", "1500")];
                let s = request(http, "GET", "/", &headers, b"")
                    .map(|r| (r.status, r.header("x-gateway-error").map(str::to_string)))
                    .ok();
                (s, start.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = slow
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    let ok = results
        .iter()
        .filter(|(s, _)| matches!(s, Some((200, _))))
        .count();
    let overflow: Vec<_> = results
        .iter()
        .filter(|(s, _)| matches!(s, Some((503, Some(f))) if f == "UO"))
        .collect();
    assert_eq!(
        (ok, overflow.len()),
        (2, 18),
        "one connection and one pending request: {results:?}"
    );
    assert!(
        overflow
            .iter()
            .all(|(_, took)| *took < Duration::from_millis(1000)),
        "overflow answers at once: {overflow:?}"
    );
    assert_eq!(up.hits(), 2, "an overflow is never retried");
    assert_eq!(send(&gw, "cb.test", "/", &[]).status, 200);
    let m = gw.get("/metrics").text();
    assert!(m.lines().any(|l| l.starts_with("gateway_requests_total") && l.contains("response_flags=\"UO\"")), "UO in metrics");
}

#[test]
fn outlier_detection_ejects_failing_endpoints_and_all_ejected_is_503_uh() {
    let good = Upstream::start("good");
    let bad = Upstream::start_status("bad", 500);
    let bad2 = Upstream::start_status("bad2", 500);
    let gw = Gateway::start(Opts::default());
    let od = "trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}\n";
    apply(
        &gw,
        &(service("o.svc", &[(good.port(), "v1"), (bad.port(), "v1")])
            + &service("allbad.svc", &[(bad.port(), "v1"), (bad2.port(), "v1")])
            + &format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: o}}\nspec:\n  host: o.svc\n  {od}---\n")
            + &format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: allbad}}\nspec:\n  host: allbad.svc\n  {od}---\n")
            + &vs("o", "o.test", "retries: {attempts: 0}\n    route: [{destination: {host: o.svc}}]")
            + &vs("a", "a.test", "retries: {attempts: 0}\n    route: [{destination: {host: allbad.svc}}]")),
    );
    let _warmup = counts(&gw, "o.test", 10, &[]);
    let c = counts(&gw, "o.test", 50, &[]);
    assert_eq!(
        c.get("good"),
        Some(&50),
        "the failing endpoint is ejected: {c:?}"
    );
    let _ = counts(&gw, "a.test", 10, &[]);
    let r = send(&gw, "a.test", "/", &[]);
    assert_eq!((r.status, r.header("x-gateway-error")), (503, Some("UH")));
    assert!(metric(&gw, "gateway_outlier_ejections_active") >= 3.0);
}

#[test]
fn the_hash_cookie_carries_its_attributes() {
    let up = Upstream::start("a");
    let gw = Gateway::start(Opts::default());
    let mut y = service("sticky.svc", &[(up.port(), "v1")]);
    y.push_str("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: sticky}\nspec:\n  host: sticky.svc\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpCookie:\n          name: sticky\n          ttl: 60s\n          path: /\n          attributes:\n          - {name: SameSite, value: Strict}\n          - {name: Secure}\n---\n");
    y.push_str(&vs(
        "sticky",
        "sticky.test",
        "route: [{destination: {host: sticky.svc}}]",
    ));
    apply(&gw, &y);
    let r = send(&gw, "sticky.test", "/", &[]);
    assert_eq!(r.header("x-upstream"), Some("a"));
    let cookie = r
        .header("set-cookie")
        .expect("the gateway sets the hash cookie");
    let parts: Vec<&str> = cookie.split("; ").collect();
    assert!(parts[0].starts_with("sticky="), "{cookie}");
    assert_eq!(
        parts[1..],
        [
            "Path=/",
            "Max-Age=60",
            "SameSite=Strict",
            "Secure",
            "HttpOnly"
        ],
        "{cookie}"
    );
}

/// The keepalive timer of the gateway's connections to `port`, in seconds, as `ss -o` shows it
/// (`timer:(keepalive,4.920ms,0)` is 4.92 s, `timer:(keepalive,920ms,0)`, `timer:(keepalive,2sec,0)`,
/// `timer:(keepalive,1min14sec,0)`).
fn keepalive_timers(port: u16) -> Vec<f64> {
    let out = std::process::Command::new("ss")
        .args(["-Htno", "state", "established"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.split("timer:(keepalive,").nth(1))
        .filter_map(|t| t.split(',').next())
        .filter_map(|t| {
            let (min, rest) = match t.split_once("min") {
                Some((m, r)) => (m.parse::<f64>().ok()?, r),
                None => (0.0, t),
            };
            // ss prints seconds and milliseconds as `6.920ms`, milliseconds alone as `920ms`.
            let secs = if let Some(ms) = rest.strip_suffix("ms") {
                if ms.contains('.') {
                    ms.parse::<f64>().ok()?
                } else {
                    ms.parse::<f64>().ok()? / 1000.0
                }
            } else if let Some(s) = rest.strip_suffix("sec") {
                s.parse::<f64>().ok()?
            } else {
                0.0
            };
            Some(min * 60.0 + secs)
        })
        .collect()
}

#[test]
fn tcp_keepalive_time_and_interval_are_set_on_upstream_connections() {
    let up = Upstream::start("a");
    let gw = Gateway::start(Opts::default());
    let mut y = service("ka.svc", &[(up.port(), "v1")]);
    y.push_str("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ka}\nspec:\n  host: ka.svc\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        tcpKeepalive: {time: 2s, interval: 7s, probes: 3}\n---\n");
    y.push_str(&vs(
        "ka",
        "ka.test",
        "route: [{destination: {host: ka.svc}}]",
    ));
    apply(&gw, &y);
    assert_eq!(
        send(&gw, "ka.test", "/", &[]).header("x-upstream"),
        Some("a")
    );
    // Idle in the pool: the first probe is due within `time` (Linux's default is 2 hours)...
    let first = keepalive_timers(up.port());
    assert!(
        !first.is_empty() && first.iter().all(|t| *t <= 2.0),
        "timers after the request: {first:?}"
    );
    // ...and once it is sent, the next comes `interval` later (Linux's default is 75 s).
    // Polled for longer than one interval: on a loaded machine a poll may miss the window.
    let after_probe = common::eventually(Duration::from_secs(15), || {
        let t = keepalive_timers(up.port());
        (!t.is_empty() && t.iter().any(|t| *t > 2.0)).then_some(t)
    })
    .expect("a timer re-armed after the first probe");
    assert!(
        after_probe.iter().all(|t| *t <= 7.0),
        "timers after the first probe: {after_probe:?}"
    );
}
