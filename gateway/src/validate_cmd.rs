//! `gateway validate FILE…`: offline checks of manifests with the same decoding and field-path
//! messages as the admin API.

use model::resource::{parse_documents, resource_from_value, Format};
use std::path::{Path, PathBuf};

/// Validates every document of every file; prints problems on stderr. Returns the exit code.
pub fn run(files: &[PathBuf]) -> i32 {
    let mut failed = false;
    let mut count = 0usize;
    for f in files {
        for path in expand(f) {
            match check_file(&path) {
                Ok(n) => count += n,
                Err(msgs) => {
                    failed = true;
                    for m in msgs {
                        eprintln!("{}: {m}", path.display());
                    }
                }
            }
        }
    }
    if failed {
        1
    } else {
        println!("{count} resource(s) valid");
        0
    }
}

fn expand(p: &Path) -> Vec<PathBuf> {
    if p.is_dir() {
        let mut out: Vec<PathBuf> = std::fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("json" | "yaml" | "yml")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    } else {
        vec![p.to_path_buf()]
    }
}

fn check_file(path: &Path) -> Result<usize, Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| vec![format!("cannot read: {e}")])?;
    let format = if path.extension().and_then(|e| e.to_str()) == Some("json") {
        Format::Json
    } else {
        Format::Yaml
    };
    let docs = parse_documents(&bytes, format).map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    let n = docs.len();
    for (i, doc) in docs.into_iter().enumerate() {
        let r = match resource_from_value(doc, None) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("document {i}: {e}"));
                continue;
            }
        };
        let report = model::validate::validate(&r);
        let key = r.key();
        for v in &report.errors {
            errors.push(format!(
                "{} {}/{}: {}: {}",
                key.kind, key.namespace, key.name, v.field, v.message
            ));
        }
        for w in &report.warnings {
            eprintln!(
                "{}: warning: {} {}/{}: {w}",
                path.display(),
                key.kind,
                key.namespace,
                key.name
            );
        }
    }
    if errors.is_empty() {
        Ok(n)
    } else {
        Err(errors)
    }
}
