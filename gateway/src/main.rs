//! The `gateway` binary: parses the command line, opens the store and the control plane, and runs
//! the Pingora server (traffic listeners plus the admin API) until SIGTERM drains it, or SIGQUIT
//! hands it over to a new process started with `--upgrade`.

mod accesslog;
mod acme_http;
mod admin_tls;
mod balancer;
mod cli;
mod client_addr;
mod coalesce;
mod edge;
mod explain_cmd;
mod ext_authz;
mod fast_map;
mod grpc;
mod grpc_web_text;
mod hash_policy;
mod header_timer;
mod hygiene;
mod jwks;
mod linger;
mod listeners;
mod metrics;
mod mirror;
mod outbound;
mod peer;
mod policy;
mod proxy;
mod proxy_protocol;
mod request_limits;
mod routing;
mod security;
mod shutdown;
mod tcp;
mod tls;
mod upgrade;
mod upstream;
mod validate_cmd;

use crate::fast_map::FastMap;
use admin::store::{EtcdConfig, EtcdStore};
use admin::{ControlPlane, FileStore, Health};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use clap::Parser;
use cli::{Cli, Command};
use model::ir::Snapshot;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use proxy::{GatewayProxy, ListenerInfo};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// mimalloc's thread-local free lists: the request path allocates and frees dozens of small
/// objects per request (Pingora's headers, futures and pool entries), which glibc's malloc spent
/// about a fifth of the request's instructions on.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The log filter: `GATEWAY_LOG`, else `info`. rustls warns about what a client sent (an IP
/// address as its SNI, which wrk and some health checkers send) on every such handshake: any
/// client could fill the log with them. Its messages are kept to errors unless `GATEWAY_LOG`
/// names rustls itself; the gateway logs and counts failed handshakes on its own.
fn log_filter(spec: Option<String>) -> tracing_subscriber::EnvFilter {
    let spec = spec
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info".to_string());
    let spec = if spec.contains("rustls") {
        spec
    } else {
        format!("{spec},rustls=error")
    };
    tracing_subscriber::EnvFilter::try_new(spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error"))
}

fn main() {
    // Transparent huge pages make every 2 MiB the allocator touches resident: 12 of an idle
    // gateway's 28 MiB. mimalloc is built not to ask for them (`no_thp`); this also keeps a host
    // whose THP setting is `always` from giving them (mimalloc's own allow_thp=0 does the same,
    // but can only be set before the allocator starts).
    let thp = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(log_filter(std::env::var("GATEWAY_LOG").ok()))
        .init();
    if let Err(e) = thp {
        tracing::debug!(error = %e, "transparent huge pages stay on");
    }
    match &cli.command {
        Some(Command::Validate { files }) => std::process::exit(validate_cmd::run(files)),
        Some(Command::Explain {
            files,
            host,
            port,
            method,
            path,
            headers,
            sni,
        }) => {
            let req = explain_cmd::request(*port, host, method, path, headers, sni.as_deref());
            std::process::exit(explain_cmd::run(files, &cli.namespace, &req));
        }
        None => {}
    }
    if let Err(e) = run(cli) {
        eprintln!("gateway: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let token = std::env::var("GATEWAY_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if !cli.admin.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "refusing to serve the admin API on {} (not a loopback address) without GATEWAY_ADMIN_TOKEN; set a token or use --admin 127.0.0.1:PORT",
            cli.admin
        ));
    }
    let store = StoreUrl::parse(&cli.store)?;
    let mesh = Arc::new(read_mesh_config(cli.mesh_config.as_deref())?);
    let admin_tls = match (&cli.admin_tls_cert, &cli.admin_tls_key) {
        (Some(cert), Some(key)) => Some(admin_tls::AdminTls::load(cert, key)?),
        _ => None,
    };
    let upgrade_sock = cli.data_dir.join("upgrade.sock");
    upgrade::check_sock(&upgrade_sock, cli.upgrade)?;
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let drain = cli.drain_timeout;
    let conf = ServerConf {
        threads,
        // Our drain thread exits the process as soon as requests finish; these only bound the
        // worst case so that Pingora's 300 s default never applies.
        grace_period_seconds: Some(drain.as_secs() + 2),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: cli
            .data_dir
            .join("gateway.pid")
            .to_string_lossy()
            .into_owned(),
        upgrade_sock: upgrade_sock.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: cli.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    let phases = server.watch_execution_phase();
    // With --upgrade this waits (Pingora: a few seconds at most) for the running gateway to send
    // its listening sockets on SIGQUIT; it then keeps accepting on them until this process does.
    if cli.upgrade {
        tracing::info!(sock = %upgrade_sock.display(), "waiting for the running gateway's listening sockets: send it SIGQUIT");
    }
    server.bootstrap();
    // While taking over, the store and the admin address are the old process's until it has
    // stopped taking admin requests (see upgrade.rs).
    let take_over_wait = if cli.upgrade {
        upgrade::TAKE_OVER_WAIT
    } else {
        Duration::ZERO
    };
    // Taking over, the admin address is bound as soon as the old process lets it go, before the
    // store is loaded: requests meanwhile wait in the listen queue instead of being refused.
    // Otherwise it is bound once the configuration is loaded (nothing listens before that).
    let early_admin = if cli.upgrade {
        Some(upgrade::bind_admin(cli.admin, take_over_wait)?)
    } else {
        None
    };

    let registry = prometheus::Registry::new();
    let metrics = metrics::Metrics::register(&registry).map_err(|e| e.to_string())?;
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let health = Health::new();

    // The store and the first snapshot are ready before any listener accepts traffic. The runtime
    // lives until the process exits: the etcd client's connections, its watch and the follower
    // are its tasks (the admin API's runtime only sends them requests).
    let control_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("control-plane")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut file_store = None;
    let acme_config = acme_config(&cli)?;
    let challenges = acme_config
        .as_ref()
        .map(|_| Arc::new(admin::acme::Challenges::default()));
    let control = control_runtime.block_on(async {
        let cp = match &store {
            StoreUrl::File => {
                let store =
                    FileStore::open_waiting(&cli.data_dir, take_over_wait).map_err(|e| {
                        format!("cannot open the store in {}: {e}", cli.data_dir.display())
                    })?;
                file_store = Some(store.clone());
                ControlPlane::open(
                    Arc::new(store),
                    registry.clone(),
                    snapshot.clone(),
                    cli.namespace.clone(),
                )
                .await
                .map_err(|e| format!("cannot load the stored configuration: {e}"))?
            }
            StoreUrl::Etcd(config) => {
                let cp = open_etcd(config, &registry, &snapshot, &cli.namespace).await?;
                cp.follow();
                cp
            }
        };
        // --http serves Gateway port 80, --https 443, each --listen its PORT.
        let ports = [80, 443]
            .into_iter()
            .chain(cli.listen.iter().map(|(port, _)| *port))
            .collect();
        cp.serve_ports(ports)
            .await
            .map_err(|e| format!("cannot load the stored configuration: {e}"))?;
        if let Some(b) = &cli.bootstrap {
            let n = cp
                .bootstrap(b)
                .await
                .map_err(|e| format!("--bootstrap {}: {e}", b.display()))?;
            tracing::info!(resources = n, path = %b.display(), "bootstrap applied");
        }
        if let (Some(config), Some(challenges)) = (acme_config, &challenges) {
            let kv: Arc<dyn admin::acme::kv::Kv> = match &store {
                StoreUrl::File => Arc::new(admin::acme::kv::FileKv::open(&cli.data_dir)?),
                StoreUrl::Etcd(c) => Arc::new(
                    admin::acme::kv::EtcdKv::connect(&c.endpoints, &c.prefix)
                        .await
                        .map_err(|e| format!("ACME state in etcd: {e}"))?,
                ),
            };
            admin::acme::start(cp.clone(), kv, config, challenges.clone())?;
        }
        Ok::<_, String>(cp)
    })?;

    let admin_listener = match early_admin {
        Some(l) => l,
        None => upgrade::bind_admin(cli.admin, Duration::ZERO)?,
    };
    admin_listener
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;

    let mut listeners: FastMap<u16, ListenerInfo> = FastMap::default();
    let plain: Vec<SocketAddr> = vec![cli.http];
    listeners.insert(
        cli.http.port(),
        ListenerInfo {
            gateway_port: 80,
            tls: false,
            connections: None,
            open_connections: Some(metrics.open_connections.with_label_values(&["http"])),
        },
    );
    // The port listeners (--https and every --listen) share one TLS acceptor, whose connections
    // remember their SNI.
    let tls_connections = Arc::new(tls::Connections::default());
    let port_listeners = listeners::table(
        cli.https,
        &cli.listen,
        &mut listeners,
        &tls_connections,
        &metrics,
    )?;

    let edge_listeners: Vec<(u16, String)> = plain
        .iter()
        .map(|a| (a.port(), "http".to_string()))
        .chain(port_listeners.iter().map(|(_, l, a)| (a.port(), l.clone())))
        .collect();
    let edge = Arc::new(
        edge::Edge::new(
            edge::Settings {
                trusted_hops: mesh.gateway_topology.num_trusted_proxies,
                proxy_protocol: mesh.gateway_topology.proxy_protocol,
                header_timeout: cli.request_headers_timeout,
                max_connections: cli.max_connections,
                max_body_bytes: cli.max_request_body_bytes,
                body_timeout: cli.request_body_timeout,
                body_min_rate: cli.request_body_min_rate,
            },
            &edge_listeners,
            &registry,
        )
        .map_err(|e| e.to_string())?,
    );

    let inflight = Arc::new(AtomicUsize::new(0));
    let balancers = Arc::new(balancer::Balancers::new());
    registry
        .register(Box::new(
            metrics::EjectionCollector::new(balancers.clone()).map_err(|e| e.to_string())?,
        ))
        .map_err(|e| e.to_string())?;
    registry
        .register(Box::new(
            metrics::CertExpiryCollector::new(snapshot.clone()).map_err(|e| e.to_string())?,
        ))
        .map_err(|e| e.to_string())?;
    let access_log_dropped = metrics.access_log_dropped.clone();
    let upstreams = Arc::new(upstream::Upstreams::new());
    let mirrors = mirror::Mirrors::new(
        upstreams.clone(),
        balancers.clone(),
        metrics.mirror_requests.clone(),
    );
    let security = Arc::new(security::Security {
        jwks: jwks::JwksCache::new(metrics.security.jwks_fetches.clone()),
        ext_authz: ext_authz::ExtAuthz::new(
            ext_authz_providers(&mesh),
            upstreams.clone(),
            metrics.security.clone(),
        ),
        metrics: metrics.security.clone(),
    });
    let gateway = GatewayProxy {
        security,
        health: health.clone(),
        mesh: mesh.clone(),
        snapshot: snapshot.clone(),
        upstreams,
        balancers: balancers.clone(),
        metrics,
        mirrors,
        listeners: Arc::new(listeners),
        inflight: inflight.clone(),
        access_log: accesslog::AccessLogger::start(cli.access_log, access_log_dropped),
        acme: challenges.clone(),
        edge: edge.clone(),
    };
    // The same proxy behind the port listeners (their own Pingora service: a listener's
    // application is fixed, and this one decides per connection what it is).
    let gateway_ports = GatewayProxy {
        health: gateway.health.clone(),
        mesh: gateway.mesh.clone(),
        snapshot: gateway.snapshot.clone(),
        upstreams: gateway.upstreams.clone(),
        balancers: gateway.balancers.clone(),
        metrics: gateway.metrics.clone(),
        listeners: gateway.listeners.clone(),
        inflight: gateway.inflight.clone(),
        access_log: gateway.access_log.clone(),
        mirrors: gateway.mirrors.clone(),
        acme: gateway.acme.clone(),
        security: gateway.security.clone(),
        edge: gateway.edge.clone(),
    };
    let mut port_http = pingora::proxy::http_proxy(&server.configuration, gateway_ports);
    let mut opts = pingora::apps::HttpServerOptions::default();
    opts.h2c = true;
    // Envoy's idle_timeout: an HTTP/2 connection without streams for an hour is closed.
    opts.h2_idle_timeout = Some(Duration::from_secs(3600));
    port_http.server_options = Some(opts);
    let shared = listeners::Shared {
        http: Arc::new(port_http),
        l4: Arc::new(tcp::L4Proxy::new(
            gateway.upstreams.clone(),
            gateway.balancers.clone(),
            gateway.metrics.clone(),
            gateway.access_log.clone(),
            gateway.inflight.clone(),
        )),
        acceptor: Arc::new(tls::TlsAcceptor::new(tls_connections, challenges)?),
        snapshot: snapshot.clone(),
        metrics: gateway.metrics.clone(),
        edge: edge.clone(),
    };
    let tls_service = listeners::service(&shared, &port_listeners);
    let mut plain_http = pingora::proxy::http_proxy(&server.configuration, gateway);
    let mut opts = pingora::apps::HttpServerOptions::default();
    opts.h2c = true;
    // Envoy's idle_timeout: an HTTP/2 connection without streams for an hour is closed.
    opts.h2_idle_timeout = Some(Duration::from_secs(3600));
    plain_http.server_options = Some(opts);
    let mut proxy_service = pingora::services::listening::Service::new(
        "http".to_string(),
        edge::PlainApp {
            http: Arc::new(plain_http),
            edge,
        },
    );
    for addr in &plain {
        proxy_service.add_tcp(&addr.to_string());
    }

    let admin_inflight = Arc::new(AtomicUsize::new(0));
    let router = upgrade::count_requests(
        admin::router(control, health.clone(), token),
        admin_inflight.clone(),
    );
    let (admin_stop, admin_stop_rx) = tokio::sync::watch::channel(false);
    let mut admin_service = background_service(
        "admin",
        AdminService {
            listener: Mutex::new(Some(admin_listener)),
            router,
            tls: admin_tls,
            health: health.clone(),
            probe: plain
                .iter()
                .copied()
                .chain(port_listeners.iter().map(|(_, _, a)| *a))
                .collect(),
            stop: admin_stop_rx,
        },
    );
    admin_service.threads = Some(1);

    server.add_service(proxy_service);
    server.add_service(tls_service);
    server.add_service(admin_service);
    tracing::info!(http = %cli.http, https = %cli.https, admin = %cli.admin, namespace = %cli.namespace, threads, "gateway starting");
    server.run(RunArgs {
        shutdown_signal: Box::new(shutdown::Drain {
            health,
            inflight,
            timeout: drain,
            upgrade_sock: upgrade_sock.clone(),
            phases: Mutex::new(Some(phases)),
            hand_over: Arc::new(upgrade::HandOver {
                upgrade_sock,
                admin_stop,
                admin_inflight,
                store: file_store,
            }),
        }),
    });
    Ok(())
}

/// The axum admin API as a Pingora background service. It keeps serving through a drain so that
/// `/readyz` answers 503 until the process exits, unless it is handed over to a new process.
struct AdminService {
    listener: Mutex<Option<std::net::TcpListener>>,
    router: axum::Router,
    tls: Option<admin_tls::AdminTls>,
    health: Arc<Health>,
    probe: Vec<SocketAddr>,
    /// Turns true when the admin address goes to a new process (binary upgrade).
    stop: tokio::sync::watch::Receiver<bool>,
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let taken = self.listener.lock().ok().and_then(|mut l| l.take());
        let Some(std_listener) = taken else {
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener unusable");
                return;
            }
        };
        let health = self.health.clone();
        let probe = self.probe.clone();
        tokio::spawn(async move {
            // Ready once every traffic listener accepts connections.
            for addr in probe {
                let target = if addr.ip().is_unspecified() {
                    SocketAddr::from(([127, 0, 0, 1], addr.port()))
                } else {
                    addr
                };
                while tokio::net::TcpStream::connect(target).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            health.set_ready(true);
        });
        // Closing lingers, so that an answer made before reading the body (a 413) reaches a
        // client that is still uploading.
        let listener =
            admin::linger::LingeringListener::new(listener, admin::linger::Linger::DEFAULT);
        let mut stop = self.stop.clone();
        let stopped = async move {
            // The sender goes away with the shutdown watcher on SIGTERM: that is no hand-over.
            if stop.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let served = match &self.tls {
            Some(tls) => {
                let listener = admin_tls::TlsListener::new(listener, tls);
                axum::serve(listener, self.router.clone())
                    .with_graceful_shutdown(stopped)
                    .await
            }
            None => {
                axum::serve(listener, self.router.clone())
                    .with_graceful_shutdown(stopped)
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "admin server failed");
        }
    }
}

/// The `--acme-*` flags, checked. `GATEWAY_ACME_TEST_RENEW_AFTER` (a duration, tests only)
/// renews a certificate once it is that old instead of at two thirds of its lifetime.
fn acme_config(cli: &Cli) -> Result<Option<admin::acme::AcmeConfig>, String> {
    use base64::Engine as _;
    let Some(directory) = &cli.acme_directory else {
        return Ok(None);
    };
    if !directory.starts_with("https://") {
        return Err(format!(
            "--acme-directory {directory:?}: expected an https:// URL (RFC 8555 requires TLS)"
        ));
    }
    let mut config = admin::acme::AcmeConfig::new(directory.clone());
    config.email = cli.acme_email.iter().cloned().collect();
    if let Some(ca) = &cli.acme_ca_file {
        std::fs::metadata(ca).map_err(|e| format!("--acme-ca-file {}: {e}", ca.display()))?;
        config.ca_file = Some(ca.clone());
    }
    if let (Some(kid), Some(key)) = (&cli.acme_eab_kid, &cli.acme_eab_hmac_key) {
        let key = key.trim().trim_end_matches('=');
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(key)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(key))
            .map_err(|e| format!("--acme-eab-hmac-key: not base64url: {e}"))?;
        config.eab = Some((kid.clone(), decoded));
    }
    if let Ok(v) = std::env::var("GATEWAY_ACME_TEST_RENEW_AFTER") {
        let d = model::parse_duration(&v)
            .map_err(|e| format!("GATEWAY_ACME_TEST_RENEW_AFTER {v:?}: {e}"))?;
        tracing::warn!(renew_after = ?d, "GATEWAY_ACME_TEST_RENEW_AFTER is set: ACME certificates are renewed early (tests only)");
        config.renew_after = Some(d);
    }
    Ok(Some(config))
}

