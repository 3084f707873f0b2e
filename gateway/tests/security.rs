//! End-to-end tests of RequestAuthentication and AuthorizationPolicy on the real binary: tokens
//! signed at test time (RS256 with an `openssl` key, ES256 with an rcgen key), key sets served by
//! a loopback `jwksUri` server (rotation picked up, outage keeps the last keys), routing on
//! claims, DENY / ALLOW / AUDIT by path, method, host and ipBlocks, a CUSTOM authorizer on
//! loopback (allow with a header upstream, deny with its own answer, time out with `failOpen`
//! both ways), and `principals` from client certificates.

mod common;
mod upstream;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::tls::{rt, Ca, Client};
use common::{request, write_file, Gateway, Opts, Response};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use upstream::Upstream;

// ----- resources -----

fn apply(gw: &Gateway, yaml: &str) -> Response {
    let r = gw.admin_call("POST", "/apply", "application/yaml", yaml.as_bytes());
    assert_eq!(r.status, 200, "apply failed: {}", r.text());
    r
}

fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut h: Vec<(&str, &str)> = vec![("Host", host)];
    h.extend_from_slice(headers);
    request(addr, method, path, &h, b"").expect("request")
}

/// Which upstream answered, or the status and flag of an answer the gateway made.
fn who(r: &Response) -> String {
    match r.header("x-upstream") {
        Some(u) => u.to_string(),
        None => format!("{} {}", r.status, r.header("x-gateway-error").unwrap_or("")),
    }
}

/// A ServiceEntry for `host` on the upstream and a VirtualService sending `vs_host` there.
fn route_to(name: &str, vs_host: &str, u: &Upstream) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{name}.svc]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [\"{vs_host}\"]\n  http:\n  - route:\n    - destination: {{host: {name}.svc}}\n---\n",
        port = u.port()
    )
}

fn request_authentication(name: &str, rules: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: istio-system}}\nspec:\n  jwtRules:\n{rules}---\n")
}

fn policy(name: &str, spec: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: istio-system}}\nspec:\n{spec}---\n")
}

fn metric(gw: &Gateway, series: &str) -> f64 {
    gw.get("/metrics")
        .text()
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

// ----- keys and tokens -----

/// A signing key and its public JWK.
struct Key {
    encoding: jsonwebtoken::EncodingKey,
    alg: jsonwebtoken::Algorithm,
    kid: String,
    jwk: serde_json::Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An RSA key made by `openssl` (ring cannot generate RSA keys).
fn rsa_key(kid: &str) -> Key {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.pem");
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&path)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl")
        .success();
    assert!(ok, "openssl genrsa");
    let der_path = dir.path().join("k.der");
    let ok = std::process::Command::new("openssl")
        .args(["rsa", "-traditional", "-outform", "DER", "-in"])
        .arg(&path)
        .arg("-out")
        .arg(&der_path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl")
        .success();
    assert!(ok, "openssl rsa -traditional");
    let der = std::fs::read(&der_path).expect("key");
    let out = std::process::Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&path)
        .output()
        .expect("openssl rsa");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.trim().strip_prefix("Modulus=").expect("modulus");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    Key {
        encoding: jsonwebtoken::EncodingKey::from_rsa_der(&der),
        alg: jsonwebtoken::Algorithm::RS256,
        kid: kid.to_string(),
        jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64(&n), "e": "AQAB"}),
    }
}

/// A P-256 key made by rcgen.
fn ec_key(kid: &str) -> Key {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec key");
    let raw = kp.public_key_raw();
    assert_eq!(raw.len(), 65, "an uncompressed P-256 point");
    Key {
        encoding: jsonwebtoken::EncodingKey::from_ec_der(&kp.serialize_der()),
        alg: jsonwebtoken::Algorithm::ES256,
        kid: kid.to_string(),
        jwk: json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}),
    }
}

fn jwks(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn token(key: &Key, claims: serde_json::Value) -> String {
    let mut h = jsonwebtoken::Header::new(key.alg);
    h.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&h, &claims, &key.encoding).expect("sign")
}

fn claims(iss: &str, sub: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"iss": iss, "sub": sub, "exp": now() + 600, "iat": now()});
    if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    c
}

