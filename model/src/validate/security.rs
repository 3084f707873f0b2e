//! `RequestAuthentication` and `AuthorizationPolicy`, as Istio validates them
//! (`pkg/config/validation/validation.go` `ValidateRequestAuthentication`,
//! `ValidateAuthorizationPolicy`, `pkg/config/security/security.go`) plus the CRD schema's rules
//! (`only one of jwks or jwksUri`, `targetRef` shape, list limits). Each of Istio's messages is kept,
//! placed at the field it is about.

use super::common::{check_duration, check_ip_or_cidr, check_metadata, NameRule};
use super::findings::Findings;
use super::path::FieldPath;
use crate::ir::jwt::{parse_jwks, KeyNote};
use crate::resource::{
    AuthorizationAction, AuthorizationPolicy, JwtRule, ObjectMeta, Operation,
    PolicyTargetReference, RequestAuthentication, Source, WorkloadSelector,
};

/// Istio's annotation that evaluates an AuthorizationPolicy without enforcing it.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";
/// `targetRef(s)` kinds Istio allows: `(group, kind)`, `""` being the core group.
const TARGET_KINDS: [(&str, &str); 4] = [
    ("", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];
/// The CRD's `maxItems` of `targetRefs`, `rules`, `from`, `jwtRules`, `spaceDelimitedClaims`.
const MAX_TARGET_REFS: usize = 16;
const MAX_RULES: usize = 512;
const MAX_FROM: usize = 512;
const MAX_JWT_RULES: usize = 4096;
const MAX_SPACE_DELIMITED: usize = 64;
/// The CRD's `maxLength` of `jwksUri`.
const MAX_JWKS_URI: usize = 2048;
/// `CheckServiceAccount`'s limits.
const MAX_SERVICE_ACCOUNTS: usize = 16;
const MAX_SERVICE_ACCOUNT_LEN: usize = 320;
/// Envoy's valid pchar (RFC 3986), as `security.IsValidLiteral` checks path template segments.
fn is_path_literal(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b))
}

pub(crate) fn validate_request_authentication(ra: &RequestAuthentication, f: &mut Findings) {
    check_metadata(f, &ra.metadata, NameRule::Subdomain);
    check_dry_run(f, &ra.metadata, None);
    let spec = &ra.spec;
    let p = FieldPath::root("spec");
    check_selection(
        f,
        &p,
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
    );
    let rp = p.field("jwtRules");
    if spec.jwt_rules.len() > MAX_JWT_RULES {
        f.too_long(&rp, format!("must have at most {MAX_JWT_RULES} items"));
    }
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        check_jwt_rule(f, &rp.index(i), rule);
    }
}

