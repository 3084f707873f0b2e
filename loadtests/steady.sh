#!/usr/bin/env bash
# Steady load: wrk keeps CONNECTIONS connections busy against one route (split 90/10 between V1
# and V2) for the whole duration. Records wrk's throughput and latency percentiles and the
# gateway's own count of responses by status and by destination.
#
#   loadtests/steady.sh [-d SECONDS] [-c CONNECTIONS] [-t THREADS]
#
# Settings (GATEWAY_URL, ADMIN_URL, GATEWAY_ADMIN_TOKEN, V1, V2, …): see loadtests/lib.sh.
source "$(dirname "$0")/lib.sh"
parse_flags "$@"
need wrk curl awk
check_gateway

out=$(results_file steady)
tmp=$(mktemp -d)
trap 'delete_vs; rm -rf "$tmp"' EXIT

read -r code _ < <(put_vs 90 10 1)
[[ $code == 200 || $code == 201 ]] || { echo "cannot apply the load test VirtualService: HTTP $code" >&2; exit 1; }
curl -fsS -o /dev/null -H "Host: $LOADTEST_HOST" "$GATEWAY_URL/" || { echo "the load test route does not answer 2xx" >&2; exit 1; }

snapshot >"$tmp/before"
run_wrk >"$tmp/wrk"
snapshot >"$tmp/after"

bad=$(non2xx "$tmp/before" "$tmp/after")
{
  echo "# steady load"
  echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "gateway:     $GATEWAY_URL (version $(gateway_version "$tmp/after"))"
  echo "route:       Host: $LOADTEST_HOST, 90/10 between $V1 and $V2"
  echo "load:        wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s"
  echo
  echo "## wrk"
  cat "$tmp/wrk"
  echo
  echo "## responses counted by the gateway (gateway_requests_total delta)"
  echo "by status:"
  requests_by response_code "$tmp/before" "$tmp/after" | sed 's/^/  /'
  echo "by destination:"
  requests_by destination_service "$tmp/before" "$tmp/after" | sed 's/^/  /'
  echo
  echo "client disconnects before the response (status 0, wrk stopping): $(disconnects "$tmp/before" "$tmp/after")"
  verdict "$tmp/wrk" "$bad"
} | tee "$out"
echo "results: $out" >&2
