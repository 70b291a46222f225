#!/usr/bin/env bash
# The access log's cost on cache hits (issue 14): floodgate binaries A and B (say the
# commit before a change and after it), each with the access log off and on (to stderr,
# redirected to a file, as under a supervisor that writes it to disk), in one run:
# rounds alternate the four cases; medians of wrk's req/s. The gateway and the shop
# are pinned to core 0, wrk to core 1.
#
#   OLD_BIN=/path/to/old/floodgate NEW_BIN=target/release/floodgate \
#     loadtests/peers/access-log-bench.sh
#
# Environment: DURATION (8 s), ROUNDS (3), CONNS (64). Loopback only; everything
# started here is stopped on exit.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DURATION="${DURATION:-8}"
ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-64}"
OLD_BIN="${OLD_BIN:?set OLD_BIN}"
NEW_BIN="${NEW_BIN:-$ROOT/target/release/floodgate}"
TMP="$(mktemp -d /tmp/access-log-bench.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

SHOP="127.0.0.1:$(port)"
taskset -c 0 "$NEW_BIN" shop --listen "$SHOP" --capacity 1000 --latency 0ms --collapse 100000 >/dev/null 2>&1 &
PIDS+=($!)
sleep 0.5

run_case() { # BIN ACCESS_LOG -> req/s
    local bin="$1" alog="$2" listen admin
    listen="127.0.0.1:$(port)"; admin="127.0.0.1:$(port)"
    sed -e "s|__LISTEN__|$listen|" -e "s|__ADMIN__|$admin|" -e "s|__UPSTREAM__|$SHOP|" \
        -e "s|^access_log = false|access_log = $alog|" -e "s|^level = \"warn\"|level = \"info\"|" \
        "$HERE/floodgate-cache.toml" >"$TMP/fg.toml"
    taskset -c 0 "$bin" run --config "$TMP/fg.toml" >"$TMP/fg.log" 2>&1 &
    local pid=$!
    for _ in $(seq 50); do curl -fs "http://$listen/products/1" -H 'host: shop.test' >/dev/null 2>&1 && break; sleep 0.1; done
    taskset -c 1 wrk -t1 -c"$CONNS" -d2s -H 'Host: shop.test' "http://$listen/products/1" >/dev/null
    local rps
    rps=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" -H 'Host: shop.test' "http://$listen/products/1" \
        | awk '/Requests\/sec/ {print int($2)}')
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$rps"
}

declare -A R
for r in $(seq "$ROUNDS"); do
    for c in "old false" "new false" "old true" "new true"; do
        set -- $c
        bin="$OLD_BIN"; [[ "$1" == new ]] && bin="$NEW_BIN"
        v=$(run_case "$bin" "$2")
        R["$1 $2"]+="$v "
        echo "round $r: $1 binary, access_log = $2: $v req/s"
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
printf '%-8s %14s %14s %8s\n' binary "log off req/s" "log on req/s" "on/off"
for b in old new; do
    off=$(echo "${R[$b false]}" | median); on=$(echo "${R[$b true]}" | median)
    printf '%-8s %14s %14s %7s%%\n' "$b" "$off" "$on" "$(( on * 100 / off ))"
done
