//! Spawn mode: start `floodgate shop` and `floodgate run` on free loopback ports.

use crate::scenario::ShopProfile;
use anyhow::{bail, Context as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long a spawned process may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A free loopback port: bind port 0, read it, close. Another process could take
/// it before ours binds; the start check would then fail loudly, not silently.
pub fn free_loopback_addr() -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

/// The default `floodgate` binary: `target/release/floodgate` at the repo root.
pub fn default_floodgate_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target/release/floodgate")
}

/// A child process with its log file; killed when dropped.
pub struct Proc {
    /// "shop" or "gateway".
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(bin: &Path, args: &[String], name: &str, dir: &Path) -> anyhow::Result<Proc> {
        Proc::spawn_with(bin, args, name, dir, &[])
    }

    fn spawn_with(
        bin: &Path,
        args: &[String],
        name: &str,
        dir: &Path,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(bin)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} {} (build it with `cargo build --release`, or pass --floodgate-bin / FLOODGATE_BIN)",
                    bin.display(),
                    args.join(" ")
                )
            })?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Process id, for CPU accounting.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited early ({status}); last log lines ({}):\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            )),
            _ => None,
        }
    }

    /// Kills the process and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

async fn wait_listening(p: &mut Proc, addr: SocketAddr, deadline: Instant) -> anyhow::Result<()> {
    loop {
        if let Some(why) = p.exited() {
            bail!(why);
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not listen on {addr} within {:?}; log: {}",
                p.name,
                START_TIMEOUT,
                p.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh scratch folder for configs and logs.
pub fn scratch_dir() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("floodgate-load-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Starts the simulated shop, on `listen` or a free port, and waits until it accepts.
pub async fn start_shop(
    bin: &Path,
    shop: &ShopProfile,
    listen: Option<&str>,
    dir: &Path,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let addr: SocketAddr = match listen {
        Some(l) => l
            .parse()
            .with_context(|| format!("shop_listen {l:?} is not an address"))?,
        None => free_loopback_addr()?,
    };
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "shop_listen {addr} is not a loopback address"
    );
    let args = vec![
        "shop".to_string(),
        "--listen".into(),
        addr.to_string(),
        "--capacity".into(),
        shop.capacity.to_string(),
        "--latency".into(),
        humantime::format_duration(shop.latency).to_string(),
        "--collapse".into(),
        shop.collapse.to_string(),
    ];
    let mut p = Proc::spawn(bin, &args, "shop", dir)?;
    wait_listening(&mut p, addr, Instant::now() + START_TIMEOUT).await?;
    Ok((p, addr))
}

/// Fills a gateway config template's `{shop_addr}`, `{listen}` and `{admin_listen}`.
pub fn render_template(
    template: &str,
    shop: SocketAddr,
    listen: SocketAddr,
    admin: SocketAddr,
) -> String {
    template
        .replace("{shop_addr}", &shop.to_string())
        .replace("{listen}", &listen.to_string())
        .replace("{admin_listen}", &admin.to_string())
}

/// A started gateway.
pub struct Gateway {
    /// The process.
    pub proc: Proc,
    /// Its proxy listener.
    pub listen: SocketAddr,
    /// Its admin listener.
    pub admin: SocketAddr,
}

/// Starts `floodgate run` with the rendered template and waits until it is ready.
pub async fn start_gateway(
    bin: &Path,
    template: &Path,
    shop: SocketAddr,
    dir: &Path,
) -> anyhow::Result<Gateway> {
    start_gateway_as(bin, template, shop, dir, "gateway", &[]).await
}

/// [`start_gateway`] for one of several instances: its config and log are
/// `NAME.toml` and `NAME.log` in `dir`, and it gets `envs` (a shared signing key).
pub async fn start_gateway_as(
    bin: &Path,
    template: &Path,
    shop: SocketAddr,
    dir: &Path,
    name: &str,
    envs: &[(&str, &str)],
) -> anyhow::Result<Gateway> {
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("reading gateway config template {}", template.display()))?;
    let listen = free_loopback_addr()?;
    let mut admin = free_loopback_addr()?;
    while admin == listen {
        admin = free_loopback_addr()?;
    }
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, render_template(&text, shop, listen, admin))?;
    let args = vec![
        "run".to_string(),
        "--config".into(),
        config.display().to_string(),
    ];
    let mut proc = Proc::spawn_with(bin, &args, name, dir, envs)?;
    let deadline = Instant::now() + START_TIMEOUT;
    wait_listening(&mut proc, listen, deadline).await?;
    // Ready means /readyz says 200; an admin API without /readyz (404) is taken
    // as ready once the proxy listener accepts.
    let client = crate::client::HttpClient::new(
        crate::client::ClientKind::Pool,
        admin,
        &admin.to_string(),
        1,
    );
    let empty = bytes::Bytes::new();
    loop {
        let req = crate::client::Req {
            method: &http::Method::GET,
            path: "/readyz",
            headers: &[],
            cookie: None,
            body: &empty,
        };
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_secs(1),
            client.request(&req, Default::default()),
        )
        .await
        {
            if r.status == 200 || r.status == 404 {
                break;
            }
        }
        if let Some(why) = proc.exited() {
            bail!(why);
        }
        if Instant::now() >= deadline {
            bail!(
                "gateway not ready on {admin}/readyz within {START_TIMEOUT:?}; log: {}",
                proc.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Gateway {
        proc,
        listen,
        admin,
    })
}

/// The `redis-server` binary: `$REDIS_SERVER`, else `redis-server` on the `PATH`.
pub fn redis_server_bin() -> PathBuf {
    std::env::var_os("REDIS_SERVER").map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

/// Starts a `redis-server` of our own on a free loopback port, without persistence
/// (`--save "" --appendonly no`, its folder `dir`), and waits until it answers PING.
pub async fn start_redis(dir: &Path) -> anyhow::Result<(Proc, SocketAddr)> {
    let addr = free_loopback_addr()?;
    let args = vec![
        "--port".to_string(),
        addr.port().to_string(),
        "--bind".into(),
        addr.ip().to_string(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir.display().to_string(),
    ];
    let mut p = Proc::spawn(&redis_server_bin(), &args, "redis", dir)
        .context("redis-server must be installed (or named by $REDIS_SERVER)")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(why) = p.exited() {
            bail!(why);
        }
        if redis_ping(addr).await {
            return Ok((p, addr));
        }
        if Instant::now() >= deadline {
            bail!("redis-server did not answer PING on {addr} within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a Redis at `addr` answers `PING` with `+PONG` within a second.
async fn redis_ping(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let once = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), once).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_get_the_addresses() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let out = render_template("s={shop_addr} l={listen} a={admin_listen} {other}", a, b, c);
        assert_eq!(out, "s=127.0.0.1:1 l=127.0.0.1:2 a=127.0.0.1:3 {other}");
    }
}
