#!/usr/bin/env bash
# Cache hits: one cacheable product page (/products/1, the shop sends
# `Cache-Control: public, max-age=2`) measured with wrk through (a) floodgate's cache,
# (b) nginx proxy_cache, (c) Varnish, in one run, on loopback. Issue 5. Same structure
# as proxy-bench.sh (rounds with rotated order, medians, proxy CPU from /proc).
#
# Builds nothing: run `cargo build --release -p floodgate` first.
#
#   loadtests/peers/cache-bench.sh
#   DURATION=8 CONNS=64 ROUNDS=3 loadtests/peers/cache-bench.sh
#
# Environment:
#   DURATION  seconds per wrk run (8)           CONNS    wrk connections (64)
#   ROUNDS    rounds; each runs every target once, order rotated per round (3)
#   THREADS   wrk threads (1)                   WARMUP   seconds of warm-up per target (2)
#   WORKERS   nginx worker_processes ("auto")   VTHREADS varnish thread_pools (2 = cores)
#   PATH_     the path measured (/products/1)   KEEP=1   keep the temp dir
#   FLOODGATE_BIN (target/release/floodgate)  NGINX_BIN (nginx)  VARNISHD_BIN (varnishd)
#
# Before measuring, each target is asked twice for PATH_ and must answer the second
# time from its cache: floodgate `Cache-Status: ...; hit`, nginx `X-Cache-Status: HIT`,
# Varnish `X-Varnish: <id> <id>` (two ids = a hit). After the runs the shop's
# per-path count of PATH_ is printed: with max-age=2 the origin sees about one
# request per 2 s per cache, whatever the client rate.
#
# With a 2 s max-age the hit ratio is ~100 % (one refresh per 2 s, served stale to
# everyone meanwhile by all three), so this measures the hit path. Access logs are off
# everywhere (floodgate access_log = false / level warn, nginx access_log off, no
# varnishncsa). Everything started here is stopped on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DURATION="${DURATION:-8}"
CONNS="${CONNS:-64}"
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-1}"
WARMUP="${WARMUP:-2}"
WORKERS="${WORKERS:-auto}"
VTHREADS="${VTHREADS:-2}"
PATH_="${PATH_:-/products/1}"
KEEP="${KEEP:-0}"
FLOODGATE_BIN="${FLOODGATE_BIN:-$ROOT/target/release/floodgate}"
NGINX_BIN="${NGINX_BIN:-nginx}"
VARNISHD_BIN="${VARNISHD_BIN:-varnishd}"

die() { echo "cache-bench: $*" >&2; exit 1; }
# shellcheck source=lib.sh
. "$HERE/lib.sh"
[[ -x "$FLOODGATE_BIN" ]] || die "$FLOODGATE_BIN not found: run \`cargo build --release\` first"
command -v wrk >/dev/null || die "wrk not found (apt-get install -y wrk)"
command -v "$NGINX_BIN" >/dev/null || die "nginx not found (apt-get install -y nginx-light)"
command -v "$VARNISHD_BIN" >/dev/null || die "varnishd not found (apt-get install -y varnish)"
command -v python3 >/dev/null || die "python3 not found (used to pick free ports)"
command -v curl >/dev/null || die "curl not found"

