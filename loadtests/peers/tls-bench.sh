#!/usr/bin/env bash
# TLS termination: floodgate beside nginx, the same ECDSA P-256 certificate, the same
# shop behind both, in one run, on loopback (issue 15, docs/tls.md).
#
# Four measurements per target, each a full run of the generator:
#   full     new visitors: full TLS handshakes per second. h2load opens HS_TOTAL
#            connections at once (a launch-minute burst), one request each, and never
#            resumes a session; the rate is HS_TOTAL over the time to finish them all
#   resumed  returning visitors: wrk with `Connection: close` on every request, so each
#            request is a new TCP connection and a handshake; wrk resumes its sessions
#            (tickets), as browsers do
#   h1       keep-alive throughput over TLS, HTTP/1.1 (wrk, CONNS connections)
#   h2       keep-alive throughput over TLS, HTTP/2 by ALPN (h2load, H2_CONNS
#            connections x H2_STREAMS streams)
# floodgate's floodgate_tls_handshakes_total{result} is read around its full and
# resumed runs and printed, so what each mode measured is visible.
#
# Pinning: the server under test (floodgate, or nginx with one worker) runs on core 0
# alone; the generator and the shop share core 1. floodgate's tokio runtime sizes
# itself from its CPU mask, so it runs one worker thread, as nginx runs one worker.
# If the server under test is not near 1.0 CPU-second per second of a run, the
# generator was the limit: compare requests per CPU-second then (printed too).
#
# Builds nothing: run `cargo build --release` first (it uses target/release/floodgate).
#
#   loadtests/peers/tls-bench.sh
#   ROUNDS=3 DURATION=5 loadtests/peers/tls-bench.sh
#
# Environment:
#   DURATION  seconds per run (5)                ROUNDS  rounds, target order rotated (3)
#   CONNS     wrk connections, h1 (64)           HS_CONNS  wrk connections, resumed (16)
#   HS_TOTAL  connections of the full-handshake burst (1000; far larger bursts overflow
#             the SYN queue on a loaded machine and measure retransmit timers instead)
#   H2_CONNS  h2load connections (16)            H2_STREAMS  streams per connection (16)
#   WARMUP    seconds of warm-up per target and mode (2)
#   PATH_     the path measured (/fast)          KEEP=1  keep the temp dir
#   SUT_CPU   core of the server under test (0)  GEN_CPU  core of generator and shop (1)
#   FLOODGATE_BIN (target/release/floodgate)     NGINX_BIN (nginx)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-64}"
HS_CONNS="${HS_CONNS:-16}"
HS_TOTAL="${HS_TOTAL:-1000}"
H2_CONNS="${H2_CONNS:-16}"
H2_STREAMS="${H2_STREAMS:-16}"
WARMUP="${WARMUP:-2}"
PATH_="${PATH_:-/fast}"
KEEP="${KEEP:-0}"
SUT_CPU="${SUT_CPU:-0}"
GEN_CPU="${GEN_CPU:-1}"
FLOODGATE_BIN="${FLOODGATE_BIN:-$ROOT/target/release/floodgate}"
NGINX_BIN="${NGINX_BIN:-nginx}"

die() { echo "tls-bench: $*" >&2; exit 1; }
# shellcheck source=lib.sh
. "$HERE/lib.sh"
[[ -x "$FLOODGATE_BIN" ]] || die "$FLOODGATE_BIN not found: run \`cargo build --release\` first"
"$FLOODGATE_BIN" check --help >/dev/null 2>&1 || die "$FLOODGATE_BIN is not floodgate"
command -v wrk >/dev/null || die "wrk not found (apt-get install -y wrk)"
command -v h2load >/dev/null || die "h2load not found (apt-get install -y nghttp2-client)"
command -v "$NGINX_BIN" >/dev/null || die "nginx not found (apt-get install -y nginx-light)"
command -v openssl >/dev/null || die "openssl not found (makes the certificate)"
command -v taskset >/dev/null || die "taskset not found (apt-get install -y util-linux)"
command -v python3 >/dev/null || die "python3 not found (used to pick free ports)"
command -v curl >/dev/null || die "curl not found"
(( $(nproc) >= 2 )) || die "needs 2 cores: one for the server under test, one for the generator"

