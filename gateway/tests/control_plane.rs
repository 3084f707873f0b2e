//! End-to-end tests of the control plane against the real binary: the admin REST API of
//! CONTRACT §3 for every kind, preconditions, dry runs, batches, durability across restarts,
//! Secret redaction, validation (422 naming the field, state unchanged), body limits, YAML,
//! warnings, auth, and the refusal to expose an unauthenticated admin API.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn start() -> Gateway {
    Gateway::start(quiet())
}

fn quiet() -> Opts {
    Opts::default()
        .arg("--threads")
        .arg("1")
        .arg("--access-log")
        .arg("off")
}

const NET: &str = "/apis/networking.istio.io/v1";
const CORE: &str = "/api/v1";

/// One kind as the API serves it, and a valid object of it (`variant` changes the spec).
struct KindCase {
    kind: &'static str,
    plural: &'static str,
    base: &'static str,
    make: fn(&str, u32) -> Value,
}

impl KindCase {
    fn collection(&self, ns: &str) -> String {
        format!("{}/namespaces/{ns}/{}", self.base, self.plural)
    }

    fn item(&self, ns: &str, name: &str) -> String {
        format!("{}/{name}", self.collection(ns))
    }

    fn all(&self) -> String {
        format!("{}/{}", self.base, self.plural)
    }
}

