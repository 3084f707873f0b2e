//! `gateway explain FILE… --host H …`: what the gateway would do with a request under the
//! configuration some manifests make, printed as the JSON `POST /debug/explain` answers. The
//! manifests go through the one loader (`admin::manifests`, as `gateway validate` and
//! `--bootstrap` read them) and the control plane's translation; the answer is `Snapshot::explain`.

use model::ir::{ExplainRequest, OneOrMany};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The request the command line describes.
pub fn request(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    sni: Option<&str>,
) -> ExplainRequest {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, v) in headers {
        by_name.entry(n.clone()).or_default().push(v.clone());
    }
    ExplainRequest {
        port,
        host: host.to_string(),
        method: method.to_string(),
        path: path.to_string(),
        headers: by_name
            .into_iter()
            .map(|(n, mut v)| {
                let one = if v.len() == 1 { v.pop() } else { None };
                (n, one.map_or(OneOrMany::Many(v), OneOrMany::One))
            })
            .collect(),
        sni: sni.map(str::to_string),
        client_address: None,
    }
}

/// Prints the explanation on stdout; problems with the manifests or the request on stderr.
/// Returns the exit code: 0 explained, 1 not.
pub fn run(paths: &[PathBuf], gateway_namespace: &str, req: &ExplainRequest) -> i32 {
    let (verdict, snapshot) = match admin::manifests::snapshot(paths, gateway_namespace) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    crate::validate_cmd::print(&verdict);
    let Some(snapshot) = snapshot else {
        return 1;
    };
    let explanation = match snapshot.explain(req) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("gateway explain: {e}");
            return 1;
        }
    };
    match serde_json::to_string_pretty(&explanation) {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("gateway explain: encoding the answer: {e}");
            1
        }
    }
}
