//! Which Gateway servers ACME manages (CONTRACT §2 "ACME"): a Gateway annotated
//! `acme.gateway/enabled: "true"` opts in its `HTTPS` servers with mode `SIMPLE` and a
//! `credentialName`, for their exact hosts. Shared by validation (the warnings) and the control
//! plane's ACME client (what to order), so that both read the annotation the same way.

use crate::resource::{Gateway, ServerTlsMode};

/// The annotation that opts a Gateway in.
pub const ACME_ANNOTATION: &str = "acme.gateway/enabled";

/// The annotation that chooses the challenge: `http-01` (the default) or `tls-alpn-01`.
pub const CHALLENGE_ANNOTATION: &str = "acme.gateway/challenge";

/// How the ACME server checks that the gateway serves a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// A token under `/.well-known/acme-challenge/` on the port-80 listener.
    Http01,
    /// A challenge certificate on the HTTPS listener for ALPN `acme-tls/1` (RFC 8737).
    TlsAlpn01,
}

impl Challenge {
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// The Gateway's challenge, and a warning when the annotation names none the gateway answers.
pub fn challenge(g: &Gateway) -> (Challenge, Option<Skipped>) {
    match g.metadata.annotations.get(CHALLENGE_ANNOTATION).map(|v| v.trim().to_ascii_lowercase()) {
        None => (Challenge::Http01, None),
        Some(v) if v == "http-01" => (Challenge::Http01, None),
        Some(v) if v == "tls-alpn-01" => (Challenge::TlsAlpn01, None),
        Some(v) => (
            Challenge::Http01,
            Some((
                format!("metadata.annotations[{CHALLENGE_ANNOTATION}]"),
                format!("{v:?} is not a challenge the gateway answers (http-01, tls-alpn-01): http-01 is used"),
            )),
        ),
    }
}

/// One server whose certificate ACME obtains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeServer {
    /// Index in `spec.servers`.
    pub index: usize,
    /// The server's `name`, or `servers[i]` without one (status conditions and metrics name it).
    pub name: String,
    /// The Secret the certificate is stored in (the Gateway's namespace).
    pub credential_name: String,
    /// The exact DNS names to order, lowercased, in the order given, without duplicates.
    pub hosts: Vec<String>,
}

/// A reason an opted-in server, or one of its hosts, is not managed: `(field path, text)`.
pub type Skipped = (String, String);

