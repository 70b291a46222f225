#!/usr/bin/env bash
# Overload at 10x capacity (issue 4): scenarios/overload-10x.toml (25,000 req/s for
# 30 s against a shop of 50 x 20 ms) run by floodgate-load against
#   capacity       the shop alone, 50 closed-loop clients (scenarios/shop-capacity.toml):
#                  what it really serves, the baseline for goodput
#   direct         no gateway
#   floodgate      its admission queue (scenarios/gateway/overload-10x.toml)
#   floodgate-base the same config run by BASE_BIN (another build, e.g. main's), so a
#                  change is measured beside its baseline in the same rounds
#   nginx          limit_req burst=200 as a delaying queue at the shop's rate, plus
#                  max_conns=50 (nginx-limit.conf)
#   nginx-nodelay  the same with `nodelay`: no queue, the excess refused at once
#   haproxy        maxconn 50 + a 200-deep queue, timeout queue 1s (haproxy-queue.cfg)
# Each target gets a FRESH shop (fresh counters) and its own gateway; after the run
# the shop's /__shop/stats is read (errors, peak_in_flight) and the gateway's CPU is
# taken from /proc. Load stays on loopback.
#
# Builds nothing: cargo build --release -p floodgate -p floodgate-loadtest
#
#   loadtests/peers/overload-bench.sh                 # every target, results in $OUT
#   TARGETS="floodgate haproxy" loadtests/peers/overload-bench.sh
#   SUMMARY_ONLY=1 loadtests/peers/overload-bench.sh  # the table of the results in $OUT
#
# Environment: OUT (result dir, /tmp/overload-bench), TARGETS, ROUNDS (3: every target
#   once per round, in turn, so a noisy minute on this shared 2-core box hits them all
#   alike; the table gives each figure's median over the rounds), PAUSE (s between runs, 3),
#   DURATION (the load phase, e.g. 10s; the scenario's own 30 s when unset: a run's first
#   100 ms weigh three times more in a 10 s run's p99, which is where an onset shows),
#   FG_TEMPLATE (floodgate's config template),
#   FLOODGATE_BIN, BASE_BIN, LOAD_BIN, NGINX_BIN, HAPROXY_BIN, and the peers' knobs:
#   MAX_CONC (50)  QUEUE_SIZE (200)  QUEUE_TIMEOUT (1s)  HAPROXY_MAXCONN (9000)
#   SITE_RATE (2500r/s = nominal capacity)  SITE_BURST (200 = queue; nginx-nodelay: 50)
#   (nginx's per-client limit_req/limit_conn are set out of the way: every request
#   comes from the one generator address, so a per-client limit would be a second
#   site-wide limit; the per-client comparison is the bot-storm measurement.)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SCEN="${SCEN:-$ROOT/loadtests/scenarios/overload-10x.toml}"
CAPACITY_SCEN="$ROOT/loadtests/scenarios/shop-capacity.toml"
FG_TEMPLATE="${FG_TEMPLATE:-$ROOT/loadtests/scenarios/gateway/overload-10x.toml}"
OUT="${OUT:-/tmp/overload-bench}"
TARGETS="${TARGETS:-capacity direct floodgate nginx nginx-nodelay haproxy}"
PAUSE="${PAUSE:-3}"
ROUNDS="${ROUNDS:-3}"
MAX_CONC="${MAX_CONC:-50}"; QUEUE_SIZE="${QUEUE_SIZE:-200}"; QUEUE_TIMEOUT="${QUEUE_TIMEOUT:-1s}"
SITE_RATE="${SITE_RATE:-2500r/s}"; SITE_BURST="${SITE_BURST:-$QUEUE_SIZE}"
FLOODGATE_BIN="${FLOODGATE_BIN:-$ROOT/target/release/floodgate}"
BASE_BIN="${BASE_BIN:-}"
LOAD_BIN="${LOAD_BIN:-$ROOT/target/release/floodgate-load}"
NGINX_BIN="${NGINX_BIN:-nginx}"
HAPROXY_BIN="${HAPROXY_BIN:-haproxy}"
# haproxy-queue.cfg's maxconn 20000 needs ~2x that in file descriptors; under a hard
# `ulimit -n` of 20000 HAProxy refuses to start, so it is lowered here (still above
# the generator's 8,000 connections).
HAPROXY_MAXCONN="${HAPROXY_MAXCONN:-9000}"
# The shop of both scenarios (kept in step with their [shop] tables).
SHOP_ARGS=(--capacity 50 --latency 20ms --collapse 200)

