//! Unit tests of JWT verification and authentication, with keys made at test time (EC P-256,
//! Ed25519) or a fixed test RSA key: each test names the rule it pins.

use super::*;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

/// A 2048-bit RSA key made for these tests only (PKCS#1 DER, base64) and its modulus (base64url).
const RSA_DER: &str = "MIIEpQIBAAKCAQEAplYxax9prONaPfxl9JTaZlzrDRowCdNnkcgNSS5aqRqYiTNuD6BoarA9VTQxj+BO5HZ07k3bPP3SnQzqg1Mvgq7MYQF9fUarJNFfgBAZHjx5V0Rk5kYuhOkbLlhJsXJ7BRWllHha4qlFPofBtemrOFwUWh6pS+cb764v1c9+7+ewoWtC75DmFDKTkJLTcbKRSeCBrNcOvxT5dtZ9O2A6aD2qSmniBG1pr0vYRN284iI3Yz0jnPnMsqcSbrjYcJz5FqqLoHnKNX65jQKmE4nZw+hOYo1AW9YiG28tnYRTJrTFSptVUWQbPIKXwtE2k3xYefv3hAucjBRUkNVZg/r0JQIDAQABAoIBAASFreDFcRxN7w9l3Ai+/kQPrSVFS76MpJFyUKgnbjgQPMroHssmd4hFA9nb6igI92QfM1UiQT5igTYbWonY+l7xbSWLApQkFnWRCqli5qfriXn9pkeba1raMo67QD+mhuEvwjlr3z6vzu3hB3twX6MP387GbCBf52LIB81mj4MqrGGQT3KpH1UGp5De7+Rv5OqOZ19s7Q15MdL3OXTivHvIxkpvo5o1vZ+qTp/VGReu1aVp9ZrUWlTBBOBhUte8On5nZZcMktHQcvX175RQlKICIxNCQ1dptroSTxgoz2addxUr6bqUbHwDkmqH6ZcqxPQ/C3BtVPU/0pUOh1dP02kCgYEA30Qfv9GWFrAsGHpj/qTFe9D2aJQKsn8pL/qCd/+ytWMcO/Z04/suvUNifrguWREtZvfSmzAIksZtbziDrFE2nrhDCTUjsgn6UvKXFt4MPTje6XqrTSNulINJcQSXXLyfiSEPROq8UYDh4emcI+gNUg0JW6xndtQ52iNW4SmmD+kCgYEAvrlUaymt8WKpixE5v7vStDVydaaRBioeP1no/aNi5a1XcYfMnO5KqKCm0hyw+y11ymKi9curMhOvwkLJasIbI9wICSBGxopg6JLkUNoo4mTsSYOU/t50GtyRwmvAl9ABqo9YI3CC7NXgg4vJ+o5b3MrXkgpSKLlJK9EVYjaaeN0CgYEA1SQu/ytxkmVLI28sKPxaP5LEuh+iercktdX8Wdy0Wa+tU508CC1SeIJs9DaWoJbiditeVqKrfJuL+6LDKW06rJmR/adKVXxrCmbnUIBYxNWXEOP3xyNtPMB9CzTr3y9/SiVSc2N4toJIoign1KuCk/M4HNlgyLNgK1yTY08kZokCgYEAgYUmWSgS4ixYawKlrxmEO7FYK6GUNxV/ORJ78VN1o/gVvBm20JPay61d3K5zWgBDT8+wTy+i8P0BjPECC6gJ+k5AfsIWjloG+apXtriQrz5OYJYlJvg27M8BhYDbZ71whD2YY2jS4LdWIr9ZyPfIVqbBwoGTzegWUtVIqkvel1kCgYEAtdaihW80a+fA/bVhVFCN4mMZzE4+yel1iQ9y3NPWtqJgx0Chnu5guFb7kCpGY+ZGnIY8NmOBRh2WL7upE58PZji1jb2Pq1E8Ncu0IVdSoxUb4rD6ICEYjWJPkqZrDBuB/0ny53KnDbzSXMGSUMY8n14vSLvGHQ4oD+DjEIHKWXE=";
const RSA_N: &str = "plYxax9prONaPfxl9JTaZlzrDRowCdNnkcgNSS5aqRqYiTNuD6BoarA9VTQxj-BO5HZ07k3bPP3SnQzqg1Mvgq7MYQF9fUarJNFfgBAZHjx5V0Rk5kYuhOkbLlhJsXJ7BRWllHha4qlFPofBtemrOFwUWh6pS-cb764v1c9-7-ewoWtC75DmFDKTkJLTcbKRSeCBrNcOvxT5dtZ9O2A6aD2qSmniBG1pr0vYRN284iI3Yz0jnPnMsqcSbrjYcJz5FqqLoHnKNX65jQKmE4nZw-hOYo1AW9YiG28tnYRTJrTFSptVUWQbPIKXwtE2k3xYefv3hAucjBRUkNVZg_r0JQ";
const NOW: u64 = 1_800_000_000;

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_der(&STANDARD.decode(RSA_DER).expect("test key"))
}

