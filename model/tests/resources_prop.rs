//! Property tests over arbitrary resources: decoding (`classify`), validation and translation never
//! panic, on arbitrary JSON values shaped like every kind (known field names, hostile leaves) and on
//! random mutations of the translation golden inputs under `testdata/translate`.

use model::load::{classify, format_of, Outcome};
use model::resource::{Kind, ResourceSet};
use model::translate::translate;
use model::validate::validate;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};
use std::path::Path;

/// Field names of the kinds, so that generated objects reach past the first level of decoding.
const FIELDS: &[&str] = &[
    "hosts",
    "http",
    "tcp",
    "tls",
    "route",
    "destination",
    "host",
    "port",
    "number",
    "name",
    "protocol",
    "match",
    "uri",
    "prefix",
    "exact",
    "regex",
    "headers",
    "request",
    "response",
    "set",
    "add",
    "remove",
    "weight",
    "subset",
    "subsets",
    "labels",
    "trafficPolicy",
    "loadBalancer",
    "simple",
    "consistentHash",
    "servers",
    "selector",
    "mode",
    "credentialName",
    "gateways",
    "rewrite",
    "redirect",
    "directResponse",
    "status",
    "body",
    "string",
    "retries",
    "attempts",
    "timeout",
    "fault",
    "delay",
    "abort",
    "percentage",
    "value",
    "mirror",
    "corsPolicy",
    "endpoints",
    "address",
    "ports",
    "resolution",
    "location",
    "rules",
    "from",
    "to",
    "source",
    "operation",
    "when",
    "key",
    "values",
    "notValues",
    "action",
    "paths",
    "methods",
    "principals",
    "jwtRules",
    "issuer",
    "jwks",
    "jwksUri",
    "audiences",
    "fromHeaders",
    "outputClaimToHeaders",
    "spec",
    "backend",
    "service",
    "ingressClassName",
    "defaultBackend",
    "path",
    "pathType",
    "data",
    "stringData",
    "type",
    "sniHosts",
    "connectionPool",
    "outlierDetection",
    "workloadSelector",
    "matchLabels",
    "exportTo",
    "authority",
    "scheme",
    "method",
    "queryParams",
    "ignoreUriCase",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "*",
            "*.example.com",
            "a.example.com",
            "/",
            "/a",
            "80",
            "0",
            "-1",
            "1s",
            "0.5s",
            "99999999999h",
            "ROUND_ROBIN",
            "SIMPLE",
            "PASSTHROUGH",
            "MUTUAL",
            "ISTIO_MUTUAL",
            "HTTP",
            "HTTPS",
            "TCP",
            "TLS",
            "GRPC",
            "STATIC",
            "DNS",
            "ALLOW",
            "DENY",
            "AUDIT",
            "CUSTOM",
            "mesh",
            "default/gw",
            "10.0.0.0/8",
            "::1",
            "[",
            "(",
            "\u{0}",
            "a\r\nb",
            "🦀",
            "request.auth.claims[sub]",
            "@request.auth.claims.x",
            "Prefix",
            "Exact",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn resource() -> impl Strategy<Value = Value> {
    (prop::sample::select(Kind::ALL.to_vec()), json(), json()).prop_map(|(kind, spec, extra)| {
        let mut v = serde_json::json!({
            "apiVersion": kind.api_version(),
            "kind": kind.as_str(),
            "metadata": {"name": "r", "namespace": "default"},
            "spec": spec,
        });
        // Secrets and IngressClasses carry their content elsewhere than `spec`.
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            for (k, x) in e {
                if k != "kind" && k != "apiVersion" {
                    o.insert(k, x);
                }
            }
        }
        v
    })
}

/// Decodes, validates and translates `docs` together; only a panic fails.
fn exercise(docs: Vec<Value>) {
    let mut set = ResourceSet::new();
    for d in docs {
        if let Outcome::Resource(r) = classify(d) {
            let _ = validate(&r);
            set.insert(r);
        }
    }
    let _ = translate(&set);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_resources_never_panic(docs in prop::collection::vec(resource(), 1..4)) {
        exercise(docs);
    }
}

/// The documents of every translation golden input.
fn golden_inputs() -> Vec<Vec<Value>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/translate");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata/translate")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let name = p.display().to_string();
            let bytes = std::fs::read(p).expect("read input");
            model::resource::parse_documents(&bytes, format_of(&name)).expect("input parses")
        })
        .collect()
}

/// Every node of `v` as a JSON pointer (the root excluded).
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, c)| (k.replace('~', "~0").replace('/', "~1"), c))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, c)| (i.to_string(), c))
            .collect(),
        _ => Vec::new(),
    };
    for (k, c) in children {
        let p = format!("{at}/{k}");
        out.push(p.clone());
        pointers(c, &p, out);
    }
}

#[test]
fn mutated_golden_inputs_never_panic() {
    let inputs = golden_inputs();
    assert!(inputs.len() > 10, "the golden inputs are all there");
    let mut runner = TestRunner::new(Config {
        cases: 400,
        ..Config::default()
    });
    let strategy = (
        0..inputs.len(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        json(),
    );
    runner
        .run(&strategy, |(i, doc, node, replacement)| {
            let mut docs = inputs[i].clone();
            let d = doc.index(docs.len());
            let mut ps = Vec::new();
            pointers(&docs[d], "", &mut ps);
            if !ps.is_empty() {
                let p = &ps[node.index(ps.len())];
                if let Some(slot) = docs[d].pointer_mut(p) {
                    *slot = replacement;
                }
            }
            exercise(docs);
            Ok(())
        })
        .expect("no panic");
}

/// The generator is not vacuous: many of its values decode into resources of several kinds, so
/// validation and translation see them (and do not stop at a decoding error).
#[test]
fn generated_resources_reach_validation() {
    use proptest::strategy::ValueTree;
    let mut runner = TestRunner::deterministic();
    let strategy = resource();
    let mut kinds = std::collections::BTreeSet::new();
    let mut decoded = 0;
    for _ in 0..300 {
        let v = strategy.new_tree(&mut runner).expect("a value").current();
        if let Outcome::Resource(r) = classify(v) {
            decoded += 1;
            kinds.insert(format!("{:?}", r.kind()));
        }
    }
    assert!(decoded >= 30, "only {decoded} of 300 decoded");
    assert!(kinds.len() >= 4, "decoded kinds: {kinds:?}");
}
