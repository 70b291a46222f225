#!/usr/bin/env bash
# Overload at 10x capacity (issue 4): scenarios/overload-10x.toml run by floodgate-load
# against (a) the shop directly, (b) floodgate's admission queue, (c) nginx limit_req +
# max_conns (nginx-limit.conf), (d) HAProxy maxconn + queue (haproxy-queue.cfg).
# Each target gets a FRESH shop (capacity 50, 200 ms, collapse 200: fresh counters)
# and its own gateway; after the run the shop's /__shop/stats is read (errors,
# peak_in_flight) and the gateway's CPU is taken from /proc. Load stays on loopback.
#
# Builds nothing: cargo build --release -p floodgate -p floodgate-loadtest
#
#   loadtests/peers/overload-bench.sh                 # all four, results in $OUT
#   TARGETS="floodgate haproxy" loadtests/peers/overload-bench.sh
#
# Environment: OUT (result dir, /tmp/overload-bench), TARGETS, PAUSE (s between runs, 3),
#   FLOODGATE_BIN, LOAD_BIN, NGINX_BIN, HAPROXY_BIN, and the peers' knobs:
#   MAX_CONC (50)  QUEUE_SIZE (200)  QUEUE_TIMEOUT (1s)
#   SITE_RATE (250r/s = capacity)  SITE_BURST (50)   nginx limit_req on $host, nodelay
#   HAPROXY_MAXCONN (9000)  SUMMARY_ONLY=1 (print the table of earlier results in $OUT)
#   (nginx's per-client limit_req/limit_conn are set out of the way: every request
#   comes from the one generator address, so a per-client limit would be a second
#   site-wide limit; the per-client comparison is the bot-storm measurement.)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SCEN="$ROOT/loadtests/scenarios/overload-10x.toml"
FG_TEMPLATE="$ROOT/loadtests/scenarios/gateway/overload-10x.toml"
OUT="${OUT:-/tmp/overload-bench}"
TARGETS="${TARGETS:-direct floodgate nginx haproxy}"
PAUSE="${PAUSE:-3}"
MAX_CONC="${MAX_CONC:-50}"; QUEUE_SIZE="${QUEUE_SIZE:-200}"; QUEUE_TIMEOUT="${QUEUE_TIMEOUT:-1s}"
SITE_RATE="${SITE_RATE:-250r/s}"; SITE_BURST="${SITE_BURST:-50}"
FLOODGATE_BIN="${FLOODGATE_BIN:-$ROOT/target/release/floodgate}"
LOAD_BIN="${LOAD_BIN:-$ROOT/target/release/floodgate-load}"
NGINX_BIN="${NGINX_BIN:-nginx}"
HAPROXY_BIN="${HAPROXY_BIN:-haproxy}"
# haproxy-queue.cfg's maxconn 20000 needs ~2x that in file descriptors; under a hard
# `ulimit -n` of 20000 HAProxy refuses to start, so it is lowered here (still above
# the generator's 8,000 connections).
HAPROXY_MAXCONN="${HAPROXY_MAXCONN:-9000}"

die() { echo "overload-bench: $*" >&2; exit 1; }
[[ -x "$FLOODGATE_BIN" && -x "$LOAD_BIN" ]] || die "build first: cargo build --release -p floodgate -p floodgate-loadtest"
mkdir -p "$OUT"

# shellcheck source=lib.sh
. "$HERE/lib.sh"
trap stop_pids EXIT
trap 'exit 130' INT TERM

HZ="$(getconf CLK_TCK)"
ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
ticks_tree() {
    local sum p
    sum=$(ticks_of "$1")
    for p in $(pgrep -P "$1" || true); do sum=$((sum + $(ticks_of "$p"))); done
    echo "$sum"
}
wait_ok() {  # url
    for _ in $(seq 100); do curl -sf -m 1 -o /dev/null "$1" && return 0; sleep 0.1; done
    return 1
}

