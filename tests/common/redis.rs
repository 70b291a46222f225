//! A real `redis-server` for the shared-state tests, and the clients and gateway
//! processes they talk through.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use http_body_util::Full;

pub use super::process::Process;
use super::{config_text, eventually, gateway, get_from, metric, metrics_text, Answer};
use floodgate::Gateway;

// === a real Redis ===

/// A `redis-server` of this test's own, on loopback, without persistence.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// More arguments (a replica's `--replicaof`, a sentinel's config file first).
    args: Vec<String>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        RedisServer::start_with(Vec::new()).await
    }

    /// A server started with more arguments (the first may be a config file).
    pub async fn start_with(args: Vec<String>) -> RedisServer {
        let mut r = RedisServer {
            port: free_port(),
            child: None,
            args,
        };
        r.restart().await;
        r
    }

    /// A replica of `primary`.
    pub async fn replica_of(primary: &RedisServer) -> RedisServer {
        let of = format!("127.0.0.1 {}", primary.port);
        RedisServer::start_with(vec!["--replicaof".into(), of]).await
    }

    /// A sentinel watching `primary` as `name`, deciding fast (half a second down).
    pub async fn sentinel_of(
        primary: &RedisServer,
        name: &str,
        dir: &std::path::Path,
    ) -> RedisServer {
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor {name} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {name} 500\n\
                 sentinel failover-timeout {name} 5000\n",
                primary.port
            ),
        )
        .unwrap();
        RedisServer::start_with(vec![conf.display().to_string(), "--sentinel".into()]).await
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port, empty, and waits until it answers PING.
    pub async fn restart(&mut self) {
        // A config file goes first; a sentinel takes no persistence options.
        let (file, rest): (Vec<&String>, Vec<&String>) =
            self.args.iter().partition(|a| a.ends_with(".conf"));
        let mut cmd = Command::new("redis-server");
        cmd.args(file)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"]);
        if !rest.iter().any(|a| *a == "--sentinel") {
            cmd.args(["--save", "", "--appendonly", "no"]);
        }
        let child = cmd
            .args(rest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for these tests (.ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(pong) = self.cmd(&["PING"]).await {
                if pong == redis::Value::SimpleString("PONG".into()) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query_async(&mut conn).await
    }

    pub async fn live_members(&self) -> i64 {
        match self.cmd(&["ZCARD", "test:{members}"]).await {
            Ok(redis::Value::Int(n)) => n,
            _ => 0,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `[state]` for a gateway of the test's Redis, with quick heartbeats.
pub fn state_toml(redis: &RedisServer) -> String {
    format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"test:\"\n\
         heartbeat_interval = \"100ms\"\nmember_ttl = \"1s\"\nsync_interval = \"100ms\"\n",
        redis.url()
    )
}

/// Three gateways sharing `redis`, each with `extra` config, once all count three.
pub async fn three_gateways(shop: SocketAddr, redis: &RedisServer, extra: &str) -> Vec<Gateway> {
    let text = config_text(shop, &format!("{extra}\n{}", state_toml(redis)));
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(gateway(&text).await);
    }
    for gw in &gws {
        wait_backend(gw, 1.0).await;
        eventually(
            "each instance counts three",
            Duration::from_secs(5),
            || async {
                metric(&metrics_text(gw).await, "floodgate_state_live_instances") == Some(3.0)
            },
        )
        .await;
    }
    eventually("three live instances", Duration::from_secs(5), || async {
        redis.live_members().await == 3
    })
    .await;
    gws
}

pub async fn backend_up(gw: &Gateway) -> Option<f64> {
    metric(
        &metrics_text(gw).await,
        "floodgate_state_backend_up{backend=\"redis\"}",
    )
}

pub async fn wait_backend(gw: &Gateway, want: f64) {
    eventually(
        &format!("floodgate_state_backend_up{{backend=\"redis\"}} = {want}"),
        Duration::from_secs(10),
        || async { backend_up(gw).await == Some(want) },
    )
    .await;
}

// === a client ===

/// `n` requests from `from`, spread round-robin over `gws`: how many were let through.
pub async fn passed_round_robin(
    n: usize,
    from: &str,
    gws: &[Gateway],
    headers: &[(&str, &str)],
) -> usize {
    let mut ok = 0;
    for i in 0..n {
        let a = get_from(from, gws[i % gws.len()].addr(), "/", headers).await;
        match a.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            s => panic!("request {i} failed with {s}: {}", a.text()),
        }
    }
    ok
}

pub async fn admin_post(gw: &Gateway, path: &str, body: &str) -> Answer {
    super::send(
        Request::post(format!("http://{}{path}", gw.admin_addr.unwrap()))
            .header("content-type", "application/json")
            .body(Full::from(body.to_string()))
            .unwrap(),
    )
    .await
}

pub async fn admin_get(gw: &Gateway, path: &str) -> Answer {
    super::get(gw.admin_addr.unwrap(), path).await
}

// === separate processes ===

/// A gateway process that joined Redis.
pub fn spawn_gateway(config: &std::path::Path) -> Process {
    let mut p = Process::spawn(config, false);
    p.wait_for_line("state backend redis is up");
    p
}

/// Three `floodgate run` processes of one config file (written into `dir`), once
/// Redis counts all three.
pub async fn three_processes(
    dir: &std::path::Path,
    text: &str,
    redis: &RedisServer,
) -> Vec<Process> {
    let path = dir.join("floodgate.toml");
    std::fs::write(&path, text).unwrap();
    let procs: Vec<Process> = (0..3).map(|_| spawn_gateway(&path)).collect();
    eventually("three live instances", Duration::from_secs(5), || async {
        redis.live_members().await == 3
    })
    .await;
    procs
}