/// Whether the Gateway opts in (the annotation's value is `true`, any case).
pub fn opted_in(g: &Gateway) -> bool {
    g.metadata
        .annotations
        .get(ACME_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The servers ACME manages for `g`, and what it leaves out (empty unless the Gateway opts in).
pub fn servers(g: &Gateway) -> (Vec<AcmeServer>, Vec<Skipped>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    if !opted_in(g) {
        return (out, skipped);
    }
    if let (_, Some(w)) = challenge(g) {
        skipped.push(w);
    }
    for (i, s) in g.spec.servers.iter().enumerate() {
        let https = s
            .port
            .as_ref()
            .is_some_and(|p| p.protocol.eq_ignore_ascii_case("HTTPS"));
        if !https {
            continue;
        }
        let p = format!("spec.servers[{i}]");
        let mode = s.tls.as_ref().and_then(|t| t.mode);
        if mode != Some(ServerTlsMode::Simple) {
            skipped.push((
                format!("{p}.tls.mode"),
                format!(
                    "{ACME_ANNOTATION}: only SIMPLE servers get an ACME certificate; this server is not managed"
                ),
            ));
            continue;
        }
        let credential = s
            .tls
            .as_ref()
            .and_then(|t| t.credential_name.clone())
            .filter(|c| !c.is_empty());
        let Some(credential_name) = credential else {
            skipped.push((
                format!("{p}.tls.credentialName"),
                format!("{ACME_ANNOTATION}: required to store the ACME certificate in; this server is not managed"),
            ));
            continue;
        };
        let mut hosts: Vec<String> = Vec::new();
        for (j, h) in s.hosts.iter().enumerate() {
            // `namespace/host`: the namespace part selects VirtualServices, not names.
            let name = h.rsplit('/').next().unwrap_or(h).to_ascii_lowercase();
            if name.contains('*') {
                skipped.push((
                    format!("{p}.hosts[{j}]"),
                    format!("{ACME_ANNOTATION}: {name:?} is a wildcard, which needs the DNS-01 challenge; it gets no ACME certificate"),
                ));
                continue;
            }
            if !name.is_empty() && !hosts.contains(&name) {
                hosts.push(name);
            }
        }
        if hosts.is_empty() {
            continue;
        }
        out.push(AcmeServer {
            index: i,
            name: s
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("servers[{i}]")),
            credential_name,
            hosts,
        });
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(annotated: bool, servers: &str) -> Gateway {
        let ann = if annotated {
            format!(r#","annotations":{{"{ACME_ANNOTATION}":"true"}}"#)
        } else {
            String::new()
        };
        let body = format!(
            r#"{{"apiVersion":"networking.istio.io/v1","kind":"Gateway","metadata":{{"name":"g"{ann}}},"spec":{{"servers":{servers}}}}}"#
        );
        serde_json::from_str(&body).expect("gateway")
    }

    #[test]
    fn exact_hosts_of_simple_servers_with_a_credential() {
        let g = gw(
            true,
            r#"[{"port":{"number":443,"name":"a","protocol":"HTTPS"},"hosts":["ns/A.example.com","*.example.com","b.example.com"],"tls":{"mode":"SIMPLE","credentialName":"c"}},
                {"port":{"number":443,"name":"m","protocol":"HTTPS"},"hosts":["m.example.com"],"tls":{"mode":"MUTUAL","credentialName":"m"}},
                {"port":{"number":443,"name":"n","protocol":"HTTPS"},"hosts":["n.example.com"],"tls":{"mode":"SIMPLE","serverCertificate":"/x","privateKey":"/y"}},
                {"port":{"number":80,"name":"h","protocol":"HTTP"},"hosts":["*"]}]"#,
        );
        let (servers, skipped) = servers(&g);
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].hosts, ["a.example.com", "b.example.com"]);
        assert_eq!(servers[0].credential_name, "c");
        let paths: Vec<&str> = skipped.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.servers[0].hosts[1]",
                "spec.servers[1].tls.mode",
                "spec.servers[2].tls.credentialName"
            ]
        );
        assert!(servers_of_unannotated_is_empty());
    }

    #[test]
    fn validation_warns_naming_the_field() {
        let body = format!(
            r#"{{"apiVersion":"networking.istio.io/v1","kind":"Gateway","metadata":{{"name":"g","annotations":{{"{ACME_ANNOTATION}":"true","{CHALLENGE_ANNOTATION}":"dns-01"}}}},
               "spec":{{"servers":[{{"port":{{"number":443,"name":"a","protocol":"HTTPS"}},"hosts":["*.example.com"],"tls":{{"mode":"SIMPLE","credentialName":"c"}}}},
                                   {{"port":{{"number":443,"name":"b","protocol":"HTTPS"}},"hosts":["b.example.com"],"tls":{{"mode":"SIMPLE","serverCertificate":"/c","privateKey":"/k"}}}}]}}}}"#
        );
        let r = crate::decode_resource(body.as_bytes(), crate::Format::Json, None).expect("decode");
        let report = crate::validate::validate(&r);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        for path in [
            "metadata.annotations[acme.gateway/challenge]",
            "spec.servers[0].hosts[0]",
            "spec.servers[1].tls.credentialName",
        ] {
            assert!(
                report
                    .warnings
                    .iter()
                    .any(|w| w.starts_with(&format!("{path}: "))),
                "{path}: {:?}",
                report.warnings
            );
        }
    }

    fn servers_of_unannotated_is_empty() -> bool {
        let g = gw(
            false,
            r#"[{"port":{"number":443,"name":"a","protocol":"HTTPS"},"hosts":["a.example.com"],"tls":{"mode":"SIMPLE","credentialName":"c"}}]"#,
        );
        let (s, k) = servers(&g);
        s.is_empty() && k.is_empty()
    }
}