TMP="$(mktemp -d /tmp/cache-bench.XXXXXX)"
chmod 755 "$TMP"   # varnishd's child drops privileges and must read the VCL
cleanup() {
    stop_pids
    if [[ "$KEEP" == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SHOP_PORT="$(free_port)"; FG_PORT="$(free_port)"; FG_ADMIN="$(free_port)"
NG_PORT="$(free_port)"; VA_PORT="$(free_port)"
SHOP="127.0.0.1:$SHOP_PORT"

# --- start the shop, floodgate, nginx and varnish ----------------------------------
start_shop "$SHOP" "$TMP/shop.log"
start_floodgate "$HERE/floodgate-cache.toml" "127.0.0.1:$FG_PORT" "127.0.0.1:$FG_ADMIN" "$SHOP" "$TMP"
start_nginx "$HERE/nginx-cache.conf" "127.0.0.1:$NG_PORT" "$SHOP" "$TMP" "$WORKERS"

sed -e "s|__UPSTREAM_HOST__|127.0.0.1|" -e "s|__UPSTREAM_PORT__|$SHOP_PORT|" \
    "$HERE/varnish.vcl" >"$TMP/varnish.vcl"
chmod 644 "$TMP/varnish.vcl"
"$VARNISHD_BIN" -F -n "$TMP/varnish" -a "127.0.0.1:$VA_PORT" -T none -f "$TMP/varnish.vcl" \
    -s malloc,256m -p thread_pools="$VTHREADS" -p thread_pool_min=100 \
    -p default_grace=10s -p timeout_idle=65 >"$TMP/varnish.log" 2>&1 &
VA_PID=$!; PIDS+=("$VA_PID")

declare -A URL=(
    [floodgate]="http://127.0.0.1:$FG_PORT$PATH_"
    [nginx]="http://127.0.0.1:$NG_PORT$PATH_"
    [varnish]="http://127.0.0.1:$VA_PORT$PATH_"
)
TARGETS=(floodgate nginx varnish)
NT=${#TARGETS[@]}

for t in "${TARGETS[@]}"; do
    ok=0
    for _ in $(seq 150); do
        if curl -sf -m 1 -o /dev/null "${URL[$t]}"; then ok=1; break; fi
        sleep 0.1
    done
    [[ $ok == 1 ]] || { tail -n 20 "$TMP"/*.log >&2 || true; die "$t does not answer at ${URL[$t]}"; }
done

# --- each one must serve hits ------------------------------------------------------
echo "hit check (second request for $PATH_):"
for t in "${TARGETS[@]}"; do
    curl -s -o /dev/null "${URL[$t]}"
    h="$(curl -s -D - -o /dev/null "${URL[$t]}" | tr -d '\r')"
    case $t in
        floodgate) line="$(grep -i '^cache-status:' <<<"$h" || true)"; grep -qiE '; *hit' <<<"$line" && hit=1 || hit=0 ;;
        nginx) line="$(grep -i '^x-cache-status:' <<<"$h" || true)"; grep -qi 'HIT' <<<"$line" && hit=1 || hit=0 ;;
        varnish) line="$(grep -iE '^(x-varnish|age|x-cache):' <<<"$h" | tr '\n' ' ' || true)"
                 grep -qiE '^x-varnish: *[0-9]+ +[0-9]+' <<<"$h" && hit=1 || hit=0 ;;
    esac
    printf '  %-10s %-4s %s\n' "$t" "$([[ $hit == 1 ]] && echo HIT || echo MISS)" "$line"
    [[ $hit == 1 ]] || die "$t did not serve a cache hit"
done

# --- CPU accounting ----------------------------------------------------------------
HZ="$(getconf CLK_TCK)"
ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
ticks_tree() {  # a process and its children (nginx master + workers, varnish mgr + child)
    local sum p
    sum=$(ticks_of "$1")
    for p in $(pgrep -P "$1" || true); do sum=$((sum + $(ticks_of "$p"))); done
    echo "$sum"
}
declare -A PID_OF=([floodgate]=$FG_PID [nginx]=$NG_PID [varnish]=$VA_PID)

to_ms() {
    awk -v v="$1" 'BEGIN{
        if (v ~ /us$/) { sub(/us$/,"",v); printf "%.3f", v/1000 }
        else if (v ~ /ms$/) { sub(/ms$/,"",v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/,"",v); printf "%.3f", v*60000 }
        else if (v ~ /s$/) { sub(/s$/,"",v); printf "%.3f", v*1000 }
        else printf "nan" }'
}
run_wrk() {  # target duration outfile -> rps p99_ms requests errors proxy_cpu_s
    local t=$1 d=$2 out=$3 p0 p1
    p0=$(ticks_tree "${PID_OF[$t]}")
    timeout $((d + 20)) wrk -t"$THREADS" -c"$CONNS" -d"${d}s" --latency "${URL[$t]}" >"$out" 2>&1 || true
    p1=$(ticks_tree "${PID_OF[$t]}")
    local rps p99 reqs errs
    rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
    p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
    reqs=$(awk '/requests in/{print $1}' "$out")
    errs=$(awk '/Socket errors:/{gsub(",","");e=$4+$6+$8+$10} /Non-2xx/{n=$NF} END{print e+n+0}' "$out")
    echo "${rps:-0} ${p99:-nan} ${reqs:-0} ${errs:-0}" \
        "$(awk -v a="$p0" -v b="$p1" -v hz="$HZ" 'BEGIN{printf "%.2f", (b-a)/hz}')"
}

echo "cache-bench: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); wrk -t$THREADS -c$CONNS -d${DURATION}s --latency $PATH_; $ROUNDS rounds"
echo "  floodgate $("$FLOODGATE_BIN" --version 2>/dev/null | awk '{print $2}'), $("$NGINX_BIN" -v 2>&1 | sed 's/.*: //') workers $WORKERS, $("$VARNISHD_BIN" -V 2>&1 | head -1 | sed 's/^varnishd (//; s/ revision.*//') thread_pools $VTHREADS, shop at $SHOP"

if (( WARMUP > 0 )); then
    for t in "${TARGETS[@]}"; do run_wrk "$t" "$WARMUP" "$TMP/warmup-$t.txt" >/dev/null; done
fi
origin0=$(curl -s "http://$SHOP/__shop/stats" | python3 -c "import json,sys; print(json.load(sys.stdin).get('served',0))" 2>/dev/null || echo 0)

declare -A RPS P99 CPU REQS
printf '%-6s %-10s %12s %10s %10s %7s %9s\n' round target "req/s" "p99 ms" requests errors "proxy cpu"
for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < NT; i++)); do
        t=${TARGETS[$(((i + r) % NT))]}
        read -r rps p99 reqs errs pcpu < <(run_wrk "$t" "$DURATION" "$TMP/run-$r-$t.txt")
        RPS[$t]+="$rps "; P99[$t]+="$p99 "; REQS[$t]+="$reqs "; CPU[$t]+="$pcpu "
        printf '%-6s %-10s %12s %10s %10s %7s %9s\n' $((r + 1)) "$t" "$rps" "$p99" "$reqs" "$errs" "${pcpu}s"
        [[ "$errs" == 0 ]] || echo "  warning: $t had $errs errors or non-2xx answers (see $TMP/run-$r-$t.txt; KEEP=1 keeps it)" >&2
    done
done
origin1=$(curl -s "http://$SHOP/__shop/stats" | python3 -c "import json,sys; print(json.load(sys.stdin).get('served',0))" 2>/dev/null || echo 0)

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{ if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
sum() { tr ' ' '\n' | awk '{s+=$1} END{printf "%.2f", s}'; }

echo
echo "medians over $ROUNDS rounds (wrk -t$THREADS -c$CONNS -d${DURATION}s, GET $PATH_, cache hits):"
printf '%-10s %12s %10s %14s %16s\n' target "req/s" "p99 ms" "proxy cpu s" "req/proxy-cpu-s"
for t in "${TARGETS[@]}"; do
    tot_reqs=$(echo "${REQS[$t]}" | sum)
    tot_cpu=$(echo "${CPU[$t]}" | sum)
    eff=$(awk -v r="$tot_reqs" -v c="$tot_cpu" 'BEGIN{ if (c>0) printf "%.0f", r/c; else print "nan" }')
    printf '%-10s %12.0f %10.3f %14s %16s\n' "$t" "$(echo "${RPS[$t]}" | median)" "$(echo "${P99[$t]}" | median)" "$tot_cpu" "$eff"
done
echo "origin: $((origin1 - origin0)) requests served by the shop during the measured runs (all targets together)"
