#!/usr/bin/env python3
"""The request-smuggling corpus side by side: the gateway, nginx and HAProxy on the same bytes.

Starts a recording upstream (a strict HTTP/1.1 server that answers every request `200 ok` and
records what it read), then the gateway, nginx and HAProxy on loopback ports chosen at run time,
each a reverse proxy to that upstream; sends every case of gateway/tests/smuggling/corpus.json as
raw bytes in one write to each proxy and prints one markdown table: case, gateway, nginx, HAProxy,
each cell the statuses the client got (then `closed` if the proxy closed the connection) and what
the upstream saw.

Usage: loadtests/smuggling/compare.py [--gateway target/debug/gateway] [--nginx PATH] [--haproxy PATH]
Python standard library only; nginx and HAProxy from Debian (`apt-get install nginx haproxy`).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "gateway/tests/smuggling/corpus.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expand(raw: str) -> bytes:
    """`${N*text}` stands for `text` repeated N times."""
    return re.sub(r"\$\{(\d+)\*([^}]*)\}", lambda m: m.group(2) * int(m.group(1)), raw).encode("latin-1")


# ---------------------------------------------------------------------------------------------
# The recording upstream
# ---------------------------------------------------------------------------------------------


class Partial(Exception):
    pass


class Recorder:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.seen: list[str] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def take(self) -> list[str]:
        with self.lock:
            out, self.seen = self.seen, []
        return out

    def accept(self) -> None:
        while True:
            c, _ = self.sock.accept()
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c: socket.socket) -> None:
        f = c.makefile("rb")
        try:
            while True:
                try:
                    req = read_one(f)
                except Partial as e:
                    with self.lock:
                        self.seen.append(f"partial ({e})")
                    return
                if req is None:
                    return
                with self.lock:
                    self.seen.append(req)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            return
        finally:
            c.close()


def line(f) -> bytes | None:
    b = f.readline(1 << 20)
    if not b:
        return None
    if not b.endswith(b"\r\n"):
        raise Partial("line without CRLF")
    return b[:-2]


def read_one(f) -> str | None:
    start = line(f)
    if start is None:
        return None
    parts = start.split(b" ")
    if len(parts) != 3:
        raise Partial("bad request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    headers = []
    while True:
        l = line(f)
        if l is None:
            raise Partial("eof in the head")
        if not l:
            break
        n, sep, v = l.partition(b":")
        if not sep:
            raise Partial("bad header")
        headers.append((n.decode("latin-1").lower(), v.strip().decode("latin-1")))
    cl = [v for n, v in headers if n == "content-length"]
    te = [v for n, v in headers if n == "transfer-encoding"]
    hosts = [v for n, v in headers if n == "host"]
    body = b""
    framing = ""
    if cl and te or len(cl) > 1 or len(te) > 1:
        raise Partial(f"ambiguous framing CL {cl} TE {te}")
    if cl:
        n = cl[0]
        framing = f" CL:{n}"
        if not n.isdigit():
            raise Partial(f"bad Content-Length {n!r}")
        body = f.read(int(n))
        if len(body) < int(n):
            raise Partial("body cut short")
    elif te:
        framing = f" TE:{te[0]}"
        if te[0].lower() != "chunked":
            raise Partial(f"TE {te[0]!r}")
        while True:
            size = line(f)
            if size is None:
                raise Partial("eof in chunks")
            try:
                n = int(size.split(b";")[0], 16)
            except ValueError:
                raise Partial(f"chunk size {size[:20]!r}")
            if n == 0:
                while True:
                    t = line(f)
                    if t is None:
                        raise Partial("eof in trailers")
                    if not t:
                        break
                break
            chunk = f.read(n)
            if len(chunk) < n or line(f) != b"":
                raise Partial("chunk cut short")
            body += chunk
    shown = f"`{method} {target[:24]}{'…' if len(target) > 24 else ''} {version}` Host:{','.join(hosts) or '-'}{framing}"
    if body:
        shown += f" body `{body[:12].decode('latin-1')}`"
    return shown


# ---------------------------------------------------------------------------------------------
# The proxies
# ---------------------------------------------------------------------------------------------


def start(argv: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "ab")
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    out.close()
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_port(port: int, p: subprocess.Popen, what: str, log: Path) -> None:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if p.poll() is not None:
            sys.exit(f"{what} exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} does not listen on {port}: {log.read_text()[-2000:]}")


def nginx_conf(tmp: Path, port: int, up: int) -> str:
    return f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/ng_body; proxy_temp_path {tmp}/ng_proxy;
  fastcgi_temp_path {tmp}/ng_fcgi; uwsgi_temp_path {tmp}/ng_uwsgi; scgi_temp_path {tmp}/ng_scgi;
  upstream up {{ server 127.0.0.1:{up}; keepalive 8; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }}
  }}
}}
"""


