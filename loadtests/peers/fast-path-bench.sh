#!/usr/bin/env bash
# Fast paths against the peers (issue 14): floodgate beside nginx (1 worker) and
# HAProxy (1 thread), the same simulated shop behind all three, in one invocation,
# on loopback, printing the ratios issue 14 sets as targets.
#
# Modes (MODES picks a subset, in this order):
#   h1       proxied GET /fast (a 3-byte body), HTTP/1.1 keep-alive, wrk CONNS conns
#   h2c      the same over h2c (HTTP/2 prior knowledge, cleartext): h2load H2_CONNS
#            connections x H2_STREAMS streams; HTTP/1.1 to the origin
#   hit-h1   cache hit, GET /__shop/cache/big?bytes=512 (512-byte body, the shop
#            sends `Cache-Control: public, max-age=60`), HTTP/1.1, wrk
#   hit-h2c  the same cache hit over h2c, h2load
# Targets (TARGETS picks a subset): floodgate (loadtests/peers/floodgate-fast.toml),
# nginx (nginx-fast.conf: proxy_pass with upstream keep-alive; proxy_cache;
# `listen ... http2` without ssl for h2c), haproxy (haproxy-fast.cfg; proxied modes
# only: no cache in this comparison, shown as "—").
#
# Pinning: the origin (the shop) and the server under test (SUT: floodgate, nginx with
# its master and one worker, or HAProxy with one thread) share core SUT_CPU; the
# generator runs alone on core GEN_CPU. floodgate's tokio runtime sizes itself from
# its CPU mask, so pinned to one core it runs one worker thread. All three run all
# the time; only the one measured gets traffic.
#
# Before measuring, every target must answer 200 over HTTP/1.1 and over h2c (curl
# and a short h2load run), and for the hit modes answer from its cache: floodgate
# `Cache-Status: floodgate; hit`, nginx `X-Cache-Status: HIT`. Otherwise it stops.
#
# Each round runs every mode, and in each mode every target, the order of both
# rotated per round; the table gives medians over rounds of req/s and p99 (wrk's 99 %;
# for h2load, computed from its per-request --log-file), and CPU per request in
# microseconds: utime+stime deltas from /proc/PID/stat of the SUT's own process(es)
# only (floodgate; nginx master + worker; haproxy) and, separately, of the shop, over
# all rounds' requests. Per-run lines also give how busy each core was (from
# /proc/stat, whatever ran there): SUT core near 100 % and generator core below it
# means the SUT was the limit, as intended. Access logs are off on every side.
#
# Builds nothing: run `cargo build --release` first (it uses target/release/floodgate).
#
#   loadtests/peers/fast-path-bench.sh
#   DURATION=3 ROUNDS=1 MODES="h1 hit-h1" TARGETS="floodgate nginx" loadtests/peers/fast-path-bench.sh
#   FLOODGATE_BIN=/path/to/floodgate loadtests/peers/fast-path-bench.sh
#
# Environment:
#   DURATION  seconds per run (8)               ROUNDS  rounds, orders rotated (3)
#   WARMUP    seconds of warm-up per target and mode (2; 0 = none)
#   CONNS     wrk connections, h1 modes (64)    THREADS wrk threads (1)
#   H2_CONNS  h2load connections (8)            H2_STREAMS  streams per connection (8)
#   MODES     "h1 h2c hit-h1 hit-h2c"           TARGETS "floodgate nginx haproxy"
#   PROXY_PATH  (/fast)                         HIT_PATH (/__shop/cache/big?bytes=512)
#   SUT_CPU   core of the SUT and the shop (0)  GEN_CPU core of the generator (1)
#   COMMIT    printed as the commit measured (default: HEAD of the git repository
#             FLOODGATE_BIN is in, "-dirty" when its tree has changes)
#   KEEP=1    keep the temp dir (configs, logs, raw wrk/h2load output)
#   FLOODGATE_BIN (target/release/floodgate)  NGINX_BIN (nginx)  HAPROXY_BIN (haproxy)
#   FLOODGATE_BASE_BIN  an older floodgate build, measured as target "floodgate-base"
#             beside the current one in the same run (add it to TARGETS), for a
#             before/after ratio
#
# floodgate's `server.workers` is left at its default, one per core of the CPU mask:
# pinned to one core, one worker thread (the header line prints how many it found).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DURATION="${DURATION:-8}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-2}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-1}"
H2_CONNS="${H2_CONNS:-8}"
H2_STREAMS="${H2_STREAMS:-8}"
read -r -a MODES <<<"${MODES:-h1 h2c hit-h1 hit-h2c}"
read -r -a WANT <<<"${TARGETS:-floodgate nginx haproxy}"
PROXY_PATH="${PROXY_PATH:-/fast}"
HIT_PATH="${HIT_PATH:-/__shop/cache/big?bytes=512}"
SUT_CPU="${SUT_CPU:-0}"
GEN_CPU="${GEN_CPU:-1}"
KEEP="${KEEP:-0}"
FLOODGATE_BIN="${FLOODGATE_BIN:-$ROOT/target/release/floodgate}"
NGINX_BIN="${NGINX_BIN:-nginx}"
HAPROXY_BIN="${HAPROXY_BIN:-haproxy}"

