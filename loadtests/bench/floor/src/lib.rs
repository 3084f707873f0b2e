//! What the two floor proxies share: their settings, read from the environment, and the Pingora server.
//!
//! `BENCH_UPSTREAM` (`HOST:PORT`, required): where every request goes; `BENCH_HTTP_PORT` (required):
//! the port they listen on, on 127.0.0.1; `BENCH_WORKERS` (default 1): Pingora worker threads.
//! A missing or malformed variable ends the program with a message and exit status 2.

use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use std::net::{SocketAddr, ToSocketAddrs};

/// Settings of a floor proxy.
#[derive(Debug)]
pub struct Settings {
    /// The upstream every request is forwarded to.
    pub upstream: SocketAddr,
    /// The listening address, `127.0.0.1:BENCH_HTTP_PORT`.
    pub listen: String,
    /// Pingora worker threads.
    pub workers: usize,
}

impl Settings {
    /// The settings from the environment, or a message on stderr and exit status 2.
    pub fn from_env_or_exit(program: &str) -> Self {
        match Self::from_env(|name| std::env::var(name).ok()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{program}: {e}");
                std::process::exit(2);
            }
        }
    }

    /// The settings from `var` (the environment, in `from_env_or_exit`).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let up =
            var("BENCH_UPSTREAM").ok_or("BENCH_UPSTREAM (HOST:PORT of the upstream) is not set")?;
        let upstream = up
            .to_socket_addrs()
            .map_err(|e| format!("BENCH_UPSTREAM={up:?} is not HOST:PORT: {e}"))?
            .next()
            .ok_or_else(|| format!("BENCH_UPSTREAM={up:?} resolves to no address"))?;
        let port =
            var("BENCH_HTTP_PORT").ok_or("BENCH_HTTP_PORT (the port to listen on) is not set")?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("BENCH_HTTP_PORT={port:?} is not a port number"))?;
        let workers = match var("BENCH_WORKERS") {
            None => 1,
            Some(w) => match w.parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => return Err(format!("BENCH_WORKERS={w:?} is not a number >= 1")),
            },
        };
        Ok(Settings {
            upstream,
            listen: format!("127.0.0.1:{port}"),
            workers,
        })
    }
}

/// A bootstrapped Pingora server with `workers` threads per service that stops at once on SIGTERM.
pub fn server(workers: usize) -> Server {
    let conf = ServerConf {
        threads: workers,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn reads_the_three_variables() {
        let s = Settings::from_env(env(&[
            ("BENCH_UPSTREAM", "127.0.0.1:8000"),
            ("BENCH_HTTP_PORT", "18099"),
            ("BENCH_WORKERS", "2"),
        ]))
        .expect("valid settings");
        assert_eq!(s.upstream, "127.0.0.1:8000".parse().expect("an address"));
        assert_eq!(s.listen, "127.0.0.1:18099");
        assert_eq!(s.workers, 2);
    }

    #[test]
    fn workers_default_to_one() {
        let s = Settings::from_env(env(&[
            ("BENCH_UPSTREAM", "127.0.0.1:8000"),
            ("BENCH_HTTP_PORT", "1"),
        ]))
        .expect("valid settings");
        assert_eq!(s.workers, 1);
    }

    #[test]
    fn says_what_is_wrong() {
        let e = Settings::from_env(env(&[("BENCH_HTTP_PORT", "1")])).expect_err("an error");
        assert!(e.contains("BENCH_UPSTREAM"), "{e}");
        let e = Settings::from_env(env(&[
            ("BENCH_UPSTREAM", "nowhere"),
            ("BENCH_HTTP_PORT", "1"),
        ]))
        .expect_err("an error");
        assert!(e.contains("HOST:PORT"), "{e}");
        let e =
            Settings::from_env(env(&[("BENCH_UPSTREAM", "127.0.0.1:1")])).expect_err("an error");
        assert!(e.contains("BENCH_HTTP_PORT"), "{e}");
        let e = Settings::from_env(env(&[
            ("BENCH_UPSTREAM", "127.0.0.1:1"),
            ("BENCH_HTTP_PORT", "1"),
            ("BENCH_WORKERS", "0"),
        ]))
        .expect_err("an error");
        assert!(e.contains("BENCH_WORKERS"), "{e}");
    }
}
