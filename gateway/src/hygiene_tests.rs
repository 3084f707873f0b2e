//! Unit and property tests of the HTTP/1 hygiene rules: the cases the smuggling corpus is made of,
//! no panic on arbitrary bytes, and the same verdict as a small reference model on generated heads.

use super::*;
use proptest::prelude::*;

fn head(h: &str) -> String {
    format!("POST / HTTP/1.1\r\n{h}\r\n")
}

fn verdict(h: &str) -> Result<Framing, u16> {
    check_head(head(h).as_bytes(), false)
        .map(|h| h.framing)
        .map_err(|r| r.status)
}

#[test]
fn framing_rules() {
    assert_eq!(verdict("Host: a\r\n"), Ok(Framing::None));
    assert_eq!(
        verdict("Host: a\r\nContent-Length: 10\r\n"),
        Ok(Framing::Length(10))
    );
    assert_eq!(
        verdict("Host: a\r\nTransfer-Encoding: Chunked\r\n"),
        Ok(Framing::Chunked)
    );
    for bad in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5, 5\r\n",
        "Content-Length: +10\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: 1 0\r\n",
        "Content-Length: 0x10\r\n",
        "Content-Length:\r\n",
        "Content-Length: 99999999999999999999999\r\n",
        "Transfer-Encoding: xchunked\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding : chunked\r\n",
        "Transfer-Encoding\t: chunked\r\n",
        "X-A: 1\r\n chunked\r\n",
        "X-A: 1\r\n\tchunked\r\n",
        "X-A: a\0b\r\n",
        "X-A: a\x01b\r\n",
        "X-A: a\x7fb\r\n",
        "X\0A: 1\r\n",
        ": 1\r\n",
        "no colon\r\n",
        "Host: a\r\nHost: b\r\n",
    ] {
        assert_eq!(verdict(bad), Err(400), "{bad:?}");
    }
    // Surrounding whitespace is optional whitespace, not part of the value.
    assert_eq!(
        verdict("Transfer-Encoding:  chunked \r\n"),
        Ok(Framing::Chunked)
    );
    assert_eq!(
        check_head(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            true
        ),
        Err(bad("Transfer-Encoding in HTTP/1.0"))
    );
}