// ----- loopback servers -----

/// A server that answers `GET` with the body it is given (`None`: 503).
struct Served {
    addr: SocketAddr,
    body: Arc<Mutex<Option<String>>>,
    hits: Arc<Mutex<usize>>,
}

impl Served {
    fn start(body: &str) -> Served {
        let shared = Arc::new(Mutex::new(Some(body.to_string())));
        let hits = Arc::new(Mutex::new(0usize));
        let (b, h) = (shared.clone(), hits.clone());
        let addr = serve(axum::Router::new().fallback(move || {
            let (b, h) = (b.clone(), h.clone());
            async move {
                *h.lock().expect("hits") += 1;
                match b.lock().expect("body").clone() {
                    Some(text) => (axum::http::StatusCode::OK, text),
                    None => (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new()),
                }
            }
        }));
        Served {
            addr,
            body: shared,
            hits,
        }
    }

    fn set(&self, body: Option<String>) {
        *self.body.lock().expect("body") = body;
    }

    fn hits(&self) -> usize {
        *self.hits.lock().expect("hits")
    }
}

/// Serves an axum app on a loopback port on a thread of its own.
fn serve(app: axum::Router) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(l.local_addr().expect("addr")).expect("send");
            axum::serve(l, app).await.expect("serve");
        });
    });
    rx.recv().expect("address")
}

// ----- JWT -----

#[test]
fn tokens_from_a_jwks_uri_verify_rotate_and_survive_its_outage() {
    let rsa_a = rsa_key("a");
    let rsa_b = rsa_key("b");
    let ec = ec_key("e");
    let keys = Served::start(&jwks(&[&rsa_a, &ec]));
    let up = Upstream::start("app");
    let gw = Gateway::start(Opts::default());
    let iss = "https://issuer.test";
    apply(
        &gw,
        &(route_to("app", "app.test", &up)
            + &request_authentication(
                "jwt",
                &format!("  - issuer: {iss}\n    jwksUri: http://{}/keys\n    audiences: [app]\n    outputClaimToHeaders: [{{header: x-sub, claim: sub}}]\n", keys.addr),
            )),
    );
    let bearer = |t: &str| format!("Bearer {t}");
    let get = |t: Option<&str>| {
        let auth = t.map(bearer);
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        send(gw.http, "GET", "app.test", "/", &h)
    };

    // No token: no identity, served.
    assert_eq!(who(&get(None)), "app");
    // RS256 and ES256 tokens verify; the token is not forwarded, the claim header is.
    let good = token(&rsa_a, claims(iss, "alice", json!({"aud": "app"})));
    let r = get(Some(&good));
    assert_eq!(who(&r), "app", "{}", r.text());
    let seen = up.seen();
    let last = seen.last().expect("a request");
    assert!(
        last["headers"].get("authorization").is_none(),
        "the token is removed: {last}"
    );
    assert_eq!(last["headers"]["x-sub"], "alice");
    let es = token(&ec, claims(iss, "erin", json!({"aud": ["other", "app"]})));
    assert_eq!(who(&get(Some(&es))), "app");

    // Invalid tokens: 401 with Envoy's body; each counted by reason.
    let expired = token(
        &rsa_a,
        json!({"iss": iss, "sub": "x", "aud": "app", "exp": now() - 3600}),
    );
    let wrong_aud = token(&rsa_a, claims(iss, "x", json!({"aud": "nope"})));
    let rotated = token(&rsa_b, claims(iss, "x", json!({"aud": "app"})));
    for (what, t) in [
        ("expired", &expired),
        ("audience", &wrong_aud),
        ("garbage", &"a.b.c".to_string()),
    ] {
        let r = get(Some(t));
        assert_eq!(r.status, 401, "{what}");
        assert_eq!(r.text(), "Jwt verification fails", "{what}");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{what}"
        );
    }
    assert!(metric(&gw, "gateway_jwt_failures_total{reason=\"expired\"}") >= 1.0);
    assert!(
        metric(
            &gw,
            "gateway_jwt_failures_total{reason=\"audience_not_allowed\"}"
        ) >= 1.0
    );

    // Key rotation: a token of a new key is accepted once the issuer serves it (an unknown
    // `kid` fetches the set again, at most every 2 s).
    std::thread::sleep(Duration::from_millis(2100));
    keys.set(Some(jwks(&[&rsa_a, &rsa_b, &ec])));
    let r = get(Some(&rotated));
    assert_eq!(who(&r), "app", "the rotated key is picked up: {}", r.text());

    // Outage: the last good keys stay in use.
    let before = keys.hits();
    keys.set(None);
    std::thread::sleep(Duration::from_millis(2100));
    let unknown = rsa_key("c");
    let r = get(Some(&token(
        &unknown,
        claims(iss, "x", json!({"aud": "app"})),
    )));
    assert_eq!(r.status, 401, "a key never served does not verify");
    assert!(
        keys.hits() > before,
        "the unknown kid asked the server again"
    );
    assert_eq!(
        who(&get(Some(&good))),
        "app",
        "the last keys still verify during the outage"
    );
    assert_eq!(who(&get(Some(&es))), "app");
    assert!(metric(&gw, "gateway_jwks_fetches_total{result=\"failed\"}") >= 1.0);
}