die() { echo "overload-bench: $*" >&2; exit 1; }
[[ -x "$FLOODGATE_BIN" && -x "$LOAD_BIN" ]] || die "build first: cargo build --release -p floodgate -p floodgate-loadtest"
[[ " $TARGETS " != *" floodgate-base "* || -x "$BASE_BIN" ]] || die "floodgate-base needs BASE_BIN (a floodgate binary)"
mkdir -p "$OUT"
if [[ -n "${DURATION:-}" ]]; then
    # A copy with the phase shortened; its gateway_config made absolute, as it moves.
    sed -e "s|duration = \"30s\"|duration = \"$DURATION\"|" \
        -e "s|^gateway_config = \"|gateway_config = \"$(dirname "$SCEN")/|" "$SCEN" >"$OUT/scenario.toml"
    grep -q "duration = \"$DURATION\"" "$OUT/scenario.toml" || die "no 30 s phase in $SCEN to shorten"
    SCEN="$OUT/scenario.toml"
fi

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
# start_nginx_limit W PORT SHOP BURST DELAY: nginx-limit.conf filled in; sets GW_PID.
start_nginx_limit() {
    local w="$1" port="$2" shop="$3" burst="$4" delay="$5"
    sed -e "s|__LISTEN__|127.0.0.1:$port|" -e "s|__UPSTREAM__|$shop|" -e "s|__PREFIX__|$w|g" \
        -e "s|__WORKERS__|auto|" -e "s|__CLIENT_RATE__|100000r/s|" -e "s|__CLIENT_BURST__|100000|" \
        -e "s|__SITE_RATE__|$SITE_RATE|" -e "s|__SITE_BURST__|$burst|" -e "s|__SITE_DELAY__|$delay|" \
        -e "s|__CLIENT_CONNS__|60000|" -e "s|__MAX_CONNS__|$MAX_CONC|" \
        "$HERE/nginx-limit.conf" >"$w/nginx.conf"
    "$NGINX_BIN" -t -q -p "$w" -e "$w/error.log" -c "$w/nginx.conf" || die "nginx config rejected"
    "$NGINX_BIN" -p "$w" -e "$w/error.log" -c "$w/nginx.conf" &
    GW_PID=$!
}

SUMMARY_ONLY="${SUMMARY_ONLY:-0}"
for round in $(seq "$ROUNDS"); do
for t in $TARGETS; do
    [[ "$SUMMARY_ONLY" == 1 ]] && break 2
    R="$OUT/$t.r$round"
    W="$(mktemp -d /tmp/overload-$t.XXXXXX)"; chmod 755 "$W"
    SP="$(free_port)"; GP="$(free_port)"; AP="$(free_port)"
    SHOP="127.0.0.1:$SP"
    start_shop "$SHOP" "$W/shop.log" "${SHOP_ARGS[@]}"
    wait_ok "http://$SHOP/healthz" || die "shop did not start"
    GW_PID=""; RUN_SCEN="$SCEN"
    case $t in
        capacity) URL="http://$SHOP"; RUN_SCEN="$CAPACITY_SCEN" ;;
        direct) URL="http://$SHOP" ;;
        floodgate|floodgate-base)
            bin="$FLOODGATE_BIN"; [[ $t == floodgate-base ]] && bin="$BASE_BIN"
            sed -e "s|{listen}|127.0.0.1:$GP|" -e "s|{admin_listen}|127.0.0.1:$AP|" -e "s|{shop_addr}|$SHOP|" \
                "$FG_TEMPLATE" >"$W/floodgate.toml"
            "$bin" check --config "$W/floodgate.toml" >/dev/null || die "floodgate config rejected"
            "$bin" run --config "$W/floodgate.toml" >"$W/floodgate.log" 2>&1 &
            GW_PID=$!; URL="http://127.0.0.1:$GP" ;;
        nginx) start_nginx_limit "$W" "$GP" "$SHOP" "$SITE_BURST" ""; URL="http://127.0.0.1:$GP" ;;
        nginx-nodelay) start_nginx_limit "$W" "$GP" "$SHOP" 50 nodelay; URL="http://127.0.0.1:$GP" ;;
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
    echo "=== round $round/$ROUNDS $t ($URL, shop $SHOP) load $(cut -d' ' -f1-3 /proc/loadavg)"
    g0=0; [[ -n "$GW_PID" ]] && g0=$(ticks_tree "$GW_PID")
    s0=$(ticks_of "$SHOP_PID")
    timeout 60 "$LOAD_BIN" run "$RUN_SCEN" --target "$t=$URL" --quiet \
        --json "$R.json" >"$R.txt" 2>&1 || echo "  floodgate-load exited $? (see $R.txt)"
    g1=0; [[ -n "$GW_PID" ]] && g1=$(ticks_tree "$GW_PID")
    s1=$(ticks_of "$SHOP_PID")
    curl -s -m 5 "http://$SHOP/__shop/stats" >"$R.shop.json" || echo '{}' >"$R.shop.json"
    awk -v a="$g0" -v b="$g1" -v c="$s0" -v d="$s1" -v hz="$HZ" \
        'BEGIN{printf "{\"gateway_cpu_s\": %.2f, \"shop_cpu_s\": %.2f}\n", (b-a)/hz, (d-c)/hz}' >"$R.cpu.json"
    cat "$R.shop.json"; echo
    stop_pids
    rm -rf "$W"
    sleep "$PAUSE"
