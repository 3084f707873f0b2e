//! Golden tests for translation: every `testdata/translate/<case>.in.yaml` (multi-document YAML of
//! resources) must translate to exactly `<case>.out.json` (snapshot, statuses, warnings).
//! `UPDATE_GOLDEN=1 cargo test -p model --test translate_golden` rewrites the expected files; a
//! missing expected file fails so that a new case is always reviewed once by eye.
//!
//! A case whose first line is `# gateway namespace: NS` is translated for a gateway whose own
//! namespace (`--namespace`) is NS; the others for the default, `istio-system`.

use model::load::{format_of, Batch, Outcome};
use model::resource::ResourceSet;
use model::translate::{translate_with_files, Files, Translation, DEFAULT_GATEWAY_NAMESPACE};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/translate")
}

fn load(path: &Path) -> ResourceSet {
    let bytes = std::fs::read(path).expect("read input");
    let name = path.display().to_string();
    let mut batch = Batch::new();
    batch.add(&name, &bytes, format_of(&name));
    if let Some((_, e)) = batch.source_errors().next() {
        panic!("{name}: {e}");
    }
    let mut set = ResourceSet::new();
    for d in batch.documents {
        match d.outcome {
            Outcome::Resource(r) => {
                set.insert(r);
            }
            other => panic!("{name}: document {}: {other:?}", d.index + 1),
        }
    }
    set
}

/// The gateway namespace a case asks for on its first line.
fn gateway_namespace(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read input");
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("# gateway namespace:"))
        .map_or(DEFAULT_GATEWAY_NAMESPACE, str::trim)
        .to_string()
}

/// The golden shape: resource keys as `Kind ns/name` strings (JSON keys must be strings).
fn render(t: &Translation) -> Value {
    let statuses: BTreeMap<String, _> =
        t.statuses.iter().map(|(k, v)| (k.to_string(), v)).collect();
    let warnings: BTreeMap<String, _> =
        t.warnings.iter().map(|(k, v)| (k.to_string(), v)).collect();
    json!({
        "snapshot": &t.snapshot,
        "statuses": statuses,
        "warnings": warnings,
    })
}

#[test]
fn golden() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("testdata/translate exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no golden cases found");
    let mut failures = Vec::new();
    for input in &inputs {
        let name = input.to_string_lossy().replace(".in.yaml", "");
        let out_path = PathBuf::from(format!("{name}.out.json"));
        let set = load(input);
        let ns = gateway_namespace(input);
        let translate = |set| translate_with_files(set, &Files::default(), &ns);
        let first = render(&translate(&set));
        // Same input, fresh HashMaps: any dependence on hash order shows up here.
        let again = render(&translate(&set));
        assert_eq!(first, again, "{name}: translation is not deterministic");
        let text = serde_json::to_string_pretty(&first).expect("serialize") + "\n";
        if update {
            std::fs::write(&out_path, &text).expect("write golden");
            continue;
        }
        match std::fs::read_to_string(&out_path) {
            Err(_) => failures.push(format!(
                "{}: missing; run with UPDATE_GOLDEN=1 and review it",
                out_path.display()
            )),
            Ok(want) if want != text => {
                let line = want
                    .lines()
                    .zip(text.lines())
                    .position(|(a, b)| a != b)
                    .map_or_else(
                        || want.lines().count().min(text.lines().count()) + 1,
                        |i| i + 1,
                    );
                failures.push(format!(
                    "{}: differs from line {line}:\n  want: {}\n  got:  {}",
                    out_path.display(),
                    want.lines().nth(line - 1).unwrap_or("<eof>"),
                    text.lines().nth(line - 1).unwrap_or("<eof>"),
                ));
            }
            Ok(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
