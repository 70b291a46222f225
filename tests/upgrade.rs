//! A zero-downtime binary upgrade, as docs/operations.md describes it: a second
//! `floodgate run` binds the same address (SO_REUSEPORT), the first gets SIGTERM,
//! stops accepting, serves what it had queued and drains; no client notices.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::Process;
use common::*;

/// With `net.ipv4.tcp_migrate_req = 1` the kernel hands the connections still in a
/// closing listener's queue to another listener of the port instead of resetting
/// them; the runbook sets it, and so does this test (it is per network namespace).
fn migrate_requests() {
    let path = "/proc/sys/net/ipv4/tcp_migrate_req";
    if std::fs::read_to_string(path)
        .map(|v| v.trim() == "1")
        .unwrap_or(false)
    {
        return;
    }
    std::fs::write(path, "1").unwrap_or_else(|e| {
        panic!("this test needs {path} = 1 (root, or set it before the tests): {e}")
    });
}

/// One request on a connection of its own (the worst case for an upgrade: every
/// request meets the listener).
async fn one_fresh_request(addr: SocketAddr) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "shop.test")
        .body(http_body_util::Full::<bytes::Bytes>::default())
        .unwrap();
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_takes_over_the_port_while_the_old_one_drains_and_no_request_fails() {
    migrate_requests();
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join("floodgate.toml");
    let server =
        format!("[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\n");
    let text = config_text(shop.addr, &server);
    std::fs::write(&path, text).unwrap();

    let mut old = Process::spawn(&path, false);
    let addr = old.addr;
    assert_eq!(addr.port(), port);

    // Clients keep coming for the whole upgrade, each on a new connection.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, errors) = (stop.clone(), ok.clone(), failed.clone(), errors.clone());
        clients.push(tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(20);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end && n < 20_000 {
                n += 1;
                match one_fresh_request(addr).await {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(s) => {
                        errors.lock().unwrap().push(format!("status {s}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        errors.lock().unwrap().push(e);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The new binary binds the same port while the old one still serves.
    let new = Process::spawn(&path, false);
    assert_eq!(
        new.addr, addr,
        "the new process listens on the same address"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_term = ok.load(Ordering::Relaxed);
    old.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || {
        let s = old.child.wait().unwrap();
        drop(old);
        s
    })
    .await
    .unwrap();
    assert!(
        status.success(),
        "the old process drained and exited 0: {status:?}"
    );
    let at_exit = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "no request failed: {:?}", errors.lock().unwrap());
    assert!(
        before_term > 50,
        "clients were served before the upgrade: {before_term}"
    );
    assert!(
        ok > at_exit + 50,
        "the new process served after the old one left: {at_exit} then {ok}"
    );
    drop(new);
}
