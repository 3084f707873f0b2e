//! JWT authentication as Istio configures Envoy's `jwt_authn` for a `RequestAuthentication`: the
//! compiled rule ([`JwtProvider`]), JWKS parsing ([`parse_jwks`]), token extraction, verification
//! ([`verify`]: signature, `exp`/`nbf` with Envoy's 60 s clock skew, `iss`, `aud`) and the
//! request-level outcome ([`authenticate`]): a request without a token passes with no identity,
//! a request with a token that does not verify is refused.
//!
//! Signatures are checked by the `jsonwebtoken` crate on ring (RS256/384/512, PS256/384/512,
//! ES256/384, EdDSA, HS256/384/512); key sets are read here so that keys the crate cannot use
//! (P-521, X25519, …) are kept as notes instead of failing the whole set. Time is passed in
//! (`now`, UNIX seconds): nothing here reads a clock.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Envoy's default `clock_skew_seconds`, which Istio does not change.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Istio's default JWKS fetch timeout (`jwtRules[].timeout`).
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Claims Istio always treats as space-delimited lists (`buildSpaceDelimitedClaims`).
pub const DEFAULT_SPACE_DELIMITED_CLAIMS: [&str; 2] = ["permission", "scope"];

/// One compiled `jwtRules[]` entry.
#[derive(Debug, Clone, Serialize)]
pub struct JwtProvider {
    /// `ra/<ns>/<name>/jwtRules/<i>`, for logs and metrics.
    pub id: String,
    /// Empty: any issuer.
    pub issuer: String,
    /// Empty: any audience.
    pub audiences: Vec<String>,
    pub keys: JwksSource,
    /// Where tokens are read, in order; Istio's default (`Authorization: Bearer`, then
    /// `?access_token=`) when the rule names none.
    pub locations: Vec<TokenLocation>,
    /// Keep the token in the request sent upstream (Istio's default strips its header).
    pub forward_original_token: bool,
    /// Lowercase header that gets the payload, base64url, as in the token.
    pub output_payload_to_header: Option<String>,
    /// `(lowercase header, claim)`: claims copied into request headers.
    pub output_claim_to_headers: Vec<(String, String)>,
    #[serde(serialize_with = "ser_secs")]
    pub clock_skew: Duration,
    /// Claims whose string value is matched as a space-separated list.
    pub space_delimited_claims: Vec<String>,
    /// `presence: REQUIRED`: a request without a token of this rule is refused.
    pub required: bool,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// Where the keys come from.
#[derive(Debug, Clone, Serialize)]
pub enum JwksSource {
    /// `jwks`: parsed at translation.
    Inline(Arc<Jwks>),
    /// `jwksUri`: fetched by the data plane (timeout, cache, background refresh, last good kept).
    Uri {
        uri: String,
        https: bool,
        host: String,
        port: u16,
        #[serde(serialize_with = "ser_secs")]
        timeout: Duration,
    },
    /// Neither: Istio resolves `<issuer>/.well-known/openid-configuration`'s `jwks_uri`.
    Discovery {
        issuer: String,
        #[serde(serialize_with = "ser_secs")]
        timeout: Duration,
    },
}

/// A place a token is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum TokenLocation {
    /// A header (lowercase name), with the prefix stripped (`Bearer `, compared ignoring case).
    Header { name: String, prefix: String },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

impl TokenLocation {
    /// Istio's default locations.
    pub fn defaults() -> Vec<TokenLocation> {
        vec![
            TokenLocation::Header {
                name: "authorization".to_string(),
                prefix: "Bearer ".to_string(),
            },
            TokenLocation::Param("access_token".to_string()),
        ]
    }
}

/// A parsed JSON Web Key Set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One key of a set.
#[derive(Clone, Serialize)]
pub struct Jwk {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// `RSA`, `EC P-256`, `OKP Ed25519`, `oct`, …
    pub kind: String,
    #[serde(skip)]
    verifier: Option<(KeyFamily, DecodingKey)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<KeyNote>,
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind)
            .field("usable", &self.verifier.is_some())
            .field("notes", &self.notes)
            .finish()
    }
}

