#!/usr/bin/env bash
# Canary shift under load: while wrk runs, the route's weights move 100/0 → 90/10 → 50/50 → 0/100
# between V1 and V2 (one PUT of the VirtualService per step, a quarter of the duration each).
# Records, per step, the share of requests each destination actually received (from the gateway's
# gateway_requests_total) and any non-2xx answer: a shift must not fail a single request.
#
#   loadtests/canary.sh [-d SECONDS] [-c CONNECTIONS] [-t THREADS]
#
# Settings (GATEWAY_URL, ADMIN_URL, GATEWAY_ADMIN_TOKEN, V1, V2, …): see loadtests/lib.sh.
source "$(dirname "$0")/lib.sh"
parse_flags "$@"
need wrk curl awk
check_gateway
[[ $DURATION -ge 4 ]] || { echo "-d must be at least 4 (four steps)" >&2; exit 2; }

out=$(results_file canary)
tmp=$(mktemp -d)
wrk_pid=
trap '[[ -n $wrk_pid ]] && kill "$wrk_pid" 2>/dev/null; delete_vs; rm -rf "$tmp"' EXIT

steps=("100 0" "90 10" "50 50" "0 100")
step_s=$(awk -v d="$DURATION" 'BEGIN { printf "%.3f", d / 4 }')
v1_host=${V1%:*}
v2_host=${V2%:*}

read -r code _ < <(put_vs 100 0 0)
[[ $code == 200 || $code == 201 ]] || { echo "cannot apply the load test VirtualService: HTTP $code" >&2; exit 1; }
curl -fsS -o /dev/null -H "Host: $LOADTEST_HOST" "$GATEWAY_URL/" || { echo "the load test route does not answer 2xx" >&2; exit 1; }

snapshot >"$tmp/m0"
run_wrk >"$tmp/wrk" &
wrk_pid=$!
i=0
: >"$tmp/steps"
for s in "${steps[@]}"; do
  read -r w1 w2 <<<"$s"
  if [[ $i -gt 0 ]]; then
    read -r code took < <(put_vs "$w1" "$w2" "$i")
    echo "step $i: PUT $w1/$w2 -> HTTP $code in ${took}s" >>"$tmp/steps"
  fi
  sleep "$step_s"
  i=$((i + 1))
  snapshot >"$tmp/m$i"
done
wait "$wrk_pid"
wrk_pid=
snapshot >"$tmp/end"

{
  echo "# canary shift under load"
  echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "gateway:     $GATEWAY_URL (version $(gateway_version "$tmp/m4"))"
  echo "route:       Host: $LOADTEST_HOST, between $V1 (v1) and $V2 (v2)"
  echo "load:        wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s; ${step_s}s per step"
  echo
  echo "## steps (shares from gateway_requests_total deltas; a step's first requests may still"
  echo "## follow the previous weights, as the PUT lands while the step's window is open)"
  printf '%-8s %-10s %10s %10s %10s %9s %8s\n' step weights requests v1 v2 v2-share non-2xx
  for i in 0 1 2 3; do
    read -r w1 w2 <<<"${steps[$i]}"
    j=$((i + 1))
    by_dest=$(requests_by destination_service "$tmp/m$i" "$tmp/m$j")
    n1=$(awk -v h="$v1_host" '$1 == h { print $2 }' <<<"$by_dest")
    n2=$(awk -v h="$v2_host" '$1 == h { print $2 }' <<<"$by_dest")
    bad=$(non2xx "$tmp/m$i" "$tmp/m$j")
    awk -v s="$i" -v w="$w1/$w2" -v a="${n1:-0}" -v b="${n2:-0}" -v e="$bad" 'BEGIN {
      t = a + b; printf "%-8s %-10s %10d %10d %10d %8.1f%% %8d\n", s, w, t, a, b, (t ? 100 * b / t : 0), e }'
  done
  echo
  cat "$tmp/steps"
  echo
  echo "## wrk"
  cat "$tmp/wrk"
  echo
  echo "client disconnects before the response (status 0, wrk stopping): $(disconnects "$tmp/m0" "$tmp/end")"
  verdict "$tmp/wrk" "$(non2xx "$tmp/m0" "$tmp/end")"
} | tee "$out"
echo "results: $out" >&2
