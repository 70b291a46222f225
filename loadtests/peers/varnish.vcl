# Varnish as a caching reverse proxy: the second peer for floodgate's cache (the later
# cache comparison, issue 2 / README "Performance"). Not used by proxy-bench.sh.
#
# Filled in with sed: __UPSTREAM_HOST__ / __UPSTREAM_PORT__ (the shop). The listen
# address, storage and threads are varnishd flags, not VCL; run it as:
#   varnishd -F -n __PREFIX__/varnish -a 127.0.0.1:__PORT__ -f __PREFIX__/varnish.vcl \
#            -s malloc,256m -p thread_pools=2 -p thread_pool_min=100 \
#            -p default_grace=10s -p timeout_idle=65
#   (varnishd drops privileges to its own users: __PREFIX__ and the .vcl must be
#    readable by them, e.g. chmod 755 the mktemp dir; as root, or add -j none.)
#   (-F foreground so the bench owns the process; -n a private work dir so it runs
#    without touching /var/lib/varnish; thread_pools = cores, as nginx workers and
#    floodgate's tokio workers; no varnishncsa = no access log, like the others.)
#
# How and why:
#  - Freshness from the origin's Cache-Control (max-age=2 on the shop's pages, as
#    floodgate's default_ttl = "2s"); 2s when the origin says nothing cacheable.
#  - Request coalescing is built in (waiting list): a miss sends one request per
#    object to the origin while the crowd waits for it.
#  - Grace 10s: after expiry, one background fetch refreshes while the others get the
#    stale copy; a sick origin (probe failing) is covered by grace too.
#  - Varnish's built-in rules stay in force: no caching for requests with Cookie or
#    Authorization, nor for answers with Set-Cookie, private, no-store or no-cache.
#    The shop's /cart (private, Set-Cookie) and POST /checkout therefore pass.
#  - X-Cache: HIT/MISS on every answer; X-Request-Id passed up and back.
vcl 4.1;

import std;

backend shop {
    .host = "__UPSTREAM_HOST__";
    .port = "__UPSTREAM_PORT__";
    .connect_timeout = 1s;
    .first_byte_timeout = 30s;
    .between_bytes_timeout = 10s;
    .max_connections = 256;
    .probe = {
        .url = "/healthz";
        .interval = 1s;
        .timeout = 500ms;
        .window = 5;
        .threshold = 3;
    }
}

sub vcl_recv {
    if (!req.http.X-Request-Id) {
        set req.http.X-Request-Id = req.xid;
    }
    # Bench clients send no cookies; production would strip analytics cookies here so
    # that product pages stay cacheable for visitors carrying them.
    if (req.http.Cookie) {
        set req.http.Cookie = regsuball(req.http.Cookie, "(^|;\s*)(_ga|_gid|_fbp)=[^;]*", "");
        if (req.http.Cookie ~ "^\s*$") {
            unset req.http.Cookie;
        }
    }
    # Fall through to the built-in vcl_recv (pass on Cookie/Authorization, non-GET/HEAD).
}

sub vcl_backend_response {
    # The origin says nothing: cache 2s (floodgate's default_ttl).
    if (!beresp.http.Cache-Control && !beresp.http.Expires) {
        set beresp.ttl = 2s;
    }
    set beresp.grace = 10s;
    # Fall through to the built-in rules (Set-Cookie, private, no-store -> uncacheable).
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    set resp.http.X-Request-Id = req.http.X-Request-Id;
}