TMP="$(mktemp -d /tmp/tls-bench.XXXXXX)"
cleanup() {
    stop_pids
    if [[ "$KEEP" == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- one certificate for both --------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test" \
    -keyout "$TMP/bench.key" -out "$TMP/bench.pem" 2>/dev/null || die "openssl could not make the certificate"

# --- pinned launchers: lib.sh runs "$FLOODGATE_BIN" and "$NGINX_BIN" -----------------
REAL_FG="$FLOODGATE_BIN"; REAL_NG="$(command -v "$NGINX_BIN")"
pinned() {  # pinned NAME CPU BINARY: a launcher that execs BINARY on CPU (same PID)
    printf '#!/bin/sh\nexec taskset -c %s %s "$@"\n' "$2" "$3" >"$TMP/$1"
    chmod +x "$TMP/$1"
    echo "$TMP/$1"
}
FG_ON_SUT="$(pinned fg-sut "$SUT_CPU" "$REAL_FG")"
FG_ON_GEN="$(pinned fg-gen "$GEN_CPU" "$REAL_FG")"
NG_ON_SUT="$(pinned nginx-sut "$SUT_CPU" "$REAL_NG")"

SHOP_PORT="$(free_port)"; FG_PORT="$(free_port)"; FG_ADMIN="$(free_port)"; NG_PORT="$(free_port)"
SHOP="127.0.0.1:$SHOP_PORT"
fill_cert() { sed -e "s|__CERT__|$TMP/bench.pem|" -e "s|__KEY__|$TMP/bench.key|" "$1" >"$2"; }
fill_cert "$HERE/floodgate-tls.toml" "$TMP/floodgate-tls.toml.in"
fill_cert "$HERE/nginx-tls.conf" "$TMP/nginx-tls.conf.in"

FLOODGATE_BIN="$FG_ON_GEN" start_shop "$SHOP" "$TMP/shop.log"
mkdir -p "$TMP/fg" "$TMP/ng"
FLOODGATE_BIN="$FG_ON_SUT" start_floodgate "$TMP/floodgate-tls.toml.in" "127.0.0.1:$FG_PORT" "127.0.0.1:$FG_ADMIN" "$SHOP" "$TMP/fg"
NGINX_BIN="$NG_ON_SUT" start_nginx "$TMP/nginx-tls.conf.in" "127.0.0.1:$NG_PORT" "$SHOP" "$TMP/ng" 1

declare -A URL=(
    [floodgate]="https://127.0.0.1:$FG_PORT$PATH_"
    [nginx]="https://127.0.0.1:$NG_PORT$PATH_"
)
TARGETS=(floodgate nginx)
MODES=(full resumed h1 h2)

for t in "${TARGETS[@]}"; do
    ok=0
    for _ in $(seq 100); do
        if curl -skf -m 1 -o /dev/null "${URL[$t]}"; then ok=1; break; fi
        sleep 0.1
    done
    [[ $ok == 1 ]] || { tail -n 20 "$TMP"/*.log "$TMP"/*/*.log >&2 || true; die "$t does not answer at ${URL[$t]}"; }
    proto=$(curl -sk -m 2 -o /dev/null -w '%{http_version}' --http2 "${URL[$t]}")
    [[ "$proto" == 2 ]] || die "$t did not negotiate HTTP/2 by ALPN (got $proto)"
done

# --- CPU accounting --------------------------------------------------------------------
HZ="$(getconf CLK_TCK)"
ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
ticks_sut() {  # floodgate: one process; nginx: the master and its workers
    local t=$1 sum p
    case $t in
        floodgate) ticks_of "$FG_PID" ;;
        nginx)
            sum=$(ticks_of "$NG_PID")
            for p in $(pgrep -P "$NG_PID" || true); do sum=$((sum + $(ticks_of "$p"))); done
            echo "$sum" ;;
    esac
}
handshakes() {  # floodgate's own count of full and resumed handshakes: "FULL RESUMED"
    curl -s -m 2 "http://127.0.0.1:$FG_ADMIN/metrics" | awk '
        /^floodgate_tls_handshakes_total\{result="full"\}/{f=$2}
        /^floodgate_tls_handshakes_total\{result="resumed"\}/{r=$2}
        END{print f+0, r+0}'
}

# --- one run -------------------------------------------------------------------------
to_ms() {  # wrk latency "812.00us" / "1.23ms" / "1.01s" -> ms
    awk -v v="$1" 'BEGIN{
        if (v ~ /us$/) { sub(/us$/,"",v); printf "%.3f", v/1000 }
        else if (v ~ /ms$/) { sub(/ms$/,"",v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/,"",v); printf "%.3f", v*1000 }
        else printf "nan" }'
}
# Prints: rps p99_ms requests errors sut_cpu_s
run_one() {  # target mode duration outfile
    local t=$1 m=$2 d=$3 out=$4 c0 c1 rps p99=nan reqs errs
    c0=$(ticks_sut "$t")
    case $m in
        full)
            timeout 120 taskset -c "$GEN_CPU" h2load -t1 -c"$HS_TOTAL" -n"$HS_TOTAL" \
                "${URL[$t]}" >"$out" 2>&1 || true ;;
        resumed)
            timeout $((d + 20)) taskset -c "$GEN_CPU" wrk -t1 -c"$HS_CONNS" -d"${d}s" --latency \
                -H "Connection: close" "${URL[$t]}" >"$out" 2>&1 || true ;;
        h1)
            timeout $((d + 20)) taskset -c "$GEN_CPU" wrk -t1 -c"$CONNS" -d"${d}s" --latency \
                "${URL[$t]}" >"$out" 2>&1 || true ;;
        h2)
            timeout $((d + 20)) taskset -c "$GEN_CPU" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" \
                -D"$d" "${URL[$t]}" >"$out" 2>&1 || true ;;
    esac
    c1=$(ticks_sut "$t")
    if [[ $m == h2 || $m == full ]]; then
        rps=$(awk '/^finished in/{gsub(",","",$4); print $4}' "$out")
        reqs=$(awk '/^requests:/{print $8}' "$out")
        errs=$(awk '/^requests:/{print $10 + $12}' "$out")
        # h2load prints no percentiles; its mean time per request stands in.
        p99=$(awk '/^time for request:/{print $6}' "$out")
        p99="$(to_ms "$p99")"
    else
        rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
        p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
        reqs=$(awk '/requests in/{print $1}' "$out")
        errs=$(awk '/Socket errors:/{gsub(",","");e=$4+$6+$8+$10} /Non-2xx/{n=$NF} END{print e+n+0}' "$out")
    fi
    echo "${rps:-0} ${p99:-nan} ${reqs:-0} ${errs:-0}" \
        "$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN{printf "%.2f", (b-a)/hz}')"
}

