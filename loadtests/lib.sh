# Shared by the load test scripts (sourced, not run). Settings come from the environment, the
# common flags from the command line; defaults fit `docker compose up` on this machine.
#
#   GATEWAY_URL          traffic listener             (default http://127.0.0.1:80)
#   ADMIN_URL            admin API                    (default http://127.0.0.1:9901)
#   GATEWAY_ADMIN_TOKEN  admin token                  (default compose.yaml's demo token)
#   LOADTEST_HOST        Host header of the test VS   (default loadtest.local)
#   V1, V2               the two destinations, HOST:PORT (default whoami-v1:80, whoami-v2:80,
#                        which the gateway resolves in compose's network)
#   RESULTS_DIR          where results go            (default loadtests/results)
#
# Flags: -d SECONDS (duration, default 30), -c CONNECTIONS (default 64), -t THREADS (default 4).

set -euo pipefail

GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:80}
ADMIN_URL=${ADMIN_URL:-http://127.0.0.1:9901}
GATEWAY_ADMIN_TOKEN=${GATEWAY_ADMIN_TOKEN:-local-demo-token-change-me}
LOADTEST_HOST=${LOADTEST_HOST:-loadtest.local}
V1=${V1:-whoami-v1:80}
V2=${V2:-whoami-v2:80}
RESULTS_DIR=${RESULTS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/results}
DURATION=30
CONNECTIONS=64
THREADS=4
VS_PATH=/apis/networking.istio.io/v1/namespaces/default/virtualservices/loadtest

usage() {
  sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
  exit 2
}

parse_flags() {
  while getopts "d:c:t:h" opt; do
    case $opt in
      d) DURATION=$OPTARG ;;
      c) CONNECTIONS=$OPTARG ;;
      t) THREADS=$OPTARG ;;
      *) usage ;;
    esac
  done
  [[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 ]] || { echo "-d takes whole seconds" >&2; exit 2; }
  [[ $THREADS -le $CONNECTIONS ]] || THREADS=$CONNECTIONS
}

need() {
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || { echo "$t is required (Debian: apt-get install $t)" >&2; exit 1; }
  done
}

admin() { # METHOD PATH [curl args…]: prints the body, fails on HTTP errors
  local method=$1 path=$2
  shift 2
  curl -fsS -X "$method" -H "Authorization: Bearer $GATEWAY_ADMIN_TOKEN" "$@" "$ADMIN_URL$path"
}

check_gateway() {
  curl -fsS -o /dev/null "$ADMIN_URL/readyz" || { echo "gateway not ready at $ADMIN_URL/readyz" >&2; exit 1; }
  admin GET /metrics -o /dev/null || { echo "admin API refused the token (GATEWAY_ADMIN_TOKEN)" >&2; exit 1; }
}

# The load test's VirtualService: LOADTEST_HOST split W1/W2 between V1 and V2, stamped with a
# config version (so that every reload is a real change).
vs_json() { # W1 W2 VERSION
  local h1=${V1%:*} p1=${V1##*:} h2=${V2%:*} p2=${V2##*:}
  cat <<JSON
{"apiVersion":"networking.istio.io/v1","kind":"VirtualService",
 "metadata":{"name":"loadtest","namespace":"default"},
 "spec":{"hosts":["$LOADTEST_HOST"],"http":[{"name":"load",
   "headers":{"response":{"set":{"x-config-version":"$3"}}},
   "route":[{"destination":{"host":"$h1","port":{"number":$p1}},"weight":$1},
            {"destination":{"host":"$h2","port":{"number":$p2}},"weight":$2}]}]}}
JSON
}

put_vs() { # W1 W2 VERSION: prints the HTTP status and the time taken (s)
  vs_json "$1" "$2" "$3" | curl -sS -o /dev/null -w '%{http_code} %{time_total}\n' -X PUT \
    -H "Authorization: Bearer $GATEWAY_ADMIN_TOKEN" -H 'Content-Type: application/json' \
    --data-binary @- "$ADMIN_URL$VS_PATH"
}

delete_vs() { admin DELETE "$VS_PATH" -o /dev/null 2>/dev/null || true; }

snapshot() { admin GET /metrics; } # the exposition, for deltas

# Sums gateway_requests_total of the load test's VirtualService by one label, as "value count"
# lines; with two snapshots (before after) it prints the difference.
requests_by() { # LABEL BEFORE_FILE AFTER_FILE
  awk -v label="$1" '
    FNR == 1 { file++ }
    /^gateway_requests_total\{/ && /virtual_service="default\/loadtest"/ {
      v = "?"
      if (match($0, label "=\"[^\"]*\"")) v = substr($0, RSTART + length(label) + 2, RLENGTH - length(label) - 3)
      n = $NF + 0
      if (file == 1) sum[v] -= n; else sum[v] += n
    }
    END { for (v in sum) if (sum[v] != 0) printf "%s %d\n", v, sum[v] }
  ' "$2" "$3" | sort
}

# One line: the value of an unlabelled series, or of the series with a given label set.
metric_value() { # FILE NAME_WITH_LABELS
  awk -v name="$2" 'index($0, name " ") == 1 { print $NF; found = 1 } END { if (!found) print 0 }' "$1"
}

gateway_version() {
  sed -n 's/^gateway_build_info{version="\([^"]*\)"}.*/\1/p' "$1" | head -n1
}

results_file() { # NAME
  mkdir -p "$RESULTS_DIR"
  echo "$RESULTS_DIR/$1-$(date -u +%Y%m%dT%H%M%SZ).txt"
}

run_wrk() { # wrk's report on stdout; extra args go to wrk
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Host: $LOADTEST_HOST" "$@" "$GATEWAY_URL/"
}

# The gateway's count of answers that were not 2xx, between two snapshots. Status 0 means the client
# closed the connection before the response (wrk does so with requests in flight when its duration
# ends): those are counted apart by `disconnects`.
non2xx() { # BEFORE AFTER
  requests_by response_code "$1" "$2" | awk '$1 !~ /^2/ && $1 != "0" { n += $2 } END { print n + 0 }'
}
disconnects() { # BEFORE AFTER
  requests_by response_code "$1" "$2" | awk '$1 == "0" { n += $2 } END { print n + 0 }'
}

# Verdict from wrk's report and the gateway's own count of non-2xx answers.
verdict() { # WRK_REPORT_FILE NON2XX_AT_GATEWAY
  local errors
  errors=$(grep -E 'Non-2xx|Socket errors' "$1" || true)
  if [[ -z $errors && $2 -eq 0 ]]; then
    echo "PASS: every request answered 2xx"
  else
    echo "FAIL: ${errors:-} gateway non-2xx: $2"
  fi
}
