#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind:
# floodgate (and optionally an older build) beside nginx, the same shop behind both.
# Instruction counts do not move with the machine's load, so this is the figure to
# compare on a noisy 2-core box; fast-path-bench.sh gives the wall-clock ones.
#
# Each target is started under callgrind twice: once serving FEW requests, once
# serving FEW + MANY; the difference over MANY is its cost per request, with start-up
# and shutdown cancelled out. Requests: h2load --h1, 16 keep-alive connections, GET
# PATH_ (/fast, a 3-byte body). The shop runs natively (not counted).
#
#   loadtests/peers/instructions.sh
#   FLOODGATE_BASE_BIN=/tmp/old-floodgate MANY=20000 loadtests/peers/instructions.sh
#
# Environment:
#   FEW (1000)  MANY (10000)  PATH_ (/fast)  TARGETS ("floodgate nginx"; add
#   floodgate-base with FLOODGATE_BASE_BIN)  FLOODGATE_BIN (target/release/floodgate)
#   NGINX_BIN (nginx)  KEEP=1 keeps the temp dir
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FEW="${FEW:-1000}"
MANY="${MANY:-10000}"
PATH_="${PATH_:-/fast}"
KEEP="${KEEP:-0}"
read -r -a WANT <<<"${TARGETS:-floodgate nginx${FLOODGATE_BASE_BIN:+ floodgate-base}}"
FLOODGATE_BIN="${FLOODGATE_BIN:-$ROOT/target/release/floodgate}"
NGINX_BIN="${NGINX_BIN:-nginx}"

die() { echo "instructions: $*" >&2; exit 1; }
# shellcheck source=lib.sh
. "$HERE/lib.sh"
command -v valgrind >/dev/null || die "valgrind not found (apt-get install -y valgrind)"
command -v h2load >/dev/null || die "h2load not found (apt-get install -y nghttp2-client)"
[[ -x "$FLOODGATE_BIN" ]] || die "$FLOODGATE_BIN not found: run \`cargo build --release\` first"

TMP="$(mktemp -d /tmp/instructions.XXXXXX)"
chmod 755 "$TMP"
cleanup() {
    stop_pids
    if [[ "$KEEP" == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SHOP="127.0.0.1:$(free_port)"
start_shop "$SHOP" "$TMP/shop.log"

# total TARGET N: instructions of one callgrind run of TARGET serving N requests.
total() {
    local t=$1 n=$2 port dir pid url
    port="$(free_port)"; dir="$TMP/$t-$n"; mkdir -p "$dir"; chmod 755 "$dir"
    case $t in
        floodgate | floodgate-base)
            local bin="$FLOODGATE_BIN"; [[ $t == floodgate-base ]] && bin="$FLOODGATE_BASE_BIN"
            sed -e "s|__LISTEN__|127.0.0.1:$port|" -e "s|__ADMIN__|127.0.0.1:$(free_port)|" \
                -e "s|__UPSTREAM__|$SHOP|" "$HERE/floodgate-fast.toml" >"$dir/floodgate.toml"
            valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" \
                "$bin" run --config "$dir/floodgate.toml" >"$dir/log" 2>&1 &
            pid=$! ;;
        nginx)
            # One process (no master), in the foreground: the worker is what is counted.
            sed -e "s|__LISTEN__|127.0.0.1:$port|" -e "s|__LISTEN_H2C__|127.0.0.1:$(free_port)|" \
                -e "s|__UPSTREAM__|$SHOP|" -e "s|__PREFIX__|$dir|g" -e "s|__WORKERS__|1|" \
                -e "s|^master_process on;|master_process off;|" \
                "$HERE/nginx-fast.conf" >"$dir/nginx1.conf"
            valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" \
                "$NGINX_BIN" -p "$dir" -e "$dir/error.log" -c "$dir/nginx1.conf" >"$dir/log" 2>&1 &
            pid=$! ;;
    esac
    PIDS+=("$pid")
    url="http://127.0.0.1:$port$PATH_"
    for _ in $(seq 200); do curl -s -o /dev/null -m 1 "$url" && break; sleep 0.2; done
    curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" | grep -q 200 || die "$t does not answer at $url"
    h2load --h1 -n "$n" -c 16 "$url" 2>&1 | grep -q "$n succeeded" || die "$t: not every request succeeded"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    grep -h '^summary\|^totals' "$dir"/cg.* | awk '{s+=$2} END {print s}'
}

echo "instructions per proxied request (callgrind, user space; GET $PATH_, $MANY requests net of $FEW)"
echo
echo "| target | instructions per request |"
echo "|---|---|"
declare -A PER
for t in "${WANT[@]}"; do
    a="$(total "$t" "$FEW")"; b="$(total "$t" $((FEW + MANY)))"
    PER[$t]=$(( (b - a) / MANY ))
    echo "| $t | ${PER[$t]} |"
done
if [[ -n "${PER[floodgate]:-}" && -n "${PER[nginx]:-}" ]]; then
    awk -v a="${PER[floodgate]}" -v b="${PER[nginx]}" 'BEGIN{printf "\nfloodgate/nginx: %.2fx\n", a/b}'
fi
if [[ -n "${PER[floodgate]:-}" && -n "${PER[floodgate-base]:-}" ]]; then
    awk -v a="${PER[floodgate]}" -v b="${PER[floodgate-base]}" 'BEGIN{printf "floodgate/floodgate-base: %.2fx\n", a/b}'
fi