fn check_jwt_rule(f: &mut Findings, p: &FieldPath, rule: &JwtRule) {
    for (j, aud) in rule.audiences.iter().enumerate() {
        if aud.is_empty() {
            f.invalid(
                &p.field("audiences").index(j),
                "",
                "audience must be non-empty string",
            );
        }
    }
    if rule.issuer.is_empty() && rule.jwks_uri.is_empty() {
        f.required(
            &p.field("issuer"),
            "issuer or jwksUri must be non-empty string",
        );
    }
    if !rule.jwks_uri.is_empty() {
        let up = p.field("jwksUri");
        if rule.jwks_uri.len() > MAX_JWKS_URI {
            f.too_long(&up, format!("may not be more than {MAX_JWKS_URI} bytes"));
        } else if let Err(e) = parse_jwks_uri(&rule.jwks_uri) {
            f.invalid(&up, rule.jwks_uri.as_str(), e);
        }
        if !rule.jwks.is_empty() {
            f.forbidden(&p.field("jwks"), "only one of jwks or jwksUri can be set");
        }
    }
    if !rule.jwks.is_empty() {
        let jp = p.field("jwks");
        match parse_jwks(&rule.jwks) {
            Err(e) => f.invalid(&jp, rule.jwks.as_str(), format!("jwks parse error: {e}")),
            Ok(set) => {
                for (i, note) in set.notes() {
                    if *note == KeyNote::Private {
                        f.warn(
                            &jp,
                            format!("jwks key at index {i} contains private key material; only public keys are used for verification"),
                        );
                    }
                }
            }
        }
    }
    for (j, h) in rule.from_headers.iter().enumerate() {
        if h.name.is_empty() {
            f.required(
                &p.field("fromHeaders").index(j).field("name"),
                "location header name must be non-empty string",
            );
        }
    }
    for (j, q) in rule.from_params.iter().enumerate() {
        if q.is_empty() {
            f.invalid(
                &p.field("fromParams").index(j),
                "",
                "location query must be non-empty string",
            );
        }
    }
    for (j, c) in rule.from_cookies.iter().enumerate() {
        if c.is_empty() {
            f.invalid(
                &p.field("fromCookies").index(j),
                "",
                "cookie name must be non-empty string",
            );
        }
    }
    for (j, ch) in rule.output_claim_to_headers.iter().enumerate() {
        let cp = p.field("outputClaimToHeaders").index(j);
        let both = "outputClaimToHeaders header and claim value must be non-empty string";
        if ch.claim.is_empty() {
            f.required(&cp.field("claim"), both);
        }
        if ch.header.is_empty() {
            f.required(&cp.field("header"), both);
        } else if !ch.claim.is_empty() && !is_strict_header_name(&ch.header) {
            f.invalid(
                &cp.field("header"),
                ch.header.as_str(),
                format!("header name {} is not a valid header name", ch.header),
            );
        }
    }
    if let Some(t) = &rule.timeout {
        check_duration(f, &p.field("timeout"), t, false);
    }
    let sp = p.field("spaceDelimitedClaims");
    if rule.space_delimited_claims.len() > MAX_SPACE_DELIMITED {
        f.too_long(
            &sp,
            format!("must have at most {MAX_SPACE_DELIMITED} items"),
        );
    }
    for (j, c) in rule.space_delimited_claims.iter().enumerate() {
        if c.is_empty() {
            f.invalid(&sp.index(j), "", "should be at least 1 chars long");
        }
    }
}

