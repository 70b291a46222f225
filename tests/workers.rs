//! Thread-per-core serving (`server.workers`): each worker thread has its own listener
//! on every address, every one of them serves, and they end with the gateway.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

/// Threads of this process named like the gateway's workers.
fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("floodgate-w"))
        .count()
}

#[tokio::test]
async fn three_workers_each_serve_their_listener_share_the_origin_pool_and_end_with_the_gateway() {
    let shop = fast_shop().await;
    let gw = gateway(&config_text(
        shop.addr,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 3\n",
    ))
    .await;
    // A thread names itself as it starts, a moment after the gateway has spawned it.
    eventually("one thread per worker", Duration::from_secs(5), || async {
        worker_threads() == 3
    })
    .await;

    // A fresh connection each time: the kernel spreads them over the three listeners,
    // so a listener nobody accepted on would leave some of these hanging.
    for i in 0..60 {
        let stream = tokio::time::timeout(Duration::from_secs(5), async {
            let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /fast HTTP/1.1\r\nhost: shop.test\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await.unwrap();
            answer
        })
        .await
        .unwrap_or_else(|_| panic!("connection {i} was never served"));
        assert!(stream.starts_with(b"HTTP/1.1 200"), "connection {i}");
    }
    // One request at a time: a worker with no idle origin connection of its own takes
    // another worker's before it opens one.
    // (Without that, each of the three workers would open its own: 3.)
    let opened = shop.stats.connections.load(Ordering::Relaxed);
    assert_eq!(
        opened, 1,
        "the origin saw {opened} connections for 60 requests"
    );

    assert!(gw.shutdown().await);
    eventually(
        "the worker threads ended",
        Duration::from_secs(5),
        || async { worker_threads() == 0 },
    )
    .await;
}

#[test]
fn zero_workers_is_refused_naming_the_key() {
    let text = config_text(
        "127.0.0.1:9".parse().unwrap(),
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 0\n",
    );
    let errors = floodgate::config::parse(&text).unwrap_err();
    assert!(
        errors.iter().any(|e| e.key == "server.workers"),
        "{errors:?}"
    );
}
