//! A real `floodgate run` process, as an operator starts it: its addresses read from
//! its log, its stderr kept for lines a test waits for, signals sent with `kill`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// The gateway binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

/// A `floodgate run` process; killed on drop if still running.
pub struct Process {
    pub child: Child,
    /// The first proxy listener.
    pub addr: SocketAddr,
    /// The admin listener, if the config has one.
    pub admin: Option<SocketAddr>,
    stderr: Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The loopback address in a "listening" line: `addr=127.0.0.1:N` in text logs,
/// `"addr":"127.0.0.1:N"` in JSON.
pub fn addr_in(line: &str) -> SocketAddr {
    line.split_once("127.0.0.1:")
        .map(|(_, rest)| {
            let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
            format!("127.0.0.1:{port}")
        })
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an address in {line}"))
}

impl Process {
    /// Starts `floodgate run --config CONFIG` (log level info) and waits until it
    /// printed its proxy listener (and its admin listener, when `admin`).
    pub fn spawn(config: &std::path::Path, admin: bool) -> Process {
        Process::spawn_logging(config, admin, Some("info"))
    }

    /// As [`Process::spawn`], with `RUST_LOG` set to `rust_log` (`None`: unset, so
    /// the config's `log.level` decides).
    pub fn spawn_logging(config: &std::path::Path, admin: bool, rust_log: Option<&str>) -> Process {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG");
        if let Some(l) = rust_log {
            cmd.env("RUST_LOG", l);
        }
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Read continuously (into an unbounded channel) so the child never blocks on
        // a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut p = Process {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            admin: None,
            stderr: rx,
            seen: Vec::new(),
        };
        let mut proxy = None;
        while proxy.is_none() || (admin && p.admin.is_none()) {
            let line = p.next_line("its listening addresses");
            if line.contains("admin listening") {
                p.admin = Some(addr_in(&line));
            } else if line.contains("listening") {
                proxy = Some(addr_in(&line));
            }
        }
        p.addr = proxy.unwrap();
        p
    }

    fn next_line(&mut self, what: &str) -> String {
        let line = self
            .stderr
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no stderr line with {what:?}"));
        self.seen.push(line.clone());
        line
    }

    /// Every stderr line not handed out yet, up to and including the first with
    /// `what` (waiting for it).
    pub fn lines_until(&mut self, what: &str) -> Vec<String> {
        if let Some(i) = self.seen.iter().position(|l| l.contains(what)) {
            return self.seen.drain(..=i).collect();
        }
        loop {
            if self.next_line(what).contains(what) {
                return std::mem::take(&mut self.seen);
            }
        }
    }

    /// Waits for (or finds among the lines already read) a stderr line with `what`.
    pub fn wait_for_line(&mut self, what: &str) -> String {
        self.lines_until(what).pop().expect("the line")
    }

    /// Sends a signal (`-TERM`, `-HUP`, `-USR1`) with `kill`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}
