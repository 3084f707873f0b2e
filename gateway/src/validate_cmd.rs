//! `gateway validate FILE…`: offline admission of manifests, exactly as the admin API and
//! `--bootstrap` admit them (one loader, one folder walk, the same messages).

use std::path::PathBuf;

/// Admits every document of every file or folder; prints problems and warnings on stderr.
/// Returns the exit code: 0 valid, 1 invalid.
pub fn run(paths: &[PathBuf]) -> i32 {
    let verdict = match admin::manifests::check(paths) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    print(&verdict);
    if verdict.problems.is_empty() {
        println!("{} resource(s) valid", verdict.resources);
        0
    } else {
        1
    }
}

/// A verdict's warnings and problems on stderr, one a line, as every offline command prints them.
pub fn print(verdict: &admin::manifests::Verdict) {
    for w in &verdict.warnings {
        eprintln!("warning: {w}");
    }
    for p in &verdict.problems {
        eprintln!("{p}");
    }
}
