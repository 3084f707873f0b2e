//! Istio's `MeshConfig` (`--mesh-config`): the startup settings an Istio ingress gateway takes from
//! the `mesh` key of the `istio` ConfigMap. Only what the gateway uses is typed —
//! `extensionProviders[].envoyExtAuthzHttp` (AuthorizationPolicy `CUSTOM`) and
//! `defaultConfig.gatewayTopology` (which hop of `X-Forwarded-For` is the client, PROXY protocol);
//! every other field is accepted and named in a warning, so that a mesh config copied from a
//! cluster loads unchanged. Errors name the field (`extensionProviders[0].envoyExtAuthzHttp.port`)
//! and are checked as Istio's `ValidateMeshConfig` checks them.

use crate::resource::parse_duration;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The parts of a MeshConfig the gateway reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshConfig {
    /// By name, in the order given.
    pub extension_providers: Vec<ExtensionProvider>,
    pub gateway_topology: GatewayTopology,
}

impl MeshConfig {
    /// The provider an AuthorizationPolicy's `provider.name` names.
    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }
}

/// One `extensionProviders[]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtensionProvider {
    pub name: String,
    pub kind: ProviderKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    /// `envoyExtAuthzHttp`: served.
    ExtAuthzHttp(ExtAuthzHttp),
    /// Any other provider type (`envoyExtAuthzGrpc`, tracing, access-log providers), by its field
    /// name: a CUSTOM policy naming it is warned about and denies (as Envoy fails closed).
    Other(String),
}

/// `envoyExtAuthzHttp`, with Istio's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtAuthzHttp {
    /// The authorizer's host as written: `host`, or `namespace/host` (the namespace is dropped
    /// when resolving, there being no Kubernetes Services here).
    pub service: String,
    pub port: u16,
    /// Istio's default: 600 s.
    pub timeout: Duration,
    /// Prepended to the request path in the check request.
    pub path_prefix: Option<String>,
    /// Allow the request when the authorizer cannot be reached or answers 5xx.
    pub fail_open: bool,
    /// The status answered when the authorizer fails and `fail_open` is false (Istio: 403).
    pub status_on_error: u16,
    /// Lowercased names of the client's headers sent in the check (with `includeHeadersInCheck`,
    /// its deprecated spelling).
    pub include_request_headers_in_check: Vec<String>,
    /// Headers added to the check request, name (lowercased) → value.
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    /// Lowercased names of the authorizer's answer headers copied to the upstream request on allow.
    pub headers_to_upstream_on_allow: Vec<String>,
    /// … copied to the client's answer on deny.
    pub headers_to_downstream_on_deny: Vec<String>,
    /// … copied to the client's answer on allow.
    pub headers_to_downstream_on_allow: Vec<String>,
    /// `includeRequestBodyInCheck`: the body is buffered up to this and sent in the check.
    pub include_request_body_in_check: Option<BodyInCheck>,
}

/// `includeRequestBodyInCheck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyInCheck {
    pub max_request_bytes: u32,
    /// Send the first `max_request_bytes` when the body is longer (else answer 413).
    pub allow_partial_message: bool,
    pub pack_as_bytes: bool,
}

/// `defaultConfig.gatewayTopology`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayTopology {
    /// Proxies in front of the gateway that append to `X-Forwarded-For`: the client is this many
    /// hops from the right of it (Envoy's `xff_num_trusted_hops`). 0: the downstream peer.
    pub num_trusted_proxies: u32,
    /// `proxyProtocol: {}`: every connection starts with a PROXY protocol (v1 or v2) header.
    pub proxy_protocol: bool,
    /// `forwardClientCertDetails`, as written (upper case), when set.
    pub forward_client_cert_details: Option<String>,
}

/// A parsed mesh config and the fields it had that the gateway does not use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub config: MeshConfig,
    /// One line naming every ignored field path, or none.
    pub warnings: Vec<String>,
}

/// Istio's default ext-authz timeout.
const DEFAULT_EXT_AUTHZ_TIMEOUT: Duration = Duration::from_secs(600);

/// `forwardClientCertDetails` values (Istio's `ForwardClientCertDetails` enum).
const FCCD: &[&str] = &[
    "UNDEFINED",
    "SANITIZE",
    "FORWARD_ONLY",
    "APPEND_FORWARD",
    "SANITIZE_SET",
    "ALWAYS_FORWARD_ONLY",
];

