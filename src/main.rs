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

/// mimalloc: glibc malloc was 8 % of the proxy's CPU in profiles, with buffers freed
/// on a different worker thread than the one that allocated them.
#[global_allocator]
static GLOBAL: Mimalloc = Mimalloc;

/// mimalloc, entered by its plain `mi_malloc` when the alignment asked for is what
/// `mi_malloc` gives anyway (std's rule for `malloc`). The `mimalloc` crate sends
/// every allocation through `mi_malloc_aligned`, whose checks and generic paths were
/// 5 % of a proxied request's instructions at ~25 allocations per request (callgrind,
/// README § Performance). Hand-written because that is all it is: four calls.
struct Mimalloc;

/// The alignment `mi_malloc` guarantees for blocks at least this large.
const MI_ALIGN: usize = 16;

fn plain(layout: std::alloc::Layout, size: usize) -> bool {
    layout.align() <= MI_ALIGN && layout.align() <= size
}

// SAFETY: every path hands the layout's size and alignment to mimalloc, which returns
// null or a block of that size and alignment; `mi_free` frees blocks from either entry.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        match plain(layout, layout.size()) {
            true => mi::mi_malloc(layout.size()).cast(),
            false => mi::mi_malloc_aligned(layout.size(), layout.align()).cast(),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        match plain(layout, layout.size()) {
            true => mi::mi_zalloc(layout.size()).cast(),
            false => mi::mi_zalloc_aligned(layout.size(), layout.align()).cast(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys as mi;
        match plain(layout, new_size) {
            true => mi::mi_realloc(ptr.cast(), new_size).cast(),
            false => mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast(),
        }
    }
}

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
