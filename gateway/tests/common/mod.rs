//! End-to-end harness: runs the real `gateway` binary on fresh ephemeral ports with a private data
//! dir, waits on `/readyz` (polling with a deadline, never a fixed sleep), and talks to it with a
//! tiny blocking HTTP/1.1 client over `std::net::TcpStream`. Shared by every e2e test file.

#![allow(dead_code)]

pub mod etcd;
pub mod tls;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bind 127.0.0.1:0, read it, drop the listener), and never
/// handed out before in this test process: the kernel may give the same ephemeral port to two
/// binds in a row once the first listener is dropped, and two listeners of one gateway then clash.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// How to start the gateway.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// `GATEWAY_ADMIN_TOKEN`.
    pub token: Option<String>,
    /// `--bootstrap PATH`.
    pub bootstrap: Option<PathBuf>,
    /// More arguments (`--listen 31400=127.0.0.1:PORT`, `--access-log off`, …).
    pub args: Vec<String>,
    /// More environment variables.
    pub env: Vec<(String, String)>,
    /// Use this data dir instead of a fresh temporary one.
    pub data_dir: Option<PathBuf>,
}

impl Opts {
    pub fn token(mut self, t: &str) -> Self {
        self.token = Some(t.to_string());
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn bootstrap(mut self, p: impl Into<PathBuf>) -> Self {
        self.bootstrap = Some(p.into());
        self
    }
}

/// A running (or stopped) gateway process and everything needed to restart it.
pub struct Gateway {
    child: Option<Child>,
    pub admin: SocketAddr,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub data_dir: PathBuf,
    /// Keeps the temporary data dir (and logs) alive as long as the gateway value.
    temp: tempfile::TempDir,
    opts: Opts,
    starts: u32,
}

/// How long `start` waits for `/readyz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Gateway {
    /// Starts the binary and waits until `/readyz` answers 200. Panics with the logs if it does not.
    pub fn start(opts: Opts) -> Gateway {
        let temp = tempfile::tempdir().expect("tempdir");
        let data_dir = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| temp.path().join("data"));
        let mut g = Gateway {
            child: None,
            admin: loopback(0),
            http: loopback(0),
            https: loopback(0),
            data_dir,
            temp,
            opts,
            starts: 0,
        };
        g.spawn_and_wait();
        g
    }

    /// The command line for the current ports.
    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_gateway"));
        c.arg("--admin")
            .arg(self.admin.to_string())
            .arg("--http")
            .arg(self.http.to_string())
            .arg("--https")
            .arg(self.https.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.opts.args);
        if let Some(b) = &self.opts.bootstrap {
            c.arg("--bootstrap").arg(b);
        }
        c.env_remove("GATEWAY_ADMIN_TOKEN");
        if let Some(t) = &self.opts.token {
            c.env("GATEWAY_ADMIN_TOKEN", t);
        }
        for (k, v) in &self.opts.env {
            c.env(k, v);
        }
        c
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.temp.path().join(format!("gateway-{n}.log"))
    }

    /// Spawns on fresh ports (a restart never depends on the old ports being free again).
    fn spawn_and_wait(&mut self) {
        self.admin = loopback(free_port());
        self.http = loopback(free_port());
        self.https = loopback(free_port());
        self.starts += 1;
        let log = self.log_path(self.starts);
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn the gateway binary");
        self.child = Some(child);
        if let Err(e) = self.wait_ready(READY_TIMEOUT) {
            let logs = self.logs();
            self.kill();
            panic!("gateway did not become ready: {e}\n--- logs ---\n{logs}");
        }
    }

    /// Polls `/readyz` until 200, the process exits, or the deadline passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited with {status}"));
                }
            }
            if let Ok(r) = request(self.admin, "GET", "/readyz", &[], b"") {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("/readyz not 200 after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (at most `timeout`, then SIGKILL). Returns the exit status.
    pub fn stop_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM and wait (up to 40 s).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.stop_within(Duration::from_secs(40))
    }

    /// Starts again with the same data dir and options (killing the old process if it still runs).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn_and_wait();
    }

    /// Starts a second gateway on the same ports, data dir and options, with `--upgrade` (it waits
    /// for this one's listening sockets), and makes it the current process without waiting on it.
    /// Returns the old process, for the caller to send SIGQUIT and reap.
    pub fn spawn_upgrade(&mut self) -> Option<Child> {
        self.starts += 1;
        let log = self.log_path(self.starts);
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = self
            .command()
            .arg("--upgrade")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn the gateway binary");
        self.child.replace(child)
    }

    /// The logs of every start so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in 1..=self.starts {
            if let Ok(t) = std::fs::read_to_string(self.log_path(n)) {
                s.push_str(&format!("[start {n}]\n{t}"));
            }
        }
        s
    }

    /// The `Authorization` header for the configured token.
    fn auth(&self) -> Option<String> {
        self.opts.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// An admin request (with the token when one is configured); JSON unless `content_type` says.
    pub fn admin_call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Response {
        let auth = self.auth();
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        if !body.is_empty() || matches!(method, "POST" | "PUT") {
            headers.push(("Content-Type", content_type));
        }
        request(self.admin, method, path, &headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n--- logs ---\n{}", self.logs()))
    }

    /// Every JSON access log line in the gateway's output (stdout and stderr share one file).
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn get(&self, path: &str) -> Response {
        self.admin_call("GET", path, "application/json", b"")
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> Response {
        self.admin_call(
            "POST",
            path,
            "application/json",
            body.to_string().as_bytes(),
        )
    }

    pub fn put(&self, path: &str, body: &serde_json::Value) -> Response {
        self.admin_call("PUT", path, "application/json", body.to_string().as_bytes())
    }

    pub fn delete(&self, path: &str) -> Response {
        self.admin_call("DELETE", path, "application/json", b"")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header of that name, in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// Timeout of every socket operation of the client.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects with the client's timeouts.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One request on a new connection (`Connection: close`). `Host` and `Content-Length` are added
/// unless given.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut s = connect(addr)?;
    s.write_all(&request_head(addr, method, path, headers, Some(body.len())))?;
    s.write_all(body)?;
    s.flush()?;
    read_response(&mut s)
}

/// The request line and headers, ending with the blank line. `content_length: None` sends none
/// (for chunked uploads the caller adds `Transfer-Encoding`).
pub fn request_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_length: Option<usize>,
) -> Vec<u8> {
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    if let Some(n) = content_length {
        if !has("content-length") && !has("transfer-encoding") {
            head.push_str(&format!("Content-Length: {n}\r\n"));
        }
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Reads one response: status line, headers, then a body framed by `Content-Length`, chunked
/// encoding, or the end of the connection.
pub fn read_response<R: Read>(r: R) -> io::Result<Response> {
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "headers cut"));
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let size = size.trim().split(';').next().unwrap_or("");
            let n = usize::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if n == 0 {
                // Trailers, up to the blank line.
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + n, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if status != 204 && status != 304 {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small deterministic PRNG (xorshift64*), so that randomized tests replay exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

/// A self-signed P-256 certificate for `e2e.example.com` and `*.example.com`, valid until 2126.
pub const TEST_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBtzCCAVygAwIBAgIUOQZ/qxgHAzmmcSupYH2YDx1FWQQwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPZTJlLmV4YW1wbGUuY29tMCAXDTI2MTEyMTIyMjA1NVoYDzIx
MjYxMDI4MjIyMDU1WjAaMRgwFgYDVQQDDA9lMmUuZXhhbXBsZS5jb20wWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAAThumLABgRzbb4XDusC5tZnU3dx/c7cpjn6RtQu
PvEc8Jx0DdIXA0YvcZaZZlqpNpbE1rJPoJgdJt65JjMF1b27o34wfDAdBgNVHQ4E
FgQUcn9QwR5DPbckxK+c9fQNjdLlitowHwYDVR0jBBgwFoAUcn9QwR5DPbckxK+c
9fQNjdLlitowDwYDVR0TAQH/BAUwAwEB/zApBgNVHREEIjAggg9lMmUuZXhhbXBs
ZS5jb22CDSouZXhhbXBsZS5jb20wCgYIKoZIzj0EAwIDSQAwRgIhAMswq5XQwbAV
msax913UuRauMSdXGKH4BDFqxigh2vVDAiEAkxMC90yNYqXxkcYRnHvCl7Z6Folk
3K3kBCZfALoCvVg=
-----END CERTIFICATE-----
";

/// The private key of [`TEST_CERT_PEM`].
pub const TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgGXSvwDt8ssQEQRlz
+ejbwzsHMFiLFJyqqjC8OSEN6OGhRANCAAThumLABgRzbb4XDusC5tZnU3dx/c7c
pjn6RtQuPvEc8Jx0DdIXA0YvcZaZZlqpNpbE1rJPoJgdJt65JjMF1b27
-----END PRIVATE KEY-----
";
