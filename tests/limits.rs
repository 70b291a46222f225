//! Client-side limits: oversized headers, oversized bodies, slow headers, idle sockets.
//! In each case the origin never sees the request.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes or `within` passes; returns what was read and
/// whether the connection was closed.
async fn read_until_close(s: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&buf).into_owned(), true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (String::from_utf8_lossy(&buf).into_owned(), false),
        }
    }
}

fn limits_config(shop: std::net::SocketAddr) -> String {
    config_text(
        shop,
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
header_read_timeout = "500ms"
idle_timeout = "1s"
max_header_size = "16KiB"
max_headers = 20
max_request_body = "1KiB"
"#,
    )
}

#[tokio::test]
async fn oversized_headers_get_431_and_never_reach_the_origin() {
    let shop = fast_shop().await;
    let gw = gateway(&limits_config(shop.addr)).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let big = "x".repeat(20 * 1024);
    s.write_all(format!("GET /fast HTTP/1.1\r\nHost: shop\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (answer, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(shop.stats.received.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn too_many_header_fields_get_431() {
    let shop = fast_shop().await;
    let gw = gateway(&limits_config(shop.addr)).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let mut req = String::from("GET /fast HTTP/1.1\r\nHost: shop\r\n");
    for i in 0..30 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let (answer, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(shop.stats.received.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_and_never_reaches_the_origin() {
    let shop = fast_shop().await;
    let gw = gateway(&limits_config(shop.addr)).await;
    let body = vec![b'x'; 4096];
    let a = send(
        http::Request::post(format!("http://{}/checkout", gw.addr()))
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 413);
    assert_eq!(shop.stats.received.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_chunked_body_that_grows_past_the_limit_gets_413() {
    let shop = fast_shop().await;
    let gw = gateway(&limits_config(shop.addr)).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let chunk = "y".repeat(1000);
    let mut req = String::from(
        "POST /__shop/upload HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..3 {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str("0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let (answer, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(shop.stats.upload_bytes.load(Ordering::SeqCst) <= 1024);
}

#[tokio::test]
async fn a_client_sending_headers_slower_than_the_header_timeout_is_disconnected() {
    let shop = fast_shop().await;
    let gw = gateway(&limits_config(shop.addr)).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET /fast HTTP/1.1\r\n").await.unwrap();
    // One header byte every 100 ms: each byte arrives well within any read timeout,
    // but the whole head never completes.
    let mut closed = false;
    for b in b"Host: shop\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut probe = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await
        {
            // 0 = closed; some bytes = an error answer followed by a close.
            closed = true;
            let _ = n;
            break;
        }
    }
    assert!(closed, "the slow client was never disconnected");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "disconnected only after {:?}",
        started.elapsed()
    );
    assert_eq!(shop.stats.received.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_after_the_header_timeout() {
    let shop = fast_shop().await;
    let gw = gateway(&limits_config(shop.addr)).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let (_, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(
        closed,
        "a silent connection stayed open past the header timeout"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let shop = fast_shop().await;
    let gw = gateway(&limits_config(shop.addr)).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /fast HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    let (_, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "idle keep-alive connection never closed");
    assert!(
        idle_from.elapsed() >= Duration::from_millis(900),
        "closed too early: {:?}",
        idle_from.elapsed()
    );
}