fn net(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

fn gateway(name: &str, v: u32) -> Value {
    net(
        "Gateway",
        name,
        json!({"selector": {"istio": "ingressgateway"}, "servers": [{
            "port": {"number": 80, "name": "http", "protocol": "HTTP"},
            "hosts": [format!("v{v}.example.com")]}]}),
    )
}

fn virtual_service(name: &str, v: u32) -> Value {
    net(
        "VirtualService",
        name,
        json!({"hosts": [format!("v{v}.example.com")],
               "http": [{"route": [{"destination": {"host": "backend", "port": {"number": 8080}}}]}]}),
    )
}

fn destination_rule(name: &str, v: u32) -> Value {
    net(
        "DestinationRule",
        name,
        json!({"host": "backend", "subsets": [{"name": format!("v{v}"), "labels": {"version": format!("v{v}")}}]}),
    )
}

fn service_entry(name: &str, v: u32) -> Value {
    net(
        "ServiceEntry",
        name,
        json!({"hosts": [format!("api{v}.example.com")], "location": "MESH_EXTERNAL", "resolution": "STATIC",
               "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
               "endpoints": [{"address": "127.0.0.1", "labels": {"version": "v1"}}]}),
    )
}

fn workload_entry(name: &str, v: u32) -> Value {
    net(
        "WorkloadEntry",
        name,
        json!({"address": format!("127.0.0.{v}"), "labels": {"app": "backend"}, "ports": {"http": 8080}}),
    )
}

fn secret(name: &str, v: u32) -> Value {
    let mut data = json!({"tls.crt": TEST_CERT_PEM, "tls.key": TEST_KEY_PEM});
    if v > 1 {
        data["ca.crt"] = json!(TEST_CERT_PEM);
    }
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": name}, "stringData": data})
}

const KINDS: [KindCase; 6] = [
    KindCase {
        kind: "Gateway",
        plural: "gateways",
        base: NET,
        make: gateway,
    },
    KindCase {
        kind: "VirtualService",
        plural: "virtualservices",
        base: NET,
        make: virtual_service,
    },
    KindCase {
        kind: "DestinationRule",
        plural: "destinationrules",
        base: NET,
        make: destination_rule,
    },
    KindCase {
        kind: "ServiceEntry",
        plural: "serviceentries",
        base: NET,
        make: service_entry,
    },
    KindCase {
        kind: "WorkloadEntry",
        plural: "workloadentries",
        base: NET,
        make: workload_entry,
    },
    KindCase {
        kind: "Secret",
        plural: "secrets",
        base: CORE,
        make: secret,
    },
];

fn case(kind: &str) -> &'static KindCase {
    KINDS
        .iter()
        .find(|k| k.kind == kind)
        .unwrap_or_else(|| panic!("no case for {kind}"))
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap_or("?"),
                i["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Every list of every kind, across namespaces: the whole observable state.
fn state(g: &Gateway) -> Vec<Value> {
    KINDS
        .iter()
        .map(|k| {
            let r = g.get(&k.all());
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()
        })
        .collect()
}

fn expect_status(r: &Response, code: u16, reason: &str) -> Value {
    assert_eq!(
        r.status,
        code,
        "expected {code} {reason}, got: {}",
        r.text()
    );
    let s = r.json();
    assert_eq!(s["kind"], "Status", "{s}");
    assert_eq!(s["apiVersion"], "v1", "{s}");
    assert_eq!(s["status"], "Failure", "{s}");
    assert_eq!(s["code"], code, "{s}");
    assert_eq!(s["reason"], reason, "{s}");
    s
}

// ----- CRUD for every kind -----

fn crud(c: &KindCase) {
    let g = start();
    let url = c.collection("default");

    let r = g.post(&url, &(c.make)("one", 1));
    assert_eq!(r.status, 201, "create {}: {}", c.kind, r.text());
    let created = r.json();
    assert_eq!(created["kind"], c.kind);
    let api_version = if c.kind == "Secret" {
        "v1"
    } else {
        "networking.istio.io/v1"
    };
    assert_eq!(created["apiVersion"], api_version);
    let meta = created["metadata"].clone();
    assert_eq!(meta["name"], "one");
    assert_eq!(meta["namespace"], "default");
    assert_eq!(meta["generation"], 1);
    let rv: u64 = meta["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("resourceVersion: {meta}"));
    assert!(
        meta["uid"].as_str().is_some_and(|u| u.len() == 36),
        "{meta}"
    );
    assert!(
        meta["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{meta}"
    );

    let r = g.get(&c.item("default", "one"));
    assert_eq!(r.status, 200, "{}", r.text());
    let read = r.json();
    assert_eq!(read["metadata"], meta);
    if c.kind != "Secret" {
        assert_eq!(read["spec"], (c.make)("one", 1)["spec"]);
    }

    let mut body = (c.make)("one", 2);
    body["metadata"]["resourceVersion"] = json!(rv.to_string());
    let r = g.put(&c.item("default", "one"), &body);
    assert_eq!(r.status, 200, "replace {}: {}", c.kind, r.text());
    let replaced = r.json();
    let m = &replaced["metadata"];
    assert_eq!(m["generation"], 2, "{m}");
    assert_eq!(m["uid"], meta["uid"]);
    assert_eq!(m["creationTimestamp"], meta["creationTimestamp"]);
    let rv2: u64 = m["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(rv2 > rv, "{rv2} > {rv}");
    if c.kind == "Secret" {
        assert!(replaced["data"]["ca.crt"].is_string(), "{replaced}");
    } else {
        assert_eq!(replaced["spec"], (c.make)("one", 2)["spec"]);
    }

    let r = g.post(&c.collection("other"), &(c.make)("two", 1));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = g.post(&url, &(c.make)("zero", 1));
    assert_eq!(r.status, 201, "{}", r.text());

    let r = g.get(&url);
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list["kind"], format!("{}List", c.kind));
    assert_eq!(list["apiVersion"], api_version);
    assert!(list["metadata"]["resourceVersion"].is_string(), "{list}");
    assert_eq!(names(&list), ["default/one", "default/zero"]);
    let all = g.get(&c.all()).json();
    assert_eq!(
        names(&all),
        ["default/one", "default/zero", "other/two"],
        "sorted by namespace then name"
    );

    let r = g.delete(&c.item("default", "one"));
    assert_eq!(r.status, 200, "delete {}: {}", c.kind, r.text());
    let r = g.get(&c.item("default", "one"));
    let s = expect_status(&r, 404, "NotFound");
    assert!(
        s["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"one\" not found")),
        "{s}"
    );
    expect_status(&g.delete(&c.item("default", "one")), 404, "NotFound");
    assert_eq!(names(&g.get(&url).json()), ["default/zero"]);
    assert_eq!(
        names(&g.get(&c.all()).json()),
        ["default/zero", "other/two"]
    );
}

#[test]
fn crud_gateway() {
    crud(case("Gateway"));
}

#[test]
fn crud_virtual_service() {
    crud(case("VirtualService"));
}

#[test]
fn crud_destination_rule() {
    crud(case("DestinationRule"));
}

#[test]
fn crud_service_entry() {
    crud(case("ServiceEntry"));
}

#[test]
fn crud_workload_entry() {
    crud(case("WorkloadEntry"));
}

#[test]
fn crud_secret() {
    crud(case("Secret"));
}

#[test]
fn version_aliases_serve_the_same_objects() {
    let g = start();
    let vs = case("VirtualService");
    assert_eq!(
        g.post(&vs.collection("default"), &virtual_service("a", 1))
            .status,
        201
    );
    for v in ["v1beta1", "v1alpha3"] {
        let r = g.get(&format!(
            "/apis/networking.istio.io/{v}/namespaces/default/virtualservices/a"
        ));
        assert_eq!(r.status, 200, "{v}: {}", r.text());
        assert_eq!(r.json()["apiVersion"], "networking.istio.io/v1");
    }
    expect_status(
        &g.get("/apis/networking.istio.io/v1/namespaces/default/widgets"),
        404,
        "NotFound",
    );
}

// ----- preconditions -----

#[test]
fn duplicate_create_is_409_already_exists() {
    let g = start();
    let url = case("VirtualService").collection("default");
    assert_eq!(g.post(&url, &virtual_service("dup", 1)).status, 201);
    let before = state(&g);
    let s = expect_status(
        &g.post(&url, &virtual_service("dup", 2)),
        409,
        "AlreadyExists",
    );
    assert_eq!(
        s["message"],
        "virtualservices.networking.istio.io \"dup\" already exists"
    );
    assert_eq!(state(&g), before);
}

#[test]
fn stale_resource_version_is_409_conflict() {
    let g = start();
    let c = case("DestinationRule");
    let r = g.post(&c.collection("default"), &destination_rule("dr", 1));
    let rv = r.json()["metadata"]["resourceVersion"].clone();
    let mut body = destination_rule("dr", 2);
    body["metadata"]["resourceVersion"] = rv.clone();
    assert_eq!(g.put(&c.item("default", "dr"), &body).status, 200);
    let before = state(&g);
    // A second writer still holding the first version.
    body = destination_rule("dr", 3);
    body["metadata"]["resourceVersion"] = rv;
    let s = expect_status(&g.put(&c.item("default", "dr"), &body), 409, "Conflict");
    assert_eq!(
        s["message"],
        "Operation cannot be fulfilled on destinationrules.networking.istio.io \"dr\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(state(&g), before);
    // Without a resourceVersion, PUT replaces unconditionally.
    let r = g.put(&c.item("default", "dr"), &destination_rule("dr", 3));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["metadata"]["generation"], 3);
}

// ----- dry run -----

#[test]
fn dry_run_persists_nothing() {
    let mut g = start();
    let c = case("VirtualService");
    assert_eq!(
        g.post(&c.collection("default"), &virtual_service("kept", 1))
            .status,
        201
    );
    let before = state(&g);
    let generation = metric(&g, "gateway_config_generation");

    let r = g.post(
        &format!("{}?dryRun=All", c.collection("default")),
        &virtual_service("new", 1),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["metadata"]["name"], "new");
    let r = g.put(
        &format!("{}?dryRun=All", c.item("default", "kept")),
        &virtual_service("kept", 9),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["spec"]["hosts"][0], "v9.example.com");
    let r = g.admin_call(
        "DELETE",
        &format!("{}?dryRun=All", c.item("default", "kept")),
        "application/json",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = g.post(
        "/apply?dryRun=All",
        &json!([virtual_service("batch", 1), secret("s", 1)]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Invalid input under dry run is still refused.
    let r = g.post(
        &format!("{}?dryRun=All", c.collection("default")),
        &json!({"kind": "VirtualService", "metadata": {"name": "x"}, "spec": {"bogus": 1}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());

    assert_eq!(state(&g), before);
    assert_eq!(metric(&g, "gateway_config_generation"), generation);
    g.restart();
    assert_eq!(state(&g), before, "nothing of the dry runs was persisted");
}

fn metric(g: &Gateway, name: &str) -> Option<String> {
    let text = g.get("/metrics").text();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .map(str::to_string)
}

// ----- batches -----

#[test]
fn apply_batch_with_one_invalid_object_applies_nothing() {
    let g = start();
    assert_eq!(
        g.post(
            &case("Gateway").collection("default"),
            &gateway("existing", 1)
        )
        .status,
        201
    );
    let before = state(&g);

    // One semantic error: 422 naming the item, nothing applied.
    let mut bad = virtual_service("bad", 1);
    bad["spec"]["http"][0]["route"][0]["weight"] = json!(-10);
    let batch = json!({"apiVersion": "v1", "kind": "List", "items": [
        virtual_service("good", 1), destination_rule("dr", 1), bad, secret("cert", 1)]});
    let s = expect_status(&g.post("/apply", &batch), 422, "Invalid");
    let causes = s["details"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        causes.iter().any(|c| c["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("items[2].spec.http[0].route[0].weight"))),
        "{s}"
    );
    assert_eq!(state(&g), before);

    // One shape error: 400 naming the item, nothing applied.
    let mut bad = virtual_service("bad", 1);
    bad["spec"]["http"][0]["bogus"] = json!(true);
    let batch = json!([virtual_service("good", 1), bad]);
    let s = expect_status(&g.post("/apply", &batch), 400, "BadRequest");
    assert_eq!(
        s["details"]["causes"][0]["field"], "items[1].spec.http[0].bogus",
        "{s}"
    );
    assert_eq!(state(&g), before);

    // The same batch without the bad item: all applied, in one revision.
    let batch = json!({"apiVersion": "v1", "kind": "List", "items": [
        virtual_service("good", 1), destination_rule("dr", 1), secret("cert", 1), gateway("existing", 2)]});
    let r = g.post("/apply", &batch);
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 4);
    let rvs: Vec<&Value> = items
        .iter()
        .map(|i| &i["metadata"]["resourceVersion"])
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] == w[1]), "{rvs:?}");
    assert_eq!(items[3]["metadata"]["generation"], 2);
    assert_eq!(
        g.get(&case("VirtualService").item("default", "good"))
            .status,
        200
    );
}

// ----- durability -----

#[test]
fn restart_restores_everything_with_the_same_metadata() {
    let mut g = start();
    for c in &KINDS {
        for (ns, name) in [("default", "a"), ("team-b", "b")] {
            let r = g.post(&c.collection(ns), &(c.make)(name, 1));
            assert_eq!(r.status, 201, "{}: {}", c.kind, r.text());
        }
        let mut body = (c.make)("a", 2);
        body["metadata"]["labels"] = json!({"changed": "yes"});
        assert_eq!(g.put(&c.item("default", "a"), &body).status, 200);
    }
    assert_eq!(g.delete(&case("Gateway").item("team-b", "b")).status, 200);
    let before = state(&g);
    let generation = metric(&g, "gateway_config_generation");

    // Graceful stop, then a crash: both come back to the same state.
    let status = g.stop();
    assert!(status.is_some(), "gateway did not stop");
    g.restart();
    assert_eq!(state(&g), before, "after SIGTERM and restart");
    assert_eq!(metric(&g, "gateway_config_generation"), generation);
    g.kill();
    g.restart();
    assert_eq!(state(&g), before, "after SIGKILL and restart");

    // And writing continues from the stored revision.
    let r = g.post(
        &case("VirtualService").collection("default"),
        &virtual_service("after", 1),
    );
    assert_eq!(r.status, 201);
    let rv: u64 = r.json()["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let old: u64 = before[0]["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(rv > old, "{rv} > {old}");
}

// ----- secrets -----

fn assert_no_private_key(what: &str, r: &Response) {
    let key_b64 = base64::engine::general_purpose::STANDARD.encode(TEST_KEY_PEM);
    let key_line = TEST_KEY_PEM.lines().nth(1).unwrap_or("unreachable-line");
    let mut raw = r.body.clone();
    for (k, v) in &r.headers {
        raw.extend_from_slice(k.as_bytes());
        raw.extend_from_slice(v.as_bytes());
    }
    let raw = String::from_utf8_lossy(&raw);
    for needle in [
        "PRIVATE KEY",
        key_line,
        key_b64.as_str(),
        &key_b64[..40],
        &key_b64[key_b64.len() - 40..],
    ] {
        assert!(
            !raw.contains(needle),
            "{what}: private key material {needle:?} in {raw}"
        );
    }
}

#[test]
fn a_private_key_never_appears_in_any_read() {
    let g = start();
    let c = case("Secret");
    let r = g.post(&c.collection("default"), &secret("cert", 1));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_no_private_key("create", &r);
    assert!(r.json()["data"]["tls.crt"].is_string(), "{}", r.text());
    assert_no_private_key("get", &g.get(&c.item("default", "cert")));
    assert_no_private_key("list", &g.get(&c.collection("default")));
    assert_no_private_key("list all", &g.get(&c.all()));

    // The base64 `data` form too, through PUT and /apply.
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let data_form = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "cert"},
        "data": {"tls.crt": b64(TEST_CERT_PEM), "tls.key": b64(TEST_KEY_PEM)}});
    let r = g.put(&c.item("default", "cert"), &data_form);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_no_private_key("put", &r);
    let mut other = data_form.clone();
    other["metadata"]["name"] = json!("cert2");
    let r = g.post("/apply", &json!([other, secret("cert3", 1)]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_no_private_key("apply", &r);
    let r = g.post("/apply?dryRun=All", &json!([secret("cert4", 1)]));
    assert_no_private_key("dry-run apply", &r);
    let r = g.delete(&c.item("default", "cert3"));
    assert_no_private_key("delete", &r);
    assert_no_private_key("metrics", &g.get("/metrics"));

    // The store keeps the key (the data plane needs it), in a private file.
    let stored = std::fs::read_to_string(g.data_dir.join("state.json")).expect("state.json");
    assert!(stored.contains(&b64(TEST_KEY_PEM)), "the key is stored");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(g.data_dir.join("state.json"))
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o600);
}

// ----- validation -----

/// Bodies that decode but break a rule, each with the field the 422 must name.
fn invalid_bodies() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    let vs_with = |rule: Value| {
        let mut v = virtual_service("bad", 1);
        v["spec"]["http"][0] = rule;
        v
    };
    let route = json!([{"destination": {"host": "backend"}}]);
    vec![
        (
            "negative weight",
            "VirtualService",
            vs_with(
                json!({"route": [{"destination": {"host": "a"}, "weight": 110}, {"destination": {"host": "b"}, "weight": -10}]}),
            ),
            "spec.http[0].route[1].weight",
        ),
        (
            "bad regex",
            "VirtualService",
            vs_with(json!({"match": [{"uri": {"regex": "([a-z"}}], "route": route})),
            "spec.http[0].match[0].uri.regex",
        ),
        (
            "redirect and route",
            "VirtualService",
            vs_with(json!({"redirect": {"uri": "/x"}, "route": route})),
            "spec.http[0]",
        ),
        (
            "bad duration",
            "VirtualService",
            vs_with(json!({"timeout": "5 seconds", "route": route})),
            "spec.http[0].timeout",
        ),
        (
            "bad host",
            "VirtualService",
            {
                let mut v = virtual_service("bad", 1);
                v["spec"]["hosts"] = json!(["bad host!"]);
                v
            },
            "spec.hosts[0]",
        ),
        (
            "bad retryOn",
            "VirtualService",
            vs_with(
                json!({"retries": {"attempts": 3, "retryOn": "sometimes,maybe"}, "route": route}),
            ),
            "spec.http[0].retries.retryOn",
        ),
        (
            "fault percent 150",
            "VirtualService",
            vs_with(
                json!({"fault": {"abort": {"httpStatus": 503, "percentage": {"value": 150}}}, "route": route}),
            ),
            "spec.http[0].fault.abort.percentage",
        ),
        (
            "bad header name",
            "VirtualService",
            vs_with(json!({"headers": {"request": {"set": {"bad header": "x"}}}, "route": route})),
            "spec.http[0].headers.request.set",
        ),
        (
            "direct response status 99",
            "VirtualService",
            vs_with(json!({"directResponse": {"status": 99}})),
            "spec.http[0].directResponse.status",
        ),
        (
            "port 0",
            "Gateway",
            net(
                "Gateway",
                "bad",
                json!({"servers": [{"port": {"number": 0, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}),
            ),
            "spec.servers[0].port.number",
        ),
        (
            "HTTPS without tls",
            "Gateway",
            net(
                "Gateway",
                "bad",
                json!({"servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"]}]}),
            ),
            "spec.servers[0].tls",
        ),
        (
            "resolution NONE with endpoints",
            "ServiceEntry",
            net(
                "ServiceEntry",
                "bad",
                json!({"hosts": ["a.example.com"], "resolution": "NONE",
                       "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                       "endpoints": [{"address": "10.0.0.1"}]}),
            ),
            "spec.",
        ),
        (
            "duplicate subsets",
            "DestinationRule",
            net(
                "DestinationRule",
                "bad",
                json!({"host": "backend", "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v1", "labels": {"version": "v2"}}]}),
            ),
            "spec.subsets[1].name",
        ),
        (
            "DR without host",
            "DestinationRule",
            net("DestinationRule", "bad", json!({"host": ""})),
            "spec.host",
        ),
        (
            "WorkloadEntry port out of range",
            "WorkloadEntry",
            net(
                "WorkloadEntry",
                "bad",
                json!({"address": "127.0.0.1", "ports": {"http": 70000}}),
            ),
            "spec.ports",
        ),
        (
            "Secret without a certificate",
            "Secret",
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                   "metadata": {"name": "bad"}, "stringData": {"tls.key": TEST_KEY_PEM}}),
            "",
        ),
    ]
}

#[test]
fn bad_input_of_every_validation_class_is_422_naming_the_field() {
    let g = start();
    // Something to keep: every kind once.
    for c in &KINDS {
        assert_eq!(
            g.post(&c.collection("default"), &(c.make)("kept", 1))
                .status,
            201
        );
    }
    let before = state(&g);
    let mut failures = Vec::new();
    for (what, kind, body, field) in invalid_bodies() {
        let c = case(kind);
        let r = g.post(&c.collection("default"), &body);
        let ok = r.status == 422 && {
            let s = r.json();
            let fields: Vec<&str> = s["details"]["causes"]
                .as_array()
                .map(|a| a.iter().filter_map(|c| c["field"].as_str()).collect())
                .unwrap_or_default();
            s["reason"] == "Invalid"
                && s["details"]["kind"] == kind
                && s["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(kind) && m.contains("\"bad\" is invalid: "))
                && fields.iter().any(|f| f.starts_with(field))
                && fields
                    .iter()
                    .all(|f| s["message"].as_str().unwrap_or("").contains(f))
        };
        if !ok {
            failures.push(format!(
                "{what}: want 422 on {field:?}, got {} {}",
                r.status,
                r.text()
            ));
        }
        // The same body through PUT and /apply is refused too.
        let r = g.put(&c.item("default", "bad"), &body);
        if r.status != 422 {
            failures.push(format!("{what} (PUT): got {} {}", r.status, r.text()));
        }
        let r = g.post("/apply", &json!([body]));
        if r.status != 422 {
            failures.push(format!("{what} (apply): got {} {}", r.status, r.text()));
        }
        assert_eq!(state(&g), before, "{what} changed the state");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let failed = metric(&g, "gateway_config_reloads_total{result=\"failure\"}");
    assert!(
        failed.is_some_and(|l| !l.ends_with(" 0")),
        "rejections are counted"
    );
}

#[test]
fn malformed_json_is_400_with_line_and_column() {
    let g = start();
    let url = case("VirtualService").collection("default");
    let before = state(&g);
    let body = b"{\"apiVersion\": \"networking.istio.io/v1\",\n \"kind\": \"VirtualService\",\n \"metadata\": {\"name\": \"x\"},\n \"spec\": {\"hosts\": [\"a\"],}\n}";
    let s = expect_status(
        &g.admin_call("POST", &url, "application/json", body),
        400,
        "BadRequest",
    );
    let m = s["message"].as_str().unwrap_or("");
    assert!(m.contains("line 4") && m.contains("column"), "{m}");
    // Wrong media type and wrong method are Status objects too.
    expect_status(
        &g.admin_call("POST", &url, "text/plain", b"hello"),
        415,
        "UnsupportedMediaType",
    );
    expect_status(
        &g.admin_call("POST", &format!("{url}/x"), "application/json", b"{}"),
        405,
        "MethodNotAllowed",
    );
    // A PATCH must say which patch it is, as Kubernetes requires.
    expect_status(
        &g.admin_call("PATCH", &format!("{url}/x"), "application/json", b"{}"),
        415,
        "UnsupportedMediaType",
    );
    assert_eq!(state(&g), before);
}

#[test]
fn yaml_input_works() {
    let g = start();
    let c = case("VirtualService");
    let y = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: from-yaml\nspec:\n  hosts:\n  - yaml.example.com\n  http:\n  - route:\n    - destination:\n        host: backend\n";
    let r = g.admin_call(
        "POST",
        &c.collection("default"),
        "application/yaml",
        y.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["spec"]["hosts"][0], "yaml.example.com");
    let y2 = y.replace("yaml.example.com", "yaml2.example.com");
    let r = g.admin_call(
        "PUT",
        &c.item("default", "from-yaml"),
        "application/x-yaml; charset=utf-8",
        y2.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let batch = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr}\nspec:\n  host: backend\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: edge}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n";
    let r = g.admin_call("POST", "/apply", "text/yaml", batch.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(g.get(&case("Gateway").item("edge", "gw")).status, 200);
    let bad = "kind: VirtualService\nmetadata: {name: x\n";
    let s = expect_status(
        &g.admin_call(
            "POST",
            &c.collection("default"),
            "application/yaml",
            bad.as_bytes(),
        ),
        400,
        "BadRequest",
    );
    assert!(
        s["message"].as_str().is_some_and(|m| m.contains("line")),
        "{s}"
    );
}

#[test]
fn dangling_references_are_accepted_with_warnings() {
    let g = start();
    let c = case("VirtualService");
    let body = net(
        "VirtualService",
        "dangling",
        json!({"hosts": ["d.example.com"], "gateways": ["no-such-gateway"],
               "http": [{"route": [{"destination": {"host": "backend", "subset": "v9"}}]}]}),
    );
    let r = g.post(&c.collection("default"), &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let warnings = r.headers_named("warning");
    assert!(
        warnings
            .iter()
            .all(|w| w.starts_with("299 - \"") && w.ends_with('"')),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("v9")),
        "subset: {warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("no-such-gateway")),
        "gateway: {warnings:?}"
    );
    let got = g.get(&c.item("default", "dangling")).json();
    let conditions = got["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(conditions.iter().any(|c| c["status"] == "False"), "{got}");
}

#[test]
fn a_gateway_server_on_a_port_no_listener_serves_is_a_warning() {
    let extra = free_port();
    let g = Gateway::start(
        quiet()
            .arg("--listen")
            .arg(format!("8000=127.0.0.1:{extra}")),
    );
    let server = |port: u16| json!({"port": {"number": port, "name": format!("http-{port}"), "protocol": "HTTP"}, "hosts": ["*"]});
    let body = net(
        "Gateway",
        "ports",
        json!({"servers": [server(80), server(8000), server(9000)]}),
    );
    let r = g.post(&case("Gateway").collection("default"), &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let warnings = r.headers_named("warning");
    let unserved: Vec<&&str> = warnings
        .iter()
        .filter(|w| w.contains("no listener serves"))
        .collect();
    assert_eq!(unserved.len(), 1, "{warnings:?}");
    assert!(
        unserved[0].contains("spec.servers[2].port.number")
            && unserved[0].contains("port 9000")
            && unserved[0].contains("80, 443, 8000"),
        "{warnings:?}"
    );
    // The same after a restart, where the stored Gateway is translated at startup.
    let mut g = g;
    g.restart();
    let got = g.get(&case("Gateway").item("default", "ports")).json();
    assert!(
        got["status"]["conditions"]
            .to_string()
            .contains("no listener serves port 9000"),
        "{got}"
    );
}

// ----- body limits -----

/// Sends `head`, then up to 5 MiB of body in paced 64 KiB pieces (`chunked` framing or raw),
/// while another thread reads the response. Returns the response and how many body bytes had
/// been written when it arrived.
fn oversized_upload(g: &Gateway, chunked: bool) -> (Response, usize) {
    const TOTAL: usize = 5 * 1024 * 1024;
    const PIECE: usize = 64 * 1024;
    let path = case("VirtualService").collection("default");
    let head = if chunked {
        request_head(
            g.admin,
            "POST",
            &path,
            &[
                ("Content-Type", "application/json"),
                ("Transfer-Encoding", "chunked"),
            ],
            None,
        )
    } else {
        request_head(
            g.admin,
            "POST",
            &path,
            &[("Content-Type", "application/json")],
            Some(TOTAL),
        )
    };
    let mut stream = connect(g.admin).expect("connect");
    let reader = stream.try_clone().expect("clone");
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let sent_at_response = Arc::new(AtomicUsize::new(usize::MAX));
    let read_thread = {
        let done = done.clone();
        let sent = sent.clone();
        let at = sent_at_response.clone();
        std::thread::spawn(move || {
            let r = read_response(reader);
            at.store(sent.load(Ordering::SeqCst), Ordering::SeqCst);
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    stream.write_all(&head).expect("head");
    let piece = vec![b' '; PIECE];
    let mut written = 0;
    while written < TOTAL && !done.load(Ordering::SeqCst) {
        let res = if chunked {
            stream
                .write_all(format!("{PIECE:x}\r\n").as_bytes())
                .and_then(|_| stream.write_all(&piece))
                .and_then(|_| stream.write_all(b"\r\n"))
        } else {
            stream.write_all(&piece)
        };
        if res.is_err() {
            break; // The server closed its side: it stopped reading.
        }
        written += PIECE;
        sent.store(written, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
    }
    if chunked && written >= TOTAL {
        let _ = stream.write_all(b"0\r\n\r\n");
    }
    let resp = read_thread
        .join()
        .expect("reader thread")
        .expect("a response to the oversized upload");
    (resp, sent_at_response.load(Ordering::SeqCst))
}

#[test]
fn a_5_mib_body_with_content_length_is_413_unread() {
    let g = start();
    let before = state(&g);
    let (r, sent) = oversized_upload(&g, false);
    expect_status(&r, 413, "RequestEntityTooLarge");
    assert!(
        sent < 1024 * 1024,
        "refused on Content-Length, before the body: {sent} bytes were sent first"
    );
    assert_eq!(state(&g), before);
}

#[test]
fn a_5_mib_chunked_body_is_413_without_reading_it_whole() {
    let g = start();
    let before = state(&g);
    let (r, sent) = oversized_upload(&g, true);
    expect_status(&r, 413, "RequestEntityTooLarge");
    assert!(
        sent < 4 * 1024 * 1024,
        "the server answered only after {sent} bytes"
    );
    assert_eq!(state(&g), before);
    assert_eq!(g.get("/healthz").status, 200);
}

// ----- auth and exposure -----

#[test]
fn the_admin_token_is_required_when_set() {
    let g = Gateway::start(quiet().token("e2e-secret-token"));
    let path = case("VirtualService").collection("default");
    let r = request(g.admin, "GET", &path, &[], b"").expect("request");
    expect_status(&r, 401, "Unauthorized");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"gateway-admin\"")
    );
    let r = request(
        g.admin,
        "GET",
        &path,
        &[("Authorization", "Bearer wrong-token")],
        b"",
    )
    .expect("request");
    expect_status(&r, 401, "Unauthorized");
    let r = request(g.admin, "GET", "/metrics", &[], b"").expect("request");
    assert_eq!(r.status, 401);
    let r = request(
        g.admin,
        "GET",
        &path,
        &[("Authorization", "Bearer e2e-secret-token")],
        b"",
    )
    .expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    for open in ["/healthz", "/readyz"] {
        let r = request(g.admin, "GET", open, &[], b"").expect("request");
        assert_eq!(r.status, 200, "{open}");
    }
    // A write with the token works (the harness sends it).
    assert_eq!(g.post(&path, &virtual_service("t", 1)).status, 201);
}

#[test]
fn refuses_a_non_loopback_admin_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--admin")
        .arg(format!("0.0.0.0:{}", free_port()))
        .arg("--http")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--https")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("GATEWAY_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway started with an open admin API on 0.0.0.0 and no token");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "exit status {status}");
    assert!(stderr.contains("GATEWAY_ADMIN_TOKEN"), "message: {stderr}");
}
