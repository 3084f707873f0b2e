//! Golden tests of validation: every `testdata/validate/<kind>/<case>.yaml` holds one resource, and
//! `<case>.out.json` next to it the report users see (`{"errors": [...], "warnings": [...]}`).
//! `UPDATE_GOLDEN=1 cargo test -p model --test validate_golden` rewrites the `.out.json` files.
//!
//! Guards against vacuous cases: a case whose name does not start with `valid-` must produce an error
//! or a warning of its own (the "accepted but not enforced yet" warnings do not count); a `valid-*`
//! case must produce no error. Also: validation never panics on mutated cases (proptest).

use model::load::{Batch, Outcome};
use model::resource::{resource_from_value, Format};
use model::validate::{validate, Report};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};

const UNENFORCED_SUFFIX: &str = ": accepted but not enforced yet";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/validate")
}

/// Every file under `dir` whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn case_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".yaml"))
        .unwrap_or_default()
        .to_string()
}

fn expected_path(case: &Path) -> PathBuf {
    case.with_file_name(format!("{}.out.json", case_name(case)))
}

fn render(report: &Report) -> String {
    let mut s = serde_json::to_string_pretty(report).expect("report serializes");
    s.push('\n');
    s
}

/// The first differing line, to point at the change.
fn first_difference(expected: &str, actual: &str) -> String {
    for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
        if e != a {
            return format!("line {}:\n  expected: {e}\n  actual:   {a}", i + 1);
        }
    }
    format!(
        "expected {} lines, got {}",
        expected.lines().count(),
        actual.lines().count()
    )
}

#[test]
fn golden_cases() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let cases = files(&root(), ".yaml");
    assert!(cases.len() >= 100, "only {} golden cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let shown = case
            .strip_prefix(root())
            .unwrap_or(case)
            .display()
            .to_string();
        let name = case_name(case);
        let bytes = fs::read(case).expect("read case");
        let mut batch = Batch::new();
        batch.add(&shown, &bytes, Format::Yaml);
        let resource = match (batch.source_errors().next(), batch.documents.as_slice()) {
            (None, [doc]) => match &doc.outcome {
                Outcome::Resource(r) => r.clone(),
                other => {
                    failures.push(format!("{shown}: does not decode: {other:?}"));
                    continue;
                }
            },
            (Some((_, e)), _) => {
                failures.push(format!("{shown}: does not parse: {e}"));
                continue;
            }
            (None, docs) => {
                failures.push(format!("{shown}: {} documents, not one", docs.len()));
                continue;
            }
        };
        let report = validate(&resource);
        if name.starts_with("valid-") {
            if !report.errors.is_empty() {
                failures.push(format!(
                    "{shown}: a valid-* case has errors: {:#?}",
                    report.errors
                ));
            }
        } else if report.errors.is_empty()
            && report
                .warnings
                .iter()
                .all(|w| w.ends_with(UNENFORCED_SUFFIX))
        {
            failures.push(format!(
                "{shown}: produces neither an error nor a warning of its own (name it valid-* if it is valid)"
            ));
        }
        let actual = render(&report);
        let out = expected_path(case);
        if update {
            if fs::read_to_string(&out).ok().as_deref() != Some(actual.as_str()) {
                fs::write(&out, &actual).expect("write golden file");
            }
            continue;
        }
        match fs::read_to_string(&out) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{shown}: report differs from {} ({}); rerun with UPDATE_GOLDEN=1 and review the diff\n{actual}",
                out.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
                first_difference(&expected, &actual)
            )),
            Err(_) => failures.push(format!(
                "{shown}: missing {}; run with UPDATE_GOLDEN=1 to create it\n{actual}",
                out.display()
            )),
        }
    }
    for out in files(&root(), ".out.json") {
        let name = out
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".out.json"))
            .unwrap_or_default();
        if !out.with_file_name(format!("{name}.yaml")).exists() {
            failures.push(format!("{}: no matching .yaml case", out.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Every golden case as JSON, for mutation.
fn corpus() -> Vec<Value> {
    files(&root(), ".yaml")
        .iter()
        .map(|p| {
            let text = fs::read_to_string(p).expect("read case");
            model::resource::parse_document(text.as_bytes(), Format::Yaml).expect("case parses")
        })
        .collect()
}

/// JSON pointers of every node but the root, `kind` and `apiVersion`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if at.is_empty() && (k == "kind" || k == "apiVersion") {
                    continue;
                }
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "*",
            "*.",
            ".",
            "/",
            "..",
            "*.*",
            "a/b/c",
            "é.com",
            "ÿ*",
            "(",
            "[",
            "\\",
            ".*",
            "0s",
            "0",
            "1ns",
            "-1s",
            "1.5ms",
            "99999999999999h",
            "unix://",
            "unix://@",
            "::1",
            "10.0.0.0/33",
            "ñ",
            "\u{0}",
            "a\r\nb",
            "@request.auth.claims.",
            "mesh",
            "~",
            "HTTPS",
            "TLS",
            "tcp",
            "http",
            "PASSTHROUGH",
            "-----BEGIN ",
            "host",
            ":path",
            "5xx,,",
            "*foo.com",
            "x.y/z",
            "ns/*",
            "./a.com",
            "🦀.com",
            "a\u{301}",
        ])
        .prop_map(str::to_string),
        "\\PC{0,24}",
        "[a-z*./:@-]{0,16}",
        "[(){}\\[\\]*+?.|^$\\\\a-z0-9]{0,20}",
    ]
}

