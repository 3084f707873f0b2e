//! Fields the gateway accepts but whose behaviour the data plane does not implement yet: one table,
//! [`NOT_ENFORCED`], and [`unenforced_warnings`], which names every such field a resource sets.
//!
//! Remove a row when the feature lands (and regenerate the golden files with `UPDATE_GOLDEN=1`).
//!
//! Patterns are paths in the resource's JSON, segments separated by `.`:
//! - `name`: a field;
//! - `name[*]`: every element of a list;
//! - `name[?sub.path=A|B]`: the elements of a list whose `sub.path` is a string equal to `A` or `B`
//!   (case-insensitively);
//! - as the last segment, a test of a string field: `name=A|B` (equal to one of the values,
//!   case-insensitively), `name^=P` (starts with `P`), `name~=A|B` (a comma-separated list holding
//!   `A` or `B`; the warning names each such item: `name[A]`).
//!
//! A pattern applies to every kind that has the path; today's paths are unambiguous across kinds.

use crate::resource::Resource;
use serde_json::Value;
use std::sync::LazyLock;

/// `(field path pattern, what happens instead)`. The note documents the row; it is not part of the
/// warning text.
pub const NOT_ENFORCED: &[(&str, &str)] = &[
    // VirtualService
    ("spec.http[*].delegate", "the delegate's rules are not used"),
    ("spec.http[*].retries.retryRemoteLocalities", "there are no localities"),
    ("spec.http[*].name", "routes are named vs/<ns>/<name>/http/<i> in metrics and logs"),
    ("spec.http[*].match[*].name", "not used in metrics or logs"),
    ("spec.http[*].match[*].statPrefix", "no per-route statistics"),
    ("spec.http[*].retries.retryOn~=retriable-headers|envoy-ratelimited|http3-post-connect-failure", "never retried on: no retriable headers are configured, no upstream Envoy rate limits, no HTTP/3"),
    ("spec.tcp[*].match[*].sourceNamespace", "a standalone gateway has no source namespace: the match ignores it"),
    ("spec.tls[*].match[*].sourceNamespace", "a standalone gateway has no source namespace: the match ignores it"),
    // VirtualService, DestinationRule, ServiceEntry
    ("spec.exportTo", "visible to every namespace"),
    // DestinationRule: host level, port level and subset level
    ("spec.trafficPolicy.tls.caCrl", "no revocation check"),
    ("spec.trafficPolicy.loadBalancer.localityLbSetting", "no locality-aware balancing"),
    ("spec.trafficPolicy.loadBalancer.warmup", "no slow start"),
    ("spec.trafficPolicy.loadBalancer.zoneAwareLbSetting", "no locality-aware balancing"),
    ("spec.trafficPolicy.loadBalancer.backendUtilization", "no utilization-based balancing"),
    ("spec.trafficPolicy.loadBalancer.warmupDurationSecs", "no slow start"),
    ("spec.trafficPolicy.connectionPool.http.maxRequestsPerConnection", "connections are reused without limit"),
    ("spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout", "an unanswered PING closes the connection after Pingora's fixed 5 s"),
    ("spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration", "connections live until idle"),
    ("spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures", "local-origin failures count as gateway errors"),
    ("spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes", "5xx responses count"),
    ("spec.trafficPolicy.loadBalancer.simple=PASSTHROUGH", "there is no original destination at a gateway: endpoints are picked at random"),
    ("spec.trafficPolicy.outlierDetection.interval", "an ejected endpoint returns after baseEjectionTime × its ejections, not at the next interval"),
    ("spec.trafficPolicy.tunnel", "no tunnelling"),
    ("spec.trafficPolicy.proxyProtocol", "no PROXY protocol header"),
    ("spec.trafficPolicy.retryBudget", "no retry budget"),
    ("spec.trafficPolicy.portLevelSettings[*].tls.caCrl", "no revocation check"),
    ("spec.trafficPolicy.portLevelSettings[*].loadBalancer.localityLbSetting", "no locality-aware balancing"),
    ("spec.trafficPolicy.portLevelSettings[*].loadBalancer.warmup", "no slow start"),
    ("spec.trafficPolicy.portLevelSettings[*].loadBalancer.zoneAwareLbSetting", "no locality-aware balancing"),
    ("spec.trafficPolicy.portLevelSettings[*].loadBalancer.backendUtilization", "no utilization-based balancing"),
    ("spec.trafficPolicy.portLevelSettings[*].loadBalancer.warmupDurationSecs", "no slow start"),
    ("spec.trafficPolicy.portLevelSettings[*].connectionPool.http.maxRequestsPerConnection", "connections are reused without limit"),
    ("spec.trafficPolicy.portLevelSettings[*].connectionPool.http.http2KeepAlive.timeout", "an unanswered PING closes the connection after Pingora's fixed 5 s"),
    ("spec.trafficPolicy.portLevelSettings[*].connectionPool.tcp.maxConnectionDuration", "connections live until idle"),
    ("spec.trafficPolicy.portLevelSettings[*].outlierDetection.consecutiveLocalOriginFailures", "local-origin failures count as gateway errors"),
    ("spec.trafficPolicy.portLevelSettings[*].loadBalancer.simple=PASSTHROUGH", "there is no original destination at a gateway: endpoints are picked at random"),
    ("spec.trafficPolicy.portLevelSettings[*].outlierDetection.interval", "an ejected endpoint returns after baseEjectionTime × its ejections, not at the next interval"),
    ("spec.trafficPolicy.portLevelSettings[*].outlierDetection.outlierDetectionHttpErrorCodes", "5xx responses count"),
    ("spec.subsets[*].trafficPolicy.tls.caCrl", "no revocation check"),
    ("spec.subsets[*].trafficPolicy.loadBalancer.localityLbSetting", "no locality-aware balancing"),
    ("spec.subsets[*].trafficPolicy.loadBalancer.warmup", "no slow start"),
    ("spec.subsets[*].trafficPolicy.loadBalancer.zoneAwareLbSetting", "no locality-aware balancing"),
    ("spec.subsets[*].trafficPolicy.loadBalancer.backendUtilization", "no utilization-based balancing"),
    ("spec.subsets[*].trafficPolicy.loadBalancer.warmupDurationSecs", "no slow start"),
    ("spec.subsets[*].trafficPolicy.connectionPool.http.maxRequestsPerConnection", "connections are reused without limit"),
    ("spec.subsets[*].trafficPolicy.connectionPool.http.http2KeepAlive.timeout", "an unanswered PING closes the connection after Pingora's fixed 5 s"),
    ("spec.subsets[*].trafficPolicy.connectionPool.tcp.maxConnectionDuration", "connections live until idle"),
    ("spec.subsets[*].trafficPolicy.outlierDetection.consecutiveLocalOriginFailures", "local-origin failures count as gateway errors"),
    ("spec.subsets[*].trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes", "5xx responses count"),
    ("spec.subsets[*].trafficPolicy.loadBalancer.simple=PASSTHROUGH", "there is no original destination at a gateway: endpoints are picked at random"),
    ("spec.subsets[*].trafficPolicy.outlierDetection.interval", "an ejected endpoint returns after baseEjectionTime × its ejections, not at the next interval"),
    ("spec.subsets[*].trafficPolicy.tunnel", "no tunnelling"),
    ("spec.subsets[*].trafficPolicy.proxyProtocol", "no PROXY protocol header"),
    ("spec.subsets[*].trafficPolicy.retryBudget", "no retry budget"),
    ("spec.subsets[*].trafficPolicy.portLevelSettings[*].tls.caCrl", "no revocation check"),
    ("spec.subsets[*].trafficPolicy.portLevelSettings[*].loadBalancer.localityLbSetting", "no locality-aware balancing"),
    ("spec.subsets[*].trafficPolicy.portLevelSettings[*].loadBalancer.warmup", "no slow start"),
    ("spec.subsets[*].trafficPolicy.portLevelSettings[*].loadBalancer.zoneAwareLbSetting", "no locality-aware balancing"),
    ("spec.subsets[*].trafficPolicy.portLevelSettings[*].loadBalancer.backendUtilization", "no utilization-based balancing"),
    ("spec.subsets[*].trafficPolicy.portLevelSettings[*].loadBalancer.warmupDurationSecs", "no slow start"),
    ("spec.subsets[*].trafficPolicy.portLevelSettings[*].connectionPool.http.maxRequestsPerConnection", "connections are reused without limit"),
    ("spec.subsets[*].trafficPolicy.portLevelSettings[*].connectionPool.http.http2KeepAlive.timeout", "an unanswered PING closes the connection after Pingora's fixed 5 s"),
    ("spec.subsets[*].trafficPolicy.portLevelSettings[*].connectionPool.tcp.maxConnectionDuration", "connections live until idle"),
    ("spec.subsets[*].trafficPolicy.portLevelSettings[*].outlierDetection.consecutiveLocalOriginFailures", "local-origin failures count as gateway errors"),
    ("spec.subsets[*].trafficPolicy.portLevelSettings[*].loadBalancer.simple=PASSTHROUGH", "there is no original destination at a gateway: endpoints are picked at random"),
    ("spec.subsets[*].trafficPolicy.portLevelSettings[*].outlierDetection.interval", "an ejected endpoint returns after baseEjectionTime × its ejections, not at the next interval"),
    ("spec.subsets[*].trafficPolicy.portLevelSettings[*].outlierDetection.outlierDetectionHttpErrorCodes", "5xx responses count"),
    // ServiceEntry
    ("spec.addresses", "not used for routing"),
    ("spec.subjectAltNames", "upstream certificates are not verified against them"),
    ("spec.resolution=DNS_ROUND_ROBIN", "every resolved address is used, as with DNS"),
    ("spec.endpoints[*].address^=unix://", "unix domain socket endpoints are not connected to"),
    // WorkloadEntry
    ("spec.address^=unix://", "unix domain socket endpoints are not connected to"),
    // Gateway
    ("spec.servers[?port.protocol=TLS].tls.mode=ISTIO_MUTUAL", "it needs mesh certificates: the server is not served"),
    ("spec.servers[?port.protocol=HTTPS|TLS].tls.caCrl", "no revocation check"),
    ("spec.servers[?port.protocol=HTTPS|TLS].tls.verifyCertificateSpki", "client certificates are not pinned"),
    ("spec.servers[?port.protocol=HTTPS|TLS].tls.verifyCertificateHash", "client certificates are not pinned"),
    ("spec.servers[?port.protocol=HTTPS|TLS].tls.caCertCredentialName", "the CA comes from the Secret <credentialName>-cacert, the credential's own CA, or caCertificates"),
    ("spec.servers[?port.protocol=HTTPS|TLS].tls.insecureSkipVerify", "client certificates are verified"),
    ("spec.servers[?port.protocol=HTTPS|TLS].tls.ecdhCurves", "rustls offers its own key exchange groups"),
    ("spec.servers[*].bind", "the listener flags decide the address"),
    ("spec.servers[*].defaultEndpoint", "traffic goes where VirtualServices route it"),
    ("spec.servers[*].name", "not used in metrics"),
];