impl Jwk {
    /// Whether tokens can be verified with this key.
    pub fn usable(&self) -> bool {
        self.verifier.is_some()
    }
}

/// Something worth saying about one key of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum KeyNote {
    /// It carries private material (Istio warns; only the public part is used).
    Private,
    /// It cannot verify tokens here (the reason).
    Unsupported(String),
}

/// Which algorithms a key can check; never mixed up (`jsonwebtoken` assumes the caller matches them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    P256,
    P384,
    Ed25519,
    Hmac,
}

impl KeyFamily {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyFamily::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyFamily::P256 => alg == ES256,
            KeyFamily::P384 => alg == ES384,
            KeyFamily::Ed25519 => alg == EdDSA,
            KeyFamily::Hmac => matches!(alg, HS256 | HS384 | HS512),
        }
    }
}

impl Jwks {
    /// Every note, with the index of its key.
    pub fn notes(&self) -> impl Iterator<Item = (usize, &KeyNote)> {
        self.keys
            .iter()
            .enumerate()
            .flat_map(|(i, k)| k.notes.iter().map(move |n| (i, n)))
    }
}

/// Parses a key set (`{"keys": [...]}`) or a single key, as Istio's parser does: JSON, a known
/// `kty` with its required members, base64url values. Keys that cannot verify here are kept,
/// with a [`KeyNote::Unsupported`].
pub fn parse_jwks(text: &str) -> Result<Jwks, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = &v else {
        return Err("a key set must be a JSON object".to_string());
    };
    let keys: Vec<&Value> = match obj.get("keys") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(_) => return Err("`keys` must be an array".to_string()),
        None => vec![&v],
    };
    let mut out = Jwks::default();
    for (i, k) in keys.into_iter().enumerate() {
        out.keys
            .push(parse_key(k).map_err(|e| format!("failed to parse key at index {i}: {e}"))?);
    }
    Ok(out)
}

fn b64(v: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok()
}

fn parse_key(k: &Value) -> Result<Jwk, String> {
    let Value::Object(m) = k else {
        return Err("a key must be a JSON object".to_string());
    };
    let text = |name: &str| -> Result<Option<&str>, String> {
        match m.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("`{name}` must be a string")),
        }
    };
    let required = |name: &str| -> Result<&str, String> {
        let s = text(name)?.ok_or_else(|| format!("required field {name} is missing"))?;
        if b64(s).is_none() {
            return Err(format!("`{name}` is not base64url"));
        }
        Ok(s)
    };
    let kty = text("kty")?.ok_or("required field kty is missing")?;
    let kid = text("kid")?.map(str::to_string);
    let alg = text("alg")?.map(str::to_string);
    let mut notes = Vec::new();
    if m.contains_key("d") || kty == "oct" {
        notes.push(KeyNote::Private);
    }
    let trimmed = |s: &str| s.trim_end_matches('=').to_string();
    let (kind, verifier) = match kty {
        "RSA" => {
            let (n, e) = (required("n")?, required("e")?);
            let key = DecodingKey::from_rsa_components(&trimmed(n), &trimmed(e))
                .map_err(|e| e.to_string())?;
            ("RSA".to_string(), Some((KeyFamily::Rsa, key)))
        }
        "EC" => {
            let crv = text("crv")?.ok_or("required field crv is missing")?;
            let (x, y) = (required("x")?, required("y")?);
            let len = |s: &str| b64(s).map_or(0, |b| b.len());
            let family = match crv {
                "P-256" if len(x) == 32 && len(y) == 32 => Some(KeyFamily::P256),
                "P-384" if len(x) == 48 && len(y) == 48 => Some(KeyFamily::P384),
                "P-256" | "P-384" => return Err(format!("wrong coordinate length for {crv}")),
                "P-521" | "secp256k1" => None,
                other => return Err(format!("unsupported curve {other:?}")),
            };
            let verifier = match family {
                Some(f) => Some((
                    f,
                    DecodingKey::from_ec_components(&trimmed(x), &trimmed(y))
                        .map_err(|e| e.to_string())?,
                )),
                None => {
                    notes.push(KeyNote::Unsupported(format!(
                        "{crv} keys cannot verify tokens here (ES256 and ES384 can)"
                    )));
                    None
                }
            };
            (format!("EC {crv}"), verifier)
        }
        "OKP" => {
            let crv = text("crv")?.ok_or("required field crv is missing")?;
            let x = required("x")?;
            let verifier = match crv {
                "Ed25519" if b64(x).is_some_and(|b| b.len() == 32) => Some((
                    KeyFamily::Ed25519,
                    DecodingKey::from_ed_components(&trimmed(x)).map_err(|e| e.to_string())?,
                )),
                "Ed25519" => return Err("an Ed25519 key has 32 bytes".to_string()),
                "Ed448" | "X25519" | "X448" => {
                    notes.push(KeyNote::Unsupported(format!(
                        "{crv} keys cannot verify tokens here (Ed25519 can)"
                    )));
                    None
                }
                other => return Err(format!("unsupported curve {other:?}")),
            };
            (format!("OKP {crv}"), verifier)
        }
        "oct" => {
            let k = required("k")?;
            let secret = b64(k).unwrap_or_default();
            (
                "oct".to_string(),
                Some((KeyFamily::Hmac, DecodingKey::from_secret(&secret))),
            )
        }
        other => return Err(format!("invalid key type {other:?}")),
    };
    if let Some(u) = m.get("use").and_then(Value::as_str) {
        if u != "sig" {
            notes.push(KeyNote::Unsupported(format!("`use` is {u:?}, not \"sig\"")));
            return Ok(Jwk {
                kid,
                alg,
                kind,
                verifier: None,
                notes,
            });
        }
    }
    Ok(Jwk {
        kid,
        alg,
        kind,
        verifier,
        notes,
    })
}

