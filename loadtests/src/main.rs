//! `floodgate-load`: run load scenarios against floodgate, the shop, or peers.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use floodgate_loadtest::client::ClientKind;
use floodgate_loadtest::report::{html, summary, RunReport};
use floodgate_loadtest::runner::{self, Common, TargetChoice};
use floodgate_loadtest::scenario::{LoadModel, Scenario, TargetSpec};
use floodgate_loadtest::spawn::default_floodgate_bin;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "floodgate-load",
    version,
    about = "Load generator for floodgate: open/closed model, comparisons, reports"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario against one target.
    Run {
        /// Scenario file.
        scenario: PathBuf,
        /// `floodgate` or `direct` (spawn-mode scenarios), or a URL; default: the scenario's target.
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Run a scenario against several targets in turn and print them side by side.
    Compare {
        /// Scenario file.
        scenario: PathBuf,
        /// `direct`, `floodgate`, or `name=URL`; repeat. Default: direct and floodgate
        /// (spawn mode) or the scenario's URL, then the scenario's [[compare]] peers.
        #[arg(long = "target")]
        targets: Vec<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Run the cheating scenario (honest visitors beside scripted cheaters) and
    /// report who got in when.
    Cheat {
        /// Scenario file (e.g. loadtests/scenarios/cheat/cheating.toml).
        scenario: PathBuf,
        /// The floodgate binary (default: target/release/floodgate, else target/debug/floodgate).
        #[arg(long, env = "FLOODGATE_BIN")]
        floodgate_bin: Option<PathBuf>,
        /// Write the machine-readable result here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Exit non-zero when a target is missed.
        #[arg(long)]
        strict: bool,
    },
    /// Parse and validate scenario files, printing what each would do.
    Check {
        /// Scenario files.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct CommonArgs {
    /// The floodgate binary used in spawn mode.
    #[arg(long, env = "FLOODGATE_BIN", default_value_os_t = default_floodgate_bin())]
    floodgate_bin: PathBuf,
    /// Tokio worker threads; 1 runs everything on one thread (enough for 20k req/s).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write the machine-readable result here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Gateway Prometheus endpoint to scrape every second (URL targets).
    #[arg(long)]
    metrics_url: Option<String>,
    /// Allow targets outside 127.0.0.0/8, ::1 and localhost.
    #[arg(long)]
    allow_non_loopback: bool,
    /// Hard stop of each run, drain included (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_duration: Option<Duration>,
    /// Cap on requests per run.
    #[arg(long)]
    max_requests: Option<u64>,
    /// Multiply every arrival rate of the scenario.
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// HTTP client implementation.
    #[arg(long, value_enum, default_value_t = ClientKind::Pool)]
    client: ClientKind,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
}

impl CommonArgs {
    fn common(&self) -> Common {
        Common {
            floodgate_bin: self.floodgate_bin.clone(),
            allow_non_loopback: self.allow_non_loopback,
            client: self.client,
            progress: !self.quiet,
            max_duration: self.max_duration,
            max_requests: self.max_requests,
            rate_scale: self.rate_scale,
            metrics_url: self.metrics_url.clone(),
        }
    }
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    Ok(rt)
}

fn load(path: &Path) -> anyhow::Result<Scenario> {
    Ok(Scenario::load(path)?)
}

fn write_outputs(runs: &[RunReport], args: &CommonArgs) -> anyhow::Result<()> {
    if let Some(p) = &args.json {
        let text = match runs {
            [one] => one.to_json(),
            _ => serde_json::to_string_pretty(&serde_json::json!({ "runs": runs }))?,
        };
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("JSON written to {}", p.display());
    }
    if let Some(p) = &args.html {
        std::fs::write(p, html::render_report(runs))
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("HTML report written to {}", p.display());
    }
    Ok(())
}

fn check(paths: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for p in paths {
        match Scenario::load(p) {
            Ok(s) => {
                let what = match &s.model {
                    LoadModel::Open(sch) => format!(
                        "open model, {} arrivals over {}, peak {:.0}/s",
                        sch.total_requests(),
                        humantime::format_duration(sch.duration()),
                        sch.peak_rate()
                    ),
                    LoadModel::Closed {
                        users, duration, ..
                    } => {
                        format!(
                            "closed model, {users} users for {}",
                            humantime::format_duration(*duration)
                        )
                    }
                };
                let target = match &s.target {
                    TargetSpec::Url(u) => u.clone(),
                    TargetSpec::Spawn { shop, .. } => format!(
                        "spawn (shop {} concurrent, {}, collapse {}: {:.0} req/s)",
                        shop.capacity,
                        humantime::format_duration(shop.latency),
                        shop.collapse,
                        shop.throughput()
                    ),
                };
                println!(
                    "{}: ok: {}: {what}; target {target}; {} mix entries",
                    p.display(),
                    s.name,
                    s.mix.entries().len()
                );
            }
            Err(e) => {
                ok = false;
                eprintln!("{e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.cmd {
        Cmd::Check { scenarios } => return check(scenarios),
        Cmd::Cheat {
            scenario,
            floodgate_bin,
            json,
            strict,
        } => {
            return floodgate_loadtest::cheat::main(
                scenario,
                floodgate_bin.as_deref(),
                json.as_deref(),
                *strict,
            )
        }
        Cmd::Run {
            scenario,
            target,
            common,
        } => (|| {
            let s = load(scenario)?;
            let choice = target
                .as_deref()
                .map_or_else(|| runner::default_run_target(&s), TargetChoice::parse);
            let rt = runtime(common.threads)?;
            let report = rt.block_on(runner::run_target(&s, &choice, &common.common()))?;
            println!("{}", summary::summary(&report));
            write_outputs(std::slice::from_ref(&report), common)
        })(),
        Cmd::Compare {
            scenario,
            targets,
            common,
        } => (|| {
            let s = load(scenario)?;
            let choices: Vec<TargetChoice> = if targets.is_empty() {
                runner::default_compare_targets(&s)
            } else {
                targets.iter().map(|t| TargetChoice::parse(t)).collect()
            };
            let rt = runtime(common.threads)?;
            let c = common.common();
            let mut runs = Vec::new();
            for choice in &choices {
                eprintln!("--- {} ---", choice.name());
                match rt.block_on(runner::run_target(&s, choice, &c)) {
                    Ok(r) => {
                        println!("{}", summary::summary(&r));
                        runs.push(r);
                    }
                    Err(e) => eprintln!("floodgate-load: target {} failed: {e:#}", choice.name()),
                }
            }
            anyhow::ensure!(!runs.is_empty(), "no target could be run");
            println!("{}", summary::comparison(&runs));
            write_outputs(&runs, common)
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floodgate-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