SUMMARY_ONLY="${SUMMARY_ONLY:-0}"   # 1: only print the table from the results in $OUT
for t in $TARGETS; do
    [[ "$SUMMARY_ONLY" == 1 ]] && break
    W="$(mktemp -d /tmp/overload-$t.XXXXXX)"; chmod 755 "$W"
    SP="$(free_port)"; GP="$(free_port)"; AP="$(free_port)"
    SHOP="127.0.0.1:$SP"
    "$FLOODGATE_BIN" shop --listen "$SHOP" --capacity 50 --latency 200ms --collapse 200 >"$W/shop.log" 2>&1 &
    SHOP_PID=$!; PIDS+=("$SHOP_PID")
    wait_ok "http://$SHOP/healthz" || die "shop did not start"
    GW_PID=""
    case $t in
        direct) URL="http://$SHOP" ;;
        floodgate)
            sed -e "s|{listen}|127.0.0.1:$GP|" -e "s|{admin_listen}|127.0.0.1:$AP|" -e "s|{shop_addr}|$SHOP|" \
                "$FG_TEMPLATE" >"$W/floodgate.toml"
            "$FLOODGATE_BIN" check --config "$W/floodgate.toml" >/dev/null || die "floodgate config rejected"
            "$FLOODGATE_BIN" run --config "$W/floodgate.toml" >"$W/floodgate.log" 2>&1 &
            GW_PID=$!; URL="http://127.0.0.1:$GP" ;;
        nginx)
            sed -e "s|__LISTEN__|127.0.0.1:$GP|" -e "s|__UPSTREAM__|$SHOP|" -e "s|__PREFIX__|$W|g" \
                -e "s|__WORKERS__|auto|" -e "s|__CLIENT_RATE__|100000r/s|" -e "s|__CLIENT_BURST__|100000|" \
                -e "s|__SITE_RATE__|$SITE_RATE|" -e "s|__SITE_BURST__|$SITE_BURST|" \
                -e "s|__CLIENT_CONNS__|60000|" -e "s|__MAX_CONNS__|$MAX_CONC|" \
                "$HERE/nginx-limit.conf" >"$W/nginx.conf"
            "$NGINX_BIN" -t -q -p "$W" -e "$W/error.log" -c "$W/nginx.conf" || die "nginx config rejected"
            "$NGINX_BIN" -p "$W" -e "$W/error.log" -c "$W/nginx.conf" &
            GW_PID=$!; URL="http://127.0.0.1:$GP" ;;
        haproxy)
            sed -e "s|__LISTEN__|127.0.0.1:$GP|" -e "s|__ADMIN__|127.0.0.1:$AP|" -e "s|__UPSTREAM__|$SHOP|" \
                -e "s|__PREFIX__|$W|g" -e "s|__THREADS__|2|" -e "s|__MAX_CONCURRENCY__|$MAX_CONC|" \
                -e "s|__QUEUE_SIZE__|$QUEUE_SIZE|" -e "s|__QUEUE_TIMEOUT__|$QUEUE_TIMEOUT|" \
                -e "s|maxconn 20000|maxconn $HAPROXY_MAXCONN|" \
                "$HERE/haproxy-queue.cfg" >"$W/haproxy.cfg"
            "$HAPROXY_BIN" -c -q -f "$W/haproxy.cfg" || die "haproxy config rejected"
            "$HAPROXY_BIN" -W -db -f "$W/haproxy.cfg" >"$W/haproxy.log" 2>&1 &
            GW_PID=$!; URL="http://127.0.0.1:$GP" ;;
        *) die "unknown target $t" ;;
    esac
    [[ -n "$GW_PID" ]] && PIDS+=("$GW_PID")
    wait_ok "$URL/healthz" || { tail -n 20 "$W"/*.log >&2 || true; die "$t does not answer at $URL"; }
    sleep 1
    curl -sf -X POST "http://$SHOP/__shop/reset" >/dev/null
    echo "=== $t ($URL, shop $SHOP) load $(cut -d' ' -f1-3 /proc/loadavg)"
    g0=0; [[ -n "$GW_PID" ]] && g0=$(ticks_tree "$GW_PID")
    s0=$(ticks_of "$SHOP_PID")
    timeout 60 "$LOAD_BIN" run "$SCEN" --target "$t=$URL" --quiet \
        --json "$OUT/$t.json" >"$OUT/$t.txt" 2>&1 || echo "  floodgate-load exited $? (see $OUT/$t.txt)"
    g1=0; [[ -n "$GW_PID" ]] && g1=$(ticks_tree "$GW_PID")
    s1=$(ticks_of "$SHOP_PID")
    curl -s -m 5 "http://$SHOP/__shop/stats" >"$OUT/$t.shop.json" || echo '{}' >"$OUT/$t.shop.json"
    awk -v a="$g0" -v b="$g1" -v c="$s0" -v d="$s1" -v hz="$HZ" \
        'BEGIN{printf "{\"gateway_cpu_s\": %.2f, \"shop_cpu_s\": %.2f}\n", (b-a)/hz, (d-c)/hz}' >"$OUT/$t.cpu.json"
    cat "$OUT/$t.shop.json"; echo
    stop_pids
    rm -rf "$W"
    sleep "$PAUSE"
done

python3 - "$OUT" $TARGETS <<'EOF'
import json, sys, os
out, targets = sys.argv[1], sys.argv[2:]
print(f"\n{'target':<10} {'origin err':>10} {'origin peak':>11} {'goodput 2xx/s':>13} {'p50 2xx ms':>10} {'p99 2xx ms':>10} "
      f"{'p99 refusal ms':>14} {'refusals':>8} {'timeouts':>8} {'other':>6} {'gen cpu':>8} {'gw cpu s':>8}")
for t in targets:
    try:
        r = json.load(open(os.path.join(out, t + ".json")))
    except Exception as e:
        print(f"{t:<10} no result ({e})"); continue
    try:
        shop = json.load(open(os.path.join(out, t + ".shop.json")))
    except Exception:
        shop = {}
    cpu = json.load(open(os.path.join(out, t + ".cpu.json")))
    st = r.get("statuses", {})
    refusals = sum(v for k, v in st.items() if k in ("429", "503"))
    cl = r.get("classes", {})
    l2 = r.get("latency_2xx") or {}
    lr = r.get("latency_refusals") or {}
    gen = next((c for c in r.get("cpu", []) if c["name"] == "generator"), {})
    other = sum(v for k, v in st.items() if not k.startswith("2") and k not in ("429", "503"))
    f = lambda v: "-" if v is None else f"{v:.0f}"
    print(f"{t:<10} {shop.get('errors','?'):>10} {shop.get('peak_in_flight','?'):>11} {r['goodput']:>13.0f} "
          f"{f(l2.get('p50_ms')):>10} {f(l2.get('p99_ms')):>10} {f(lr.get('p99_ms')):>14} {refusals:>8} "
          f"{cl.get('timeout',0):>8} {other:>6} {gen.get('cores',0):>8.2f} {cpu['gateway_cpu_s']:>8}")
    print(f"{'':<10} statuses {st}  sent {r['sent']} dropped {r['dropped']} warnings {r.get('warnings')}")
EOF
