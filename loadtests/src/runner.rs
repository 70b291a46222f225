//! Choosing targets and running a scenario against each: `run` and `compare`.

use crate::client::ClientKind;
use crate::engine::{self, RunOptions};
use crate::report::RunReport;
use crate::scenario::{Scenario, TargetSpec};
use crate::spawn;
use anyhow::bail;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A target named on the command line or in the scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetChoice {
    /// The simulated shop, straight (spawn mode).
    Direct,
    /// The shop behind a spawned floodgate (spawn mode).
    Floodgate,
    /// A running server.
    Url {
        /// Column name.
        name: String,
        /// Base URL.
        url: String,
        /// Its Prometheus endpoint.
        metrics_url: Option<String>,
    },
}

impl TargetChoice {
    /// Parses `direct`, `floodgate`, `name=URL` or a bare URL.
    pub fn parse(s: &str) -> TargetChoice {
        match s {
            "direct" => TargetChoice::Direct,
            "floodgate" => TargetChoice::Floodgate,
            _ => match s.split_once('=') {
                Some((name, url)) if !name.contains('/') => TargetChoice::Url {
                    name: name.to_string(),
                    url: url.to_string(),
                    metrics_url: None,
                },
                _ => TargetChoice::Url {
                    name: "target".into(),
                    url: s.to_string(),
                    metrics_url: None,
                },
            },
        }
    }

    /// Its column name.
    pub fn name(&self) -> &str {
        match self {
            TargetChoice::Direct => "direct",
            TargetChoice::Floodgate => "floodgate",
            TargetChoice::Url { name, .. } => name,
        }
    }
}

/// Options shared by every run of one command.
#[derive(Debug, Clone)]
pub struct Common {
    /// The `floodgate` binary for spawn mode.
    pub floodgate_bin: PathBuf,
    /// Lift the loopback-only rule.
    pub allow_non_loopback: bool,
    /// Client implementation.
    pub client: ClientKind,
    /// Progress lines.
    pub progress: bool,
    /// Hard stop override.
    pub max_duration: Option<Duration>,
    /// Request cap override.
    pub max_requests: Option<u64>,
    /// Arrival-rate multiplier.
    pub rate_scale: f64,
    /// Metrics endpoint for a URL target.
    pub metrics_url: Option<String>,
}

/// The targets `run` uses when none is named: in spawn mode floodgate (or the
/// shop when there is no gateway config), else the scenario's URL.
pub fn default_run_target(s: &Scenario) -> TargetChoice {
    match &s.target {
        TargetSpec::Spawn {
            gateway_config: Some(_),
            ..
        } => TargetChoice::Floodgate,
        TargetSpec::Spawn {
            gateway_config: None,
            ..
        } => TargetChoice::Direct,
        TargetSpec::Url(u) => TargetChoice::Url {
            name: "target".into(),
            url: u.clone(),
            metrics_url: s.metrics_url.clone(),
        },
    }
}

/// The targets `compare` uses when none is named: direct and floodgate in spawn
/// mode (or the scenario's URL), then the scenario's peers.
pub fn default_compare_targets(s: &Scenario) -> Vec<TargetChoice> {
    let mut v = match &s.target {
        TargetSpec::Spawn {
            gateway_config: Some(_),
            ..
        } => vec![TargetChoice::Direct, TargetChoice::Floodgate],
        TargetSpec::Spawn {
            gateway_config: None,
            ..
        } => vec![TargetChoice::Direct],
        TargetSpec::Url(_) => vec![default_run_target(s)],
    };
    v.extend(s.peers.iter().map(|p| TargetChoice::Url {
        name: p.name.clone(),
        url: p.url.clone(),
        metrics_url: p.metrics_url.clone(),
    }));
    v
}

/// Runs the scenario against one target, starting and stopping what spawn mode needs.
pub async fn run_target(
    s: &Scenario,
    choice: &TargetChoice,
    c: &Common,
) -> anyhow::Result<RunReport> {
    let mut opts = RunOptions::new(choice.name(), "");
    opts.allow_non_loopback = c.allow_non_loopback;
    opts.client = c.client;
    opts.progress = c.progress;
    opts.max_duration = c.max_duration;
    opts.max_requests = c.max_requests;
    opts.rate_scale = c.rate_scale;

    let spawn_spec = match &s.target {
        TargetSpec::Spawn {
            gateway_config,
            shop,
            shop_listen,
        } => Some((gateway_config, shop, shop_listen)),
        TargetSpec::Url(_) => None,
    };
    let needs_spawn = matches!(choice, TargetChoice::Direct | TargetChoice::Floodgate);
    if needs_spawn && spawn_spec.is_none() {
        bail!(
            "target {:?} needs a scenario with target = \"spawn\"",
            choice.name()
        );
    }
    if *choice == TargetChoice::Floodgate && spawn_spec.is_some_and(|(t, _, _)| t.is_none()) {
        bail!("target floodgate needs `gateway_config` in the scenario");
    }
    // A peer in a spawn-mode scenario gets its own fresh shop only when the
    // scenario pins the shop's address, since the peer's config must name it.
    let start_shop = match (choice, spawn_spec) {
        (TargetChoice::Url { .. }, Some((_, _, listen))) => listen.is_some(),
        (_, spawn) => spawn.is_some(),
    };

    let dir = if start_shop {
        Some(spawn::scratch_dir()?)
    } else {
        None
    };
    let mut procs = Vec::new();
    let result = async {
        if let (Some((template, shop, listen)), Some(dir)) = (spawn_spec, &dir) {
            if start_shop {
                let (p, shop_addr) =
                    spawn::start_shop(&c.floodgate_bin, shop, listen.as_deref(), dir).await?;
                if let Some(pid) = p.pid() {
                    opts.processes.push(("shop".into(), pid));
                }
                procs.push(p);
                opts.shop_stats_url = Some(format!("http://{shop_addr}/__shop/stats"));
                match choice {
                    TargetChoice::Direct => opts.target_url = format!("http://{shop_addr}"),
                    TargetChoice::Floodgate => {
                        let template = template.as_deref().unwrap_or(Path::new(""));
                        let g = spawn::start_gateway(&c.floodgate_bin, template, shop_addr, dir)
                            .await?;
                        opts.target_url = format!("http://{}", g.listen);
                        opts.metrics_url = Some(format!("http://{}/metrics", g.admin));
                        if let Some(pid) = g.proc.pid() {
                            opts.processes.push(("gateway".into(), pid));
                        }
                        procs.push(g.proc);
                    }
                    TargetChoice::Url { .. } => {}
                }
            }
        }
        if let TargetChoice::Url {
            url, metrics_url, ..
        } = choice
        {
            opts.target_url = url.clone();
            opts.metrics_url = metrics_url.clone().or_else(|| c.metrics_url.clone());
        } else if c.metrics_url.is_some() && opts.metrics_url.is_none() {
            opts.metrics_url = c.metrics_url.clone();
        }
        engine::run(s, &opts).await
    }
    .await;
    for p in procs {
        p.stop().await;
    }
    if let Some(dir) = dir {
        if result.is_ok() {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            eprintln!(
                "floodgate-load: logs of the spawned processes kept in {}",
                dir.display()
            );
        }
    }
    result
}