/// The HTTP authorizers of the mesh config, with a warning for each provider that is not served.
fn ext_authz_providers(mesh: &model::mesh::MeshConfig) -> Vec<ext_authz::Provider> {
    let (providers, warnings) = ext_authz::Provider::from_mesh(mesh);
    for w in warnings {
        tracing::warn!("mesh config: {w}");
    }
    providers
}

/// `--mesh-config`: the Istio defaults without one; fields the gateway does not use are named in
/// a warning, a field it uses but cannot read stops the start.
fn read_mesh_config(path: Option<&std::path::Path>) -> Result<model::mesh::MeshConfig, String> {
    let Some(path) = path else {
        return Ok(model::mesh::MeshConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--mesh-config {}: {e}", path.display()))?;
    let parsed =
        model::mesh::parse(&text).map_err(|e| format!("--mesh-config {}: {e}", path.display()))?;
    for w in &parsed.warnings {
        tracing::warn!(path = %path.display(), "{w}");
    }
    Ok(parsed.config)
}

/// The parsed `--store`.
enum StoreUrl {
    File,
    Etcd(EtcdConfig),
}

impl StoreUrl {
    fn parse(s: &str) -> Result<StoreUrl, String> {
        if s == "file" {
            Ok(StoreUrl::File)
        } else if s.starts_with("etcd://") {
            EtcdConfig::parse(s)
                .map(StoreUrl::Etcd)
                .map_err(|e| format!("--store {e}"))
        } else {
            Err(format!(
                "--store {s:?}: expected `file` or etcd://HOST:PORT[,HOST:PORT…][/PREFIX]"
            ))
        }
    }
}

/// Connects to etcd and loads the configuration, waiting (with backoff, saying so in the log)
/// while etcd is unreachable: the gateway binds nothing, and so is not ready, until it has the
/// configuration every replica serves. Anything but unavailability (a corrupt object) is fatal.
async fn open_etcd(
    config: &EtcdConfig,
    registry: &prometheus::Registry,
    snapshot: &Arc<ArcSwap<Snapshot>>,
    gateway_namespace: &str,
) -> Result<Arc<ControlPlane>, String> {
    let endpoints = config.endpoints.join(",");
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let store = EtcdStore::connect(config).await?;
            ControlPlane::open(
                Arc::new(store),
                registry.clone(),
                snapshot.clone(),
                gateway_namespace.to_string(),
            )
            .await
        };
        match attempt.await {
            Ok(cp) => {
                tracing::info!(endpoints, prefix = %config.prefix, revision = cp.generation(), "configuration loaded from etcd");
                return Ok(cp);
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!(endpoints, error = %e, retry_in = ?backoff, "waiting for etcd");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(format!(
                    "cannot load the configuration from etcd at {endpoints}{}: {e}",
                    config.prefix
                ))
            }
        }
    }
}