#[test]
fn without_keys_the_issuers_discovery_document_names_them() {
    let key = ec_key("d");
    let set = jwks(&[&key]);
    let issuer: Arc<Mutex<String>> = Arc::default();
    let iss = issuer.clone();
    let addr =
        serve(
            axum::Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    axum::routing::get(move || {
                        let iss = iss.lock().expect("issuer").clone();
                        async move {
                            json!({"issuer": iss, "jwks_uri": format!("{iss}/certs")}).to_string()
                        }
                    }),
                )
                .route("/certs", axum::routing::get(move || async move { set })),
        );
    let iss = format!("http://{addr}");
    *issuer.lock().expect("issuer") = iss.clone();
    let up = Upstream::start("app");
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(route_to("app", "app.test", &up)
            + &request_authentication("jwt", &format!("  - issuer: \"{iss}\"\n"))),
    );
    let good = format!("Bearer {}", token(&key, claims(&iss, "d", json!({}))));
    let r = send(gw.http, "GET", "app.test", "/", &[("Authorization", &good)]);
    assert_eq!(who(&r), "app", "{}", r.text());
    let other = format!(
        "Bearer {}",
        token(&ec_key("d"), claims(&iss, "d", json!({})))
    );
    assert_eq!(
        send(
            gw.http,
            "GET",
            "app.test",
            "/",
            &[("Authorization", &other)]
        )
        .status,
        401
    );
}

