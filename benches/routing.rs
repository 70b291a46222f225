//! Routing cost per request with a portal of 500 shops (exact hosts, wildcard tenants,
//! several prefixes each): it should not grow with the number of sites. And the path
//! normalisation every request goes through before routing.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use floodgate::config::{HostPattern, RouteConfig};
use floodgate::edge::normalize_path;
use floodgate::router::{normalize_host, Router};

fn portal(sites: usize) -> Vec<RouteConfig> {
    let mut routes = Vec::new();
    for i in 0..sites {
        for prefix in ["/", "/api/", "/checkout", "/static/"] {
            routes.push(RouteConfig {
                name: format!("shop{i}{prefix}"),
                hosts: vec![
                    HostPattern::Exact(format!("shop{i}.example.com")),
                    HostPattern::Wildcard(format!("tenants{i}.example.com")),
                ],
                path_prefix: prefix.into(),
                upstream: 0,
                priority: Vec::new(),
                cache: None,
                rate_limits: Default::default(),
                waiting_room: None,
                request_buffering: true,
                https_redirect: false,
            });
        }
    }
    routes
}

fn routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    for sites in [1usize, 500] {
        let router = Router::new(&portal(sites));
        let last = sites - 1;
        let exact = format!("Shop{last}.example.com:443");
        let wildcard = format!("a.tenants{last}.example.com");
        g.bench_with_input(BenchmarkId::new("exact_host", sites), &exact, |b, host| {
            b.iter(|| {
                router.route(
                    &normalize_host(black_box(host)),
                    black_box("/api/cart/items"),
                )
            })
        });
        g.bench_with_input(
            BenchmarkId::new("wildcard_host", sites),
            &wildcard,
            |b, host| {
                b.iter(|| {
                    router.route(&normalize_host(black_box(host)), black_box("/products/123"))
                })
            },
        );
    }
    g.finish();
}

/// Path normalisation before routing: the common, already-normal path must cost a scan
/// and no allocation; a path with dot segments and escapes pays for one copy.
fn path_normalisation(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize_path");
    for (name, path) in [
        ("already_normal", "/products/123/reviews"),
        (
            "long_normal",
            "/api/v2/catalogue/shops/491/products/123456/variants/7/stock",
        ),
        ("dot_segments", "/static/../products/./123//reviews"),
        ("escapes", "/%70roducts/%31%32%33/a%3ab"),
    ] {
        g.bench_with_input(BenchmarkId::new(name, path.len()), &path, |b, p| {
            b.iter(|| normalize_path(black_box(p), true).map(|c| c.len()))
        });
    }
    g.finish();
}

criterion_group!(benches, routing, path_normalisation);
criterion_main!(benches);
