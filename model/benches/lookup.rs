//! Request-time lookup must not grow with the number of VirtualServices (hash lookups per host
//! label, then the routes of one virtual host), and translation of a large set must stay well
//! under a second. Run: `cargo bench -p model --bench lookup -- --warm-up-time 1 --measurement-time 2`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use model::ir::RequestView;
use model::resource::{resource_from_value, ResourceSet};
use model::translate::translate;
use serde_json::json;
use std::hint::black_box;

/// One Gateway (`*` on port 80) and `n` VirtualServices of one host and three rules each.
fn resource_set(n: usize) -> ResourceSet {
    let mut docs = vec![json!({
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}
    })];
    for i in 0..n {
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": format!("svc-{i}"), "namespace": "default"},
            "spec": {
                "hosts": [format!("svc-{i}.example.com")],
                "gateways": ["gw"],
                "http": [
                    {"match": [{"uri": {"prefix": "/api"}, "headers": {"x-version": {"exact": "v2"}}}],
                     "route": [{"destination": {"host": format!("api-v2-{i}")}}]},
                    {"match": [{"uri": {"prefix": "/api"}}],
                     "route": [{"destination": {"host": format!("api-{i}")}}], "timeout": "5s"},
                    {"route": [{"destination": {"host": format!("web-{i}")}}]}
                ]
            }
        }));
    }
    let mut set = ResourceSet::new();
    for d in docs {
        if let Ok(r) = resource_from_value(d, None) {
            set.insert(r);
        }
    }
    set
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    let headers = http::HeaderMap::new();
    for n in [10usize, 1_000, 10_000] {
        let snapshot = translate(&resource_set(n)).snapshot;
        let authority = format!("svc-{}.example.com:80", n / 2);
        let req = RequestView {
            method: "GET",
            scheme: "http",
            authority: &authority,
            path: "/api/items/42",
            query: Some("page=2"),
            port: 80,
            headers: &headers,
            claims: None,
        };
        // The bench is meaningless if it measures a miss.
        let hit = snapshot
            .lookup(&req)
            .and_then(|(_, r)| r.map(|w| w.route.id.clone()));
        assert_eq!(hit, Some(format!("vs/default/svc-{}/http/1", n / 2)));
        group.bench_with_input(BenchmarkId::from_parameter(n), &req, |b, req| {
            b.iter(|| {
                black_box(
                    snapshot
                        .lookup(black_box(req))
                        .map(|(vh, r)| (vh.routes.len(), r.is_some())),
                )
            })
        });
    }
    group.finish();
}

/// Translation of the whole set (what every apply pays), at two sizes to show it scales
/// linearly. Dropping the result is left out of the measure (`iter_with_large_drop`).
fn translation(c: &mut Criterion) {
    let mut group = c.benchmark_group("translate");
    group.sample_size(10);
    for n in [1_000usize, 10_000] {
        let set = resource_set(n);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_with_large_drop(|| translate(black_box(&set)))
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, translation);
criterion_main!(benches);