/// Why a token was refused. [`JwtError::message`] is Envoy's answer body for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// No token where `presence: REQUIRED` wants one.
    Missing,
    /// Not `header.payload.signature` of base64url JSON.
    Malformed(String),
    /// `alg` is missing, `none`, or not one that can be verified here.
    UnsupportedAlgorithm(String),
    /// `iss` is not the rule's issuer.
    UnknownIssuer,
    /// The key set has no key for the token's `kid`/`alg` (or no keys yet).
    NoMatchingKey,
    /// No key verifies the signature.
    BadSignature,
    Expired,
    NotYetValid,
    AudienceNotAllowed,
    /// `exp`, `nbf` or `iat` is not a number of seconds.
    BadTimeClaim(&'static str),
}

impl JwtError {
    /// A short label for metrics (`jwt_failures_total{reason}`): bounded, stable.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::Missing => "missing",
            JwtError::Malformed(_) => "malformed",
            JwtError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            JwtError::UnknownIssuer => "unknown_issuer",
            JwtError::NoMatchingKey => "no_matching_key",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::AudienceNotAllowed => "audience_not_allowed",
            JwtError::BadTimeClaim(_) => "bad_time_claim",
        }
    }

    /// Envoy's status text (`jwt_verify_lib`); CONTRACT §4 answers `Jwt verification fails`.
    pub fn message(&self) -> &'static str {
        match self {
            JwtError::Missing => "Jwt is missing",
            JwtError::Malformed(_) => "Jwt is not in the form of Header.Payload.Signature",
            JwtError::UnsupportedAlgorithm(_) => "Jwt header [alg] is not supported",
            JwtError::UnknownIssuer => "Jwt issuer is not configured",
            JwtError::NoMatchingKey => "Jwks doesn't have key to match kid or alg from Jwt",
            JwtError::BadSignature => "Jwt verification fails",
            JwtError::Expired => "Jwt is expired",
            JwtError::NotYetValid => "Jwt not yet valid",
            JwtError::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            JwtError::BadTimeClaim(_) => "Jwt payload has an invalid time claim",
        }
    }
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Malformed(d) | JwtError::UnsupportedAlgorithm(d) => {
                write!(f, "{}: {d}", self.message())
            }
            JwtError::BadTimeClaim(c) => write!(f, "{}: {c}", self.message()),
            _ => f.write_str(self.message()),
        }
    }
}