#[test]
fn claims_route_and_token_locations_follow_the_rule() {
    let key = ec_key("k");
    let admins = Upstream::start("admins");
    let rest = Upstream::start("rest");
    let gw = Gateway::start(Opts::default());
    let iss = "issuer-1";
    let jwks_inline = jwks(&[&key]);
    apply(
        &gw,
        &(route_to("rest", "other.test", &rest)
            + &route_to("admins", "other2.test", &admins)
            + &request_authentication(
                "jwt",
                &format!("  - issuer: {iss}\n    jwks: {jwks_inline:?}\n    fromHeaders: [{{name: x-token, prefix: \"Token \"}}]\n    fromParams: [tok]\n    fromCookies: [session]\n    forwardOriginalToken: true\n    outputPayloadToHeader: x-payload\n"),
            )
            + "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\n"
            + "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: claims}\nspec:\n  hosts: [claims.test]\n  gateways: [gw]\n  http:\n  - match:\n    - headers:\n        \"@request.auth.claims.realm.role\": {exact: admin}\n    route: [{destination: {host: admins.svc}}]\n  - match:\n    - headers:\n        \"@request.auth.claims[groups]\": {prefix: ops}\n    route: [{destination: {host: admins.svc}}]\n  - route: [{destination: {host: rest.svc}}]\n---\n"),
    );
    let admin = token(&key, claims(iss, "a", json!({"realm": {"role": "admin"}})));
    let ops = token(
        &key,
        claims(iss, "o", json!({"groups": ["dev", "ops-team"]})),
    );
    let user = token(&key, claims(iss, "u", json!({"realm": {"role": "user"}})));
    let hdr = |t: &str| format!("Token {t}");
    let by_header = |t: &str| {
        let h = hdr(t);
        send(gw.http, "GET", "claims.test", "/", &[("x-token", &h)])
    };
    assert_eq!(who(&by_header(&admin)), "admins", "nested claim");
    assert_eq!(
        who(&by_header(&ops)),
        "admins",
        "a list claim matches by element"
    );
    assert_eq!(who(&by_header(&user)), "rest");
    assert_eq!(
        who(&send(gw.http, "GET", "claims.test", "/", &[])),
        "rest",
        "no identity matches no claim"
    );
    let seen = admins.seen();
    let first = seen.first().expect("a request");
    assert!(
        first["headers"]["x-token"]
            .as_str()
            .is_some_and(|v| v.ends_with(&admin)),
        "forwardOriginalToken keeps it"
    );
    assert_eq!(
        first["headers"]["x-payload"],
        admin.split('.').nth(1).expect("payload")
    );
    // The default `Authorization: Bearer` is not a location of this rule: no identity.
    let bearer = format!("Bearer {admin}");
    assert_eq!(
        who(&send(
            gw.http,
            "GET",
            "claims.test",
            "/",
            &[("Authorization", &bearer)]
        )),
        "rest"
    );
    // Query parameter and cookie.
    assert_eq!(
        who(&send(
            gw.http,
            "GET",
            "claims.test",
            &format!("/?tok={admin}"),
            &[]
        )),
        "admins"
    );
    let cookie = format!("a=b; session={admin}");
    assert_eq!(
        who(&send(
            gw.http,
            "GET",
            "claims.test",
            "/",
            &[("Cookie", &cookie)]
        )),
        "admins"
    );
    // A bad token at any location is refused.
    assert_eq!(
        send(gw.http, "GET", "claims.test", "/?tok=x.y.z", &[]).status,
        401
    );
}

// ----- AuthorizationPolicy -----