/// [`NOT_ENFORCED`] split into steps once: every validated resource walks all of them, and
/// splitting them again each time was most of what validating a small resource allocated.
static PATTERNS: LazyLock<Vec<Vec<Step<'static>>>> =
    LazyLock::new(|| NOT_ENFORCED.iter().map(|(p, _)| steps(p)).collect());

/// One step of a pattern.
enum Step<'a> {
    Field(&'a str),
    Every(&'a str),
    Where {
        field: &'a str,
        sub_path: &'a str,
        values: &'a str,
    },
    /// A string field tested against `values` (`A|B`).
    Test {
        field: &'a str,
        op: Op,
        values: &'a str,
    },
}

/// How a [`Step::Test`] compares.
#[derive(Clone, Copy)]
enum Op {
    /// `=`: equal to one of the values.
    Equals,
    /// `^=`: starts with one of the values.
    Prefix,
    /// `~=`: a comma-separated list with an item equal to one of the values.
    Item,
}

/// Splits a pattern on the dots that are outside brackets.
fn steps(pattern: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut segments: Vec<&str> = Vec::new();
    for (i, c) in pattern.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                segments.push(pattern.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
    }
    segments.push(pattern.get(start..).unwrap_or_default());
    for seg in segments {
        let step = match seg.split_once('[') {
            None => test(seg).unwrap_or(Step::Field(seg)),
            Some((field, rest)) => {
                let inner = rest.strip_suffix(']').unwrap_or(rest);
                match inner.strip_prefix('?').and_then(|c| c.split_once('=')) {
                    Some((sub_path, values)) => Step::Where {
                        field,
                        sub_path,
                        values,
                    },
                    None => Step::Every(field),
                }
            }
        };
        out.push(step);
    }
    out
}

/// `name=A|B`, `name^=P` or `name~=A|B`.
fn test(seg: &str) -> Option<Step<'_>> {
    let (field, values) = seg.split_once('=')?;
    let (field, op) = if let Some(f) = field.strip_suffix('^') {
        (f, Op::Prefix)
    } else if let Some(f) = field.strip_suffix('~') {
        (f, Op::Item)
    } else {
        (field, Op::Equals)
    };
    Some(Step::Test { field, op, values })
}