/// A verified token's payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Claims(pub Map<String, Value>);

impl Claims {
    /// A claim by name, nested names separated by `.` (`realm_access.roles`), as Istio's
    /// `@request.auth.claims.a.b` and `outputClaimToHeaders` read them. A top-level claim whose
    /// name itself contains dots (`https://example.com/groups`) is found too.
    pub fn get(&self, dotted: &str) -> Option<&Value> {
        if let Some(v) = self.0.get(dotted) {
            return Some(v);
        }
        let parts: Vec<&str> = dotted.split('.').collect();
        self.get_path(&parts)
    }

    /// A claim by its path of names (`request.auth.claims[a][b]` is `["a", "b"]`).
    pub fn get_path(&self, path: &[&str]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut v = self.0.get(*first)?;
        for p in rest {
            v = v.as_object()?.get(*p)?;
        }
        Some(v)
    }

    fn str_claim(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    pub fn issuer(&self) -> Option<&str> {
        self.str_claim("iss")
    }

    pub fn subject(&self) -> Option<&str> {
        self.str_claim("sub")
    }

    /// Istio's request principal: `iss/sub`.
    pub fn request_principal(&self) -> Option<String> {
        Some(format!("{}/{}", self.issuer()?, self.subject()?))
    }

    /// `aud`, a string or a list of strings.
    pub fn audiences(&self) -> Vec<&str> {
        self.values_at(&["aud"], &[])
    }

    /// `azp`, the authorized presenter.
    pub fn presenter(&self) -> Option<&str> {
        self.str_claim("azp")
    }

    /// The string values of a claim as Envoy's list matchers see them: a string, or the strings of
    /// a list; a string of a space-delimited claim split on spaces. Other types match nothing.
    pub fn values_at<'a>(&'a self, path: &[&str], space_delimited: &[String]) -> Vec<&'a str> {
        let split = path.len() == 1 && space_delimited.iter().any(|c| c == path[0]);
        match self.get_path(path) {
            Some(Value::String(s)) if split => s.split(' ').filter(|p| !p.is_empty()).collect(),
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// A claim as a header value (`outputClaimToHeaders`): strings as they are, numbers and
    /// booleans printed; objects and lists are not copied (as Envoy).
    pub fn header_value(&self, dotted: &str) -> Option<String> {
        match self.get(dotted)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

fn algorithm(name: &str) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match name {
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        "HS256" => HS256,
        "HS384" => HS384,
        "HS512" => HS512,
        _ => return None,
    })
}

/// A token split and decoded, not verified.
struct Parsed<'a> {
    alg: Algorithm,
    kid: Option<String>,
    message: &'a str,
    signature: &'a str,
    payload_b64: &'a str,
    claims: Map<String, Value>,
}

fn parse_token(token: &str) -> Result<Parsed<'_>, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("not three parts".to_string()));
    };
    let json = |part: &str, what: &str| -> Result<Map<String, Value>, JwtError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| JwtError::Malformed(format!("the {what} is not base64url")))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(JwtError::Malformed(format!(
                "the {what} is not a JSON object"
            ))),
        }
    };
    let header = json(h, "header")?;
    let claims = json(p, "payload")?;
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let alg = algorithm(alg_name)
        .ok_or_else(|| JwtError::UnsupportedAlgorithm(format!("{alg_name:?}")))?;
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_string);
    let message_len = h.len() + 1 + p.len();
    Ok(Parsed {
        alg,
        kid,
        message: &token[..message_len],
        signature: s,
        payload_b64: p,
        claims,
    })
}

