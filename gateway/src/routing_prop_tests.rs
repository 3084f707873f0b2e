//! Property tests of the header operations: on arbitrary requests and responses and arbitrary
//! `set`/`add`/`remove` lists, applying them never fails or panics and leaves exactly what Istio's
//! order (remove, then set, then add) says.

use super::{apply_request_ops, apply_response_ops};
use http::{HeaderName, HeaderValue};
use model::ir::HeaderOps;
use pingora::http::{RequestHeader, ResponseHeader};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = HeaderName> {
    prop_oneof![
        prop::sample::select(vec!["x-a", "x-b", "host", "content-type", "x-c"])
            .prop_map(String::from),
        "[a-z][a-z0-9-]{0,8}",
    ]
    .prop_map(|n| HeaderName::from_bytes(n.as_bytes()).expect("token"))
}

fn value() -> impl Strategy<Value = HeaderValue> {
    "[ -~\t]{0,12}".prop_map(|v| HeaderValue::from_str(v.trim()).expect("visible ASCII"))
}

fn pairs() -> impl Strategy<Value = Vec<(HeaderName, HeaderValue)>> {
    prop::collection::vec((name(), value()), 0..5)
}

fn ops() -> impl Strategy<Value = HeaderOps> {
    (pairs(), pairs(), prop::collection::vec(name(), 0..4))
        .prop_map(|(set, add, remove)| HeaderOps { set, add, remove })
}

/// What a header named `n` holds after `ops` on `before`, per the documented order.
fn expected(
    n: &HeaderName,
    before: &[(HeaderName, HeaderValue)],
    ops: &HeaderOps,
) -> Vec<HeaderValue> {
    let mut v: Vec<HeaderValue> = if ops.remove.contains(n) {
        Vec::new()
    } else {
        before
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .collect()
    };
    if let Some((_, last)) = ops.set.iter().rev().find(|(k, _)| k == n) {
        v = vec![last.clone()];
    }
    v.extend(
        ops.add
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, x)| x.clone()),
    );
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn request_ops_follow_the_order(before in pairs(), ops in ops()) {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        for (n, v) in &before {
            req.append_header(n.clone(), v.clone()).expect("append");
        }
        apply_request_ops(&mut req, &ops).expect("ops apply");
        let names = before.iter().map(|(n, _)| n).chain(ops.set.iter().map(|(n, _)| n)).chain(ops.add.iter().map(|(n, _)| n)).chain(&ops.remove);
        for n in names {
            let got: Vec<HeaderValue> = req.headers.get_all(n).iter().cloned().collect();
            prop_assert_eq!(got, expected(n, &before, &ops), "{}", n);
        }
    }

    #[test]
    fn response_ops_follow_the_order(before in pairs(), ops in ops()) {
        let mut resp = ResponseHeader::build(200, None).expect("response");
        for (n, v) in &before {
            resp.append_header(n.clone(), v.clone()).expect("append");
        }
        apply_response_ops(&mut resp, &ops).expect("ops apply");
        for (n, _) in ops.set.iter().chain(&ops.add) {
            let got: Vec<HeaderValue> = resp.headers.get_all(n).iter().cloned().collect();
            prop_assert_eq!(got, expected(n, &before, &ops), "{}", n);
        }
    }
}