fn lookup<'v>(v: &'v Value, dotted: &str) -> Option<&'v Value> {
    dotted.split('.').try_fold(v, |v, k| v.get(k))
}

fn walk(v: &Value, steps: &[Step<'_>], path: String, out: &mut Vec<String>) {
    let Some((step, rest)) = steps.split_first() else {
        if !v.is_null() {
            out.push(path);
        }
        return;
    };
    let join = |field: &str| {
        if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    match step {
        Step::Field(field) => {
            if let Some(child) = v.get(field) {
                walk(child, rest, join(field), out);
            }
        }
        Step::Test { field, op, values } => {
            let Some(child @ Value::String(s)) = v.get(field) else {
                return;
            };
            let wanted = |item: &str| {
                values.split('|').any(|want| match op {
                    Op::Equals | Op::Item => want.eq_ignore_ascii_case(item),
                    Op::Prefix => item
                        .get(..want.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(want)),
                })
            };
            match op {
                Op::Equals | Op::Prefix => {
                    if wanted(s.trim()) {
                        walk(child, rest, join(field), out);
                    }
                }
                Op::Item => {
                    let mut seen: Vec<&str> = Vec::new();
                    for item in s.split(',').map(str::trim) {
                        if wanted(item) && !seen.iter().any(|x| x.eq_ignore_ascii_case(item)) {
                            seen.push(item);
                            out.push(format!("{}[{item}]", join(field)));
                        }
                    }
                }
            }
        }
        Step::Every(field) | Step::Where { field, .. } => {
            let Some(Value::Array(items)) = v.get(field) else {
                return;
            };
            let base = join(field);
            for (i, item) in items.iter().enumerate() {
                if let Step::Where {
                    sub_path, values, ..
                } = step
                {
                    let Some(Value::String(s)) = lookup(item, sub_path) else {
                        continue;
                    };
                    if !values.split('|').any(|want| want.eq_ignore_ascii_case(s)) {
                        continue;
                    }
                }
                walk(item, rest, format!("{base}[{i}]"), out);
            }
        }
    }
}

/// `<field path>: accepted but not enforced yet` for every field of [`NOT_ENFORCED`] the resource
/// sets, in table order.
pub fn unenforced_warnings(resource: &Resource) -> Vec<String> {
    // The list names Istio fields; a Kubernetes kind's fields of the same name (an Ingress's
    // `spec.tls`) are enforced by its own translation.
    if resource.kind().group() == crate::resource::INGRESS_GROUP {
        return Vec::new();
    }
    let value = resource.to_value();
    let mut paths = Vec::new();
    for steps in PATTERNS.iter() {
        walk(&value, steps, String::new(), &mut paths);
    }
    paths
        .into_iter()
        .map(|p| format!("{p}: accepted but not enforced yet"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{decode_resource, Format};

    fn warnings(yaml: &str) -> Vec<String> {
        let r = decode_resource(yaml.as_bytes(), Format::Yaml, None).expect("decodes");
        unenforced_warnings(&r)
    }

    #[test]
    fn names_each_present_field() {
        let w = warnings(
            "kind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a.example.com]\n  http:\n  - route: [{destination: {host: a}}]\n  - timeout: 1s\n    retries: {attempts: 1, retryRemoteLocalities: true}\n    route: [{destination: {host: a}}]\n  exportTo: ['.']\n",
        );
        assert_eq!(
            w,
            vec![
                "spec.http[1].retries.retryRemoteLocalities: accepted but not enforced yet",
                "spec.exportTo: accepted but not enforced yet",
            ]
        );
    }

    #[test]
    fn filters_servers_by_protocol() {
        let w = warnings(
            "kind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n    tls: {httpsRedirect: true}\n  - port: {number: 443, name: https, protocol: https}\n    hosts: ['*']\n    tls: {mode: SIMPLE, credentialName: c}\n  - port: {number: 8443, name: tls, protocol: TLS}\n    hosts: ['*']\n    tls: {mode: PASSTHROUGH}\n  - port: {number: 8444, name: auto, protocol: TLS}\n    hosts: ['*']\n    tls: {mode: ISTIO_MUTUAL, caCrl: x}\n",
        );
        assert_eq!(
            w,
            vec![
                "spec.servers[3].tls.mode: accepted but not enforced yet",
                "spec.servers[3].tls.caCrl: accepted but not enforced yet"
            ]
        );
    }

    #[test]
    fn tests_string_fields() {
        let w = warnings(
            "kind: ServiceEntry\nmetadata: {name: s}\nspec:\n  hosts: [a.example.com]\n  resolution: DNS_ROUND_ROBIN\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n  - {number: 81, name: grpc, protocol: grpc}\n  endpoints:\n  - address: UNIX:///run/a.sock\n  - address: 10.0.0.1\n",
        );
        assert_eq!(
            w,
            vec![
                "spec.resolution: accepted but not enforced yet",
                "spec.endpoints[0].address: accepted but not enforced yet",
            ]
        );
        let w = warnings(
            "kind: ServiceEntry\nmetadata: {name: s}\nspec:\n  hosts: [a.example.com]\n  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n",
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn names_each_listed_item_once() {
        let w = warnings(
            "kind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a.example.com]\n  http:\n  - retries: {attempts: 2, retryOn: \"5xx, envoy-ratelimited,retriable-headers,envoy-ratelimited\"}\n    route: [{destination: {host: a}}]\n  - retries: {attempts: 2, retryOn: \"5xx,reset\"}\n    route: [{destination: {host: a}}]\n",
        );
        assert_eq!(
            w,
            vec![
                "spec.http[0].retries.retryOn[envoy-ratelimited]: accepted but not enforced yet",
                "spec.http[0].retries.retryOn[retriable-headers]: accepted but not enforced yet",
            ]
        );
    }

    #[test]
    fn every_pattern_parses() {
        for (pattern, note) in NOT_ENFORCED {
            assert!(pattern.starts_with("spec."), "{pattern}");
            assert!(!note.is_empty(), "{pattern}");
            assert!(!steps(pattern).is_empty());
        }
    }
}
