#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: a figure that stays the same
# on a noisy machine (unlike req/s), for before/after comparisons of request-path changes.
#
#   loadtests/bench/profile.sh [--gateway BIN | --floor BIN] [--seconds N] [--routes N] [--body] [--tls | --handshakes] [--keep DIR]
#
# Starts an nginx upstream and the gateway (1 worker thread) under callgrind on loopback, applies
# one VirtualService (or N, with --routes), warms up, zeroes the counters, drives wrk for N seconds,
# dumps, and prints instructions per request and the top functions (inclusive and self).
# --floor runs one of Pingora's floor programs instead (loadtests/bench/floor: bare_proxy or
# core_loop, `cargo build --release -p pingora-floor`), which forward every request upstream.
# --tls drives the gateway's HTTPS listener instead (a self-signed RSA-2048 certificate, wrk
# keeping its TLS connections open), so the count includes TLS record work. --handshakes does the
# same with `Connection: close` and wrk kept from resuming sessions (bench.py's tlsclose shim):
# every request is a new connection and a full handshake, so the count is per full handshake.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
gateway="$repo/target/release/gateway"
floor=""
seconds=10
routes=1
body=0
tls=0
close=0
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --gateway) gateway=$2; shift 2 ;;
    --floor) floor=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --routes) routes=$2; shift 2 ;;
    --body) body=1; shift ;;
    --tls) tls=1; shift ;;
    --handshakes) tls=1; close=1; shift ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for tool in valgrind callgrind_annotate callgrind_control nginx wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "profile.sh needs $tool" >&2; exit 2; }
done
if [ -n "$floor" ] && [ "$tls" = 1 ]; then
  echo "--tls drives the gateway only" >&2; exit 2
fi
if [ -n "$floor" ]; then
  [ -x "$floor" ] || { echo "no floor binary at $floor (cargo build --release -p pingora-floor)" >&2; exit 2; }
else
  [ -x "$gateway" ] || { echo "no gateway binary at $gateway (cargo build --release -p gateway)" >&2; exit 2; }
fi

tmp=${keep:-$(mktemp -d)}
mkdir -p "$tmp/www/bench"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$keep" ] || rm -rf "$tmp"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port); http=$(port); https=$(port); admin=$(port)

head -c 65536 /dev/urandom >"$tmp/www/bench/big"
cat >"$tmp/upstream.conf" <<EOF
worker_processes 1;
daemon off;
pid $tmp/upstream.pid;
error_log $tmp/upstream.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/b; proxy_temp_path $tmp/p; fastcgi_temp_path $tmp/f;
  uwsgi_temp_path $tmp/u; scgi_temp_path $tmp/s;
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:$up;
    location = /bench/big { root $tmp/www; default_type application/octet-stream; }
    location / { default_type text/plain; return 200 "hello from the upstream\n"; }
  }
}
EOF
nginx -e "$tmp/upstream.error.log" -p "$tmp" -c "$tmp/upstream.conf" >"$tmp/upstream.log" 2>&1 &
pids+=($!)

if [ -n "$floor" ]; then
  BENCH_UPSTREAM="127.0.0.1:$up" BENCH_HTTP_PORT=$http BENCH_WORKERS=1 \
    valgrind --tool=callgrind --callgrind-out-file="$tmp/callgrind.out" --dump-instr=no \
    "$floor" >"$tmp/gateway.log" 2>&1 &
  gw=$!
  pids+=($gw)
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "http://127.0.0.1:$http/" 2>/dev/null && break
    sleep 0.2
  done
  gateway=$floor
  routes=1
else
valgrind --tool=callgrind --callgrind-out-file="$tmp/callgrind.out" --dump-instr=no \
  "$gateway" --http "127.0.0.1:$http" --https "127.0.0.1:$https" --admin "127.0.0.1:$admin" \
  --data-dir "$tmp/data" --threads 1 --access-log off --drain-timeout 1s >"$tmp/gateway.log" 2>&1 &
gw=$!
pids+=($gw)

for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null
fi

host=bench.local
wrk_env=()
close_header=()
if [ "$close" = 1 ]; then
  python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import bench; print(bench.NO_RESUME_C)' "$here" >"$tmp/no-resume.c"
  cc -shared -fPIC -O2 -o "$tmp/no-resume.so" "$tmp/no-resume.c" -ldl
  wrk_env=(env "LD_PRELOAD=$tmp/no-resume.so")
  close_header=(-H "Connection: close")
