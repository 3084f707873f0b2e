//! The command line: `gateway validate` checks manifests offline with the same field-path messages
//! as the API (and the shipped examples are valid), `--version` answers, bad flags and a bad
//! `--mesh-config` are refused.

use std::process::Command;

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
}

#[test]
fn the_shipped_examples_are_valid() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let out = gateway()
        .args(["validate", examples])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_exits_1_with_every_field_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews.example.com]\n  http:\n  - route:\n    - destination: {host: a.example.com}\n      weight: -10\n    - destination: {host: b.example.com}\n    timeout: 1x\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 0, name: http, protocol: HTTP}\n    hosts: ['*']\n",
    )
    .expect("write");
    let out = gateway()
        .args(["validate"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for field in [
        "spec.http[0].route[0].weight",
        "spec.http[0].timeout",
        "spec.servers[0].port.number",
    ] {
        assert!(err.contains(field), "{field} missing from:\n{err}");
    }
    let unknown = dir.path().join("unknown.json");
    std::fs::write(
        &unknown,
        r#"{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"x"},"spec":{"hosts":["x.example.com"],"htp":[]}}"#,
    )
    .expect("write");
    let out = gateway()
        .args(["validate"])
        .arg(&unknown)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("htp"));
}

#[test]
fn version_and_bad_flags() {
    let out = gateway().arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = gateway()
        .args(["--listen", "notaport"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORT=ADDR"));
}

#[test]
fn a_mesh_config_the_gateway_cannot_read_stops_the_start_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        "extensionProviders:\n- name: authz\n  envoyExtAuthzHttp: {service: authz.example.com, port: 0}\n",
    )
    .expect("write");
    let out = gateway()
        .arg("--mesh-config")
        .arg(&mesh)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        // Never reached: the mesh config is read before anything is bound.
        .args([
            "--http",
            "127.0.0.1:1",
            "--https",
            "127.0.0.1:2",
            "--admin",
            "127.0.0.1:3",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("extensionProviders[0].envoyExtAuthzHttp.port: port number 0"),
        "{err}"
    );
}