/// Istio's `ValidateStrictHTTPHeaderName`: `^[-_A-Za-z0-9]+$`.
pub(crate) fn is_strict_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Istio's `security.ParseJwksURI` on Go's `url.Parse`: an `http` or `https` URL (scheme compared
/// case-insensitively) whose port, if any, is a number. Returns `(https, host, port)`.
pub fn parse_jwks_uri(uri: &str) -> Result<(bool, String, u16), String> {
    if uri.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("invalid control character in URL".to_string());
    }
    let scheme_end = uri.find(':');
    let scheme = match scheme_end {
        Some(i)
            if uri[..i].starts_with(|c: char| c.is_ascii_alphabetic())
                && uri[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            uri[..i].to_ascii_lowercase()
        }
        _ => String::new(),
    };
    let https = match scheme.as_str() {
        "http" => false,
        "https" => true,
        other => return Err(format!("URI scheme {other:?} is not supported")),
    };
    let rest = &uri[scheme.len() + 1..];
    let Some(rest) = rest.strip_prefix("//") else {
        return Ok((https, String::new(), if https { 443 } else { 80 }));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err(format!("missing ']' in host {hostport:?}")),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.contains(' ') {
        return Err(format!("invalid character in host name {host:?}"));
    }
    let port = match port {
        None | Some("") => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p
            .parse::<u16>()
            .map_err(|_| format!("invalid port {p:?} after host"))?,
        Some(p) => return Err(format!("invalid port {:?} after host", format!(":{p}"))),
    };
    Ok((https, host.to_string(), port))
}

pub(crate) fn validate_authorization_policy(ap: &AuthorizationPolicy, f: &mut Findings) {
    check_metadata(f, &ap.metadata, NameRule::Subdomain);
    let spec = &ap.spec;
    let action = spec.action();
    check_dry_run(f, &ap.metadata, Some(action));
    let p = FieldPath::root("spec");
    check_selection(
        f,
        &p,
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
    );
    let rp = p.field("rules");
    if spec.rules.len() > MAX_RULES {
        f.too_long(&rp, format!("must have at most {MAX_RULES} items"));
    }
    match action {
        AuthorizationAction::Custom => {
            if spec.rules.is_empty() {
                f.required(&rp, "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
            } else if spec.provider.as_ref().is_none_or(|pr| pr.name.is_empty()) {
                f.required(
                    &p.field("provider").field("name"),
                    "`provider.name` must not be empty",
                );
            }
            check_custom_rules(f, ap, &rp);
        }
        AuthorizationAction::Deny if spec.rules.is_empty() => {
            f.required(&rp, "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
        }
        _ => {}
    }
    if spec.provider.is_some() && action != AuthorizationAction::Custom {
        f.forbidden(
            &p.field("provider"),
            format!(
                "`provider` must not be with non CUSTOM action, found {}",
                action.as_str()
            ),
        );
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        let ri = rp.index(i);
        let mut tcp_in_from = false;
        let mut tcp_in_to = false;
        let mut from_exists = false;
        let mut to_exists = false;
        let fp = ri.field("from");
        if rule.from.len() > MAX_FROM {
            f.too_long(&fp, format!("must have at most {MAX_FROM} items"));
        }
        for (j, from) in rule.from.iter().enumerate() {
            let sp = fp.index(j).field("source");
            let Some(src) = &from.source else {
                f.required(&sp, "`from.source` must not be nil");
                continue;
            };
            from_exists = true;
            check_source(f, &sp, src);
            tcp_in_from |= !(src.not_principals.is_empty()
                && src.principals.is_empty()
                && src.ip_blocks.is_empty()
                && src.not_ip_blocks.is_empty()
                && src.namespaces.is_empty()
                && src.not_namespaces.is_empty()
                && src.remote_ip_blocks.is_empty()
                && src.not_remote_ip_blocks.is_empty()
                && src.service_accounts.is_empty()
                && src.not_service_accounts.is_empty());
        }
        for (j, to) in rule.to.iter().enumerate() {
            let op = ri.field("to").index(j).field("operation");
            let Some(o) = &to.operation else {
                f.required(&op, "`to.operation` must not be nil");
                continue;
            };
            to_exists = true;
            check_operation(f, &op, o);
            tcp_in_to |= !(o.ports.is_empty() && o.not_ports.is_empty());
        }
        for (k, c) in rule.when.iter().enumerate() {
            let wp = ri.field("when").index(k);
            if c.key.is_empty() {
                f.required(&wp.field("key"), "`key` must not be empty");
                continue;
            }
            if c.values.is_empty() && c.not_values.is_empty() {
                f.required(
                    &wp.field("values"),
                    format!(
                        "at least one of `values` or `notValues` must be set for key {}",
                        c.key
                    ),
                );
                continue;
            }
            if let Err(e) = check_attribute_key(&c.key) {
                f.invalid(&wp.field("key"), c.key.as_str(), e);
                continue;
            }
            for (list, name) in [(&c.values, "values"), (&c.not_values, "notValues")] {
                for (n, v) in list.iter().enumerate() {
                    if let Err(e) = check_attribute_value(&c.key, v) {
                        f.invalid(&wp.field(name).index(n), v.as_str(), e);
                    }
                }
                if c.key == "source.serviceAccount" && list.len() > MAX_SERVICE_ACCOUNTS {
                    f.too_long(
                        &wp.field(name),
                        format!("may not have more than {MAX_SERVICE_ACCOUNTS} values"),
                    );
                }
            }
        }
        if action == AuthorizationAction::Deny
            && ((from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to))
        {
            f.warn(&ri, "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port");
        }
    }
}

/// What a `CUSTOM` policy may not match on (Istio: "… is currently not supported with CUSTOM
/// action"): identities derived from mTLS or JWT, which the external authorizer sees itself.
fn check_custom_rules(f: &mut Findings, ap: &AuthorizationPolicy, rp: &FieldPath) {
    let unsupported = |name: &str| format!("{name} is currently not supported with CUSTOM action");
    for (i, rule) in ap.spec.rules.iter().enumerate() {
        let ri = rp.index(i);
        for (j, from) in rule.from.iter().enumerate() {
            let Some(s) = &from.source else { continue };
            let sp = ri.field("from").index(j).field("source");
            for (set, field, name) in [
                (&s.namespaces, "namespaces", "From.Namespaces"),
                (&s.not_namespaces, "notNamespaces", "From.NotNamespaces"),
                (
                    &s.service_accounts,
                    "serviceAccounts",
                    "From.ServiceAccounts",
                ),
                (
                    &s.not_service_accounts,
                    "notServiceAccounts",
                    "From.NotServiceAccounts",
                ),
                (&s.trust_domains, "trustDomains", "From.TrustDomains"),
                (
                    &s.not_trust_domains,
                    "notTrustDomains",
                    "From.NotTrustDomains",
                ),
                (&s.principals, "principals", "From.Principals"),
                (&s.not_principals, "notPrincipals", "From.NotPrincipals"),
                (
                    &s.request_principals,
                    "requestPrincipals",
                    "From.RequestPrincipals",
                ),
                (
                    &s.not_request_principals,
                    "notRequestPrincipals",
                    "From.NotRequestPrincipals",
                ),
            ] {
                if !set.is_empty() {
                    f.forbidden(&sp.field(field), unsupported(name));
                }
            }
        }
        for (k, c) in rule.when.iter().enumerate() {
            let key = c.key.as_str();
            if matches!(
                key,
                "source.namespace"
                    | "source.serviceAccount"
                    | "source.trustDomain"
                    | "source.principal"
            ) || key.starts_with("request.auth.")
            {
                f.forbidden(&ri.field("when").index(k).field("key"), unsupported(key));
            }
        }
    }
}

fn check_source(f: &mut Findings, p: &FieldPath, s: &Source) {
    let principal_like =
        s.principals.len() + s.not_principals.len() + s.namespaces.len() + s.not_namespaces.len();
    if principal_like > 0 && s.service_accounts.len() + s.not_service_accounts.len() > 0 {
        let at = if s.service_accounts.is_empty() {
            "notServiceAccounts"
        } else {
            "serviceAccounts"
        };
        f.forbidden(
            &p.field(at),
            "cannot set serviceAccounts with namespaces or principals",
        );
    }
    let lists: [(&Vec<String>, &str); 14] = [
        (&s.principals, "principals"),
        (&s.not_principals, "notPrincipals"),
        (&s.request_principals, "requestPrincipals"),
        (&s.not_request_principals, "notRequestPrincipals"),
        (&s.namespaces, "namespaces"),
        (&s.not_namespaces, "notNamespaces"),
        (&s.service_accounts, "serviceAccounts"),
        (&s.not_service_accounts, "notServiceAccounts"),
        (&s.trust_domains, "trustDomains"),
        (&s.not_trust_domains, "notTrustDomains"),
        (&s.ip_blocks, "ipBlocks"),
        (&s.not_ip_blocks, "notIpBlocks"),
        (&s.remote_ip_blocks, "remoteIpBlocks"),
        (&s.not_remote_ip_blocks, "notRemoteIpBlocks"),
    ];
    if lists.iter().all(|(l, _)| l.is_empty()) {
        f.required(p, "`from.source` must not be empty");
        return;
    }
    for (list, name) in lists {
        let lp = p.field(name);
        if matches!(name, "serviceAccounts" | "notServiceAccounts")
            && list.len() > MAX_SERVICE_ACCOUNTS
        {
            f.too_long(
                &lp,
                format!("may not have more than {MAX_SERVICE_ACCOUNTS} values"),
            );
        }
        for (n, v) in list.iter().enumerate() {
            let vp = lp.index(n);
            if v.is_empty() {
                f.invalid(&vp, "", "empty value not allowed");
                continue;
            }
            let r = match name {
                "ipBlocks" | "notIpBlocks" | "remoteIpBlocks" | "notRemoteIpBlocks" => {
                    check_ip_value(v)
                }
                "serviceAccounts" | "notServiceAccounts" => check_service_account(v),
                "trustDomains" | "notTrustDomains" => check_trust_domain(v),
                _ => Ok(()),
            };
            if let Err(e) = r {
                f.invalid(&vp, v.as_str(), e);
            }
        }
    }
}

fn check_operation(f: &mut Findings, p: &FieldPath, o: &Operation) {
    let lists: [(&Vec<String>, &str); 8] = [
        (&o.hosts, "hosts"),
        (&o.not_hosts, "notHosts"),
        (&o.ports, "ports"),
        (&o.not_ports, "notPorts"),
        (&o.methods, "methods"),
        (&o.not_methods, "notMethods"),
        (&o.paths, "paths"),
        (&o.not_paths, "notPaths"),
    ];
    if lists.iter().all(|(l, _)| l.is_empty()) {
        f.required(p, "`to.operation` must not be empty");
        return;
    }
    for (list, name) in lists {
        for (n, v) in list.iter().enumerate() {
            let vp = p.field(name).index(n);
            if v.is_empty() {
                f.invalid(&vp, "", "empty value not allowed");
                continue;
            }
            let r = match name {
                "ports" | "notPorts" => check_port_value(v),
                "paths" | "notPaths" => check_path_template(v),
                _ => Ok(()),
            };
            if let Err(e) = r {
                f.invalid(&vp, v.as_str(), e);
            }
        }
    }
}

/// `security.ValidateIPs` on one value: an address, or with a `/` a CIDR range.
fn check_ip_value(v: &str) -> Result<(), String> {
    if v.contains('/') {
        check_ip_or_cidr(v).map_err(|e| format!("bad CIDR range: {e}"))
    } else {
        v.parse::<std::net::IpAddr>()
            .map(|_| ())
            .map_err(|_| "bad IP address".to_string())
    }
}

/// `security.ValidatePorts` on one value: a decimal number up to 65535 (`0` included).
fn check_port_value(v: &str) -> Result<(), String> {
    match v.parse::<u32>() {
        Ok(n) if n <= 65535 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err("bad port: must be a number between 0 and 65535".to_string()),
    }
}

/// `security.CheckServiceAccount` on one value: `name` or `namespace/name`, no wildcard.
fn check_service_account(v: &str) -> Result<(), String> {
    if v.contains('*') {
        return Err("wildcard not allowed".to_string());
    }
    if v.len() > MAX_SERVICE_ACCOUNT_LEN {
        return Err(format!(
            "value cannot exceed {MAX_SERVICE_ACCOUNT_LEN} characters"
        ));
    }
    let expected = "expected format 'serviceAccount' or 'namespace/serviceAccount'";
    match v.matches('/').count() {
        0 => Ok(()),
        1 => match v.split_once('/') {
            Some(("", _)) => Err(format!("{expected}, found empty namespace")),
            Some((_, "")) => Err(format!("{expected}, found empty serviceAccount")),
            _ => Ok(()),
        },
        _ => Err(expected.to_string()),
    }
}

/// `security.CheckWildcardValues` on one value: at most one `*`, only at the start or the end.
fn check_wildcard_value(v: &str) -> Result<(), String> {
    match v.matches('*').count() {
        0 => Ok(()),
        1 if v == "*" || v.starts_with('*') || v.ends_with('*') => Ok(()),
        1 => Err("wildcard is only allowed at the start or end".to_string()),
        _ => Err("at most one wildcard is allowed".to_string()),
    }
}

/// `security.CheckTrustDomainValues` on one value.
fn check_trust_domain(v: &str) -> Result<(), String> {
    check_wildcard_value(v)?;
    if v.contains('/') {
        return Err("trust domain must not contain '/'".to_string());
    }
    Ok(())
}

/// `security.CheckValidPathTemplate` on one path: `{*}` and `{**}` only as whole segments, no
/// template after `{**}`, and with a template every other segment a valid literal.
pub(crate) fn check_path_template(path: &str) -> Result<(), String> {
    let has_template = path.contains("{*}") || path.contains("{**}");
    let mut seen_any = false;
    for glob in path.trim_matches('/').split('/') {
        match glob {
            "{*}" | "{**}" if seen_any => {
                return Err("invalid or unsupported path: {**} is not the last operator".into())
            }
            "{*}" => continue,
            "{**}" => {
                seen_any = true;
                continue;
            }
            _ => {}
        }
        if glob.contains(['{', '}']) {
            return Err(
                "invalid or unsupported path: contains '{' or '}' beyond a supported path template"
                    .into(),
            );
        }
        if has_template && !is_path_literal(glob) {
            return Err(format!(
                "invalid or unsupported path: contains segment {glob:?} with invalid string literal"
            ));
        }
    }
    Ok(())
}

/// The key part of `security.ValidateAttribute`: a known attribute, with `[name]` where needed.
fn check_attribute_key(key: &str) -> Result<(), String> {
    let map_key = |k: &str| {
        let open = k.find('[');
        match open {
            Some(o) if k.ends_with(']') && o > 0 && o + 2 < k.len() => Ok(()),
            _ => Err("bad key: should have format a[b]".to_string()),
        }
    };
    match key {
        k if k.starts_with("request.headers") => map_key(k),
        k if k.starts_with("request.auth.claims") => map_key(k),
        k if k.starts_with("experimental.envoy.filters.") => map_key(k),
        "source.ip"
        | "remote.ip"
        | "destination.ip"
        | "destination.port"
        | "source.namespace"
        | "source.serviceAccount"
        | "source.principal"
        | "source.trustDomain"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Ok(()),
        "destination.namespace" => {
            Err("attribute destination.namespace is replaced by the metadata.namespace".into())
        }
        k if k.starts_with("destination.labels") => Err(format!(
            "attribute {k} is replaced by the workload selector"
        )),
        "destination.name" | "destination.user" => Err(format!(
            "deprecated attribute {key}: only supported in v1alpha1"
        )),
        _ => Err(format!("unknown attribute: {key}")),
    }
}

/// The value part of `security.ValidateAttribute`.
fn check_attribute_value(key: &str, v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("empty value not allowed".to_string());
    }
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => check_ip_value(v),
        "destination.port" => check_port_value(v),
        "source.serviceAccount" => check_service_account(v),
        "source.trustDomain" => check_wildcard_value(v),
        _ => Ok(()),
    }
}

/// `selector`, `targetRef` and `targetRefs`: at most one of them, each well formed.
fn check_selection(
    f: &mut Findings,
    p: &FieldPath,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        f.forbidden(p, "only one of targetRefs or workloadSelector can be set");
    }
    if let Some(sel) = selector {
        let sp = p.field("selector");
        let lp = sp.field("matchLabels");
        for (k, v) in &sel.match_labels {
            let kp = lp.key(k);
            if k.is_empty() {
                f.invalid(
                    &kp,
                    "",
                    format!("empty key is not supported in selector: \"={v}\""),
                );
            }
            if k.contains('*') || v.contains('*') {
                f.invalid(
                    &kp,
                    format!("{k}={v}").as_str(),
                    "wildcard is not supported in selector",
                );
            }
            if v.len() > 63 {
                f.too_long(&kp, "may not be more than 63 bytes");
            }
        }
        if sel.match_labels.is_empty() {
            f.warn(&sp, "workload selector specified without labels");
        }
    }
    if let Some(r) = target_ref {
        check_target_ref(f, &p.field("targetRef"), r);
    }
    let tp = p.field("targetRefs");
    if target_refs.len() > MAX_TARGET_REFS {
        f.too_long(&tp, format!("must have at most {MAX_TARGET_REFS} items"));
    }
    for (i, r) in target_refs.iter().enumerate() {
        check_target_ref(f, &tp.index(i), r);
    }
}