echo "tls-bench: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); server under test on core $SUT_CPU, generator and shop on core $GEN_CPU; ${DURATION}s runs, $ROUNDS rounds"
echo "  floodgate $("$REAL_FG" --version 2>/dev/null | awk '{print $2}') ($REAL_FG), $("$REAL_NG" -v 2>&1 | sed 's/.*: //') (1 worker), $(openssl version | cut -d' ' -f1-2)"
echo "  certificate: ECDSA P-256, self-signed, the same file for both; GET $PATH_ on the shop at $SHOP"
echo "  full: h2load -t1 -c$HS_TOTAL -n$HS_TOTAL; resumed: wrk -t1 -c$HS_CONNS, Connection: close; h1: wrk -t1 -c$CONNS; h2: h2load -t1 -c$H2_CONNS -m$H2_STREAMS"

if (( WARMUP > 0 )); then
    for t in "${TARGETS[@]}"; do
        for m in "${MODES[@]}"; do run_one "$t" "$m" "$WARMUP" "$TMP/warmup-$t-$m.txt" >/dev/null; done
    done
fi

declare -A RPS P99 CPU REQS
printf '%-6s %-10s %-10s %12s %10s %10s %7s %8s\n' round mode target "req/s" "p99 ms" requests errors "sut cpu"
for ((r = 0; r < ROUNDS; r++)); do
    for m in "${MODES[@]}"; do
        for ((i = 0; i < 2; i++)); do
            t=${TARGETS[$(((i + r) % 2))]}
            read -r f0 r0 < <(handshakes)
            read -r rps p99 reqs errs cpu < <(run_one "$t" "$m" "$DURATION" "$TMP/run-$r-$m-$t.txt")
            note=""
            if [[ $t == floodgate ]]; then
                read -r f1 r1 < <(handshakes)
                note="  ($((f1 - f0)) full, $((r1 - r0)) resumed handshakes)"
            fi
            RPS[$t.$m]+="$rps "; P99[$t.$m]+="$p99 "; REQS[$t.$m]+="$reqs "; CPU[$t.$m]+="$cpu "
            printf '%-6s %-10s %-10s %12s %10s %10s %7s %8s%s\n' $((r + 1)) "$m" "$t" "$rps" "$p99" "$reqs" "$errs" "${cpu}s" "$note"
            [[ "$errs" == 0 ]] || echo "  warning: $t/$m had $errs errors (see $TMP/run-$r-$m-$t.txt; KEEP=1 keeps it)" >&2
        done
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{ if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
sum() { tr ' ' '\n' | awk '{s+=$1} END{printf "%.2f", s}'; }

echo
echo "medians over $ROUNDS rounds (${DURATION}s runs; full: $HS_TOTAL connections; p99 for full and h2 is h2load's mean):"
printf '%-10s %-10s %12s %10s %12s %16s\n' mode target "req/s" "p99 ms" "sut cpu s" "req/sut-cpu-s"
declare -A M E L
for m in "${MODES[@]}"; do
    for t in "${TARGETS[@]}"; do
        M[$t.$m]=$(echo "${RPS[$t.$m]}" | median)
        L[$t.$m]=$(echo "${P99[$t.$m]}" | median)
        tr_=$(echo "${REQS[$t.$m]}" | sum); tc=$(echo "${CPU[$t.$m]}" | sum)
        E[$t.$m]=$(awk -v r="$tr_" -v c="$tc" 'BEGIN{ if (c>0) printf "%.0f", r/c; else print "nan" }')
        printf '%-10s %-10s %12.0f %10.3f %12s %16s\n' "$m" "$t" "${M[$t.$m]}" "${L[$t.$m]}" "$tc" "${E[$t.$m]}"
    done
done
echo
met=MET
for m in "${MODES[@]}"; do
    ratio=$(awk -v f="${M[floodgate.$m]}" -v n="${M[nginx.$m]}" 'BEGIN{ printf "%.2f", (n>0 ? f/n : 0) }')
    eff=$(awk -v f="${E[floodgate.$m]}" -v n="${E[nginx.$m]}" 'BEGIN{ printf "%.2f", (n>0 ? f/n : 0) }')
    echo "floodgate/nginx $m: req/s ${ratio}x, requests per CPU-second ${eff}x"
    awk -v r="$ratio" 'BEGIN{ exit !(r >= 1.00) }' || met="NOT MET"
done
echo "target (issue 15): floodgate req/s >= nginx on handshakes (full, resumed) and keep-alive (h1, h2): $met"
echo "(sut cpu well below the run time means the generator's core was the limit: then compare requests per CPU-second)"
