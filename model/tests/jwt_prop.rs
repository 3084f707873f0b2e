//! Property test: JWT and key-set parsing never panic on arbitrary input, and a token that is not
//! three base64url parts of JSON is refused as malformed before any key is tried.

use model::ir::jwt::{
    parse_jwks, verify, JwksSource, JwtError, JwtProvider, TokenLocation, CLOCK_SKEW,
};
use proptest::prelude::*;
use std::sync::Arc;

fn provider() -> JwtProvider {
    JwtProvider {
        id: "ra/default/a/jwtRules/0".into(),
        issuer: String::new(),
        audiences: vec!["api".into()],
        keys: JwksSource::Inline(Arc::default()),
        locations: TokenLocation::defaults(),
        forward_original_token: false,
        output_payload_to_header: None,
        output_claim_to_headers: Vec::new(),
        clock_skew: CLOCK_SKEW,
        space_delimited_claims: Vec::new(),
        required: false,
    }
}

const RSA: &str = r#"{"keys":[{"kty":"RSA","e":"AQAB","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn verification_never_panics_and_refuses_garbage(token in "[A-Za-z0-9._\\-=+/ ]{0,80}") {
        let keys = parse_jwks(RSA).expect("the RSA test set parses");
        prop_assert!(verify(&token, &provider(), &keys, 1_800_000_000).is_err());
    }

    #[test]
    fn a_token_without_three_parts_is_malformed(token in "[A-Za-z0-9_\\-]{0,40}(\\.[A-Za-z0-9_\\-]{0,40})?") {
        let keys = parse_jwks(RSA).expect("parses");
        let r = verify(&token, &provider(), &keys, 0);
        prop_assert!(matches!(r, Err(JwtError::Malformed(_))), "{:?}", r);
    }

    #[test]
    fn key_set_parsing_never_panics(text in ".{0,200}", kty in "(RSA|EC|OKP|oct|x)", x in "[A-Za-z0-9_\\-=]{0,12}") {
        let _ = parse_jwks(&text);
        let doc = format!(r#"{{"keys":[{{"kty":"{kty}","crv":"P-256","n":"{x}","e":"{x}","x":"{x}","y":"{x}","k":"{x}","crv":"Ed25519"}}]}}"#);
        let _ = parse_jwks(&doc);
    }
}