fn check_target_ref(f: &mut Findings, p: &FieldPath, r: &PolicyTargetReference) {
    if r.name.is_empty() {
        f.required(&p.field("name"), "targetRef name must be set");
    }
    if !r.namespace.is_empty() {
        f.forbidden(
            &p.field("namespace"),
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        );
    }
    let group = if r.group == "core" {
        ""
    } else {
        r.group.as_str()
    };
    if !TARGET_KINDS.contains(&(group, r.kind.as_str())) {
        f.not_supported_text(
            &p.field("kind"),
            format!("{}/{}", r.group, r.kind).as_str(),
            "\"/Service\", \"networking.istio.io/ServiceEntry\", \"gateway.networking.k8s.io/Gateway\", \"gateway.networking.k8s.io/GatewayClass\"",
        );
    }
}

/// Istio's `checkDryRunAnnotation`: only an AuthorizationPolicy with action ALLOW or DENY may carry
/// `istio.io/dry-run`, and its value must be a Go boolean. `action` is `None` for other kinds.
fn check_dry_run(f: &mut Findings, meta: &ObjectMeta, action: Option<AuthorizationAction>) {
    let Some(v) = meta.annotations.get(DRY_RUN_ANNOTATION) else {
        return;
    };
    let p = FieldPath::root("metadata")
        .field("annotations")
        .key(DRY_RUN_ANNOTATION);
    match action {
        None => f.forbidden(&p, "unsupported annotation: only an AuthorizationPolicy may be a dry run, please remove the annotation"),
        Some(AuthorizationAction::Allow | AuthorizationAction::Deny) => {
            if parse_go_bool(v).is_none() {
                f.invalid(&p, v.as_str(), "must be a boolean (true or false)");
            }
        }
        Some(a) => f.forbidden(
            &p,
            format!(
                "the annotation {DRY_RUN_ANNOTATION} currently only supports action ALLOW/DENY, found action {}",
                a.as_str()
            ),
        ),
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{resource_from_value, Resource};
    use serde_json::json;

    fn report(kind: &str, spec: serde_json::Value) -> crate::validate::Report {
        let r: Resource = resource_from_value(
            json!({"apiVersion": "security.istio.io/v1", "kind": kind,
                   "metadata": {"name": "a", "namespace": "istio-system"}, "spec": spec}),
            None,
        )
        .expect("decodes");
        crate::validate::validate(&r)
    }

    fn fields(r: &crate::validate::Report) -> Vec<String> {
        r.errors
            .iter()
            .map(|v| format!("{}: {}", v.field, v.message))
            .collect()
    }

    #[test]
    fn each_bad_value_is_named_by_its_own_field_path() {
        let r = report(
            "AuthorizationPolicy",
            json!({"rules": [{
                "from": [{"source": {"ipBlocks": ["10.0.0.0/8", "10.0.0.0/33"], "principals": [""]}}],
                "to": [{"operation": {"ports": ["80", "70000"], "paths": ["/a/{**}/{*}"]}}],
                "when": [{"key": "request.auth.claims[groups]", "values": ["x"]},
                         {"key": "destination.labels[app]", "values": ["x"]},
                         {"key": "remote.ip", "notValues": ["nope"]}]}]}),
        );
        let f = fields(&r);
        let at = |p: &str| f.iter().any(|e| e.starts_with(&format!("{p}: ")));
        for p in [
            "spec.rules[0].from[0].source.ipBlocks[1]",
            "spec.rules[0].from[0].source.principals[0]",
            "spec.rules[0].to[0].operation.ports[1]",
            "spec.rules[0].to[0].operation.paths[0]",
            "spec.rules[0].when[1].key",
            "spec.rules[0].when[2].notValues[0]",
        ] {
            assert!(at(p), "no error at {p}: {f:#?}");
        }
        assert_eq!(f.len(), 6, "{f:#?}");
    }

    #[test]
    fn deny_without_rules_and_custom_without_provider_are_refused() {
        let f = fields(&report("AuthorizationPolicy", json!({"action": "DENY"})));
        assert!(
            f[0].starts_with("spec.rules: Required value: DENY action without `rules`"),
            "{f:?}"
        );
        let f = fields(&report(
            "AuthorizationPolicy",
            json!({"action": "CUSTOM", "rules": [{"from": [{"source": {"principals": ["a"]}}]}]}),
        ));
        assert!(
            f.iter()
                .any(|e| e.starts_with("spec.provider.name: Required value")),
            "{f:?}"
        );
        assert!(f.iter().any(|e| e.starts_with("spec.rules[0].from[0].source.principals: Forbidden: From.Principals is currently not supported with CUSTOM action")), "{f:?}");
        let f = fields(&report(
            "AuthorizationPolicy",
            json!({"provider": {"name": "x"}, "rules": [{}]}),
        ));
        assert!(f[0].starts_with("spec.provider: Forbidden: `provider` must not be with non CUSTOM action, found ALLOW"), "{f:?}");
    }

    #[test]
    fn an_http_only_deny_rule_warns_about_tcp_ports_as_istio_does() {
        let r = report(
            "AuthorizationPolicy",
            json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}),
        );
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(
            r.warnings[0].starts_with(
                "spec.rules[0]: configured AuthorizationPolicy will deny all traffic to TCP ports"
            ),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn jwt_rules_are_checked_field_by_field() {
        let r = report(
            "RequestAuthentication",
            json!({"jwtRules": [
                {"audiences": [""], "fromParams": [""], "timeout": "0.5ms"},
                {"issuer": "i", "jwksUri": "ftp://x", "jwks": "{}"},
                {"issuer": "i", "outputClaimToHeaders": [{"header": "a b", "claim": "sub"}]}]}),
        );
        let f = fields(&r);
        for p in [
            "spec.jwtRules[0].audiences[0]: Invalid value",
            "spec.jwtRules[0].issuer: Required value: issuer or jwksUri must be non-empty string",
            "spec.jwtRules[0].fromParams[0]: Invalid value",
            "spec.jwtRules[0].timeout: Invalid value",
            "spec.jwtRules[1].jwksUri: Invalid value: \"ftp://x\": URI scheme \"ftp\" is not supported",
            "spec.jwtRules[1].jwks: Forbidden: only one of jwks or jwksUri can be set",
            "spec.jwtRules[1].jwks: Invalid value",
            "spec.jwtRules[2].outputClaimToHeaders[0].header: Invalid value",
        ] {
            assert!(f.iter().any(|e| e.starts_with(p)), "no {p}: {f:#?}");
        }
    }

    #[test]
    fn the_dry_run_annotation_is_for_allow_and_deny_policies_only() {
        let with = |kind: &str, action: &str, v: &str| {
            let r: Resource = resource_from_value(
                json!({"apiVersion": "security.istio.io/v1", "kind": kind,
                       "metadata": {"name": "a", "annotations": {"istio.io/dry-run": v}},
                       "spec": if kind == "AuthorizationPolicy" { json!({"action": action, "rules": [{}], "provider": if action == "CUSTOM" { json!({"name": "p"}) } else { json!(null) }}) } else { json!({}) }}),
                None,
            )
            .expect("decodes");
            crate::validate::validate(&r).errors.len()
        };
        assert_eq!(with("AuthorizationPolicy", "DENY", "true"), 0);
        assert_eq!(with("AuthorizationPolicy", "ALLOW", "yes"), 1);
        assert_eq!(with("AuthorizationPolicy", "AUDIT", "true"), 1);
        assert_eq!(with("RequestAuthentication", "", "true"), 1);
    }

    #[test]
    fn path_templates_follow_istio() {
        for ok in [
            "/exact",
            "/prefix/*",
            "*/suffix",
            "*",
            "/path/template/{*}",
            "/{**}/path/template",
            "/a/{*}/b/{**}",
            "/{*}/{*}/{**}",
        ] {
            assert_eq!(check_path_template(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/{**}/{*}",
            "/{**}/a/{**}",
            "/a{*}",
            "/{x}",
            "/a/{*}/b c",
            "/a//{*}",
        ] {
            assert!(check_path_template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn jwks_uri_follows_go_url_parse() {
        assert_eq!(
            parse_jwks_uri("https://example.com/keys"),
            Ok((true, "example.com".into(), 443))
        );
        assert_eq!(
            parse_jwks_uri("HTTP://example.com:8080"),
            Ok((false, "example.com".into(), 8080))
        );
        assert!(parse_jwks_uri("foo.com").is_err());
        assert!(parse_jwks_uri("ftp://foo.com").is_err());
        assert!(parse_jwks_uri("https://foo.com:abc/x").is_err());
        assert!(parse_jwks_uri("hTPp\\\\blah").is_err());
    }

    #[test]
    fn service_accounts() {
        assert!(check_service_account("ns/sa").is_ok());
        assert!(check_service_account("sa").is_ok());
        assert!(check_service_account("ns/").is_err());
        assert!(check_service_account("/sa").is_err());
        assert!(check_service_account("a/b/c").is_err());
        assert!(check_service_account("ns/*").is_err());
    }
}