/// Parses a mesh config: the YAML (or JSON) of the `mesh` key, or a whole `ConfigMap` whose
/// `data.mesh` holds it. `Err` lists every problem, one per line, each with its field path.
pub fn parse(text: &str) -> Result<Parsed, String> {
    let doc = crate::resource::yaml::document(text).map_err(yaml_error)?;
    let doc = match &doc {
        Value::Object(m) if m.get("kind").and_then(Value::as_str) == Some("ConfigMap") => {
            let mesh = m
                .get("data")
                .and_then(|d| d.get("mesh"))
                .and_then(Value::as_str)
                .ok_or("a ConfigMap given as mesh config needs a string data.mesh")?;
            crate::resource::yaml::document(mesh)
                .map_err(|e| format!("data.mesh: {}", yaml_error(e)))?
        }
        _ => doc,
    };
    let mut p = Parser::default();
    let config = match &doc {
        Value::Null => MeshConfig::default(),
        Value::Object(m) => p.mesh(m),
        _ => return Err("mesh config: must be a mapping".to_string()),
    };
    if !p.errors.is_empty() {
        return Err(p.errors.join("\n"));
    }
    p.ignored.sort();
    let warnings = if p.ignored.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "mesh config: not used by this gateway: {}",
            p.ignored.join(", ")
        )]
    };
    Ok(Parsed { config, warnings })
}

fn yaml_error(e: crate::resource::yaml::YamlError) -> String {
    format!("line {} column {}: {}", e.line, e.column, e.message)
}

#[derive(Default)]
struct Parser {
    errors: Vec<String>,
    ignored: Vec<String>,
}

impl Parser {
    fn mesh(&mut self, m: &Map<String, Value>) -> MeshConfig {
        let mut out = MeshConfig::default();
        for (k, v) in m {
            match k.as_str() {
                "extensionProviders" => out.extension_providers = self.providers(v),
                "defaultConfig" => match v {
                    Value::Object(dc) => {
                        for (k, v) in dc {
                            match k.as_str() {
                                "gatewayTopology" => out.gateway_topology = self.topology(v),
                                other => self.ignored.push(format!("defaultConfig.{other}")),
                            }
                        }
                    }
                    Value::Null => {}
                    _ => self.error("defaultConfig", "must be a mapping"),
                },
                other => self.ignored.push(other.to_string()),
            }
        }
        out
    }

    fn error(&mut self, path: &str, msg: &str) {
        self.errors.push(format!("{path}: {msg}"));
    }

