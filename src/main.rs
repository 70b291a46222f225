//! The `floodgate` command: run, check, demo, shop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use floodgate::config::{self, LogFormat};
use floodgate::shop::ShopProfile;
use floodgate::Gateway;

mod top;

/// A flash-sale traffic gateway: cache, rate limits, admission queue, waiting room.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until SIGTERM or SIGINT; SIGHUP reloads the config.
    Run {
        /// The config file.
        #[arg(long, short, default_value = "config/floodgate.toml")]
        config: PathBuf,
        /// Log as JSON lines whatever the config says.
        #[arg(long)]
        json_logs: bool,
    },
    /// Validate a config file: exit 0, or print every error and exit 1.
    Check {
        /// The config file.
        #[arg(long, short, default_value = "config/floodgate.toml")]
        config: PathBuf,
    },
    /// The gateway in front of a simulated shop, on loopback.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where metrics and the admin API listen.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// A live terminal view of a running gateway, from its admin API.
    Top {
        /// The gateway's admin listener.
        #[arg(long, default_value = "http://127.0.0.1:9901")]
        admin: String,
        /// Print one frame (rates over one interval) and exit.
        #[arg(long)]
        once: bool,
        /// Time between frames, and the window rates are measured over, e.g. "1s".
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// A file holding the admin bearer token (default: FLOODGATE_ADMIN_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Only the simulated shop (for load tests and trying a config).
    Shop {
        /// Where the shop listens.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        /// Requests worked on at once.
        #[arg(long, default_value_t = 50)]
        capacity: usize,
        /// Time per request, e.g. "20ms".
        #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
        latency: Duration,
        /// Requests inside at once above which the shop fails every answer.
        #[arg(long, default_value_t = 200)]
        collapse: usize,
    },
}

/// mimalloc (see [`floodgate::alloc`]).
#[global_allocator]
static GLOBAL: floodgate::alloc::Mimalloc = floodgate::alloc::Mimalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load(&config)
            .and_then(|c| floodgate::tls::load_certificates(&c).map(|_| c))
        {
            Ok(c) => {
                println!(
                    "{}: ok ({} routes, {} upstreams)",
                    config.display(),
                    c.routes.len(),
                    c.upstreams.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, json_logs } => {
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let format = if json_logs {
                LogFormat::Json
            } else {
                cfg.log.format
            };
            let _log = match floodgate::logging::init_with_access_log(
                format,
                &cfg.log.level,
                cfg.log.access_log_file.as_deref(),
            ) {
                Ok(guard) => guard,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime().block_on(run(cfg))
        }
        Command::Demo { listen, admin } => {
            match runtime().block_on(floodgate::demo::run(listen, admin, ShopProfile::default())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("floodgate demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Top {
            admin,
            once,
            interval,
            token_file,
        } => {
            let opts = top::Options {
                admin,
                once,
                interval,
                token_file,
            };
            match runtime().block_on(top::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("floodgate top: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Shop {
            listen,
            capacity,
            latency,
            collapse,
        } => {
            floodgate::logging::init(LogFormat::Text, "info");
            runtime().block_on(async move {
                let profile = ShopProfile {
                    capacity,
                    latency,
                    collapse,
                };
                match floodgate::shop::start(listen, profile).await {
                    Ok(shop) => {
                        tracing::info!(addr = %shop.addr, capacity, ?latency, collapse, "shop listening");
                        floodgate::server::termination_signal().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("cannot listen on {listen}: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn run(cfg: config::Config) -> ExitCode {
    if let Err(e) = floodgate::logging::reopen_on_sigusr1() {
        eprintln!("cannot install the SIGUSR1 handler: {e}");
        return ExitCode::FAILURE;
    }
    let gw = match Gateway::start(cfg).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot install the SIGHUP handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let term = floodgate::server::termination_signal();
    tokio::pin!(term);
    loop {
        tokio::select! {
            signal = &mut term => {
                tracing::info!(signal, "shutting down: no new connections, finishing requests in flight");
                let clean = gw.shutdown().await;
                tracing::info!(clean, "stopped");
                return ExitCode::SUCCESS;
            }
            _ = hup.recv() => {
                // Errors are logged by reload itself; the running config stays.
                let _ = gw.reload();
            }
        }
    }
}