/// A fresh key pair of `alg`: the signing key and its JWK.
fn fresh(alg: &'static rcgen::SignatureAlgorithm, kid: &str) -> (EncodingKey, Value) {
    let kp = rcgen::KeyPair::generate_for(alg).expect("key pair");
    let raw = kp.public_key_raw();
    let b = |s: &[u8]| URL_SAFE_NO_PAD.encode(s);
    if alg == &rcgen::PKCS_ED25519 {
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b(raw), "kid": kid});
        (EncodingKey::from_ed_der(&kp.serialize_der()), jwk)
    } else {
        let (x, y) = raw[1..].split_at((raw.len() - 1) / 2);
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b(x), "y": b(y), "kid": kid});
        (EncodingKey::from_ec_der(&kp.serialize_der()), jwk)
    }
}

fn rsa_jwk(kid: &str) -> Value {
    json!({"kty": "RSA", "n": RSA_N, "e": "AQAB", "kid": kid})
}

fn jwks(keys: Vec<Value>) -> Jwks {
    parse_jwks(&json!({ "keys": keys }).to_string()).expect("jwks parses")
}

fn provider(issuer: &str, audiences: &[&str]) -> JwtProvider {
    JwtProvider {
        id: "ra/default/a/jwtRules/0".into(),
        issuer: issuer.into(),
        audiences: audiences.iter().map(|s| s.to_string()).collect(),
        keys: JwksSource::Inline(Arc::default()),
        locations: TokenLocation::defaults(),
        forward_original_token: false,
        output_payload_to_header: None,
        output_claim_to_headers: Vec::new(),
        clock_skew: CLOCK_SKEW,
        space_delimited_claims: vec!["scope".into()],
        required: false,
    }
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, &claims, key).expect("sign")
}

fn claims() -> Value {
    json!({"iss": "https://issuer.example", "sub": "alice", "aud": ["api"], "exp": NOW + 600,
           "azp": "web", "realm": {"roles": ["admin"]}, "scope": "read write"})
}

#[test]
fn es256_token_signed_at_test_time_verifies_and_yields_its_claims() {
    let (key, jwk) = fresh(&rcgen::PKCS_ECDSA_P256_SHA256, "ec");
    let t = sign(Algorithm::ES256, "ec", &key, claims());
    let c = verify(
        &t,
        &provider("https://issuer.example", &["api"]),
        &jwks(vec![jwk]),
        NOW,
    )
    .expect("verifies");
    assert_eq!(
        c.request_principal().as_deref(),
        Some("https://issuer.example/alice")
    );
    assert_eq!(c.audiences(), ["api"]);
    assert_eq!(c.presenter(), Some("web"));
}

#[test]
fn rs256_rs512_and_ps256_verify_with_one_rsa_key() {
    let set = jwks(vec![rsa_jwk("rsa")]);
    let p = provider("https://issuer.example", &[]);
    for alg in [
        Algorithm::RS256,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
    ] {
        let t = sign(alg, "rsa", &rsa_key(), claims());
        assert!(verify(&t, &p, &set, NOW).is_ok(), "{alg:?}");
    }
}

#[test]
fn eddsa_token_verifies() {
    let (key, jwk) = fresh(&rcgen::PKCS_ED25519, "ed");
    let t = sign(Algorithm::EdDSA, "ed", &key, claims());
    assert!(verify(&t, &provider("", &[]), &jwks(vec![jwk]), NOW).is_ok());
}

#[test]
fn a_tampered_payload_fails_the_signature() {
    let t = sign(Algorithm::RS256, "rsa", &rsa_key(), claims());
    let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
    let mut c = claims();
    c["sub"] = json!("mallory");
    parts[1] = URL_SAFE_NO_PAD.encode(c.to_string());
    let forged = parts.join(".");
    let r = verify(
        &forged,
        &provider("", &[]),
        &jwks(vec![rsa_jwk("rsa")]),
        NOW,
    );
    assert_eq!(r, Err(JwtError::BadSignature));
}