    fn providers(&mut self, v: &Value) -> Vec<ExtensionProvider> {
        let Some(list) = v.as_array() else {
            if !v.is_null() {
                self.error("extensionProviders", "must be a list");
            }
            return Vec::new();
        };
        let mut out: Vec<ExtensionProvider> = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, item) in list.iter().enumerate() {
            let at = format!("extensionProviders[{i}]");
            let Some(m) = item.as_object() else {
                self.error(&at, "must be a mapping");
                continue;
            };
            let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                self.error(&format!("{at}.name"), "empty extension provider name");
            } else if !names.insert(name) {
                self.error(
                    &format!("{at}.name"),
                    &format!("duplicate extension provider name {name}"),
                );
            }
            let mut kind = None;
            for (k, v) in m {
                match k.as_str() {
                    "name" => {}
                    "envoyExtAuthzHttp" => {
                        kind = self
                            .ext_authz_http(&format!("{at}.envoyExtAuthzHttp"), v)
                            .map(ProviderKind::ExtAuthzHttp)
                    }
                    other => {
                        self.ignored.push(format!("{at}.{other}"));
                        kind = Some(ProviderKind::Other(other.to_string()));
                    }
                }
            }
            match kind {
                Some(kind) => out.push(ExtensionProvider {
                    name: name.to_string(),
                    kind,
                }),
                None if m.len() <= 1 => self.error(&at, "a provider type must be set"),
                None => {}
            }
        }
        out
    }

    fn ext_authz_http(&mut self, at: &str, v: &Value) -> Option<ExtAuthzHttp> {
        let Some(m) = v.as_object() else {
            self.error(at, "must be a mapping");
            return None;
        };
        let before = self.errors.len();
        let mut out = ExtAuthzHttp {
            service: String::new(),
            port: 0,
            timeout: DEFAULT_EXT_AUTHZ_TIMEOUT,
            path_prefix: None,
            fail_open: false,
            status_on_error: 403,
            include_request_headers_in_check: Vec::new(),
            include_additional_headers_in_check: BTreeMap::new(),
            headers_to_upstream_on_allow: Vec::new(),
            headers_to_downstream_on_deny: Vec::new(),
            headers_to_downstream_on_allow: Vec::new(),
            include_request_body_in_check: None,
        };
        let mut port = None;
        for (k, v) in m {
            let path = format!("{at}.{k}");
            match k.as_str() {
                "service" => out.service = self.string(&path, v),
                "port" => port = self.u32(&path, v),
                "timeout" => {
                    let s = self.string(&path, v);
                    match parse_duration(&s) {
                        Ok(d) if !d.is_zero() => out.timeout = d,
                        Ok(_) => self.error(&path, "duration must be greater than 0"),
                        Err(e) => self.error(&path, &e.to_string()),
                    }
                }
                "pathPrefix" => {
                    let s = self.string(&path, v);
                    if !s.is_empty() {
                        if !s.starts_with('/') {
                            self.error(
                                &path,
                                &format!("pathPrefix should begin with `/` but found {s:?}"),
                            );
                        }
                        out.path_prefix = Some(s);
                    }
                }
                "failOpen" => out.fail_open = self.bool(&path, v),
                "statusOnError" => {
                    let s = self.string(&path, v);
                    if !s.is_empty() {
                        match s.parse::<u16>() {
                            Ok(c) if (100..=599).contains(&c) => out.status_on_error = c,
                            _ => self.error(
                                &path,
                                &format!(
                                    "unsupported statusOnError value {s}: an HTTP status code"
                                ),
                            ),
                        }
                    }
                }
                "includeRequestHeadersInCheck" | "includeHeadersInCheck" => {
                    let names = self.names(&path, v);
                    out.include_request_headers_in_check.extend(names);
                }
                "includeAdditionalHeadersInCheck" => match v {
                    Value::Object(h) => {
                        for (name, value) in h {
                            let value = self.string(&format!("{path}[{name}]"), value);
                            out.include_additional_headers_in_check
                                .insert(name.to_ascii_lowercase(), value);
                        }
                    }
                    Value::Null => {}
                    _ => self.error(&path, "must be a mapping of header names to values"),
                },
                "headersToUpstreamOnAllow" => {
                    out.headers_to_upstream_on_allow = self.names(&path, v)
                }
                "headersToDownstreamOnDeny" => {
                    out.headers_to_downstream_on_deny = self.names(&path, v)
                }
                "headersToDownstreamOnAllow" => {
                    out.headers_to_downstream_on_allow = self.names(&path, v)
                }
                "includeRequestBodyInCheck" => {
                    out.include_request_body_in_check = self.body_in_check(&path, v)
                }
                _ => self.ignored.push(path),
            }
        }
        match port {
            Some(p) if (1..=65535).contains(&p) => out.port = p as u16,
            Some(p) => self.error(
                &format!("{at}.port"),
                &format!("port number {p} must be in the range 1..65535"),
            ),
            None => self.error(
                &format!("{at}.port"),
                "port number 0 must be in the range 1..65535",
            ),
        }
        if out.service.is_empty() {
            self.error(&format!("{at}.service"), "service must not be empty");
        } else if let Err(e) = service_host(&out.service) {
            self.error(&format!("{at}.service"), &e);
        }
        (self.errors.len() == before).then_some(out)
    }

    fn body_in_check(&mut self, at: &str, v: &Value) -> Option<BodyInCheck> {
        let m = match v {
            Value::Object(m) => m,
            Value::Null => return None,
            _ => {
                self.error(at, "must be a mapping");
                return None;
            }
        };
        let mut out = BodyInCheck {
            max_request_bytes: 0,
            allow_partial_message: false,
            pack_as_bytes: false,
        };
        for (k, v) in m {
            let path = format!("{at}.{k}");
            match k.as_str() {
                "maxRequestBytes" => out.max_request_bytes = self.u32(&path, v).unwrap_or(0),
                "allowPartialMessage" => out.allow_partial_message = self.bool(&path, v),
                "packAsBytes" => out.pack_as_bytes = self.bool(&path, v),
                _ => self.ignored.push(path),
            }
        }
        Some(out)
    }

    fn topology(&mut self, v: &Value) -> GatewayTopology {
        let at = "defaultConfig.gatewayTopology";
        let mut out = GatewayTopology::default();
        let m = match v {
            Value::Object(m) => m,
            Value::Null => return out,
            _ => {
                self.error(at, "must be a mapping");
                return out;
            }
        };
        for (k, v) in m {
            let path = format!("{at}.{k}");
            match k.as_str() {
                "numTrustedProxies" => out.num_trusted_proxies = self.u32(&path, v).unwrap_or(0),
                "proxyProtocol" => match v {
                    // Istio's `ProxyProtocolConfiguration` has no fields: present means on.
                    Value::Object(pp) => {
                        out.proxy_protocol = true;
                        for k in pp.keys() {
                            self.ignored.push(format!("{path}.{k}"));
                        }
                    }
                    Value::Null => {}
                    _ => self.error(&path, "must be a mapping (`proxyProtocol: {}`)"),
                },
                "forwardClientCertDetails" => {
                    let s = self.string(&path, v).to_ascii_uppercase();
                    if FCCD.contains(&s.as_str()) {
                        // Read, not acted on: no client certificate details are forwarded.
                        self.ignored.push(path);
                        out.forward_client_cert_details = Some(s);
                    } else {
                        self.error(&path, &format!("unknown value {s:?}: one of {FCCD:?}"));
                    }
                }
                _ => self.ignored.push(path),
            }
        }
        out
    }

    fn string(&mut self, path: &str, v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            // YAML gives numbers for unquoted `statusOnError: 403`; Istio's JSON decoding is as
            // lenient for string fields written as numbers in a ConfigMap.
            Value::Number(n) => n.to_string(),
            _ => {
                self.error(path, "must be a string");
                String::new()
            }
        }
    }

    fn u32(&mut self, path: &str, v: &Value) -> Option<u32> {
        match v.as_u64().map(u32::try_from) {
            Some(Ok(n)) => Some(n),
            _ => {
                self.error(path, "must be a non-negative integer");
                None
            }
        }
    }

    fn bool(&mut self, path: &str, v: &Value) -> bool {
        match v {
            Value::Bool(b) => *b,
            Value::Null => false,
            _ => {
                self.error(path, "must be true or false");
                false
            }
        }
    }

    /// A list of header names, lowercased; each must be a valid header name.
    fn names(&mut self, path: &str, v: &Value) -> Vec<String> {
        let Some(list) = v.as_array() else {
            if !v.is_null() {
                self.error(path, "must be a list of header names");
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let name = self.string(&at, item).to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.error(&at, &format!("invalid header name {name:?}"));
            } else {
                out.push(name);
            }
        }
        out
    }
}

