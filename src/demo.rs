//! `floodgate demo`: the gateway in front of a simulated shop, on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config;
use crate::gateway::Gateway;
use crate::shop::{self, ShopHandle, ShopProfile};

/// The demo's gateway config; `{shop}` is replaced by the shop's address.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// A running demo: the shop, the gateway, and the config file the gateway runs from.
pub struct Demo {
    /// The gateway in front of the shop.
    pub gateway: Gateway,
    /// The simulated shop.
    pub shop: ShopHandle,
    /// The config file the demo wrote and the gateway reloads (`POST /admin/reload`,
    /// SIGHUP): edit it to try a change. Removed when the demo stops.
    pub config_path: PathBuf,
}

/// Starts the shop, writes the demo config to a file and starts the gateway from it,
/// so that a reload re-reads that file like it would in production.
pub async fn start(
    listen: SocketAddr,
    admin: SocketAddr,
    profile: ShopProfile,
) -> anyhow::Result<Demo> {
    let shop = shop::start("127.0.0.1:0".parse()?, profile).await?;
    let text = DEMO_CONFIG
        .replace("{shop}", &shop.addr.to_string())
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string());
    let config_path = write_config(&text)?;
    let config = match config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            remove_config(&config_path);
            anyhow::bail!("demo config is invalid:\n{e}");
        }
    };
    crate::logging::init(config.log.format, &config.log.level);
    match Gateway::start(config).await {
        Ok(gateway) => Ok(Demo {
            gateway,
            shop,
            config_path,
        }),
        Err(e) => {
            remove_config(&config_path);
            Err(e.into())
        }
    }
}

impl Demo {
    /// Stops the gateway (draining) and removes the config file.
    pub async fn stop(self) {
        self.gateway.shutdown().await;
        remove_config(&self.config_path);
    }
}

/// Writes the demo config into a directory of its own under the system temp dir.
fn write_config(text: &str) -> std::io::Result<PathBuf> {
    // Several demos may run in one process (tests) or on one machine.
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "floodgate-demo-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("floodgate.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn remove_config(path: &Path) {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Starts the demo, prints where to look, serves until Ctrl-C; SIGHUP reloads.
pub async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    profile: ShopProfile,
) -> anyhow::Result<()> {
    let demo = start(listen, admin, profile).await?;
    let a = demo.gateway.addr();
    let m = demo.gateway.admin_addr.expect("demo has an admin listener");
    println!("floodgate demo is running.");
    println!();
    println!("  shop through the gateway:  http://{a}/");
    println!("  the flash sale (a waiting room letting 2 shoppers in at once, 6 a minute):");
    println!("                             http://{a}/products/1");
    println!("    once it is full, newcomers wait in line: run `curl -i http://{a}/products/1` a few times");
    println!("  the cart (private):        http://{a}/cart");
    println!("  metrics:                   http://{m}/metrics");
    println!(
        "  the shop directly:         http://{}/  (capacity {} at once, {:?} per request)",
        demo.shop.addr, profile.capacity, profile.latency
    );
    println!(
        "  the config it runs:        {}",
        demo.config_path.display()
    );
    println!("    edit it, then: curl -X POST -H 'content-type: application/json' http://{m}/admin/reload");
    println!();
    println!("Try:  wrk -t2 -c50 -d10s http://{a}/products/1");
    println!("Stop with Ctrl-C.");
    serve_until_stopped(&demo.gateway).await;
    demo.stop().await;
    Ok(())
}

/// Waits for SIGTERM/SIGINT, reloading the config on each SIGHUP meanwhile.
async fn serve_until_stopped(gw: &Gateway) {
    let term = crate::server::termination_signal();
    tokio::pin!(term);
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        let signal = term.await;
        tracing::info!(signal, "shutting down");
        return;
    };
    loop {
        tokio::select! {
            signal = &mut term => {
                tracing::info!(signal, "shutting down");
                return;
            }
            _ = hup.recv() => {
                // Errors are logged by reload itself; the running config stays.
                let _ = gw.reload();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_config_compiles() {
        let text = super::DEMO_CONFIG
            .replace("{shop}", "127.0.0.1:3000")
            .replace("{listen}", "127.0.0.1:0")
            .replace("{admin}", "127.0.0.1:0");
        let c = crate::config::parse(&text).expect("demo config is valid");
        assert_eq!(c.routes.len(), 2);
    }
}