/// A whole number of seconds, as `jwt_verify_lib` reads `exp`/`nbf`/`iat`.
fn seconds(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                return Ok(Some(u));
            }
            match n.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => {
                    Ok(Some(f as u64))
                }
                _ => Err(JwtError::BadTimeClaim(name)),
            }
        }
        Some(_) => Err(JwtError::BadTimeClaim(name)),
    }
}

/// `jwt_verify_lib`'s audience comparison: scheme and trailing `/` ignored.
fn same_audience(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> &str {
        let s = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        s.strip_suffix('/').unwrap_or(s)
    }
    norm(a) == norm(b)
}

/// Verifies one token against a provider and a key set at time `now` (UNIX seconds), in Envoy's
/// order: shape, issuer, keys by `kid`/`alg`, signature, `exp`/`nbf` (± clock skew), audiences.
pub fn verify(
    token: &str,
    provider: &JwtProvider,
    keys: &Jwks,
    now: u64,
) -> Result<Claims, JwtError> {
    let t = parse_token(token)?;
    let iss = t
        .claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !provider.issuer.is_empty() && iss != provider.issuer {
        return Err(JwtError::UnknownIssuer);
    }
    let mut tried = false;
    let mut ok = false;
    for k in &keys.keys {
        let Some((family, key)) = &k.verifier else {
            continue;
        };
        if let (Some(want), Some(have)) = (&t.kid, &k.kid) {
            if want != have {
                continue;
            }
        }
        if k.alg
            .as_deref()
            .is_some_and(|a| algorithm(a) != Some(t.alg))
        {
            continue;
        }
        if !family.fits(t.alg) {
            continue;
        }
        tried = true;
        if jsonwebtoken::crypto::verify(t.signature, t.message.as_bytes(), key, t.alg)
            .unwrap_or(false)
        {
            ok = true;
            break;
        }
    }
    if !tried {
        return Err(JwtError::NoMatchingKey);
    }
    if !ok {
        return Err(JwtError::BadSignature);
    }
    let skew = provider.clock_skew.as_secs();
    if let Some(nbf) = seconds(&t.claims, "nbf")? {
        if now.saturating_add(skew) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(exp) = seconds(&t.claims, "exp")? {
        if exp != 0 && now > exp.saturating_add(skew) {
            return Err(JwtError::Expired);
        }
    }
    seconds(&t.claims, "iat")?;
    if !provider.audiences.is_empty() {
        let claims = Claims(t.claims);
        let allowed = claims
            .audiences()
            .iter()
            .any(|a| provider.audiences.iter().any(|b| same_audience(a, b)));
        if !allowed {
            return Err(JwtError::AudienceNotAllowed);
        }
        return Ok(claims);
    }
    Ok(Claims(t.claims))
}

/// The unverified issuer of a token, to pick the rule it is meant for.
fn unverified_issuer(token: &str) -> Option<String> {
    let p = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(p).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss").and_then(Value::as_str).map(str::to_string)
}

/// The request parts tokens are read from.
#[derive(Debug, Clone, Copy)]
pub struct TokenSources<'a> {
    pub headers: &'a http::HeaderMap,
    /// The query string, without `?`.
    pub query: Option<&'a str>,
}

/// The first token at a provider's locations, and where it was.
pub fn find_token<'a>(provider: &JwtProvider, req: TokenSources<'a>) -> Option<(usize, String)> {
    for (i, loc) in provider.locations.iter().enumerate() {
        let found = match loc {
            TokenLocation::Header { name, prefix } => {
                req.headers.get_all(name.as_str()).iter().find_map(|v| {
                    let v = v.to_str().ok()?.trim();
                    let head = v.get(..prefix.len())?;
                    if !head.eq_ignore_ascii_case(prefix) {
                        return None;
                    }
                    let t = v[prefix.len()..].trim();
                    (!t.is_empty()).then(|| t.to_string())
                })
            }
            TokenLocation::Param(name) => req.query.and_then(|q| {
                q.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    (k == name && !v.is_empty()).then(|| v.to_string())
                })
            }),
            TokenLocation::Cookie(name) => req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .find_map(|v| {
                    v.to_str().ok()?.split(';').find_map(|c| {
                        let (k, v) = c.trim().split_once('=')?;
                        (k == name && !v.is_empty()).then(|| v.trim_matches('"').to_string())
                    })
                }),
        };
        if let Some(t) = found {
            return Some((i, t));
        }
    }
    None
}