#[test]
fn line_endings_must_be_crlf() {
    assert!(check_head(b"GET / HTTP/1.1\nHost: a\r\n\r\n", false).is_err());
    assert!(check_head(b"GET / HTTP/1.1\r\nHost: a\n\r\n", false).is_err());
    assert!(check_head(b"GET / HTTP/1.1\r\nHost: a\rX-B: 1\r\n\r\n", false).is_err());
    assert!(check_head(b"GET / HTTP/1.1\r\nHost: a\r\n", false).is_err());
    assert!(check_head(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", false).is_ok());
}

#[test]
fn limits_answer_431() {
    let many: String = (0..=MAX_HEADER_COUNT)
        .map(|i| format!("X-{i}: 1\r\n"))
        .collect();
    assert_eq!(verdict(&many), Err(431));
    let big = format!("X-Big: {}\r\n", "a".repeat(MAX_HEADER_BYTES));
    assert_eq!(verdict(&big), Err(431));
    // The framing of an oversized head is still known, so its body can be drained.
    assert_eq!(
        framing_of(head(&many).as_bytes(), false).map(|h| h.framing),
        Ok(Framing::None)
    );
}

#[test]
fn content_length_is_made_canonical() {
    let raw = head("Content-Length: 0010\r\n");
    let h = check_head(raw.as_bytes(), false).expect("accepted");
    assert_eq!(h.framing, Framing::Length(10));
    assert_eq!(h.non_canonical_length, Some(&b"0010"[..]));
    for canonical in ["0", "10", "18446744073709551615"] {
        let raw = head(&format!("Content-Length: {canonical}\r\n"));
        let h = check_head(raw.as_bytes(), false).expect("accepted");
        assert_eq!(h.non_canonical_length, None, "{canonical}");
    }
    assert_eq!(content_length(b"000"), Ok(0));
    assert!(content_length(b"18446744073709551616").is_err());
}

#[test]
fn absolute_form_targets() {
    assert_eq!(
        absolute_form(b"http://a.example:8080/p?q=1"),
        Some((&b"a.example:8080"[..], b"/p?q=1".to_vec()))
    );
    assert_eq!(
        absolute_form(b"HTTPS://a.example"),
        Some((&b"a.example"[..], b"/".to_vec()))
    );
    assert_eq!(
        absolute_form(b"http://a?x#frag"),
        Some((&b"a"[..], b"/?x".to_vec()))
    );
    assert_eq!(absolute_form(b"/p"), None);
    assert_eq!(absolute_form(b"*"), None);
    assert_eq!(absolute_form(b"a.example:443"), None);
}

// The reference model: a request head as the generator builds it, and the verdict written from
// the rules' statement rather than from the parser.

#[derive(Debug, Clone)]
struct Model {
    http10: bool,
    headers: Vec<(String, String)>,
    /// A line ending other than CRLF after this header (bare LF).
    bare_lf_after: Option<usize>,
}

impl Model {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(if self.http10 {
            b"POST / HTTP/1.0\r\n"
        } else {
            b"POST / HTTP/1.1\r\n"
        });
        for (i, (n, v)) in self.headers.iter().enumerate() {
            out.extend_from_slice(format!("{n}: {v}").as_bytes());
            out.extend_from_slice(if self.bare_lf_after == Some(i) {
                b"\n"
            } else {
                b"\r\n"
            });
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    fn verdict(&self) -> Result<Framing, u16> {
        if self.bare_lf_after.is_some_and(|i| i < self.headers.len()) {
            return Err(400);
        }
        let named = |name: &str| -> Vec<String> {
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim_matches([' ', '\t']).to_string())
                .collect()
        };
        let ctl = |s: &str| s.chars().any(|c| c.is_ascii_control() && c != '\t');
        if self.headers.iter().any(|(_, v)| ctl(v)) {
            return Err(400);
        }
        let (cl, te, host) = (
            named("content-length"),
            named("transfer-encoding"),
            named("host"),
        );
        if cl.len() > 1 || te.len() > 1 || host.len() > 1 {
            return Err(400);
        }
        if let Some(t) = te.first() {
            if !t.eq_ignore_ascii_case("chunked") || !cl.is_empty() || self.http10 {
                return Err(400);
            }
            return Ok(Framing::Chunked);
        }
        match cl.first() {
            None => Ok(Framing::None),
            Some(v) if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) => {
                let digits = v.trim_start_matches('0');
                if digits.is_empty() {
                    return Ok(Framing::Length(0));
                }
                digits.parse::<u64>().map(Framing::Length).map_err(|_| 400)
            }
            Some(_) => Err(400),
        }
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Content-Length".to_string()),
        Just("content-length".to_string()),
        Just("Transfer-Encoding".to_string()),
        Just("TRANSFER-ENCODING".to_string()),
        Just("Host".to_string()),
        Just("X-Other".to_string()),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,22}",
        Just("chunked".to_string()),
        Just("Chunked".to_string()),
        Just(" chunked".to_string()),
        Just("chunked, identity".to_string()),
        Just("xchunked".to_string()),
        "[+-]?[0-9]{1,3}",
        "[0-9a-z ,\t\x01\x7f]{0,6}",
    ]
}

fn model() -> impl Strategy<Value = Model> {
    (
        any::<bool>(),
        prop::collection::vec((name(), value()), 0..6),
        prop::option::weighted(0.1, 0usize..6),
    )
        .prop_map(|(http10, headers, bare_lf_after)| Model {
            http10,
            headers,
            bare_lf_after,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn same_verdict_as_the_model(m in model()) {
        let bytes = m.bytes();
        let got = check_head(&bytes, m.http10).map(|h| h.framing).map_err(|r| r.status);
        prop_assert_eq!(got, m.verdict(), "{:?}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn no_panic_on_arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..300), http10 in any::<bool>()) {
        if let Ok(h) = check_head(&raw, http10) {
            // Whatever is accepted ends with the blank line and has only CRLF line endings.
            prop_assert!(raw.ends_with(b"\r\n\r\n") || raw == b"\r\n");
            if let Some(v) = h.non_canonical_length {
                prop_assert!(v.len() > 1 && v[0] == b'0');
            }
        }
        let _ = absolute_form(&raw);
        let _ = content_length(&raw);
    }

    #[test]
    fn content_length_is_the_decimal_number(n in any::<u64>(), zeros in 0usize..4) {
        let v = format!("{}{n}", "0".repeat(zeros));
        prop_assert_eq!(content_length(v.as_bytes()), Ok(n));
    }

    #[test]
    fn absolute_form_keeps_the_target(
        authority in "[a-z0-9.:-]{0,20}",
        path in "(/[a-zA-Z0-9%._~-]{0,8}){0,3}(\\?[a-z=&]{0,8})?",
    ) {
        let target = format!("http://{authority}{path}");
        let (a, origin) = absolute_form(target.as_bytes()).expect("absolute-form");
        prop_assert_eq!(a, authority.as_bytes());
        prop_assert!(origin.starts_with(b"/"));
        let expect = if path.starts_with('/') { path.clone() } else { format!("/{path}") };
        prop_assert_eq!(origin, expect.into_bytes());
    }
}
