//! Access log: one line per request on stdout, as JSON or in Envoy's default text format, with
//! Envoy's fields plus the route id and the TLS SNI. Lines are formatted on the request path and
//! written by a dedicated thread; when the writer falls behind, lines are dropped and counted rather
//! than slowing requests down.

use crate::cli::AccessLog as Format;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::SystemTime;

/// How many formatted lines may wait for the writer.
const QUEUE: usize = 16 * 1024;

/// One request's log fields.
pub struct Entry<'a> {
    pub start: SystemTime,
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub flags: &'a str,
    pub bytes_received: usize,
    pub bytes_sent: usize,
    pub duration_ms: u128,
    pub upstream_service_time_ms: Option<u128>,
    pub x_forwarded_for: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub request_id: &'a str,
    pub authority: &'a str,
    pub upstream_host: Option<String>,
    pub route: &'a str,
    pub sni: Option<&'a str>,
    /// The client certificate's identity (mTLS), Envoy's `%DOWNSTREAM_PEER_URI_SAN%`.
    pub peer_principal: Option<&'a str>,
    /// `iss/sub` of the verified JWT.
    pub request_principal: Option<&'a str>,
    /// The AuthorizationPolicy that decided (`ap/<ns>/<name>`).
    pub authz_policy: Option<&'a str>,
    /// The client address (`%DOWNSTREAM_REMOTE_ADDRESS%`): the peer as `ip:port`, or the client
    /// that trusted proxies named in `X-Forwarded-For` as `ip:0`, as Envoy logs it.
    pub downstream_remote_address: Option<&'a str>,
}

/// The sending side; cheap to clone into every worker.
#[derive(Clone)]
pub struct AccessLogger {
    format: Format,
    tx: Option<SyncSender<String>>,
    /// `gateway_access_log_dropped_total`.
    dropped: prometheus::IntCounter,
}

impl AccessLogger {
    /// Starts the writer thread (none for `off`).
    pub fn start(format: Format, dropped: prometheus::IntCounter) -> AccessLogger {
        if format == Format::Off {
            return AccessLogger {
                format,
                tx: None,
                dropped,
            };
        }
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the access log writer; access logs are off");
            return AccessLogger {
                format: Format::Off,
                tx: None,
                dropped,
            };
        }
        AccessLogger {
            format,
            tx: Some(tx),
            dropped,
        }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Formats and queues one line; never blocks.
    pub fn log(&self, e: &Entry<'_>) {
        let Some(tx) = &self.tx else {
            return;
        };
        let line = match self.format {
            Format::Json => json_line(e),
            Format::Text => text_line(e),
            Format::Off => return,
        };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

fn write_loop(rx: Receiver<String>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        // Batch whatever is already queued, then flush so lines are not held back.
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
}

/// RFC 3339 UTC with milliseconds, as Envoy's `%START_TIME%`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn json_line(e: &Entry<'_>) -> String {
    let v = serde_json::json!({
        "start_time": rfc3339_millis(e.start),
        "method": e.method,
        "path": e.path,
        "protocol": e.protocol,
        "response_code": e.status,
        "response_flags": e.flags,
        "bytes_received": e.bytes_received,
        "bytes_sent": e.bytes_sent,
        "duration": e.duration_ms,
        "upstream_service_time": e.upstream_service_time_ms,
        "x_forwarded_for": e.x_forwarded_for,
        "user_agent": e.user_agent,
        "request_id": e.request_id,
        "authority": e.authority,
        "upstream_host": e.upstream_host,
        "route_name": e.route,
        "requested_server_name": e.sni,
        "downstream_peer_principal": e.peer_principal,
        "request_principal": e.request_principal,
        "authz_policy": e.authz_policy,
        "downstream_remote_address": e.downstream_remote_address,
    });
    let mut s = v.to_string();
    s.push('\n');
    s
}

fn dash(v: Option<&str>) -> &str {
    match v {
        Some(s) if !s.is_empty() => s,
        _ => "-",
    }
}

/// Envoy's default format, with the route id, SNI, peer principal, request principal, deciding
/// policy and the client address appended.
fn text_line(e: &Entry<'_>) -> String {
    let mut s = String::with_capacity(256);
    let ust = e
        .upstream_service_time_ms
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".to_string());
    let _ = writeln!(
        s,
        "[{}] \"{} {} {}\" {} {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" \"{}\"",
        rfc3339_millis(e.start),
        e.method,
        e.path,
        e.protocol,
        e.status,
        dash(Some(e.flags)),
        e.bytes_received,
        e.bytes_sent,
        e.duration_ms,
        ust,
        dash(e.x_forwarded_for),
        dash(e.user_agent),
        dash(Some(e.request_id)),
        dash(Some(e.authority)),
        dash(e.upstream_host.as_deref()),
        dash(Some(e.route)),
        dash(e.sni),
        dash(e.peer_principal),
        dash(e.request_principal),
        dash(e.authz_policy),
        dash(e.downstream_remote_address),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry() -> Entry<'static> {
        Entry {
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_299_995_123),
            method: "GET",
            path: "/a?b=1",
            protocol: "HTTP/1.1",
            status: 404,
            flags: "NR",
            bytes_received: 0,
            bytes_sent: 0,
            duration_ms: 3,
            upstream_service_time_ms: None,
            x_forwarded_for: None,
            user_agent: Some("curl/8"),
            request_id: "rid",
            authority: "a.test",
            upstream_host: None,
            route: "",
            sni: None,
            peer_principal: None,
            request_principal: None,
            authz_policy: None,
            downstream_remote_address: Some("192.0.2.1:5000"),
        }
    }

    #[test]
    fn start_time_is_rfc3339_utc() {
        assert_eq!(rfc3339_millis(entry().start), "2026-11-21T22:26:35.123Z");
        assert_eq!(
            rfc3339_millis(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn text_line_follows_envoy_default_format() {
        assert_eq!(
            text_line(&entry()),
            "[2026-11-21T22:26:35.123Z] \"GET /a?b=1 HTTP/1.1\" 404 NR 0 0 3 - \"-\" \"curl/8\" \"rid\" \"a.test\" \"-\" \"-\" \"-\" \"-\" \"-\" \"-\" \"192.0.2.1:5000\"\n"
        );
    }

    #[test]
    fn json_line_has_envoy_fields() {
        let v: serde_json::Value = serde_json::from_str(&json_line(&entry())).expect("json");
        assert_eq!(v["response_flags"], "NR");
        assert_eq!(v["response_code"], 404);
        assert_eq!(v["authority"], "a.test");
        assert!(v["upstream_host"].is_null());
    }
}
