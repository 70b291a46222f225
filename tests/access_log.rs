//! Access logs to a file, as an operator runs them: `floodgate run` with
//! `log.access_log_file`, logrotate's rename and SIGUSR1.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::process::{addr_in, Process, BIN};
use common::*;
use http_body_util::Full;

/// A `floodgate run` process; killed on drop if still running.
async fn get_with_id(addr: SocketAddr, id: &str) -> Answer {
    send(
        http::Request::get(format!("http://{addr}/products/7"))
            .header("x-request-id", id)
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn eventually_contains(path: &Path, needle: &str) {
    eventually(
        &format!("{} contains {needle:?}", path.display()),
        Duration::from_secs(10),
        || async { read(path).contains(needle) },
    )
    .await;
}

#[tokio::test]
async fn after_logrotate_renames_the_access_log_sigusr1_makes_new_lines_go_to_a_new_file() {
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let text = config_text(shop.addr, "").replace(
        "[log]\naccess_log = false\n",
        &format!(
            "[log]\naccess_log = true\nformat = \"json\"\naccess_log_file = \"{}\"\n",
            log.display()
        ),
    );
    assert!(text.contains("access_log_file"), "{text}");
    let config = dir.path().join("floodgate.toml");
    std::fs::write(&config, text).unwrap();
    let mut gw = Process::spawn(&config, false);

    assert_eq!(get_with_id(gw.addr, "before-rotate").await.status, 200);
    eventually_contains(&log, "before-rotate").await;
    let first = read(&log);
    let line: serde_json::Value =
        serde_json::from_str(first.lines().next().unwrap()).expect("one JSON object a line");
    assert_eq!(line["target"], "floodgate::access", "{line}");
    assert_eq!(line["status"], 200, "{line}");

    // What logrotate does: rename, then signal.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    gw.signal("-USR1");
    gw.wait_for_line("reopening the access log file");

    assert_eq!(get_with_id(gw.addr, "after-rotate").await.status, 200);
    eventually_contains(&log, "after-rotate").await;
    assert!(
        !read(&log).contains("before-rotate"),
        "the new file starts empty"
    );
    let old = read(&rotated);
    assert!(old.contains("before-rotate"), "{old}");
    assert!(
        !old.contains("after-rotate"),
        "nothing more goes to the rotated file: {old}"
    );
    assert_eq!(
        shop.stats.served.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the origin served both requests"
    );
}

#[tokio::test]
async fn access_lines_go_to_the_file_and_not_to_stderr() {
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let text = config_text(shop.addr, "").replace(
        "[log]\naccess_log = false\n",
        &format!("[log]\naccess_log_file = \"{}\"\n", log.display()),
    );
    let config = dir.path().join("floodgate.toml");
    std::fs::write(&config, text).unwrap();
    let mut gw = Process::spawn(&config, false);
    assert_eq!(get_with_id(gw.addr, "to-the-file").await.status, 200);
    eventually_contains(&log, "to-the-file").await;
    assert!(
        read(&log).contains("floodgate::access"),
        "text format names the target: {}",
        read(&log)
    );
    // The reopen message proves stderr is still read; nothing before it was the
    // access line.
    gw.signal("-USR1");
    let seen = gw.lines_until("reopening the access log file");
    assert!(
        !seen.iter().any(|l| l.contains("to-the-file")),
        "the access line stayed off stderr: {seen:?}"
    );
}

#[test]
fn check_refuses_an_access_log_file_with_access_logging_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("floodgate.toml");
    std::fs::write(
        &config,
        "[log]\naccess_log = false\naccess_log_file = \"/tmp/x.log\"\n\n\
         [[upstream]]\nname = \"shop\"\nservers = [\"127.0.0.1:3000\"]\n\n\
         [[route]]\nname = \"shop\"\nupstream = \"shop\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log.access_log_file"), "{err}");
}

#[test]
fn run_refuses_to_start_when_the_access_log_file_cannot_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("floodgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
             [log]\naccess_log_file = \"{}/no/such/dir/access.log\"\n\n\
             [[upstream]]\nname = \"shop\"\nservers = [\"127.0.0.1:3000\"]\n\n\
             [[route]]\nname = \"shop\"\nupstream = \"shop\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log.access_log_file"), "{err}");
}

