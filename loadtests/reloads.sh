#!/usr/bin/env bash
# Reloads under load: while wrk runs, the route's VirtualService is replaced every 250 ms (a new
# response header value each time, so every PUT is a real change that compiles and swaps a new
# snapshot). Records how many changes were applied, how long each PUT took, the gateway's reload
# counters, and any failed request: no request may be dropped by a reload.
#
#   loadtests/reloads.sh [-d SECONDS] [-c CONNECTIONS] [-t THREADS] [-i INTERVAL_MS]
#
# Settings (GATEWAY_URL, ADMIN_URL, GATEWAY_ADMIN_TOKEN, V1, V2, …): see loadtests/lib.sh.
source "$(dirname "$0")/lib.sh"
INTERVAL_MS=250
args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    -i) INTERVAL_MS=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
parse_flags "${args[@]+"${args[@]}"}"
need wrk curl awk
check_gateway

out=$(results_file reloads)
tmp=$(mktemp -d)
wrk_pid=
trap '[[ -n $wrk_pid ]] && kill "$wrk_pid" 2>/dev/null; delete_vs; rm -rf "$tmp"' EXIT

read -r code _ < <(put_vs 90 10 0)
[[ $code == 200 || $code == 201 ]] || { echo "cannot apply the load test VirtualService: HTTP $code" >&2; exit 1; }
curl -fsS -o /dev/null -H "Host: $LOADTEST_HOST" "$GATEWAY_URL/" || { echo "the load test route does not answer 2xx" >&2; exit 1; }

snapshot >"$tmp/before"
run_wrk >"$tmp/wrk" &
wrk_pid=$!
interval=$(awk -v ms="$INTERVAL_MS" 'BEGIN { printf "%.3f", ms / 1000 }')
end=$((SECONDS + DURATION))
n=0
: >"$tmp/puts"
while [[ $SECONDS -lt $end ]] && kill -0 "$wrk_pid" 2>/dev/null; do
  n=$((n + 1))
  put_vs 90 10 "$n" >>"$tmp/puts" &
  sleep "$interval"
  wait $! || true
done
wait "$wrk_pid"
wrk_pid=
snapshot >"$tmp/after"

ok=$(awk '$1 == 200 || $1 == 201' "$tmp/puts" | wc -l)
bad=$(non2xx "$tmp/before" "$tmp/after")
{
  echo "# reloads under load"
  echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "gateway:     $GATEWAY_URL (version $(gateway_version "$tmp/after"))"
  echo "route:       Host: $LOADTEST_HOST, 90/10 between $V1 and $V2"
  echo "load:        wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s; one PUT every ${INTERVAL_MS} ms"
  echo
  echo "## configuration changes"
  echo "PUTs sent:      $n"
  echo "PUTs accepted:  $ok"
  sort -n -k2 "$tmp/puts" | awk '{ t[NR] = $2 } END {
    if (NR) printf "PUT latency:    p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", 1000 * t[int((NR + 1) / 2)], 1000 * t[int(NR * 0.99 + 0.999)], 1000 * t[NR] }'
  for r in success failure; do
    b=$(metric_value "$tmp/before" "gateway_config_reloads_total{result=\"$r\"}")
    a=$(metric_value "$tmp/after" "gateway_config_reloads_total{result=\"$r\"}")
    echo "reloads ($r): $((a - b)) (gateway_config_reloads_total)"
  done
  echo "generation:     $(metric_value "$tmp/before" gateway_config_generation) -> $(metric_value "$tmp/after" gateway_config_generation)"
  echo
  echo "## responses counted by the gateway (gateway_requests_total delta)"
  requests_by response_code "$tmp/before" "$tmp/after" | sed 's/^/  /'
  echo
  echo "## wrk"
  cat "$tmp/wrk"
  echo
  echo "client disconnects before the response (status 0, wrk stopping): $(disconnects "$tmp/before" "$tmp/after")"
  verdict "$tmp/wrk" "$bad"
  [[ $ok -eq $n ]] || echo "FAIL: $((n - ok)) configuration change(s) refused"
} | tee "$out"
echo "results: $out" >&2