#[test]
fn a_key_of_another_kind_is_never_tried_and_an_unknown_kid_matches_nothing() {
    let (_, ec) = fresh(&rcgen::PKCS_ECDSA_P256_SHA256, "ec");
    let t = sign(Algorithm::RS256, "rsa", &rsa_key(), claims());
    assert_eq!(
        verify(&t, &provider("", &[]), &jwks(vec![ec]), NOW),
        Err(JwtError::NoMatchingKey)
    );
    let other = jwks(vec![rsa_jwk("other")]);
    assert_eq!(
        verify(&t, &provider("", &[]), &other, NOW),
        Err(JwtError::NoMatchingKey)
    );
    // A key without a kid is tried for any token (Envoy's jwt_verify_lib).
    let mut nokid = rsa_jwk("x");
    nokid.as_object_mut().map(|m| m.remove("kid"));
    assert!(verify(&t, &provider("", &[]), &jwks(vec![nokid]), NOW).is_ok());
}

#[test]
fn exp_and_nbf_allow_sixty_seconds_of_clock_skew() {
    let set = jwks(vec![rsa_jwk("rsa")]);
    let p = provider("", &[]);
    let at = |exp: u64, nbf: u64| {
        let mut c = claims();
        c["exp"] = json!(exp);
        c["nbf"] = json!(nbf);
        verify(&sign(Algorithm::RS256, "rsa", &rsa_key(), c), &p, &set, NOW)
    };
    assert!(at(NOW - 60, NOW).is_ok());
    assert_eq!(at(NOW - 61, NOW), Err(JwtError::Expired));
    assert!(at(NOW + 10, NOW + 60).is_ok());
    assert_eq!(at(NOW + 100, NOW + 61), Err(JwtError::NotYetValid));
    let mut c = claims();
    c["exp"] = json!("tomorrow");
    let t = sign(Algorithm::RS256, "rsa", &rsa_key(), c);
    assert_eq!(
        verify(&t, &p, &set, NOW),
        Err(JwtError::BadTimeClaim("exp"))
    );
}

#[test]
fn issuer_and_audiences_must_match_audiences_ignoring_scheme_and_trailing_slash() {
    let set = jwks(vec![rsa_jwk("rsa")]);
    let t = sign(Algorithm::RS256, "rsa", &rsa_key(), claims());
    assert_eq!(
        verify(&t, &provider("other", &[]), &set, NOW),
        Err(JwtError::UnknownIssuer)
    );
    let r = verify(&t, &provider("https://issuer.example", &["web"]), &set, NOW);
    assert_eq!(r, Err(JwtError::AudienceNotAllowed));
    assert!(verify(
        &t,
        &provider("https://issuer.example", &["https://api/"]),
        &set,
        NOW
    )
    .is_ok());
}

#[test]
fn alg_none_and_garbage_are_refused() {
    let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims().to_string());
    let set = jwks(vec![rsa_jwk("rsa")]);
    let none = verify(&format!("{h}.{p}."), &provider("", &[]), &set, NOW);
    assert!(
        matches!(none, Err(JwtError::UnsupportedAlgorithm(_))),
        "{none:?}"
    );
    assert!(matches!(
        verify("a.b", &provider("", &[]), &set, NOW),
        Err(JwtError::Malformed(_))
    ));
    assert!(matches!(
        verify("!.!.!", &provider("", &[]), &set, NOW),
        Err(JwtError::Malformed(_))
    ));
}

