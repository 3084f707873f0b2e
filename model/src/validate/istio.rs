//! Istio's own value rules where they differ from Kubernetes' (used by the Gateway, DestinationRule,
//! ServiceEntry and WorkloadEntry checks): labels of either case, port protocols, `unix://` paths,
//! cipher suite names and the topology labels of locality failover.

use super::common::check_unix_address;

/// Longest DNS label.
const LABEL_MAX: usize = 63;

/// Istio's `IsDNS1123Label`: letters of either case, digits and '-', starting and ending with a
/// letter or digit, at most 63 characters. Port names, subset names and the namespace part of a
/// Gateway host use it; Kubernetes' own labels are lowercase.
pub(crate) fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    s.len() <= LABEL_MAX
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// Istio's `ValidateUnixAddress` on a whole `unix://` address: an abstract name (`unix://@name`)
/// or an absolute path to a file, so not ending in '/' (a directory). An empty abstract name, which
/// Istio lets through, is refused too.
pub(crate) fn unix_address(address: &str) -> Result<(), String> {
    check_unix_address(address)?;
    if address.ends_with('/') {
        return Err(
            "a unix socket path must name a file, not a directory (no trailing '/')".to_string(),
        );
    }
    Ok(())
}

/// A port protocol as Istio parses it (case-insensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Tcp,
    Udp,
    Grpc,
    GrpcWeb,
    Http,
    HttpProxy,
    Http2,
    Https,
    Tls,
    Mongo,
    Redis,
    Mysql,
}

/// The protocols Istio knows, as they are usually written.
pub(crate) const PROTOCOL_NAMES: &[&str] = &[
    "HTTP",
    "HTTPS",
    "GRPC",
    "GRPC-WEB",
    "HTTP2",
    "HTTP_PROXY",
    "MONGO",
    "MYSQL",
    "REDIS",
    "TCP",
    "TLS",
    "UDP",
];

impl Protocol {
    /// Istio's `protocol.Parse`; `None` is its `UnsupportedProtocol` (which includes "").
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => return None,
        })
    }

    /// HTTP/2 as the transport (Istio's `IsHTTP2`): HTTP2, GRPC, GRPC-WEB.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// HTTP as the transport: HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC-WEB.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    /// On top of TLS: HTTPS and TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// Plain TCP as the transport: TCP, HTTPS, TLS, MONGO, REDIS, MYSQL.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp
                | Protocol::Https
                | Protocol::Tls
                | Protocol::Mongo
                | Protocol::Redis
                | Protocol::Mysql
        )
    }
}

/// Istio's `IsValidCipherSuite`: a known name, `ALL`, empty, or an OpenSSL-style expression that
/// starts with an operator (`-`, `+`, `!`), which Istio passes on unparsed.
pub(crate) fn is_valid_cipher_suite(cs: &str, known: &[&str]) -> bool {
    match cs.chars().next() {
        None => true,
        Some(_) if cs == "ALL" => true,
        Some(c) if !c.is_alphanumeric() => true,
        Some(_) => known.contains(&cs),
    }
}

/// Whether a cipher suite entry is an operator expression (`-ECDHE-RSA-AES128-SHA`).
pub(crate) fn is_cipher_expression(cs: &str) -> bool {
    cs.chars().next().is_some_and(|c| !c.is_alphanumeric())
}

/// The topology labels a locality-aware failover already orders by (region, zone, subzone).
pub(crate) const TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_either_case() {
        assert!(is_label("Henry"));
        assert!(is_label("7777"));
        assert!(is_label("a-B"));
        assert!(!is_label(""));
        assert!(!is_label("-a"));
        assert!(!is_label("a_b"));
        assert!(!is_label(&"a".repeat(64)));
    }

    #[test]
    fn unix_addresses() {
        assert!(unix_address("unix://@foobar").is_ok());
        assert!(unix_address("unix:///path/to/socket").is_ok());
        assert!(unix_address("unix://").is_err());
        assert!(unix_address("unix://@").is_err());
        assert!(unix_address("unix://./relative/path.sock").is_err());
        assert!(unix_address("unix:///dir/").is_err());
    }

    #[test]
    fn protocols() {
        assert_eq!(Protocol::parse("grpc-Web"), Some(Protocol::GrpcWeb));
        assert_eq!(Protocol::parse(""), None);
        assert_eq!(Protocol::parse("kafka"), None);
        assert!(Protocol::Https.is_tcp() && Protocol::Https.is_tls() && !Protocol::Https.is_http());
        assert!(Protocol::HttpProxy.is_http());
        for name in PROTOCOL_NAMES {
            assert!(Protocol::parse(name).is_some(), "{name}");
        }
    }

    #[test]
    fn cipher_suites() {
        let known = ["ECDHE-ECDSA-AES128-SHA"];
        assert!(is_valid_cipher_suite("ECDHE-ECDSA-AES128-SHA", &known));
        assert!(is_valid_cipher_suite("-ECDHE-ECDSA-AES128-SHA", &known));
        assert!(is_valid_cipher_suite("ALL", &known));
        assert!(is_valid_cipher_suite("", &known));
        assert!(!is_valid_cipher_suite("not-a-cipher-suite", &known));
        assert!(is_cipher_expression("!aNULL"));
        assert!(!is_cipher_expression("ALL"));
    }
}