fn nasty_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![
            0i64,
            -1,
            1,
            199,
            600,
            65535,
            65536,
            5_000_011,
            i64::from(i32::MAX),
            i64::from(i32::MAX) + 1,
            i64::from(u32::MAX) + 1,
            i64::MIN,
            i64::MAX,
        ])
        .prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        nasty_string().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{}])),
    ]
}

/// Candidate values for one replacement; the one used fits the JSON type of the node it replaces
/// (so that most mutants still decode and reach validation), unless `typed` is false.
#[derive(Debug, Clone)]
struct Replacement {
    typed: bool,
    string: String,
    int: i64,
    float: f64,
    any: Value,
}

fn replacement() -> impl Strategy<Value = Replacement> {
    (
        prop::bool::weighted(0.85),
        nasty_string(),
        prop_oneof![
            any::<i64>(),
            prop::sample::select(vec![
                0i64,
                -1,
                1,
                199,
                200,
                600,
                65535,
                65536,
                5_000_011,
                65537,
                i64::from(i32::MAX),
                i64::from(i32::MAX) + 1,
                i64::from(u32::MAX) + 1,
                i64::MIN,
                i64::MAX,
            ]),
        ],
        prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            prop::sample::select(vec![0.0, 0.00001, 0.0001, 100.0, 100.5, -0.0, -1.0]),
        ],
        nasty_value(),
    )
        .prop_map(|(typed, string, int, float, any)| Replacement {
            typed,
            string,
            int,
            float,
            any,
        })
}

impl Replacement {
    fn for_node(&self, old: &Value) -> Value {
        if !self.typed {
            return self.any.clone();
        }
        match old {
            Value::String(_) => Value::from(self.string.clone()),
            Value::Number(n) if n.is_f64() => Value::from(self.float),
            Value::Number(_) => Value::from(self.int),
            Value::Bool(b) => Value::from(!b),
            Value::Array(_) => json!([]),
            Value::Object(_) => json!({}),
            Value::Null => self.any.clone(),
        }
    }
}

/// One change: replace a node, add a map entry (shaped like an existing one), or duplicate a list's
/// first element.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(prop::sample::Index, Replacement),
    Insert(prop::sample::Index, String, Replacement),
    Duplicate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<prop::sample::Index>(), replacement()).prop_map(|(i, r)| Mutation::Replace(i, r)),
        1 => (any::<prop::sample::Index>(), nasty_string(), replacement())
            .prop_map(|(i, k, r)| Mutation::Insert(i, k, r)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Duplicate),
    ]
}

fn apply(doc: &mut Value, m: &Mutation) {
    let mut ptrs = Vec::new();
    pointers(doc, String::new(), &mut ptrs);
    if ptrs.is_empty() {
        return;
    }
    match m {
        Mutation::Replace(i, r) => {
            if let Some(node) = doc.pointer_mut(i.get(&ptrs).as_str()) {
                *node = r.for_node(node);
            }
        }
        Mutation::Insert(i, k, r) => {
            if let Some(Value::Object(map)) = doc.pointer_mut(i.get(&ptrs).as_str()) {
                let like = map.values().next().cloned().unwrap_or(Value::Null);
                map.insert(k.clone(), r.for_node(&like));
            }
        }
        Mutation::Duplicate(i) => {
            if let Some(Value::Array(items)) = doc.pointer_mut(i.get(&ptrs).as_str()) {
                if let Some(first) = items.first().cloned() {
                    items.push(first);
                }
            }
        }
    }
}

#[test]
fn validation_never_panics_on_mutated_cases() {
    let corpus = corpus();
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        any::<prop::sample::Index>(),
        prop::collection::vec(mutation(), 1..5),
    );
    runner
        .run(&strategy, |(which, mutations)| {
            let mut doc = which.get(&corpus).clone();
            for m in &mutations {
                apply(&mut doc, m);
            }
            if let Ok(resource) = resource_from_value(doc, None) {
                let report = validate(&resource);
                // Every error names a field and says something.
                for e in &report.errors {
                    prop_assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}");
                }
            }
            Ok(())
        })
        .expect("validation panicked or produced an empty cause");
}

#[test]
fn large_resources_validate_in_linear_time() {
    let hosts: Vec<String> = (0..20_000)
        .map(|i| {
            if i % 2 == 0 {
                format!("*.h{i}.example.com")
            } else {
                format!("a.h{}.example.com", i - 1)
            }
        })
        .collect();
    let http: Vec<Value> = (0..20_000)
        // "/pN/": no prefix covers another (as "/p1" would cover "/p10"), only repeats count.
        .map(|i| json!({"match": [{"uri": {"prefix": format!("/p{}/", i % 10_000)}}], "route": [{"destination": {"host": "svc"}}]}))
        .collect();
    let doc = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "big"},
        "spec": {"hosts": hosts, "http": http},
    });
    let resource = resource_from_value(doc, None).expect("decodes");
    let started = std::time::Instant::now();
    let report = validate(&resource);
    assert_eq!(report.errors.len(), 10_000, "every a.hN host overlaps *.hN");
    assert_eq!(
        report.warnings.len(),
        20_000,
        "every second half match repeats, so its rule is never used either"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