#[test]
fn jwks_notes_private_and_unusable_keys_and_refuses_unknown_types() {
    let set = jwks(vec![
        json!({"kty": "RSA", "n": RSA_N, "e": "AQAB", "d": "AQAB"}),
        json!({"kty": "EC", "crv": "P-521", "x": "AQAB", "y": "AQAB"}),
    ]);
    let notes: Vec<(usize, &KeyNote)> = set.notes().collect();
    assert_eq!(notes[0], (0, &KeyNote::Private));
    assert!(matches!(notes[1], (1, KeyNote::Unsupported(_))));
    assert!(set.keys[0].usable() && !set.keys[1].usable());
    assert!(parse_jwks(r#"{"keys":[{"kty":"XYZ"}]}"#).is_err());
    assert!(parse_jwks(r#"{"keys":[{"kty":"RSA","e":"AQAB"}]}"#).is_err());
    assert!(parse_jwks("foo").is_err());
    // A single key is a set of one.
    assert_eq!(
        parse_jwks(&rsa_jwk("a").to_string())
            .expect("one key")
            .keys
            .len(),
        1
    );
}

#[test]
fn nested_claims_are_found_by_dotted_names_and_space_delimited_claims_split() {
    let c = Claims(claims().as_object().cloned().unwrap_or_default());
    assert_eq!(c.get("realm.roles"), Some(&json!(["admin"])));
    assert_eq!(c.values_at(&["realm", "roles"], &[]), ["admin"]);
    assert_eq!(
        c.values_at(&["scope"], &["scope".into()]),
        ["read", "write"]
    );
    assert_eq!(c.values_at(&["scope"], &[]), ["read write"]);
    let mut m = Map::new();
    m.insert("https://example.com/groups".into(), json!("g"));
    assert_eq!(
        Claims(m).get("https://example.com/groups"),
        Some(&json!("g"))
    );
}

fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            http::HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

#[test]
fn no_token_passes_anonymously_and_an_invalid_one_is_refused() {
    let mut p = provider("https://issuer.example", &[]);
    p.keys = JwksSource::Inline(Arc::new(jwks(vec![rsa_jwk("rsa")])));
    let ps = vec![Arc::new(p)];
    let keys = |p: &JwtProvider| match &p.keys {
        JwksSource::Inline(k) => Some(k.clone()),
        _ => None,
    };
    let h = headers(&[]);
    let src = TokenSources {
        headers: &h,
        query: None,
    };
    assert!(matches!(
        authenticate(&ps, &keys, src, NOW),
        AuthnOutcome::Anonymous
    ));
    let h = headers(&[("authorization", "Bearer not.a.jwt")]);
    let src = TokenSources {
        headers: &h,
        query: None,
    };
    assert!(matches!(
        authenticate(&ps, &keys, src, NOW),
        AuthnOutcome::Refused(_)
    ));
    let t = sign(Algorithm::RS256, "rsa", &rsa_key(), claims());
    let q = format!("a=1&access_token={t}");
    let h = headers(&[]);
    let src = TokenSources {
        headers: &h,
        query: Some(&q),
    };
    assert!(matches!(
        authenticate(&ps, &keys, src, NOW),
        AuthnOutcome::Authenticated(_)
    ));
}

#[test]
fn custom_header_with_prefix_strips_the_token_and_copies_claims() {
    let mut p = provider("https://issuer.example", &[]);
    p.keys = JwksSource::Inline(Arc::new(jwks(vec![rsa_jwk("rsa")])));
    p.locations = vec![TokenLocation::Header {
        name: "x-jwt".into(),
        prefix: "Token ".into(),
    }];
    p.output_claim_to_headers = vec![
        ("x-sub".into(), "sub".into()),
        ("x-role".into(), "realm.roles".into()),
    ];
    p.output_payload_to_header = Some("x-payload".into());
    let ps = vec![Arc::new(p)];
    let keys = |p: &JwtProvider| match &p.keys {
        JwksSource::Inline(k) => Some(k.clone()),
        _ => None,
    };
    let t = sign(Algorithm::RS256, "rsa", &rsa_key(), claims());
    // The default location is not read when the rule names its own.
    let h = headers(&[("authorization", &format!("Bearer {t}"))]);
    let src = TokenSources {
        headers: &h,
        query: None,
    };
    assert!(matches!(
        authenticate(&ps, &keys, src, NOW),
        AuthnOutcome::Anonymous
    ));
    let h = headers(&[("x-jwt", &format!("token {t}"))]);
    let src = TokenSources {
        headers: &h,
        query: None,
    };
    let AuthnOutcome::Authenticated(id) = authenticate(&ps, &keys, src, NOW) else {
        panic!("not authenticated");
    };
    assert_eq!(id.header_to_remove.as_deref(), Some("x-jwt"));
    assert_eq!(
        id.headers_to_add[0],
        (
            "x-payload".to_string(),
            payload_part(&t).unwrap_or_default().to_string()
        )
    );
    assert_eq!(
        id.headers_to_add[1],
        ("x-sub".to_string(), "alice".to_string())
    );
    // A list claim is not copied into a header, as Envoy.
    assert_eq!(id.headers_to_add.len(), 2);
}

#[test]
fn a_token_of_another_issuer_is_refused_and_required_presence_refuses_no_token() {
    let mut p = provider("https://other.example", &[]);
    p.keys = JwksSource::Inline(Arc::new(jwks(vec![rsa_jwk("rsa")])));
    p.required = true;
    let ps = vec![Arc::new(p)];
    let keys = |p: &JwtProvider| match &p.keys {
        JwksSource::Inline(k) => Some(k.clone()),
        _ => None,
    };
    let t = sign(Algorithm::RS256, "rsa", &rsa_key(), claims());
    let h = headers(&[("authorization", &format!("Bearer {t}"))]);
    let src = TokenSources {
        headers: &h,
        query: None,
    };
    assert!(matches!(
        authenticate(&ps, &keys, src, NOW),
        AuthnOutcome::Refused(JwtError::UnknownIssuer)
    ));
    let h = headers(&[]);
    let src = TokenSources {
        headers: &h,
        query: None,
    };
    assert!(matches!(
        authenticate(&ps, &keys, src, NOW),
        AuthnOutcome::Refused(JwtError::Missing)
    ));
}