#[test]
fn deny_allow_and_audit_by_path_method_host_and_ip_blocks() {
    let up = Upstream::start("app");
    let gw = Gateway::start(Opts::default().arg("--access-log").arg("json"));
    apply(
        &gw,
        &(route_to("app", "*", &up)
            + &policy("deny-admin", "  action: DENY\n  rules:\n  - to: [{operation: {paths: [\"/admin*\"]}}]\n  - to: [{operation: {methods: [DELETE], hosts: [\"a.test\"]}}]\n")
            + &policy("allow-some", "  action: ALLOW\n  rules:\n  - to: [{operation: {hosts: [\"a.test\", \"*.b.test\"]}}]\n  - from: [{source: {ipBlocks: [\"10.0.0.0/8\"]}}]\n")
            + &policy("audit-api", "  action: AUDIT\n  rules:\n  - to: [{operation: {paths: [\"/api/{*}/items\"]}}]\n")),
    );
    let go = |m: &str, host: &str, path: &str| who(&send(gw.http, m, host, path, &[]));
    assert_eq!(go("GET", "a.test", "/"), "app");
    assert_eq!(go("GET", "x.b.test", "/"), "app");
    assert_eq!(
        go("GET", "c.test", "/"),
        "403 RBAC",
        "no ALLOW rule matches"
    );
    assert_eq!(
        go("GET", "a.test", "/admin/users"),
        "403 RBAC",
        "DENY by path"
    );
    assert_eq!(
        go("DELETE", "a.test", "/x"),
        "403 RBAC",
        "DENY by method and host"
    );
    assert_eq!(go("DELETE", "x.b.test", "/x"), "app");
    let r = send(gw.http, "GET", "a.test", "/admin", &[]);
    assert_eq!(r.text(), "RBAC: access denied");
    assert_eq!(go("GET", "a.test", "/api/v1/items"), "app");
    assert!(
        metric(
            &gw,
            "gateway_authz_denied_total{action=\"DENY\",policy=\"ap/istio-system/deny-admin\"}"
        ) >= 2.0
    );
    assert!(
        metric(
            &gw,
            "gateway_authz_denied_total{action=\"ALLOW\",policy=\"\"}"
        ) >= 1.0
    );
    assert_eq!(
        metric(
            &gw,
            "gateway_authz_audited_total{policy=\"ap/istio-system/audit-api\"}"
        ),
        1.0
    );
    let log = common::eventually(Duration::from_secs(5), || {
        let l = gw.access_log();
        l.iter()
            .any(|e| e["authz_policy"] == "ap/istio-system/deny-admin")
            .then_some(l)
    })
    .expect("the access log names the deciding policy");
    assert!(log
        .iter()
        .any(|e| e["authz_policy"] == "ap/istio-system/allow-some" && e["response_code"] == 200));
    assert!(
        gw.logs()
            .lines()
            .any(|l| l.contains("AuthorizationPolicy AUDIT matched")
                && l.contains("ap/istio-system/audit-api")
                && l.contains("/api/v1/items")),
        "AUDIT logs the request"
    );

    // ipBlocks: the loopback client is not in 10/8, but is in 127/8.
    apply(
        &gw,
        &policy("allow-some", "  action: ALLOW\n  rules:\n  - from: [{source: {ipBlocks: [\"127.0.0.0/8\"], notIpBlocks: [\"127.0.0.2\"]}}]\n"),
    );
    assert!(
        common::eventually(Duration::from_secs(5), || (go("GET", "c.test", "/")
            == "app")
            .then_some(()))
        .is_some()
    );
    apply(
        &gw,
        &policy(
            "allow-some",
            "  action: ALLOW\n  rules:\n  - from: [{source: {remoteIpBlocks: [\"10.0.0.0/8\"]}}]\n",
        ),
    );
    assert!(
        common::eventually(Duration::from_secs(5), || (go("GET", "c.test", "/")
            == "403 RBAC")
            .then_some(()))
        .is_some()
    );

    // A dry-run DENY only counts.
    apply(
        &gw,
        &(policy("allow-some", "  action: ALLOW\n  rules:\n  - {}\n")
            + "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: dry, namespace: istio-system, annotations: {\"istio.io/dry-run\": \"true\"}}\nspec:\n  action: DENY\n  rules:\n  - to: [{operation: {paths: [\"/dry\"]}}]\n---\n"),
    );
    assert!(
        common::eventually(Duration::from_secs(5), || (go("GET", "c.test", "/dry")
            == "app")
            .then_some(()))
        .is_some()
    );
    assert!(
        metric(
            &gw,
            "gateway_authz_dry_run_denied_total{policy=\"ap/istio-system/dry\"}"
        ) >= 1.0
    );
}

#[test]
fn request_principals_and_claims_in_policies() {
    let key = rsa_key("k");
    let up = Upstream::start("app");
    let gw = Gateway::start(Opts::default());
    let jwks_inline = jwks(&[&key]);
    apply(
        &gw,
        &(route_to("app", "app.test", &up)
            + &request_authentication("jwt", &format!("  - issuer: iss\n    jwks: {jwks_inline:?}\n"))
            + &policy("require-jwt", "  action: ALLOW\n  rules:\n  - from: [{source: {requestPrincipals: [\"iss/*\"]}}]\n    when: [{key: \"request.auth.claims[scope]\", values: [write]}]\n")),
    );
    let bearer = |t: String| format!("Bearer {t}");
    let with = |a: &str| send(gw.http, "GET", "app.test", "/", &[("Authorization", a)]);
    assert_eq!(
        who(&send(gw.http, "GET", "app.test", "/", &[])),
        "403 RBAC",
        "no token, no principal"
    );
    assert_eq!(
        who(&with(&bearer(token(
            &key,
            claims("iss", "bob", json!({"scope": "read write"}))
        )))),
        "app",
        "scope is space-delimited"
    );
    assert_eq!(
        who(&with(&bearer(token(
            &key,
            claims("iss", "bob", json!({"scope": "read"}))
        )))),
        "403 RBAC"
    );
}

// ----- CUSTOM -----

