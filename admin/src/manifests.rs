//! Manifests on disk: the one folder walk and the one reading of files into a batch, shared by
//! `--bootstrap`, `gateway validate` and `gateway explain`, and the messages that name a file's
//! problems.

use crate::admission::{admit, locate, Origin, Upsert};
use crate::control::ApplyError;
use crate::error::cause_message;
use model::ir::Snapshot;
use model::load::{format_of, is_manifest_name, Batch};
use model::resource::ResourceSet;
use std::path::{Path, PathBuf};

/// The verdict on a set of manifest files, as `--bootstrap` applies it and `gateway validate`
/// prints it.
#[derive(Debug, Default)]
pub struct Verdict {
    /// One line per problem, `<file>: document <n> (<Kind> <ns>/<name>): <field>: <message>`.
    pub problems: Vec<String>,
    /// One line per warning, in the same form.
    pub warnings: Vec<String>,
    /// Resources that would be written.
    pub resources: usize,
}

/// Reads every manifest under `paths` into one batch. A path or file that cannot be read is a
/// problem of the verdict, not an error.
pub fn read(paths: &[PathBuf]) -> (Batch, Vec<String>) {
    let mut batch = Batch::new();
    let mut problems = Vec::new();
    for path in paths {
        let files = match manifest_files(path) {
            Ok(f) => f,
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        for file in files {
            let name = file.display().to_string();
            match std::fs::read(&file) {
                Ok(bytes) => batch.add(&name, &bytes, format_of(&name)),
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
    }
    (batch, problems)
}

/// Admits every manifest under `paths` exactly as the API admits a write, without writing.
pub fn check(paths: &[PathBuf]) -> Result<Verdict, ApplyError> {
    admit_paths(paths).map(|(v, _)| v)
}

/// [`check`], and the resources to write when the verdict has no problem.
pub(crate) fn admit_paths(paths: &[PathBuf]) -> Result<(Verdict, Vec<Upsert>), ApplyError> {
    let (batch, mut problems) = read(paths);
    let admitted = admit(&batch, Origin::Files)?;
    let mut verdict = Verdict {
        resources: admitted.upserts.len(),
        ..Verdict::default()
    };
    for p in &admitted.problems {
        let at = p
            .document
            .map(|i| format!("{}: ", locate(&batch, Origin::Files, i)))
            .unwrap_or_default();
        problems.push(format!("{at}{}", cause_message(&p.cause)));
    }
    verdict.problems = problems;
    let at = |i: usize| locate(&batch, Origin::Files, i);
    for (i, w) in &admitted.skipped {
        verdict.warnings.push(format!("{}: {w}", at(*i)));
    }
    for (i, u) in &admitted.upserts {
        for w in &u.warnings {
            verdict.warnings.push(format!("{}: {w}", at(*i)));
        }
    }
    let upserts = admitted.upserts.into_iter().map(|(_, u)| u).collect();
    Ok((verdict, upserts))
}

/// The snapshot the manifests under `paths` make, admitted as [`check`] admits them and
/// translated as the control plane translates what `--bootstrap` stores into an empty store (one
/// creation time for all). `None` when the verdict has problems.
pub fn snapshot(
    paths: &[PathBuf],
    gateway_namespace: &str,
) -> Result<(Verdict, Option<Snapshot>), ApplyError> {
    let (verdict, upserts) = admit_paths(paths)?;
    if !verdict.problems.is_empty() {
        return Ok((verdict, None));
    }
    let now = crate::time::rfc3339(std::time::SystemTime::now());
    let mut set = ResourceSet::new();
    for u in upserts {
        let mut r = u.resource;
        let m = r.meta_mut();
        m.generation = Some(1);
        m.creation_timestamp = Some(now.clone());
        set.insert(r);
    }
    let t = crate::translation::translate_read(&set, gateway_namespace, None)?;
    Ok((verdict, Some(t.snapshot)))
}

/// The manifests of a path: the file itself, or every `.json`, `.yaml` and `.yml`
/// under the folder (recursively), in name order.
pub fn manifest_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    manifests_under(path, 0)
}

/// Folders deeper than this are a symlink loop, not a layout.
const MAX_MANIFEST_DEPTH: usize = 16;

fn manifests_under(path: &Path, depth: usize) -> std::io::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    if depth > MAX_MANIFEST_DEPTH {
        return Err(std::io::Error::other(format!(
            "{}: folders nested deeper than {MAX_MANIFEST_DEPTH} (a symlink loop?)",
            path.display()
        )));
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(manifests_under(&p, depth + 1)?);
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_manifest_name)
        {
            out.push(p);
        }
    }
    Ok(out)
}