def haproxy_conf(port: int, up: int) -> str:
    return f"""global
  maxconn 256
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server up 127.0.0.1:{up}
"""


def start_gateway(binary: str, tmp: Path, up: int) -> tuple[subprocess.Popen, int]:
    port, tls, admin = free_port(), free_port(), free_port()
    log = tmp / "gateway.log"
    p = start([binary, "--http", f"127.0.0.1:{port}", "--https", f"127.0.0.1:{tls}",
               "--admin", f"127.0.0.1:{admin}", "--data-dir", str(tmp / "gw-data"),
               "--access-log", "off"], log)
    end = time.monotonic() + 60
    while True:
        if p.poll() is not None:
            sys.exit(f"gateway exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > end:
            sys.exit(f"gateway not ready: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "all", "namespace": "default"},
          "spec": {"hosts": ["*"], "http": [
              {"route": [{"destination": {"host": "127.0.0.1", "port": {"number": up}}}]}]}}
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/apply", data=json.dumps(vs).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status >= 300:
            sys.exit(f"apply: {r.status}")
    return p, port


# ---------------------------------------------------------------------------------------------
# One exchange
# ---------------------------------------------------------------------------------------------


def exchange(port: int, data: bytes, want: int) -> tuple[list[str], bool]:
    c = socket.create_connection(("127.0.0.1", port), 2)
    c.settimeout(0.1)
    try:
        c.sendall(data)
    except OSError:
        pass
    got = b""
    closed = False
    end = time.monotonic() + 5
    quiet = None
    while time.monotonic() < end:
        try:
            b = c.recv(65536)
        except socket.timeout:
            if len(statuses(got)) >= max(want, 1):
                quiet = quiet or time.monotonic()
                if time.monotonic() - quiet > 0.3:
                    break
            continue
        except OSError:
            closed = True
            break
        if not b:
            closed = True
            break
        got += b
        quiet = None
    c.close()
    return statuses(got), closed


def statuses(b: bytes) -> list[str]:
    return [m.group(1).decode() for m in re.finditer(rb"HTTP/1\.[01] (\d{3}) ", b)]


def cell(st: list[str], closed: bool, seen: list[str]) -> str:
    client = ", ".join(st) if st else "-"
    if closed:
        client += ", closed" if st else " closed"
    up = "; ".join(seen) if seen else "nothing"
    return f"{client} — up: {up}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gateway", default=str(ROOT / "target/debug/gateway"))
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    args = ap.parse_args()
    corpus = json.loads(CORPUS.read_text())
    rec = Recorder()
    tmp = Path(tempfile.mkdtemp(prefix="smuggling-"))
    procs = []
    try:
        gw, gw_port = start_gateway(args.gateway, tmp, rec.port)
        procs.append(gw)
        ng_port, ha_port = free_port(), free_port()
        (tmp / "nginx.conf").write_text(nginx_conf(tmp, ng_port, rec.port))
        ng = start([args.nginx, "-e", str(tmp / "nginx.error.log"), "-p", str(tmp), "-c", str(tmp / "nginx.conf")],
                   tmp / "nginx.log")
        procs.append(ng)
        (tmp / "haproxy.cfg").write_text(haproxy_conf(ha_port, rec.port))
        ha = start([args.haproxy, "-db", "-f", str(tmp / "haproxy.cfg")], tmp / "haproxy.log")
        procs.append(ha)
        wait_port(ng_port, ng, "nginx", tmp / "nginx.log")
        wait_port(ha_port, ha, "haproxy", tmp / "haproxy.log")
        print("| case | expected (gateway) | gateway | nginx | HAProxy |")
        print("|---|---|---|---|---|")
        for case in corpus:
            data = expand(case["raw"])
            exp = case["expect"]
            want = (len(exp.get("forward", [])) + ("then_reject" in exp)) or 1
            expected = f"refuse {exp['reject']}" if "reject" in exp else f"forward {len(exp['forward'])}"
            if "then_reject" in exp:
                expected += f", then refuse {exp['then_reject']}"
            cells = []
            for port in (gw_port, ng_port, ha_port):
                rec.take()
                st, closed = exchange(port, data, want)
                time.sleep(0.05)
                cells.append(cell(st, closed, rec.take()))
            print(f"| `{case['name']}` | {expected} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
