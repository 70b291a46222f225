//! `floodgate demo`: the gateway in front of a simulated shop, on loopback.

use std::net::SocketAddr;

use crate::config;
use crate::gateway::Gateway;
use crate::shop::{self, ShopProfile};

/// The demo's gateway config; `{shop}` is replaced by the shop's address.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// Starts the shop and the gateway, prints where to look, serves until Ctrl-C.
pub async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    profile: ShopProfile,
) -> anyhow::Result<()> {
    let shop = shop::start("127.0.0.1:0".parse()?, profile).await?;
    let text = DEMO_CONFIG
        .replace("{shop}", &shop.addr.to_string())
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string());
    let config = config::parse(&text).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("demo config is invalid:\n{}", lines.join("\n"))
    })?;
    crate::logging::init(config.log.format, &config.log.level);
    let gw = Gateway::start(config).await?;
    let a = gw.addr();
    let m = gw.admin_addr.expect("demo has an admin listener");
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
        shop.addr, profile.capacity, profile.latency
    );
    println!();
    println!("Try:  wrk -t2 -c50 -d10s http://{a}/products/1");
    println!("Stop with Ctrl-C.");
    let signal = crate::server::termination_signal().await;
    tracing::info!(signal, "shutting down");
    gw.shutdown().await;
    Ok(())
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
