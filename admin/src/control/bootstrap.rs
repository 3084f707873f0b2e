//! `--bootstrap`: every manifest of a file or folder, admitted as `gateway validate` admits them,
//! applied at start in one commit.

use super::error::ApplyError;
use super::pipeline::Step;
use super::ControlPlane;
use std::path::Path;

impl ControlPlane {
    /// Applies every JSON/YAML manifest in a file or folder (create or replace, unconditional),
    /// admitted as `gateway validate` admits them. Err Display lists every problem with its file,
    /// document and field path; then nothing is applied.
    pub async fn bootstrap(&self, path: &Path) -> Result<usize, ApplyError> {
        let (verdict, upserts) = crate::manifests::admit_paths(&[path.to_path_buf()])?;
        if !verdict.problems.is_empty() {
            self.metrics.failure();
            return Err(ApplyError::Startup(format!(
                "bootstrap {}: {} problem(s), nothing applied:\n  {}",
                path.display(),
                verdict.problems.len(),
                verdict.problems.join("\n  ")
            )));
        }
        for w in &verdict.warnings {
            tracing::warn!("bootstrap: {w}");
        }
        let steps: Vec<Step> = upserts
            .into_iter()
            .map(|mut u| {
                // Bootstrap is unconditional: the files do not know the store's versions.
                u.expected = None;
                // Validation warnings were logged above with their file and document.
                u.warnings.clear();
                Step::Upsert(u)
            })
            .collect();
        let n = steps.len();
        let r = self.execute(steps, false).await;
        self.count(&r, false);
        let ex = r?;
        for (key, ws) in &ex.warnings {
            for w in ws {
                tracing::warn!(resource = %key, "{w}");
            }
        }
        Ok(n)
    }
}
