# Shared by the comparison scripts in this folder (proxy-bench.sh, cache-bench.sh,
# overload-bench.sh): free ports, starting the shop, floodgate and nginx from their
# templates, and stopping everything started. Source it; it defines functions only.
# Callers set FLOODGATE_BIN and NGINX_BIN and keep the PIDS array of what they started.

PIDS=()

# Stops every process in PIDS: TERM, up to 5 s, then KILL.
stop_pids() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    PIDS=()
}

# A loopback port free right now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_shop ADDR LOG [floodgate shop options...]: the simulated shop; sets SHOP_PID.
start_shop() {
    local addr="$1" log="$2"; shift 2
    "$FLOODGATE_BIN" shop --listen "$addr" "$@" >"$log" 2>&1 &
    SHOP_PID=$!; PIDS+=("$SHOP_PID")
}

# start_floodgate TEMPLATE LISTEN ADMIN UPSTREAM DIR: fills __LISTEN__, __ADMIN__ and
# __UPSTREAM__, checks the config, runs it; sets FG_PID.
start_floodgate() {
    local template="$1" listen="$2" admin="$3" upstream="$4" dir="$5"
    sed -e "s|__LISTEN__|$listen|" -e "s|__ADMIN__|$admin|" -e "s|__UPSTREAM__|$upstream|" \
        "$template" >"$dir/floodgate.toml"
    "$FLOODGATE_BIN" check --config "$dir/floodgate.toml" >/dev/null || die "floodgate config rejected"
    "$FLOODGATE_BIN" run --config "$dir/floodgate.toml" >"$dir/floodgate.log" 2>&1 &
    FG_PID=$!; PIDS+=("$FG_PID")
}

# start_nginx TEMPLATE LISTEN UPSTREAM DIR WORKERS: fills __LISTEN__, __UPSTREAM__,
# __PREFIX__ (DIR) and __WORKERS__, tests the config, runs nginx; sets NG_PID.
start_nginx() {
    local template="$1" listen="$2" upstream="$3" dir="$4" workers="$5"
    sed -e "s|__LISTEN__|$listen|" -e "s|__UPSTREAM__|$upstream|" \
        -e "s|__PREFIX__|$dir|g" -e "s|__WORKERS__|$workers|" "$template" >"$dir/nginx.conf"
    "$NGINX_BIN" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" || die "nginx config rejected"
    "$NGINX_BIN" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" &
    NG_PID=$!; PIDS+=("$NG_PID")
}