/// An authorizer: `x-ext-authz: allow` → 200 with `x-user`; `deny` → 418 with its own body and
/// header; `slow` → answers after 2 s; anything else → 403.
fn authorizer() -> SocketAddr {
    serve(
        axum::Router::new().fallback(|req: axum::extract::Request| async move {
            let v = req
                .headers()
                .get("x-ext-authz")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let path = req.uri().to_string();
            let b = axum::response::Response::builder();
            match v.as_str() {
                "allow" => b
                    .status(200)
                    .header("x-user", "alice")
                    .header("x-check-path", path)
                    .body(axum::body::Body::empty()),
                "deny" => b
                    .status(418)
                    .header("x-reason", "teapot")
                    .body(axum::body::Body::from("denied by the test authorizer")),
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    b.status(200).body(axum::body::Body::empty())
                }
                _ => b.status(403).body(axum::body::Body::empty()),
            }
            .expect("response")
        }),
    )
}

#[test]
fn a_custom_authorizer_allows_denies_and_times_out_both_ways() {
    let authz = authorizer();
    let up = Upstream::start("app");
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = |name: &str, fail_open: bool| {
        format!("- name: {name}\n  envoyExtAuthzHttp:\n    service: authz.local\n    port: {port}\n    timeout: 500ms\n    pathPrefix: /check\n    failOpen: {fail_open}\n    statusOnError: \"503\"\n    includeRequestHeadersInCheck: [x-ext-authz]\n    headersToUpstreamOnAllow: [x-user]\n    headersToDownstreamOnDeny: [x-reason]\n", port = authz.port())
    };
    let mesh = write_file(
        dir.path(),
        "mesh.yaml",
        &format!(
            "extensionProviders:\n{}{}",
            provider("closed", false),
            provider("open", true)
        ),
    );
    let gw = Gateway::start(
        Opts::default()
            .arg("--mesh-config")
            .arg(mesh.to_string_lossy()),
    );
    apply(
        &gw,
        &(route_to("app", "*", &up)
            + "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: authz}\nspec:\n  hosts: [authz.local]\n  ports: [{number: "
            + &authz.port().to_string()
            + ", name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1}]\n---\n"
            + &policy("ext-closed", "  action: CUSTOM\n  provider: {name: closed}\n  rules:\n  - to: [{operation: {hosts: [closed.test]}}]\n")
            + &policy("ext-open", "  action: CUSTOM\n  provider: {name: open}\n  rules:\n  - to: [{operation: {hosts: [open.test]}}]\n")),
    );
    let ask = |host: &str, v: &str| send(gw.http, "GET", host, "/x?y=1", &[("x-ext-authz", v)]);

    let r = ask("closed.test", "allow");
    assert_eq!(who(&r), "app", "{}", r.text());
    let seen = up.seen();
    let last = seen.last().expect("a request");
    assert_eq!(
        last["headers"]["x-user"], "alice",
        "headersToUpstreamOnAllow"
    );

    let r = ask("closed.test", "deny");
    assert_eq!(r.status, 418);
    assert_eq!(r.text(), "denied by the test authorizer");
    assert_eq!(r.header("x-reason"), Some("teapot"));
    assert_eq!(r.header("x-gateway-error"), Some("UAEX"));

    let r = ask("closed.test", "nope");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-gateway-error"), Some("UAEX"));

    let r = ask("closed.test", "slow");
    assert_eq!(
        (r.status, r.header("x-gateway-error")),
        (503, Some("UAEX")),
        "timeout, failOpen false: statusOnError"
    );
    let r = ask("open.test", "slow");
    assert_eq!(who(&r), "app", "timeout, failOpen true: allowed");
    // A host no CUSTOM rule matches is not asked.
    assert_eq!(who(&ask("other.test", "nope")), "app");
    assert!(
        metric(
            &gw,
            "gateway_ext_authz_errors_total{provider=\"closed\",reason=\"timeout\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &gw,
            "gateway_ext_authz_duration_seconds_count{provider=\"closed\"}"
        ) >= 3.0
    );
}

// ----- mTLS principals -----

