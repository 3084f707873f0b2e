//! Agreement with Istio's own validator: every `testdata/istio/<kind>/<case>.yaml` is one resource
//! taken from Istio's validation tests, its CRD testdata, its webhook dataset or its `samples/`, with
//! Istio's verdict in a header, and the gateway must give the same verdict.
//!
//! Header lines (comments before the document):
//! - `# source: <istio path> <test or sample name>`: where the case comes from (required);
//! - `# istio: accept | warn | reject`: Istio's verdict (required);
//! - `# gateway: accept | warn | reject` and `# why: …`: only for a documented deviation (README,
//!   "Where the gateway differs from Istio"), the gateway's verdict and the reason.
//!
//! Verdicts: `reject` is a decode error or a validation error; `warn` is no error and at least one
//! warning other than the gateway's own "accepted but not enforced yet" notes (Istio has no such
//! notes: they say what this gateway does not do yet, not what Istio thinks of the resource);
//! `accept` is neither.

use model::load::{Batch, Outcome};
use model::resource::Format;
use model::validate::validate;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

const UNENFORCED_SUFFIX: &str = ": accepted but not enforced yet";

/// The corpus may only grow: a smaller one means cases were lost.
const MIN_CASES: usize = 847;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Accept,
    Warn,
    Reject,
}

impl Verdict {
    fn parse(s: &str) -> Option<Verdict> {
        match s.trim() {
            "accept" => Some(Verdict::Accept),
            "warn" => Some(Verdict::Warn),
            "reject" => Some(Verdict::Reject),
            _ => None,
        }
    }
}

struct Case {
    source: String,
    istio: Verdict,
    /// The gateway's documented deviation, with its reason.
    deviation: Option<(Verdict, String)>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/istio")
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn header(text: &str) -> Result<Case, String> {
    let mut fields: BTreeMap<&str, String> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            if line.trim().is_empty() || line.trim() == "---" {
                continue;
            }
            break;
        };
        if let Some((k, v)) = rest.trim().split_once(':') {
            let k = k.trim();
            if matches!(k, "source" | "istio" | "gateway" | "why") {
                fields.insert(k, v.trim().to_string());
            }
        }
    }
    let source = fields.remove("source").ok_or("no `# source:` line")?;
    let istio = fields
        .get("istio")
        .and_then(|v| Verdict::parse(v))
        .ok_or("no `# istio: accept|warn|reject` line")?;
    let deviation = match fields.get("gateway") {
        None => None,
        Some(v) => {
            let v = Verdict::parse(v).ok_or("`# gateway:` must be accept, warn or reject")?;
            if v == istio {
                return Err("`# gateway:` equals `# istio:`: not a deviation".into());
            }
            let why = fields
                .get("why")
                .filter(|w| !w.is_empty())
                .ok_or("a deviation needs a `# why:` line")?;
            Some((v, why.clone()))
        }
    };
    Ok(Case {
        source,
        istio,
        deviation,
    })
}

/// The gateway's verdict, and what it said, for the failure message. The case is read by the
/// loader every entry point uses; it holds exactly one document.
fn verdict(bytes: &[u8]) -> (Verdict, String) {
    let mut batch = Batch::new();
    batch.add("case", bytes, Format::Yaml);
    if let Some((_, e)) = batch.source_errors().next() {
        return (Verdict::Reject, format!("parse: {e}"));
    }
    let resource = match batch.documents.as_slice() {
        [doc] => match &doc.outcome {
            Outcome::Resource(r) => r.clone(),
            Outcome::Invalid(e) => return (Verdict::Reject, format!("decode: {e}")),
            Outcome::Skipped(s) => return (Verdict::Reject, s.warning()),
        },
        docs => {
            return (
                Verdict::Reject,
                format!("{} documents, not one", docs.len()),
            )
        }
    };
    let report = validate(&resource);
    if !report.errors.is_empty() {
        let said: Vec<String> = report
            .errors
            .iter()
            .map(|v| format!("{}: {}", v.field, v.message))
            .collect();
        return (Verdict::Reject, said.join("; "));
    }
    let own: Vec<&String> = report
        .warnings
        .iter()
        .filter(|w| !w.ends_with(UNENFORCED_SUFFIX))
        .collect();
    if own.is_empty() {
        (Verdict::Accept, String::new())
    } else {
        let said: Vec<&str> = own.iter().map(|s| s.as_str()).collect();
        (Verdict::Warn, said.join("; "))
    }
}

#[test]
fn the_gateway_agrees_with_istio() {
    let files = cases(&root());
    assert!(
        files.len() >= MIN_CASES,
        "only {} cases under {}",
        files.len(),
        root().display()
    );
    let mut failures = Vec::new();
    let mut deviations = 0usize;
    for path in &files {
        let shown = path
            .strip_prefix(root())
            .unwrap_or(path)
            .display()
            .to_string();
        let text = fs::read_to_string(path).expect("read case");
        let case = match header(&text) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let want = match &case.deviation {
            Some((v, _)) => {
                deviations += 1;
                *v
            }
            None => case.istio,
        };
        let (got, said) = verdict(text.as_bytes());
        if got != want {
            let why = case
                .deviation
                .as_ref()
                .map(|(_, w)| format!(" (documented deviation: {w})"))
                .unwrap_or_default();
            failures.push(format!(
                "{shown} [{}]: Istio {:?}, expected {want:?}{why}, the gateway {got:?}: {said}",
                case.source, case.istio
            ));
        }
    }
    eprintln!(
        "{} Istio cases, {} documented deviations, {} disagreements",
        files.len(),
        deviations,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} Istio cases disagree:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