die() { echo "fast-path-bench: $*" >&2; exit 1; }
# shellcheck source=lib.sh
. "$HERE/lib.sh"

for m in "${MODES[@]}"; do
    case $m in h1 | h2c | hit-h1 | hit-h2c) ;; *) die "unknown mode '$m' (h1 h2c hit-h1 hit-h2c)" ;; esac
done
for t in "${WANT[@]}"; do
    case $t in floodgate | floodgate-base | nginx | haproxy) ;; *) die "unknown target '$t' (floodgate floodgate-base nginx haproxy)" ;; esac
done
(( ${#MODES[@]} > 0 )) || die "MODES is empty"
(( ${#WANT[@]} > 0 )) || die "TARGETS is empty"
wants() { local x; for x in "${WANT[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }

[[ -x "$FLOODGATE_BIN" ]] || die "$FLOODGATE_BIN not found: run \`cargo build --release\` first"
"$FLOODGATE_BIN" --help | grep -q '^  shop' || die "$FLOODGATE_BIN has no \`shop\` subcommand"
command -v wrk >/dev/null || die "wrk not found (apt-get install -y wrk)"
command -v h2load >/dev/null || die "h2load not found (apt-get install -y nghttp2-client)"
if wants nginx; then command -v "$NGINX_BIN" >/dev/null || die "nginx not found (apt-get install -y nginx-light)"; fi
if wants haproxy; then command -v "$HAPROXY_BIN" >/dev/null || die "haproxy not found (apt-get install -y haproxy)"; fi
command -v taskset >/dev/null || die "taskset not found (apt-get install -y util-linux)"
command -v python3 >/dev/null || die "python3 not found (used to pick free ports)"
command -v curl >/dev/null || die "curl not found"
(( $(nproc) >= 2 )) || die "needs 2 cores: one for the SUT and the shop, one for the generator"

if [[ -z "${COMMIT:-}" ]]; then
    bin_dir="$(dirname "$(readlink -f "$FLOODGATE_BIN")")"
    if COMMIT="$(git -C "$bin_dir" rev-parse --short HEAD 2>/dev/null)"; then
        [[ -z "$(git -C "$bin_dir" status --porcelain --untracked-files=no 2>/dev/null)" ]] || COMMIT+="-dirty"
    else
        COMMIT="unknown"
    fi
fi
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"

TMP="$(mktemp -d /tmp/fast-path-bench.XXXXXX)"
chmod 755 "$TMP"   # nginx's worker drops privileges (when started as root) and writes its cache below
cleanup() {
    stop_pids
    if [[ "$KEEP" == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- pinned launchers: lib.sh runs "$FLOODGATE_BIN" and "$NGINX_BIN" -----------------
REAL_FG="$FLOODGATE_BIN"
pinned() {  # pinned NAME CPU BINARY: a launcher that execs BINARY on CPU (same PID)
    printf '#!/bin/sh\nexec taskset -c %s "%s" "$@"\n' "$2" "$3" >"$TMP/$1"
    chmod +x "$TMP/$1"
    echo "$TMP/$1"
}
FG_ON_SUT="$(pinned fg-sut "$SUT_CPU" "$REAL_FG")"

SHOP="127.0.0.1:$(free_port)"
FLOODGATE_BIN="$FG_ON_SUT" start_shop "$SHOP" "$TMP/shop.log"

declare -A H1 H2 PID_OF   # base URLs (no path) per target, h1 and h2c
if wants floodgate; then
    mkdir -p "$TMP/fg"
    FG_PORT="$(free_port)"
    FLOODGATE_BIN="$FG_ON_SUT" start_floodgate "$HERE/floodgate-fast.toml" "127.0.0.1:$FG_PORT" \
        "127.0.0.1:$(free_port)" "$SHOP" "$TMP/fg"
    H1[floodgate]="http://127.0.0.1:$FG_PORT"; H2[floodgate]="http://127.0.0.1:$FG_PORT"
    PID_OF[floodgate]=$FG_PID
fi
if wants floodgate-base; then
    [[ -x "${FLOODGATE_BASE_BIN:-}" ]] || die "target floodgate-base needs FLOODGATE_BASE_BIN (an older build)"
    mkdir -p "$TMP/fg-base"
    FGB_PORT="$(free_port)"
    FLOODGATE_BIN="$(pinned fg-base-sut "$SUT_CPU" "$FLOODGATE_BASE_BIN")" start_floodgate \
        "$HERE/floodgate-fast.toml" "127.0.0.1:$FGB_PORT" "127.0.0.1:$(free_port)" "$SHOP" "$TMP/fg-base"
    H1[floodgate-base]="http://127.0.0.1:$FGB_PORT"; H2[floodgate-base]="http://127.0.0.1:$FGB_PORT"
    PID_OF[floodgate-base]=$FG_PID
fi
if wants nginx; then
    mkdir -p "$TMP/ng"
    NG_PORT="$(free_port)"; NG_H2_PORT="$(free_port)"
    sed -e "s|__LISTEN_H2C__|127.0.0.1:$NG_H2_PORT|" "$HERE/nginx-fast.conf" >"$TMP/nginx-fast.conf.in"
    REAL_NG="$(command -v "$NGINX_BIN")"
    NGINX_BIN="$(pinned nginx-sut "$SUT_CPU" "$REAL_NG")" \
        start_nginx "$TMP/nginx-fast.conf.in" "127.0.0.1:$NG_PORT" "$SHOP" "$TMP/ng" 1
    H1[nginx]="http://127.0.0.1:$NG_PORT"; H2[nginx]="http://127.0.0.1:$NG_H2_PORT"
    PID_OF[nginx]=$NG_PID
fi
if wants haproxy; then
    mkdir -p "$TMP/ha"
    HA_PORT="$(free_port)"; HA_H2_PORT="$(free_port)"
    sed -e "s|__LISTEN__|127.0.0.1:$HA_PORT|" -e "s|__LISTEN_H2C__|127.0.0.1:$HA_H2_PORT|" \
        -e "s|__UPSTREAM__|$SHOP|" -e "s|__PREFIX__|$TMP/ha|g" -e "s|__THREADS__|1|" \
        "$HERE/haproxy-fast.cfg" >"$TMP/ha/haproxy.cfg"
    "$HAPROXY_BIN" -c -q -f "$TMP/ha/haproxy.cfg" || die "haproxy config rejected"
    taskset -c "$SUT_CPU" "$HAPROXY_BIN" -db -f "$TMP/ha/haproxy.cfg" >"$TMP/ha/haproxy.log" 2>&1 &
    HA_PID=$!; PIDS+=("$HA_PID")
    H1[haproxy]="http://127.0.0.1:$HA_PORT"; H2[haproxy]="http://127.0.0.1:$HA_H2_PORT"
    PID_OF[haproxy]=$HA_PID
fi

# The targets of a mode, in the order asked for: HAProxy has no cache here.
targets_of() {
    local t
    for t in "${WANT[@]}"; do
        [[ $t == haproxy && $1 == hit-* ]] && continue
        echo "$t"
    done
}
url_of() {  # target mode
    local base path
    case $2 in h1 | hit-h1) base=${H1[$1]} ;; *) base=${H2[$1]} ;; esac
    case $2 in hit-*) path=$HIT_PATH ;; *) path=$PROXY_PATH ;; esac
    echo "$base$path"
}
dump_logs() { tail -n 20 "$TMP"/*.log "$TMP"/*/*.log "$TMP"/*/error.log >&2 2>/dev/null || true; }

# --- every target answers correctly, on both protocols -------------------------------
ok=0
for _ in $(seq 100); do
    if curl -sf -m 1 -o /dev/null "http://$SHOP$PROXY_PATH"; then ok=1; break; fi
    sleep 0.1
done
[[ $ok == 1 ]] || { dump_logs; die "the shop does not answer at http://$SHOP$PROXY_PATH"; }
HIT_BYTES="$(curl -s -m 2 -o /dev/null -w '%{size_download}' "http://$SHOP$HIT_PATH")"
HIT_CC="$(curl -s -m 2 -D - -o /dev/null "http://$SHOP$HIT_PATH" | tr -d '\r' | awk -F': ' 'tolower($1)=="cache-control"{print $2}')"

for t in "${WANT[@]}"; do
    ok=0
    for _ in $(seq 100); do
        if curl -sf -m 1 -o /dev/null "${H1[$t]}$PROXY_PATH" &&
            curl -sf -m 1 --http2-prior-knowledge -o /dev/null "${H2[$t]}$PROXY_PATH"; then ok=1; break; fi
        sleep 0.1
    done
    [[ $ok == 1 ]] || { dump_logs; die "$t does not answer at ${H1[$t]}$PROXY_PATH (h1) or ${H2[$t]}$PROXY_PATH (h2c)"; }
done

echo "checks:"
for m in "${MODES[@]}"; do
    for t in $(targets_of "$m"); do
        u="$(url_of "$t" "$m")"
        case $m in *h2c) proto=(--http2-prior-knowledge); want_v=2 ;; *) proto=(--http1.1); want_v=1.1 ;; esac
        if [[ $m == hit-* ]]; then curl -s -m 2 "${proto[@]}" -o /dev/null "$u"; sleep 0.2; fi
        h="$(curl -s -m 2 "${proto[@]}" -D - -o /dev/null -w 'STATUS %{http_code} %{http_version} %{size_download}\n' "$u" | tr -d '\r')"
        read -r _ code ver bytes <<<"$(grep '^STATUS ' <<<"$h")"
        [[ $code == 200 && $ver == "$want_v" ]] || { dump_logs; die "$t/$m: $u answered $code over HTTP/$ver (want 200 over HTTP/$want_v)"; }
        note=""
        if [[ $m == hit-* ]]; then
            case $t in
                floodgate*) line="$(grep -i '^cache-status:' <<<"$h" || true)"
                           grep -qiE '^cache-status: *floodgate; *hit' <<<"$line" || die "$t/$m: no cache hit ($line)" ;;
                nginx) line="$(grep -i '^x-cache-status:' <<<"$h" || true)"
                       grep -qiE '^x-cache-status: *HIT' <<<"$line" || die "$t/$m: no cache hit ($line)" ;;
            esac
            note="$line"
        fi
        # The generator must speak the protocol too: a short h2load run, all 2xx.
        if [[ $m == *h2c ]]; then
            c="$(timeout 20 taskset -c "$GEN_CPU" h2load -t1 -c1 -m4 -n64 "$u" 2>&1 |
                awk '/^status codes:/{print $3}')"
            [[ "$c" == 64 ]] || { dump_logs; die "$t/$m: h2load got ${c:-no} 2xx of 64 from $u"; }
            note="${note:+$note; }h2load 64/64 2xx"
        fi
        printf '  %-8s %-10s 200 HTTP/%-3s %5s B  %s\n' "$m" "$t" "$ver" "$bytes" "$note"
    done
done

# --- accounting ----------------------------------------------------------------------
HZ="$(getconf CLK_TCK)"
ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
ticks_sut() {  # the SUT's own processes: floodgate; nginx master + workers; haproxy
    local sum p
    sum=$(ticks_of "${PID_OF[$1]}")
    for p in $(pgrep -P "${PID_OF[$1]}" || true); do sum=$((sum + $(ticks_of "$p"))); done
    echo "$sum"
}
cores() {  # "busy0 total0 busy1 total1" from /proc/stat (busy = all but idle and iowait)
    awk -v a="cpu$SUT_CPU" -v b="cpu$GEN_CPU" '
        $1==a || $1==b { t=0; for (i=2; i<=NF; i++) t+=$i; u[$1]=t-$5-$6; s[$1]=t }
        END { print u[a]+0, s[a]+0, u[b]+0, s[b]+0 }' /proc/stat
}
to_ms() {  # wrk latency "812.00us" / "1.23ms" / "1.01s" -> ms
    awk -v v="$1" 'BEGIN{
        if (v ~ /us$/) { sub(/us$/,"",v); printf "%.3f", v/1000 }
        else if (v ~ /ms$/) { sub(/ms$/,"",v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/,"",v); printf "%.3f", v*60000 }
        else if (v ~ /s$/) { sub(/s$/,"",v); printf "%.3f", v*1000 }
        else printf "nan" }'
}

# One run. Prints: rps p99_ms requests errors sut_ticks shop_ticks core0_% core1_%
run_one() {  # target mode duration outfile
    local t=$1 m=$2 d=$3 out=$4 u s0 s1 o0 o1 c0 c1 rps p99 reqs errs
    u="$(url_of "$t" "$m")"
    read -r -a c0 < <(cores)
    s0=$(ticks_sut "$t"); o0=$(ticks_of "$SHOP_PID")
    case $m in
        h1 | hit-h1)
            timeout $((d + 20)) taskset -c "$GEN_CPU" wrk -t"$THREADS" -c"$CONNS" -d"${d}s" --latency \
                "$u" >"$out" 2>&1 || true ;;
        *)
            timeout $((d + 20)) taskset -c "$GEN_CPU" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D"$d" \
                --log-file="$out.log" "$u" >"$out" 2>&1 || true ;;
    esac
    s1=$(ticks_sut "$t"); o1=$(ticks_of "$SHOP_PID")
    read -r -a c1 < <(cores)
    case $m in
        h1 | hit-h1)
            rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
            p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
            reqs=$(awk '/requests in/{print $1}' "$out")
            errs=$(awk '/Socket errors:/{gsub(",","");e=$4+$6+$8+$10} /Non-2xx/{n=$NF} END{print e+n+0}' "$out") ;;
        *)
            rps=$(awk '/^finished in/{gsub(",","",$4); print $4}' "$out")
            reqs=$(awk '/^requests:/{print $8}' "$out")
            errs=$(awk '/^requests:/{e=$10+$12+$14} /^status codes:/{n=$5+$7+$9} END{print e+n+0}' "$out")
            # h2load prints no percentiles: the 99th of its per-request times (µs, column 3).
            p99=$(taskset -c "$GEN_CPU" sort -n -k3,3 "$out.log" 2>/dev/null |
                awk '{v[NR]=$3} END{ if (NR==0) print "nan"; else { i=int(NR*0.99); if (i<1) i=1; printf "%.3f", v[i]/1000 } }')
            [[ "$KEEP" == 1 ]] || rm -f "$out.log" ;;
    esac
    echo "${rps:-0} ${p99:-nan} ${reqs:-0} ${errs:-0} $((s1 - s0)) $((o1 - o0))" \
        "$(awk -v b="$((c1[0] - c0[0]))" -v t="$((c1[1] - c0[1]))" 'BEGIN{printf "%.0f", (t > 0 ? 100*b/t : 0)}')" \
        "$(awk -v b="$((c1[2] - c0[2]))" -v t="$((c1[3] - c0[3]))" 'BEGIN{printf "%.0f", (t > 0 ? 100*b/t : 0)}')"
}
us_per_req() { awk -v k="$1" -v r="$2" -v hz="$HZ" 'BEGIN{ if (r>0) printf "%.2f", k/hz*1e6/r; else print "nan" }'; }

# --- header ----------------------------------------------------------------------------
versions="floodgate $("$REAL_FG" --version 2>/dev/null | awk '{print $2}') ($REAL_FG, built $(date -r "$REAL_FG" '+%Y-%m-%d %H:%M')"
if wants floodgate; then  # the runtime's worker threads, as the CPU mask sized them
    versions+="; $(cat /proc/"${PID_OF[floodgate]}"/task/*/comm 2>/dev/null | grep -c '^floodgate-w' || true) worker thread(s)"
fi
versions+=")"
wants nginx && versions+=", $("$REAL_NG" -v 2>&1 | sed 's/.*: //') (worker_processes 1)"
wants haproxy && versions+=", HAProxy $("$HAPROXY_BIN" -v 2>/dev/null | awk 'NR==1{print $3}') (nbthread 1)"
echo
echo "fast-path-bench: commit $COMMIT; nproc $(nproc); load average at start $LOAD_START"
echo "  $versions"
echo "  SUT and shop on core $SUT_CPU, generator on core $GEN_CPU; ${DURATION}s runs, ${WARMUP}s warm-up, $ROUNDS rounds; modes ${MODES[*]}"
echo "  h1: wrk -t$THREADS -c$CONNS --latency; h2c: h2load -t1 -c$H2_CONNS -m$H2_STREAMS (prior knowledge); shop at $SHOP"
echo "  proxied: GET $PROXY_PATH; hits: GET $HIT_PATH ($HIT_BYTES B body, Cache-Control: $HIT_CC)"

if (( WARMUP > 0 )); then
    for m in "${MODES[@]}"; do
        for t in $(targets_of "$m"); do run_one "$t" "$m" "$WARMUP" "$TMP/warmup-$m-$t.txt" >/dev/null; done
    done
fi

declare -A RPS P99 REQS SUTK SHOPK
NM=${#MODES[@]}
echo
printf '%-5s %-8s %-10s %10s %8s %9s %6s %8s %9s %9s %6s %6s\n' round mode target "req/s" "p99 ms" requests errors \
    "sut cpu" "sut us/r" "shop us/r" "core$SUT_CPU" "core$GEN_CPU"
for ((r = 0; r < ROUNDS; r++)); do
    for ((j = 0; j < NM; j++)); do
        m=${MODES[$(((j + r) % NM))]}
        mapfile -t TS < <(targets_of "$m")
        NT=${#TS[@]}
        for ((i = 0; i < NT; i++)); do
            t=${TS[$(((i + r) % NT))]}
            read -r rps p99 reqs errs sk shk c0p c1p < <(run_one "$t" "$m" "$DURATION" "$TMP/run-$r-$m-$t.txt")
            RPS[$m.$t]+="$rps "; P99[$m.$t]+="$p99 "; REQS[$m.$t]+="$reqs "
            SUTK[$m.$t]+="$sk "; SHOPK[$m.$t]+="$shk "
            printf '%-5s %-8s %-10s %10s %8s %9s %6s %7.2fs %9s %9s %5s%% %5s%%\n' $((r + 1)) "$m" "$t" "$rps" "$p99" \
                "$reqs" "$errs" "$(awk -v k="$sk" -v hz="$HZ" 'BEGIN{print k/hz}')" \
                "$(us_per_req "$sk" "$reqs")" "$(us_per_req "$shk" "$reqs")" "$c0p" "$c1p"
            [[ "$errs" == 0 ]] || echo "  warning: $t/$m had $errs errors or non-2xx answers (see $TMP/run-$r-$m-$t.txt; KEEP=1 keeps it)" >&2
        done
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{ if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
sum() { tr ' ' '\n' | awk '{s+=$1} END{printf "%.0f", s}'; }
minmax() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR==1{a=$1} {b=$1} END{printf "%.0f–%.0f", a, b}'; }

declare -A MRPS MP99 MSUT
ratio() {  # ratio MODE A B TARGET WHAT: "A/B mode: req/s Nx ... target: MET/NOT MET"
    local m=$1 a=$2 b=$3 goal=$4 p99rule=$5
    if [[ -z "${MRPS[$m.$a]:-}" || -z "${MRPS[$m.$b]:-}" ]]; then
        echo "$a/$b $m: n/a ($a or $b not run)"; return
    fi
    awk -v m="$m" -v a="$a" -v b="$b" -v ra="${MRPS[$m.$a]}" -v rb="${MRPS[$m.$b]}" \
        -v pa="${MP99[$m.$a]}" -v pb="${MP99[$m.$b]}" -v ca="${MSUT[$m.$a]}" -v cb="${MSUT[$m.$b]}" \
        -v goal="$goal" -v p99rule="$p99rule" 'BEGIN{
        r = (rb > 0 ? ra/rb : 0); p = (pb > 0 ? pa/pb : 0); c = (cb > 0 ? ca/cb : 0)
        printf "%s/%s %s: req/s %.2fx, p99 %.2fx, SUT CPU per request %.2fx", a, b, m, r, p, c
        if (goal != "") {
            met = (r >= goal) && (p99rule != "p99" || pa <= pb)
            printf "   target req/s >= %.1fx%s: %s", goal, (p99rule == "p99" ? " and p99 <= " b "'\''s" : ""), (met ? "MET" : "NOT MET")
        }
        printf "\n" }'
}

echo
echo "medians over $ROUNDS rounds (${DURATION}s runs); CPU per request = CPU-seconds over all rounds' requests, in µs"
for m in "${MODES[@]}"; do
    case $m in
        h1) title="proxied GET $PROXY_PATH, HTTP/1.1 keep-alive, wrk -c$CONNS" ;;
        h2c) title="proxied GET $PROXY_PATH, h2c, h2load -c$H2_CONNS -m$H2_STREAMS, HTTP/1.1 to the origin" ;;
        hit-h1) title="cache hit GET $HIT_PATH ($HIT_BYTES B), HTTP/1.1, wrk -c$CONNS" ;;
        hit-h2c) title="cache hit GET $HIT_PATH ($HIT_BYTES B), h2c, h2load -c$H2_CONNS -m$H2_STREAMS" ;;
    esac
    echo
    echo "### $m: $title"
    echo
    echo "| target | req/s | p99 ms | SUT µs CPU/request | origin µs CPU/request | req/s range |"
    echo "|---|---|---|---|---|---|"
    for t in "${WANT[@]}"; do
        if [[ $t == haproxy && $m == hit-* ]]; then
            echo "| haproxy | — | — | — | — | (no cache) |"; continue
        fi
        MRPS[$m.$t]=$(echo "${RPS[$m.$t]}" | median)
        MP99[$m.$t]=$(echo "${P99[$m.$t]}" | median)
        tr_=$(echo "${REQS[$m.$t]}" | sum)
        MSUT[$m.$t]=$(us_per_req "$(echo "${SUTK[$m.$t]}" | sum)" "$tr_")
        printf '| %s | %.0f | %.3f | %s | %s | %s |\n' "$t" "${MRPS[$m.$t]}" "${MP99[$m.$t]}" "${MSUT[$m.$t]}" \
            "$(us_per_req "$(echo "${SHOPK[$m.$t]}" | sum)" "$tr_")" "$(echo "${RPS[$m.$t]}" | minmax)"
    done
done

echo
echo "ratios (issue 14 targets):"
for m in "${MODES[@]}"; do
    case $m in
        h1) ratio h1 floodgate nginx 1.2 p99; ratio h1 floodgate haproxy "" "" ;;
        h2c) ratio h2c floodgate haproxy 1.2 ""; ratio h2c floodgate nginx "" "" ;;
        hit-h1) ratio hit-h1 floodgate nginx 1.3 "" ;;
        hit-h2c) ratio hit-h2c floodgate nginx 1.3 "" ;;
    esac
    if wants floodgate-base; then ratio "$m" floodgate floodgate-base "" ""; fi
done
echo
echo "load average at end $(cut -d' ' -f1-3 /proc/loadavg) (at start $LOAD_START); commit $COMMIT; nproc $(nproc)"
echo "(a core$SUT_CPU column well below 100 % means the SUT was not the limit: then CPU per request is the figure to compare)"