/// The host of an extension provider's `service` (`host` or `namespace/host`), checked as Istio
/// checks it: an FQDN or an IP address.
pub fn service_host(service: &str) -> Result<&str, String> {
    let host = match service.split_once('/') {
        None => service,
        Some((ns, host)) if !ns.is_empty() && !host.contains('/') => host,
        Some(_) => return Err(format!("invalid service fmt {service}")),
    };
    let ip = host.parse::<std::net::IpAddr>().is_ok();
    let fqdn = !host.is_empty()
        && host.len() <= 255
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ip || fqdn {
        Ok(host)
    } else {
        Err(format!(
            "invalid service fmt {service}: neither a domain name nor an IP address"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_istio_ext_authz_sample_parses_with_istio_defaults() {
        // The shape of Istio's ext-authz task (tasks/security/authorization/authz-custom).
        let p = parse(
            "extensionProviders:\n- name: sample-ext-authz-http\n  envoyExtAuthzHttp:\n    service: ext-authz.foo.svc.cluster.local\n    port: 8000\n    includeRequestHeadersInCheck: [\"x-ext-authz\"]\n",
        )
        .expect("parses");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let Some(ProviderKind::ExtAuthzHttp(h)) = p
            .config
            .provider("sample-ext-authz-http")
            .map(|p| p.kind.clone())
        else {
            panic!("an http provider: {:?}", p.config);
        };
        assert_eq!(h.service, "ext-authz.foo.svc.cluster.local");
        assert_eq!(h.port, 8000);
        assert_eq!(h.timeout, Duration::from_secs(600));
        assert_eq!(h.status_on_error, 403);
        assert!(!h.fail_open);
        assert_eq!(h.include_request_headers_in_check, ["x-ext-authz"]);
    }

    #[test]
    fn every_http_field_is_read() {
        let p = parse(
            "extensionProviders:\n- name: a\n  envoyExtAuthzHttp:\n    service: foo/authz.example.com\n    port: 9000\n    timeout: 250ms\n    pathPrefix: /check\n    failOpen: true\n    statusOnError: \"503\"\n    includeHeadersInCheck: [X-A]\n    includeRequestHeadersInCheck: [x-b]\n    includeAdditionalHeadersInCheck: {X-Extra: v}\n    headersToUpstreamOnAllow: [x-user]\n    headersToDownstreamOnDeny: [x-reason]\n    headersToDownstreamOnAllow: [x-ok]\n    includeRequestBodyInCheck: {maxRequestBytes: 1024, allowPartialMessage: true}\n",
        )
        .expect("parses");
        let ProviderKind::ExtAuthzHttp(h) = &p.config.extension_providers[0].kind else {
            panic!("http provider");
        };
        assert_eq!(service_host(&h.service), Ok("authz.example.com"));
        assert_eq!(h.timeout, Duration::from_millis(250));
        assert_eq!(h.path_prefix.as_deref(), Some("/check"));
        assert!(h.fail_open);
        assert_eq!(h.status_on_error, 503);
        assert_eq!(h.include_request_headers_in_check, ["x-a", "x-b"]);
        assert_eq!(
            h.include_additional_headers_in_check
                .get("x-extra")
                .map(String::as_str),
            Some("v")
        );
        assert_eq!(h.headers_to_upstream_on_allow, ["x-user"]);
        assert_eq!(h.headers_to_downstream_on_deny, ["x-reason"]);
        assert_eq!(h.headers_to_downstream_on_allow, ["x-ok"]);
        assert_eq!(
            h.include_request_body_in_check,
            Some(BodyInCheck {
                max_request_bytes: 1024,
                allow_partial_message: true,
                pack_as_bytes: false
            })
        );
    }

    #[test]
    fn gateway_topology_is_read_from_default_config() {
        let p = parse(
            "defaultConfig:\n  gatewayTopology:\n    numTrustedProxies: 2\n    proxyProtocol: {}\n  holdApplicationUntilProxyStarts: true\naccessLogFile: /dev/stdout\n",
        )
        .expect("parses");
        assert_eq!(
            p.config.gateway_topology,
            GatewayTopology {
                num_trusted_proxies: 2,
                proxy_protocol: true,
                forward_client_cert_details: None
            }
        );
        assert_eq!(
            p.warnings,
            ["mesh config: not used by this gateway: accessLogFile, defaultConfig.holdApplicationUntilProxyStarts"]
        );
    }

    #[test]
    fn a_configmap_is_read_through_its_mesh_key() {
        let p = parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |-\n    defaultConfig:\n      gatewayTopology:\n        numTrustedProxies: 1\n",
        )
        .expect("parses");
        assert_eq!(p.config.gateway_topology.num_trusted_proxies, 1);
    }

    #[test]
    fn errors_name_every_bad_field() {
        let e = parse(
            "extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: '', port: 70000, pathPrefix: check, statusOnError: abc}\n- name: a\n  envoyExtAuthzHttp: {service: 'x y', port: 1}\ndefaultConfig:\n  gatewayTopology: {numTrustedProxies: -1}\n",
        )
        .expect_err("invalid");
        for want in [
            "extensionProviders[0].envoyExtAuthzHttp.port: port number 70000",
            "extensionProviders[0].envoyExtAuthzHttp.service: service must not be empty",
            "extensionProviders[0].envoyExtAuthzHttp.pathPrefix: pathPrefix should begin with `/`",
            "extensionProviders[0].envoyExtAuthzHttp.statusOnError: unsupported statusOnError value abc",
            "extensionProviders[1].name: duplicate extension provider name a",
            "extensionProviders[1].envoyExtAuthzHttp.service: invalid service fmt x y",
            "defaultConfig.gatewayTopology.numTrustedProxies: must be a non-negative integer",
        ] {
            assert!(e.contains(want), "{want:?} not in:\n{e}");
        }
    }

    #[test]
    fn other_provider_types_are_kept_by_name_and_warned_about() {
        let p = parse(
            "extensionProviders:\n- name: g\n  envoyExtAuthzGrpc: {service: authz, port: 9000}\n",
        )
        .expect("parses");
        assert_eq!(
            p.config.extension_providers[0].kind,
            ProviderKind::Other("envoyExtAuthzGrpc".to_string())
        );
        assert_eq!(
            p.warnings,
            ["mesh config: not used by this gateway: extensionProviders[0].envoyExtAuthzGrpc"]
        );
    }

    #[test]
    fn an_empty_file_is_the_default() {
        assert_eq!(parse("").expect("parses"), Parsed::default());
    }
}