fi
if [ "$tls" = 1 ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench.local \
    -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
fi
[ -z "$floor" ] && python3 - "$admin" "$up" "$routes" "$tls" "$tmp" <<'EOF'
import json, sys, urllib.request
admin, up, routes, tls, tmp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
hosts = ["bench.local"] if routes <= 1 else [f"svc-{i:05d}.bench.local" for i in range(routes)]
def call(path, obj):
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", json.dumps(obj).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req, timeout=600).read()
if tls:
    call("/api/v1/namespaces/default/secrets", {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "bench-cert", "namespace": "default"},
        "stringData": {"tls.crt": open(f"{tmp}/tls.crt").read(), "tls.key": open(f"{tmp}/tls.key").read()}})
    call("/apply", {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                    "metadata": {"name": "bench", "namespace": "default"},
                    "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"],
                         "tls": {"mode": "SIMPLE", "credentialName": "bench-cert"}}]}})
gateways = {"gateways": ["bench"]} if tls else {}
for i in range(0, len(hosts), 500):
    items = [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
              "metadata": {"name": "vs-" + h.split(".")[0], "namespace": "default"},
              "spec": {"hosts": [h], **gateways, "http": [{"name": "bench", "match": [{"uri": {"prefix": "/bench/"}}],
                       "route": [{"destination": {"host": "127.0.0.1", "port": {"number": up}}}]}]}}
             for h in hosts[i:i + 500]]
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/apply", body, method="POST",
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req, timeout=600).read()
EOF
[ "$routes" -gt 1 ] && host=$(printf 'svc-%05d.bench.local' $((routes / 2)))
path=/bench/small
[ "$body" = 1 ] && path=/bench/big

url="http://127.0.0.1:$http$path"
[ "$tls" = 1 ] && url="https://127.0.0.1:$https$path"
curl -fksS -H "Host: $host" "$url" -o /dev/null
wrk -t1 -c8 -d3s -H "Host: $host" "$url" >/dev/null
if [ "$tls" = 1 ]; then
  # wrk's connections shake hands when it starts: the counted window opens after that, while wrk
  # runs on, and the gateway's own request counter says how many requests it held.
  served() {
    curl -fsS "http://127.0.0.1:$admin/metrics" |
      awk '/^gateway_requests_total/ {n += $NF} END {printf "%d", n}'
  }
  "${wrk_env[@]}" wrk -t1 -c8 -d"$((seconds + 8))s" --timeout 10s -H "Host: $host" "${close_header[@]}" "$url" >"$tmp/wrk.out" &
  wrk_pid=$!
  sleep 4
  callgrind_control -z "$gw" >/dev/null
  before=$(served)
  sleep "$seconds"
  callgrind_control -d "$gw" >/dev/null
  after=$(served)
  wait "$wrk_pid"
  requests=$((after - before))
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$tmp/wrk.out")
else
callgrind_control -z "$gw" >/dev/null
out=$(wrk -t1 -c8 -d"${seconds}s" -H "Host: $host" "$url")
callgrind_control -d "$gw" >/dev/null
requests=$(awk '/requests in/ {print $1}' <<<"$out")
non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
fi
dump=$(ls -t "$tmp"/callgrind.out.* | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')

echo "binary:        $gateway"
echo "path:          $path (host $host, $routes VirtualService(s))"
echo "requests:      $requests (non-2xx: ${non2xx:-0})"
echo "instructions:  $total"
echo "per request:   $((total / requests))$([ "$close" = 1 ] && echo " (each a new connection and a full handshake)")"
echo
# Rows whose share is 99 % or more are the thread entry points (callgrind folds inlined frames
# into them): not informative, left out.
top() {
  callgrind_annotate --threshold=100 --auto=no "$@" "$dump" 2>/dev/null |
    grep -E '^ *[0-9,]+ +\( *[0-9.]+%\)' | grep -Ev '\((100\.0|99\.[0-9]+)%\)' | head -30 | cut -c1-220 ||
    true # head closes the pipe early: the writers' SIGPIPE must not end the script (pipefail)
}
echo "top functions, inclusive:"
top --inclusive=yes
echo
echo "top functions, self:"
top
