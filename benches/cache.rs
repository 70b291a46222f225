//! A cache hit through a route's in-process tower stack: no sockets on the hit path.
//!
//! The simulated shop fills the cache once over loopback; every measured request is
//! then answered by the cache layer from memory.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use floodgate::body;
use floodgate::config;
use floodgate::metrics::Metrics;
use floodgate::proxy::Compiled;
use floodgate::shop::{self, ShopProfile};
use http::Request;
use http_body_util::BodyExt;
use tower::Service;

fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (compiled, _shop) = rt.block_on(async {
        let shop = shop::start("127.0.0.1:0".parse().unwrap(), ShopProfile::default()).await.unwrap();
        let text = format!(
            "[[upstream]]\nname = \"shop\"\nservers = [\"{}\"]\n[[route]]\nname = \"shop\"\nupstream = \"shop\"\ncache = {{ force_ttl = \"1h\" }}\n",
            shop.addr
        );
        let cfg = config::parse(&text).unwrap();
        (Arc::new(Compiled::build(cfg, &Metrics::new(), None)), shop)
    });
    let request = || {
        Request::get("http://shop.test/products/1")
            .header("host", "shop.test")
            .header("accept", "text/html")
            .body(body::empty())
            .unwrap()
    };
    let mut svc = compiled.routes[0].service.clone();
    rt.block_on(async {
        let r = svc.call(request()).await.unwrap();
        r.into_body().collect().await.unwrap();
        let r = svc.call(request()).await.unwrap();
        let status = r
            .headers()
            .get("cache-status")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            status.contains("hit"),
            "warm-up did not fill the cache: {status}"
        );
    });
    c.bench_function("cache_hit_in_process", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = compiled.routes[0].service.clone();
            async move {
                let r = svc.call(request()).await.unwrap();
                r.into_body().collect().await.unwrap().to_bytes()
            }
        })
    });
}

criterion_group!(benches, cache_hit);
criterion_main!(benches);