done
done

python3 - "$OUT" "$ROUNDS" $TARGETS <<'EOF'
import json, sys, os, statistics
out, rounds, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception:
        return None
def runs(t):
    """Each round's figures for target t."""
    rows = []
    for i in range(1, rounds + 1):
        r = load(f"{t}.r{i}.json")
        if r is None:
            continue
        shop = load(f"{t}.r{i}.shop.json") or {}
        cpu = load(f"{t}.r{i}.cpu.json") or {}
        st = r.get("statuses", {})
        gen = next((c for c in r.get("cpu", []) if c["name"] == "generator"), {})
        sus = r.get("sustained") or {}
        rows.append({
            "after": sus.get("after_s"),
            "p99s": (sus.get("latency_2xx") or {}).get("p99_ms"),
            "p99rs": (sus.get("latency_refusals") or {}).get("p99_ms"),
            "errors": shop.get("errors"), "peak": shop.get("peak_in_flight"),
            "goodput": r["goodput"],
            "p50": (r.get("latency_2xx") or {}).get("p50_ms"),
            "p99": (r.get("latency_2xx") or {}).get("p99_ms"),
            "p99r": (r.get("latency_refusals") or {}).get("p99_ms"),
            "refusals": sum(v for k, v in st.items() if k in ("429", "503")),
            "timeouts": r.get("classes", {}).get("timeout", 0),
            "other": sum(v for k, v in st.items() if not k.startswith("2") and k not in ("429", "503")),
            "gen": gen.get("cores", 0), "gw": cpu.get("gateway_cpu_s", 0),
            "dropped": r["dropped"], "statuses": st, "conns": r.get("connections_opened"),
        })
    return rows
def med(rows, k):
    v = [x[k] for x in rows if x[k] is not None]
    return statistics.median(v) if v else None
def fmt(v):
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 10 or float(v).is_integer() else f"{v:.1f}"
def spread(rows, k):
    v = [x[k] for x in rows if x[k] is not None]
    return f"[{fmt(min(v))}-{fmt(max(v))}]" if len(v) > 1 else ""
cap = runs("capacity")
capacity = med(cap, "goodput") if cap else None
if capacity:
    print(f"\nshop capacity measured: {capacity:.0f} req/s (50 closed-loop clients, no gateway; nominal 2,500)")
print(f"\nmedian of {rounds} round(s), [lowest-highest] beside the p99s")
print(f"{'target':<14} {'origin err':>10} {'peak':>5} {'goodput/s':>9} {'of cap.':>7} {'p50 2xx':>8} "
      f"{'p99 2xx':>16} {'p99 refusal':>16} {'refusals':>8} {'timeouts':>8} {'other':>6} {'gw cpu s':>8} {'conns':>16}")
for t in targets:
    if t == "capacity":
        continue
    rows = runs(t)
    if not rows:
        print(f"{t:<14} no result")
        continue
    g = med(rows, "goodput")
    share = f"{100 * g / capacity:.0f}%" if capacity else "-"
    p99 = f"{fmt(med(rows, 'p99'))} {spread(rows, 'p99')}"
    p99r = f"{fmt(med(rows, 'p99r'))} {spread(rows, 'p99r')}"
    print(f"{t:<14} {fmt(med(rows, 'errors')):>10} {fmt(med(rows, 'peak')):>5} {g:>9.0f} {share:>7} "
          f"{fmt(med(rows, 'p50')):>8} {p99:>16} {p99r:>16} {med(rows, 'refusals'):>8.0f} "
          f"{med(rows, 'timeouts'):>8.0f} {med(rows, 'other'):>6.0f} {med(rows, 'gw'):>8.1f} "
          f"{fmt(med(rows, 'conns')) + ' ' + spread(rows, 'conns'):>16}")
    if any(x["p99s"] is not None for x in rows):
        print(f"{'':<14} scheduled after the first {fmt(rows[0]['after'])} s: p99 2xx {fmt(med(rows, 'p99s'))} {spread(rows, 'p99s')}, "
              f"p99 refusal {fmt(med(rows, 'p99rs'))} {spread(rows, 'p99rs')}")
    for i, x in enumerate(rows, 1):
        print(f"{'':<14} round {i}: goodput {x['goodput']:.0f}, p99 2xx {fmt(x['p99'])}, p99 refusal "
              f"{fmt(x['p99r'])}, connections {x['conns']}, statuses {x['statuses']}, dropped {x['dropped']}, "
              f"generator {x['gen']:.2f} cores")
EOF