#[tokio::test]
async fn a_stalled_log_disk_does_not_hold_up_requests() {
    // The access log is a pipe whose reader never reads: once the pipe's 64 KiB are
    // full, every write to it blocks, as a write to a stalled disk would.
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.fifo");
    assert!(Command::new("mkfifo").arg(&log).status().unwrap().success());
    let reader_path = log.clone();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(reader_path).unwrap();
        let _ = held_tx.send(());
        // Hold the pipe open, never read.
        std::thread::sleep(Duration::from_secs(120));
        drop(f);
    });
    let text = config_text(shop.addr, "").replace(
        "[log]\naccess_log = false\n",
        &format!("[log]\naccess_log_file = \"{}\"\n", log.display()),
    );
    let config = dir.path().join("floodgate.toml");
    std::fs::write(&config, text).unwrap();
    let gw = Process::spawn(&config, false);
    held_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    // 1,000 lines of ~250 bytes: four times what the pipe holds.
    let id = "x".repeat(100);
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..1000 {
            assert_eq!(get_with_id(gw.addr, &id).await.status, 200);
        }
    })
    .await;
    assert!(all.is_ok(), "requests stalled behind the access log");
    assert_eq!(
        shop.stats.served.load(std::sync::atomic::Ordering::SeqCst),
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_that_cannot_keep_up_drops_lines_and_counts_them() {
    // The access log is a pipe nobody reads while the traffic comes: the writer thread
    // blocks once the pipe is full, the gateway's buffer of lines fills behind it, and
    // every line past that must be dropped and counted, never waited for. 70,000
    // requests overflow the 65,536 buffered lines (plus the few hundred the pipe and
    // the write buffer take) by about 4,000.
    use floodgate::logging::ACCESS_LOG_BUFFERED_LINES;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    const REQUESTS: usize = 70_000;
    const CONNECTIONS: usize = 64;

    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.fifo");
    assert!(Command::new("mkfifo").arg(&log).status().unwrap().success());
    // Opening a FIFO for writing waits for a reader: open one, and read nothing yet.
    let reader_path = log.clone();
    let (fifo_tx, fifo_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = fifo_tx.send(std::fs::File::open(reader_path).unwrap());
    });
    // The shop's pages are cacheable: a flash sale's traffic, answered from the cache,
    // so the test spends its time on requests and their log lines.
    let text = config_text(
        shop.addr,
        "[[route]]\nname = \"shop\"\nupstream = \"shop\"\ncache = { enabled = true }\n",
    )
    .replace(
        "[log]\naccess_log = false\n",
        &format!("[log]\naccess_log_file = \"{}\"\n", log.display()),
    );
    let config = dir.path().join("floodgate.toml");
    std::fs::write(&config, text).unwrap();
    let mut gw = Process::spawn(&config, false);
    let admin = addr_in(&gw.wait_for_line("admin listening"));
    let fifo = fifo_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    let dropped = || async move {
        let text = get(admin, "/metrics").await.text();
        metric(&text, "floodgate_access_log_dropped_total")
            .unwrap_or_else(|| panic!("floodgate_access_log_dropped_total in {text}"))
            as usize
    };
    assert_eq!(dropped().await, 0, "nothing dropped before any request");

    // Many shoppers on keep-alive connections, each sending as soon as answered.
    let client = client();
    let next = Arc::new(AtomicUsize::new(0));
    let uri: http::Uri = format!("http://{}/products/7", gw.addr).parse().unwrap();
    let statuses = tokio::time::timeout(Duration::from_secs(60), async {
        let mut shoppers = tokio::task::JoinSet::new();
        for _ in 0..CONNECTIONS {
            let (client, next, uri) = (client.clone(), next.clone(), uri.clone());
            shoppers.spawn(async move {
                let mut statuses = Vec::new();
                while next.fetch_add(1, Relaxed) < REQUESTS {
                    let req = http::Request::get(uri.clone())
                        .body(Full::<Bytes>::default())
                        .unwrap();
                    let resp = client.request(req).await.expect("request completes");
                    statuses.push(resp.status());
                    http_body_util::BodyExt::collect(resp.into_body())
                        .await
                        .expect("body completes");
                }
                statuses
            });
        }
        let mut all = Vec::new();
        while let Some(done) = shoppers.join_next().await {
            all.extend(done.unwrap());
        }
        all
    })
    .await
    .expect("requests stalled behind the access log");
    assert_eq!(statuses.len(), REQUESTS, "every request got an answer");
    let not_ok = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(not_ok, 0, "every answer is the page");

    let lost = dropped().await;
    assert!(lost > 0, "the lines past the buffer are counted as dropped");

    // Now the disk catches up: every line is either in the file or counted as dropped.
    let written = Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(fifo).lines().map_while(Result::ok) {
            if line.contains("floodgate::access") {
                w.fetch_add(1, Relaxed);
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (written, lost) = loop {
        let (w, d) = (written.load(Relaxed), dropped().await);
        if w + d >= REQUESTS || std::time::Instant::now() > deadline {
            break (w, d);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        written + lost,
        REQUESTS,
        "{written} lines in the file and {lost} counted as dropped, for {REQUESTS} requests"
    );
    assert!(
        written >= ACCESS_LOG_BUFFERED_LINES,
        "the buffered lines reach the file, only those past the buffer are dropped: \
         {written} written"
    );
}