#[test]
fn principals_come_from_client_certificates() {
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let srv = server_ca.server(&["m.example.com"]);
    let good = client_ca.client("good", &["spiffe://cluster.local/ns/shop/sa/web"]);
    let other = client_ca.client("other", &["spiffe://cluster.local/ns/lab/sa/web"]);
    let up = Upstream::start("app");
    let gw = Gateway::start(Opts::default());
    apply(
        &gw,
        &(common::tls::secret_yaml("m", &srv, Some(&client_ca.pem()))
            + "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 443, name: m, protocol: HTTPS}\n    hosts: [m.example.com]\n    tls: {mode: OPTIONAL_MUTUAL, credentialName: m}\n---\n"
            + "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: app}\nspec:\n  hosts: [app.svc]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1, ports: {http: "
            + &up.port().to_string()
            + "}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: app}\nspec:\n  hosts: [m.example.com]\n  gateways: [gw]\n  http:\n  - route: [{destination: {host: app.svc}}]\n---\n"
            + &policy("shop-only", "  action: ALLOW\n  rules:\n  - from: [{source: {principals: [\"cluster.local/ns/shop/sa/*\"]}}]\n  - from: [{source: {namespaces: [lab]}}]\n    to: [{operation: {methods: [POST]}}]\n")),
    );
    let client = |cert: Option<&common::tls::Leaf>| Client {
        sni: Some("m.example.com".to_string()),
        cert: cert.cloned(),
        ..Client::default()
    };
    let rt = rt();
    rt.block_on(async {
        let r = common::tls::get(gw.https, &client(Some(&good)), "m.example.com", "/")
            .await
            .expect("request");
        assert_eq!(who(&r), "app", "{}", r.text());
        let r = common::tls::get(gw.https, &client(Some(&other)), "m.example.com", "/")
            .await
            .expect("request");
        assert_eq!(who(&r), "403 RBAC", "another namespace's principal, GET");
        let r = common::tls::get(gw.https, &client(None), "m.example.com", "/")
            .await
            .expect("request");
        assert_eq!(who(&r), "403 RBAC", "no certificate, no principal");
    });
    let log = common::eventually(Duration::from_secs(5), || {
        let l = gw.access_log();
        (l.len() >= 3).then_some(l)
    })
    .expect("access log lines");
    assert!(log.iter().any(|e| e["downstream_peer_principal"]
        == "spiffe://cluster.local/ns/shop/sa/web"
        && e["authz_policy"] == "ap/istio-system/shop-only"));
}

#[test]
fn remote_ip_blocks_behind_one_trusted_proxy() {
    let up = Upstream::start("app");
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = write_file(
        dir.path(),
        "mesh.yaml",
        "defaultConfig:\n  gatewayTopology:\n    numTrustedProxies: 1\n",
    );
    let gw = Gateway::start(
        Opts::default()
            .arg("--mesh-config")
            .arg(mesh.to_string_lossy()),
    );
    apply(
        &gw,
        &(route_to("app", "*", &up)
            + &policy("deny-net", "  action: DENY\n  rules:\n  - from: [{source: {remoteIpBlocks: [\"203.0.113.0/24\"]}}]\n")
            + &policy("allow-clients", "  action: ALLOW\n  rules:\n  - when: [{key: remote.ip, values: [\"198.51.100.0/24\", \"203.0.113.0/24\"]}]\n")),
    );
    let via_proxy = |xff: &str| {
        who(&send(
            gw.http,
            "GET",
            "a.test",
            "/",
            &[("X-Forwarded-For", xff)],
        ))
    };
    // The one trusted proxy (the loopback peer) appended nothing the client could forge: the
    // client is the rightmost X-Forwarded-For entry.
    assert_eq!(via_proxy("198.51.100.7"), "app");
    assert_eq!(
        via_proxy("203.0.113.9"),
        "403 RBAC",
        "DENY by remoteIpBlocks"
    );
    assert_eq!(
        via_proxy("203.0.113.9, 198.51.100.7"),
        "app",
        "only the trusted hop's entry counts"
    );
    assert_eq!(
        via_proxy("192.0.2.1"),
        "403 RBAC",
        "no ALLOW rule matches remote.ip"
    );
    // No X-Forwarded-For: the peer itself (loopback), which no ALLOW rule names.
    assert_eq!(who(&send(gw.http, "GET", "a.test", "/", &[])), "403 RBAC");
}