/// A request's verified identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The index of the provider that verified it.
    pub provider: usize,
    pub claims: Claims,
    /// The rule's space-delimited claims, for authorization's claim matches.
    pub space_delimited_claims: Vec<String>,
    /// Headers to add upstream: `outputPayloadToHeader` and `outputClaimToHeaders`.
    pub headers_to_add: Vec<(String, String)>,
    /// The header the token came in, to remove upstream unless `forwardOriginalToken`.
    pub header_to_remove: Option<String>,
}

/// What JWT authentication decided for one request.
#[derive(Debug, Clone)]
pub enum AuthnOutcome {
    /// No token at any location: the request goes on with no identity.
    Anonymous,
    Authenticated(Identity),
    /// A token is there and does not verify: 401.
    Refused(JwtError),
}

/// Istio's requirement over every rule that applies: passes when some rule verifies its token,
/// or when no rule finds a token at all; a token that no rule verifies refuses the request.
/// `keys` gives each provider's current key set (inline, or what the data plane fetched; `None`
/// when nothing was fetched yet, which refuses its tokens).
pub fn authenticate(
    providers: &[Arc<JwtProvider>],
    keys: &dyn Fn(&JwtProvider) -> Option<Arc<Jwks>>,
    req: TokenSources<'_>,
    now: u64,
) -> AuthnOutcome {
    let mut first_error: Option<JwtError> = None;
    let mut missing_required = false;
    for (i, p) in providers.iter().enumerate() {
        let Some((loc, token)) = find_token(p, req) else {
            missing_required |= p.required;
            continue;
        };
        let result = match keys(p) {
            _ if !p.issuer.is_empty()
                && unverified_issuer(&token).as_deref() != Some(p.issuer.as_str()) =>
            {
                Err(JwtError::UnknownIssuer)
            }
            Some(set) => verify(&token, p, &set, now),
            None => Err(JwtError::NoMatchingKey),
        };
        match result {
            Ok(claims) => return AuthnOutcome::Authenticated(identity(i, p, loc, &token, claims)),
            // A token of another issuer is a weaker failure than a bad token of this one.
            Err(e) => match &first_error {
                None | Some(JwtError::UnknownIssuer) if e != JwtError::UnknownIssuer => {
                    first_error = Some(e)
                }
                None => first_error = Some(e),
                _ => {}
            },
        }
    }
    match first_error {
        Some(e) => AuthnOutcome::Refused(e),
        None if missing_required => AuthnOutcome::Refused(JwtError::Missing),
        None => AuthnOutcome::Anonymous,
    }
}

fn identity(i: usize, p: &JwtProvider, loc: usize, token: &str, claims: Claims) -> Identity {
    let mut headers_to_add = Vec::new();
    if let Some(h) = &p.output_payload_to_header {
        let payload = token.split('.').nth(1).unwrap_or_default();
        headers_to_add.push((h.clone(), payload.to_string()));
    }
    for (h, c) in &p.output_claim_to_headers {
        if let Some(v) = claims.header_value(c) {
            headers_to_add.push((h.clone(), v));
        }
    }
    let header_to_remove = match p.locations.get(loc) {
        Some(TokenLocation::Header { name, .. }) if !p.forward_original_token => Some(name.clone()),
        _ => None,
    };
    Identity {
        provider: i,
        claims,
        space_delimited_claims: p.space_delimited_claims.clone(),
        headers_to_add,
        header_to_remove,
    }
}

/// The payload part of a token as sent (for `outputPayloadToHeader`).
pub fn payload_part(token: &str) -> Option<&str> {
    parse_token(token).ok().map(|t| t.payload_b64)
}

#[cfg(test)]
mod tests;
