//! Startup configuration: the command line of CONTRACT §1, every flag also read from its
//! `GATEWAY_*` environment variable. Runtime resources never come from here.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Istio-style ingress gateway on Pingora: Gateway, VirtualService, DestinationRule and ServiceEntry without Kubernetes."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Plaintext listener; serves Gateway servers whose port.number is 80.
    #[arg(long, env = "GATEWAY_HTTP", default_value = "0.0.0.0:8080")]
    pub http: SocketAddr,
    /// TLS listener; serves Gateway servers whose port.number is 443.
    #[arg(long, env = "GATEWAY_HTTPS", default_value = "0.0.0.0:8443")]
    pub https: SocketAddr,
    /// One more listener, PORT=ADDR, serving Gateway servers whose port.number is PORT (repeatable).
    #[arg(long = "listen", env = "GATEWAY_LISTEN", value_delimiter = ',', value_parser = parse_listen)]
    pub listen: Vec<(u16, SocketAddr)>,
    /// The gateway's own namespace, as an Istio ingress gateway pod has one: a credentialName is
    /// looked up in its resource's namespace, then here.
    #[arg(long, env = "GATEWAY_NAMESPACE", default_value = model::translate::DEFAULT_GATEWAY_NAMESPACE, value_parser = parse_namespace)]
    pub namespace: String,
    /// Istio MeshConfig (YAML: the `mesh` key of Istio's `istio` ConfigMap, or that ConfigMap):
    /// `extensionProviders[].envoyExtAuthzHttp` and `defaultConfig.gatewayTopology` are read.
    #[arg(long, env = "GATEWAY_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    /// Admin REST API, /metrics, /healthz, /readyz.
    #[arg(long, env = "GATEWAY_ADMIN", default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// Serve the admin API over HTTPS with this PEM certificate (chain); needs --admin-tls-key.
    #[arg(long, env = "GATEWAY_ADMIN_TLS_CERT", requires = "admin_tls_key")]
    pub admin_tls_cert: Option<PathBuf>,
    /// The PEM private key of --admin-tls-cert.
    #[arg(long, env = "GATEWAY_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
    pub admin_tls_key: Option<PathBuf>,
    /// Folder of the embedded file store.
    #[arg(long, env = "GATEWAY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `file` (in --data-dir) or `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`.
    #[arg(long, env = "GATEWAY_STORE", default_value = "file")]
    pub store: String,
    /// A file or folder of JSON/YAML manifests applied (create or replace) at start.
    #[arg(long, env = "GATEWAY_BOOTSTRAP")]
    pub bootstrap: Option<PathBuf>,
    /// Worker threads serving traffic (default: number of CPUs).
    #[arg(long, env = "GATEWAY_THREADS")]
    pub threads: Option<usize>,
    /// Access log on stdout: json, text (Envoy's default format) or off.
    #[arg(long, env = "GATEWAY_ACCESS_LOG", value_enum, default_value = "json")]
    pub access_log: AccessLog,
    /// After SIGTERM (or SIGQUIT), how long requests in flight may take to finish.
    #[arg(long, env = "GATEWAY_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: std::time::Duration,
    /// Turn on ACME (RFC 8555) with this directory URL: certificates for the HTTPS servers of
    /// Gateways annotated `acme.gateway/enabled: "true"`.
    #[arg(long, env = "GATEWAY_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,
    /// The ACME account's contact e-mail.
    #[arg(
        long,
        env = "GATEWAY_ACME_EMAIL",
        value_name = "EMAIL",
        requires = "acme_directory"
    )]
    pub acme_email: Option<String>,
    /// PEM CA the ACME server's own TLS is checked with (a private or test CA); default: the
    /// system's trust store.
    #[arg(
        long,
        env = "GATEWAY_ACME_CA_FILE",
        value_name = "FILE",
        requires = "acme_directory"
    )]
    pub acme_ca_file: Option<PathBuf>,
    /// External Account Binding key id (with --acme-eab-hmac-key).
    #[arg(long, env = "GATEWAY_ACME_EAB_KID", value_name = "ID", requires_all = ["acme_directory", "acme_eab_hmac_key"])]
    pub acme_eab_kid: Option<String>,
    /// External Account Binding HMAC key, base64url as CAs hand it out (with --acme-eab-kid).
    #[arg(
        long,
        env = "GATEWAY_ACME_EAB_HMAC_KEY",
        value_name = "KEY",
        requires = "acme_eab_kid"
    )]
    pub acme_eab_hmac_key: Option<String>,
    /// Most connections open at once on each traffic listener; a new one over it is closed at
    /// accept. 0: no limit (Istio's gateway leaves Envoy's at 2^31-1).
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// How long a request's header may take from its first byte (slowloris); the connection is
    /// then closed. 0s: no limit.
    #[arg(long, env = "GATEWAY_REQUEST_HEADERS_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_headers_timeout: std::time::Duration,
    /// How long a request body may take, plus one second per --request-body-min-rate bytes
    /// received (slow POST); the request then ends with 408. 0s: no limit.
    #[arg(long, env = "GATEWAY_REQUEST_BODY_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub request_body_timeout: std::time::Duration,
    /// Bytes per second of request body that extend --request-body-timeout by one second.
    #[arg(long, env = "GATEWAY_REQUEST_BODY_MIN_RATE", default_value_t = 500)]
    pub request_body_min_rate: u64,
    /// Largest request body, in bytes: over it the answer is 413 (at once when Content-Length
    /// says so). 0: no limit (Envoy streams bodies of any size).
    #[arg(long, env = "GATEWAY_MAX_REQUEST_BODY_BYTES", default_value_t = 0)]
    pub max_request_body_bytes: u64,
    /// Take over from the gateway running on the same --data-dir: wait for its listening sockets
    /// (sent when it gets SIGQUIT), then serve them while it drains. Same listener flags as the old.
    #[arg(long, env = "GATEWAY_UPGRADE", value_parser = clap::builder::BoolishValueParser::new())]
    pub upgrade: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests offline: exit 0 when valid, 1 when not (errors on stderr with field paths).
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print, as JSON, what the gateway would do with a request under the configuration these
    /// manifests make (the answer of POST /debug/explain), without running it.
    Explain {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The Host header (may carry a port).
        #[arg(long)]
        host: String,
        /// The Gateway port the request arrives on (80 plain HTTP, 443 TLS).
        #[arg(long, default_value_t = 80)]
        port: u16,
        #[arg(long, default_value = "GET")]
        method: String,
        /// Path with an optional ?query.
        #[arg(long, default_value = "/")]
        path: String,
        /// A request header NAME=VALUE (repeatable; repeated names give several values).
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// The TLS server name the client sends (port 443).
        #[arg(long)]
        sni: Option<String>,
    },
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    Ok((name.trim().to_ascii_lowercase(), value.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessLog {
    Json,
    Text,
    Off,
}

fn parse_listen(s: &str) -> Result<(u16, SocketAddr), String> {
    let (port, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected PORT=ADDR, got {s:?}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port {port:?} in {s:?}"))?;
    if port == 0 {
        return Err(format!("port must be 1..65535 in {s:?}"));
    }
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("invalid address {addr:?} in {s:?}"))?;
    Ok((port, addr))
}

/// A namespace name: an RFC 1123 label, as Kubernetes (and the admin API) require.
fn parse_namespace(s: &str) -> Result<String, String> {
    match admin::dns_label_problem(s) {
        None => Ok(s.to_string()),
        Some(why) => Err(format!("{s:?} is not a namespace name: {why}")),
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    model::parse_duration(s).map_err(|e| e.to_string())
}
