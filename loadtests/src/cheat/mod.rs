//! The cheating scenario: honest visitors beside scripted cheaters in front of a
//! spawned gateway's waiting room, on loopback only, bounded in time.
//!
//! Reported: each group's admission order against its arrival order (places gained),
//! whether a replayed ticket yielded an extra pass, what a shared pass let friends do,
//! and the most shoppers the room counted inside against `active_users` (scraped from
//! `GET /admin/waiting-rooms/{name}` every [`SCRAPE_EVERY`]).
//!
//! Arrival order: people who arrive before the opening (the pre-queue) are tied, as
//! the room draws their order by lot; everyone after them comes in arrival order. A
//! group "gains" when its mean admission rank is ahead of its mean arrival rank by
//! more than [`GAIN_TOLERANCE`] places and twice its standard error.
//!
//! Several instances: `instances = 3` and `state = "redis"` start a `redis-server`
//! of the run's own (free loopback port, no persistence) and three gateways sharing
//! it and one signing key; every request of a person goes to an instance of its own
//! (`balance`), as through a load balancer without affinity. Also reported, for any
//! run: admission order against arrival order as Kendall's tau with ties within a
//! tick ([`order`]), `active` on each instance, the most people inside at once as
//! the visitors saw it, visitors' request latency, and with `[hammer]` one client's
//! passes on a rate-limited path against `burst + rate × t` ([`hammer`]).
//! `compare_local = true` runs it all once more with one instance and the local
//! backend (same room settings) and prints the two side by side.

pub mod hammer;
mod http;
pub mod order;
pub mod people;

use crate::scenario::ShopProfile;
use crate::spawn;
use anyhow::Context as _;
use order::{Latency, OrderReport};
use people::{Balance, Group, Outcome, Person, World};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// How often the room's admin view is read (on each instance), unless the scenario
/// says (`scrape_interval`).
pub const SCRAPE_EVERY: Duration = Duration::from_millis(200);
/// The tick of the order figure, unless `[order] tick` says.
pub const TICK: Duration = Duration::from_millis(50);
/// How long the instances may take to count each other in the shared store.
const SHARED_READY: Duration = Duration::from_secs(10);
/// Places a group may be ahead of its arrival order by chance and rounding of
/// admission times to the poll pace, before it counts as a gain.
pub const GAIN_TOLERANCE: f64 = 1.0;
/// The longest run allowed, whatever the file says (the scenario's promise).
pub const MAX_RUN: Duration = Duration::from_secs(110);
/// Time allowed for the shop and gateway to start before arrivals begin.
const START_SLACK: Duration = Duration::from_secs(6);

/// `cheating.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    gateway_config: String,
    room: String,
    arrivals: String,
    #[serde(default)]
    opens_after: Option<String>,
    max_duration: String,
    poll_interval: String,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    instances: Option<usize>,
    #[serde(default)]
    state: Option<Backend>,
    #[serde(default)]
    balance: Option<Balance>,
    #[serde(default)]
    compare_local: bool,
    #[serde(default)]
    near_front: u64,
    #[serde(default)]
    near_poll_interval: Option<String>,
    #[serde(default)]
    scrape_interval: Option<String>,
    shop: RawShop,
    groups: Groups,
    #[serde(default)]
    visit: Option<RawVisit>,
    #[serde(default)]
    order: Option<RawOrder>,
    #[serde(default)]
    hammer: Option<RawHammer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVisit {
    pages: usize,
    page_interval: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrder {
    #[serde(default)]
    tick: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHammer {
    path: String,
    requests: usize,
    over: String,
    start_after: String,
}

/// Where the gateways keep what they share (`[state] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Each instance on its own (the default).
    Local,
    /// One `redis-server` the runner starts.
    Redis,
}

impl Backend {
    fn as_str(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Redis => "redis",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShop {
    capacity: u32,
    latency: String,
    collapse: u32,
}

/// How many people of each kind, and how hard the cheaters try (a kind left out: nobody).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Groups {
    /// Honest visitors.
    pub honest: usize,
    /// Page reloaders.
    pub refreshers: usize,
    /// People with several tabs (separate cookies).
    pub many_tabs: usize,
    /// Tabs each.
    pub tabs: usize,
    /// People who clear cookies and take tickets again before the opening.
    pub cookie_clearers: usize,
    /// People who replay their admitted ticket from friends' machines.
    pub ticket_replayers: usize,
    /// Replays each.
    pub replays: usize,
    /// People who share their pass.
    pub pass_sharers: usize,
    /// Friends each.
    pub friends: usize,
}

impl Default for Groups {
    fn default() -> Groups {
        Groups {
            honest: 0,
            refreshers: 0,
            many_tabs: 0,
            tabs: 1,
            cookie_clearers: 0,
            ticket_replayers: 0,
            replays: 0,
            pass_sharers: 0,
            friends: 0,
        }
    }
}

/// A parsed cheating scenario.
#[derive(Debug, Clone)]
pub struct CheatScenario {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Gateway config template (`{listen}`, `{admin_listen}`, `{shop_addr}`, `{opens_at}`,
    /// and `{state}`: the `[state]` section, empty for the local backend).
    pub gateway_config: PathBuf,
    /// The waiting room's name in that config.
    pub room: String,
    /// The shop.
    pub shop: ShopProfile,
    /// Arrivals are spread over this long.
    pub arrivals: Duration,
    /// The line opens this long after the first arrival (none: open from the start,
    /// no pre-queue).
    pub opens_after: Option<Duration>,
    /// Hard stop of the whole run.
    pub max_duration: Duration,
    /// Honest polling pace.
    pub poll_interval: Duration,
    /// Random sequence of arrivals.
    pub seed: u64,
    /// Who comes.
    pub groups: Groups,
    /// Gateway instances.
    pub instances: usize,
    /// What they share through.
    pub state: Backend,
    /// How a request picks its instance.
    pub balance: Balance,
    /// Then once more with one instance and the local backend.
    pub compare_local: bool,
    /// Poll every `near_poll` once at most this many people are ahead (0: never).
    pub near_front: u64,
    /// See `near_front`.
    pub near_poll: Duration,
    /// Admin view reads on each instance.
    pub scrape_every: Duration,
    /// Pages an admitted shopper loads, and the pause after each.
    pub pages: usize,
    /// See `pages`.
    pub page_interval: Duration,
    /// The tick of the order figure.
    pub tick: Duration,
    /// Whether tau 1.0 (within the tick) is a target (`[order]` given).
    pub order_target: bool,
    /// The rate-limit probe (its limit read from the gateway config at the run).
    pub hammer: Option<RawHammerSpec>,
}

/// `[hammer]` as parsed: the limit comes from the gateway config when run.
#[derive(Debug, Clone)]
pub struct RawHammerSpec {
    /// The rate-limited path.
    pub path: String,
    /// Requests in all.
    pub requests: usize,
    /// Sent evenly over this long.
    pub over: Duration,
    /// Starting this long after the first arrival.
    pub start_after: Duration,
}

fn dur(key: &str, v: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(v).with_context(|| format!("{key} = {v:?}"))
}

impl CheatScenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<CheatScenario> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let raw: RawScenario =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let s = CheatScenario {
            name: raw.name,
            description: raw.description,
            gateway_config: path
                .parent()
                .unwrap_or(Path::new("."))
                .join(&raw.gateway_config),
            room: raw.room,
            shop: ShopProfile {
                capacity: raw.shop.capacity,
                latency: dur("shop.latency", &raw.shop.latency)?,
                collapse: raw.shop.collapse,
            },
            arrivals: dur("arrivals", &raw.arrivals)?,
            opens_after: raw
                .opens_after
                .as_deref()
                .map(|v| dur("opens_after", v))
                .transpose()?,
            max_duration: dur("max_duration", &raw.max_duration)?,
            poll_interval: dur("poll_interval", &raw.poll_interval)?,
            seed: raw.seed,
            groups: raw.groups,
            instances: raw.instances.unwrap_or(1),
            state: raw.state.unwrap_or(Backend::Local),
            balance: raw.balance.unwrap_or(Balance::Random),
            compare_local: raw.compare_local,
            near_front: raw.near_front,
            near_poll: raw
                .near_poll_interval
                .as_deref()
                .map_or(Ok(Duration::from_millis(25)), |v| {
                    dur("near_poll_interval", v)
                })?,
            scrape_every: raw
                .scrape_interval
                .as_deref()
                .map_or(Ok(SCRAPE_EVERY), |v| dur("scrape_interval", v))?,
            pages: raw.visit.as_ref().map_or(2, |v| v.pages),
            page_interval: raw
                .visit
                .as_ref()
                .map_or(Ok(Duration::from_millis(200)), |v| {
                    dur("visit.page_interval", &v.page_interval)
                })?,
            tick: raw
                .order
                .as_ref()
                .and_then(|o| o.tick.as_deref())
                .map_or(Ok(TICK), |v| dur("order.tick", v))?,
            order_target: raw.order.is_some(),
            hammer: raw
                .hammer
                .map(|h| -> anyhow::Result<RawHammerSpec> {
                    Ok(RawHammerSpec {
                        over: dur("hammer.over", &h.over)?,
                        start_after: dur("hammer.start_after", &h.start_after)?,
                        path: h.path,
                        requests: h.requests,
                    })
                })
                .transpose()?,
        };
        anyhow::ensure!(
            s.max_duration <= MAX_RUN,
            "max_duration {:?} is over the {MAX_RUN:?} this scenario promises",
            s.max_duration
        );
        anyhow::ensure!(
            s.arrivals < s.max_duration,
            "arrivals must end before max_duration"
        );
        anyhow::ensure!(
            s.groups.tabs >= 1 && s.groups.tabs <= 16,
            "groups.tabs: 1 to 16"
        );
        anyhow::ensure!(
            s.groups.replays <= 16 && s.groups.friends <= 16,
            "groups.replays, groups.friends: at most 16"
        );
        anyhow::ensure!(s.people().len() <= 2000, "at most 2000 people");
        anyhow::ensure!(
            (1..=8).contains(&s.instances),
            "instances: 1 to 8 gateway processes"
        );
        anyhow::ensure!(
            s.pages <= 50 && s.page_interval <= Duration::from_secs(10),
            "visit: at most 50 pages, 10 s apart"
        );
        anyhow::ensure!(
            s.near_front == 0 || s.near_poll >= Duration::from_millis(5),
            "near_poll_interval: at least 5ms"
        );
        anyhow::ensure!(
            s.scrape_every >= Duration::from_millis(20),
            "scrape_interval: at least 20ms"
        );
        anyhow::ensure!(!s.tick.is_zero(), "order.tick: above 0");
        if let Some(h) = &s.hammer {
            anyhow::ensure!(
                (1..=5000).contains(&h.requests) && h.start_after + h.over < s.max_duration,
                "hammer: 1 to 5000 requests, sent before max_duration"
            );
            anyhow::ensure!(h.path.starts_with('/'), "hammer.path: a path, from /");
        }
        anyhow::ensure!(
            !s.compare_local || 2 * s.max_duration <= MAX_RUN,
            "compare_local runs twice: 2 × max_duration must stay within {MAX_RUN:?}"
        );
        Ok(s)
    }

    /// Everyone, in a random (seeded) order of arrival spread over `arrivals`.
    pub fn people(&self) -> Vec<Person> {
        let g = &self.groups;
        let mut groups: Vec<Group> = [
            (Group::Honest, g.honest),
            (Group::Refresher, g.refreshers),
            (Group::ManyTabs, g.many_tabs),
            (Group::CookieClearer, g.cookie_clearers),
            (Group::TicketReplayer, g.ticket_replayers),
            (Group::PassSharer, g.pass_sharers),
        ]
        .iter()
        .flat_map(|(grp, n)| std::iter::repeat(*grp).take(*n))
        .collect();
        let mut rng = SmallRng::seed_from_u64(self.seed);
        groups.shuffle(&mut rng);
        let mut times: Vec<Duration> = (0..groups.len())
            .map(|_| self.arrivals.mul_f64(rng.random::<f64>()))
            .collect();
        times.sort();
        groups
            .into_iter()
            .zip(times)
            .enumerate()
            .map(|(id, (group, arrival))| Person { id, group, arrival })
            .collect()
    }
}

/// One group's line in the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupReport {
    /// Group.
    pub group: Group,
    /// People.
    pub people: usize,
    /// Admitted within the run.
    pub admitted: usize,
    /// Of them, arrived in the pre-queue.
    pub prequeue: usize,
    /// Mean (arrival rank − admission rank): positive means in earlier than arrival.
    pub mean_places_gained: f64,
    /// Standard error of that mean.
    pub stderr: f64,
    /// Median wait of the admitted, seconds.
    pub median_wait_s: Option<f64>,
    /// Tickets taken per person, mean.
    pub tickets_per_person: f64,
}

/// One instance's line in the report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InstanceReport {
    /// The most `active` its admin view showed.
    pub max_active: u64,
    /// Admin views read.
    pub reads: u64,
    /// Visitor requests it answered.
    pub requests: u64,
    /// Visitors whose admission it answered.
    pub admissions: u64,
    /// Shared store (state = "redis"): `/metrics` reads, and of them those showing
    /// `floodgate_state_backend_up{backend="redis"}` 0 (the instance deciding alone,
    /// on its 1/N share).
    pub store_reads: u64,
    /// See `store_reads`.
    pub store_down_reads: u64,
    /// First and last read showing the store down, seconds after the start.
    pub store_down_first_s: Option<f64>,
    /// See `store_down_first_s`.
    pub store_down_last_s: Option<f64>,
    /// `floodgate_state_local_decisions_total` at the end: rate-limit checks decided
    /// from the local share.
    pub local_decisions: u64,
}

/// The whole result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheatReport {
    /// Scenario name.
    pub name: String,
    /// Gateway instances, what they shared through, how requests were spread.
    pub instances: usize,
    /// See `instances`.
    pub state: Backend,
    /// See `instances`.
    pub balance: Balance,
    /// Who came.
    pub groups: Groups,
    /// Seconds from first arrival to the opening (none: open from the start).
    pub opens_after_s: Option<f64>,
    /// Run length, seconds.
    pub ran_s: f64,
    /// Per group.
    pub by_group: Vec<GroupReport>,
    /// Admission order against arrival order.
    pub order: OrderReport,
    /// Whether tau 1.0 is a target.
    pub order_target: bool,
    /// Ticket replays tried.
    pub replays: u32,
    /// Replays that yielded a pass.
    pub replay_passes: u32,
    /// Requests made by friends on shared passes; served by the shop.
    pub shared_requests: u32,
    /// See `shared_requests`.
    pub shared_served: u32,
    /// The same after the sharer ended the session.
    pub after_end_requests: u32,
    /// See `after_end_requests`.
    pub after_end_served: u32,
    /// The most `active` any instance's admin view showed.
    pub max_active: u64,
    /// The room's `active_users`.
    pub active_users: u64,
    /// Admin views read, on all instances.
    pub scrapes: u64,
    /// Each instance.
    pub by_instance: Vec<InstanceReport>,
    /// The most people inside at once as the visitors saw it (a lower bound).
    pub inside_max: u64,
    /// Visitors' request latencies.
    pub latency: Latency,
    /// The rate-limit probe.
    pub hammer: Option<hammer::HammerReport>,
    /// Failed requests (connection, timeout).
    pub errors: u32,
    /// The machine's 1-minute load average at the start and the end (Linux).
    pub load_average: (Option<f64>, Option<f64>),
    /// Each target and whether it held.
    pub targets: Vec<(String, bool)>,
    /// With `compare_local`: the same with one instance and the local backend.
    pub baseline: Option<Box<CheatReport>>,
}

/// Runs the scenario (and with `compare_local` its single-instance local baseline).
pub async fn run(s: &CheatScenario, floodgate_bin: &Path) -> anyhow::Result<CheatReport> {
    let mut r = run_phase(s, floodgate_bin, s.instances, s.state).await?;
    if s.compare_local {
        let b = run_phase(s, floodgate_bin, 1, Backend::Local).await?;
        r.baseline = Some(Box::new(b));
    }
    Ok(r)
}

/// The gateway config for `state`: `{state}` and `{opens_at}` filled in.
fn render_config(
    s: &CheatScenario,
    state: Backend,
    redis: Option<SocketAddr>,
    opens_wall: Option<SystemTime>,
) -> anyhow::Result<String> {
    let mut text = std::fs::read_to_string(&s.gateway_config)
        .with_context(|| format!("reading {}", s.gateway_config.display()))?;
    let section = match (state, redis) {
        (Backend::Redis, Some(addr)) => format!(
            "[state]\nbackend = \"redis\"\nurl = \"redis://{addr}/0\"\nprefix = \"floodgate-load:\"\n"
        ),
        _ => String::new(),
    };
    anyhow::ensure!(
        state == Backend::Local || text.contains("{state}"),
        "{}: state = \"redis\" needs a {{state}} line in the gateway config (the runner writes [state] there)",
        s.gateway_config.display()
    );
    text = text.replace("{state}", &section);
    match opens_wall {
        Some(w) => text = text.replace("{opens_at}", &rfc3339_utc(w)),
        None => anyhow::ensure!(
            !text.contains("{opens_at}"),
            "{}: {{opens_at}} needs opens_after in the scenario",
            s.gateway_config.display()
        ),
    }
    Ok(text)
}

/// The 1-minute load average, where `/proc/loadavg` tells it.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A signing key for this run, the same on every instance.
fn run_key() -> String {
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// One run: spawns Redis (if shared), the shop and the gateways, lets everyone live,
/// reports, stops them all.
async fn run_phase(
    s: &CheatScenario,
    floodgate_bin: &Path,
    instances: usize,
    state: Backend,
) -> anyhow::Result<CheatReport> {
    let dir = spawn::scratch_dir()?;
    let load_before = load_average();
    let redis = match state {
        Backend::Redis => Some(spawn::start_redis(&dir).await?),
        Backend::Local => None,
    };
    let (shop, shop_addr) = spawn::start_shop(floodgate_bin, &s.shop, None, &dir).await?;
    let opens_wall = s.opens_after.map(|o| SystemTime::now() + START_SLACK + o);
    let text = render_config(s, state, redis.as_ref().map(|r| r.1), opens_wall)?;
    let probe = match &s.hammer {
        Some(h) => {
            let cfg: toml::Value = toml::from_str(&text)
                .with_context(|| format!("parsing {}", s.gateway_config.display()))?;
            let (limit, burst, rate) = hammer::client_limit(&cfg, &h.path)?;
            Some(hammer::Hammer {
                path: h.path.clone(),
                requests: h.requests,
                over: h.over,
                start_after: h.start_after,
                limit,
                burst,
                rate,
            })
        }
        None => None,
    };
    let rendered = dir.join("cheating-gateway-template.toml");
    std::fs::write(&rendered, text)?;
    let key = run_key();
    let envs = [("FLOODGATE_WAITING_ROOM_KEY", key.as_str())];
    let mut gws = Vec::new();
    for i in 0..instances {
        let name = if instances == 1 {
            "gateway".to_string()
        } else {
            format!("gateway-{}", i + 1)
        };
        gws.push(
            spawn::start_gateway_as(floodgate_bin, &rendered, shop_addr, &dir, &name, &envs)
                .await?,
        );
    }
    if state == Backend::Redis {
        for gw in &gws {
            wait_shared(gw.admin, instances).await?;
        }
    }
    let gateways: Arc<[SocketAddr]> = gws.iter().map(|g| g.listen).collect();
    // Arrivals start `opens_after` before the opening, whatever the start took.
    let now = Instant::now();
    let (t0, opens) = match (opens_wall, s.opens_after) {
        (Some(w), Some(after)) => {
            let opens = now + w.duration_since(SystemTime::now()).unwrap_or_default();
            (opens.checked_sub(after).unwrap_or(now).max(now), opens)
        }
        _ => (now, now),
    };
    let world = World {
        gateways: gateways.clone(),
        balance: s.balance,
        seed: s.seed,
        t0,
        opens,
        deadline: t0 + s.max_duration,
        poll: s.poll_interval,
        tabs: s.groups.tabs,
        replays: s.groups.replays,
        friends: s.groups.friends,
        near_front: s.near_front,
        near_poll: s.near_poll,
        pages: s.pages,
        page_interval: s.page_interval,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let monitors: Vec<_> = gws
        .iter()
        .map(|gw| {
            tokio::spawn(scrape(
                gw.admin,
                s.room.clone(),
                s.scrape_every,
                stop.clone(),
            ))
        })
        .collect();
    let stores: Vec<_> = gws
        .iter()
        .filter(|_| state == Backend::Redis)
        .map(|gw| tokio::spawn(watch_store(gw.admin, t0, stop.clone())))
        .collect();
    let hammering = probe.map(|h| tokio::spawn(hammer::run(gateways.clone(), h, t0)));
    let everyone = s.people();
    let tasks: Vec<_> = everyone
        .into_iter()
        .map(|p| tokio::spawn(people::live(world.clone(), p)))
        .collect();
    let mut lived = Vec::new();
    let hard_stop = world.deadline + Duration::from_secs(5);
    for t in tasks {
        // Each visit is bounded by the deadline; a hard stop guards the join.
        let left = hard_stop.saturating_duration_since(Instant::now());
        if let Ok(Ok(r)) = tokio::time::timeout(left, t).await {
            lived.push(r);
        }
    }
    let hammered = match hammering {
        Some(h) => {
            let left = hard_stop.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, h)
                .await
                .ok()
                .and_then(Result::ok)
        }
        None => None,
    };
    stop.store(true, Ordering::Relaxed);
    let mut views = Vec::new();
    for m in monitors {
        views.push(m.await.unwrap_or_default());
    }
    for (v, st) in views.iter_mut().zip(stores) {
        v.store = st.await.unwrap_or_default();
    }
    let ran_s = t0.elapsed().as_secs_f64();
    for gw in gws {
        gw.proc.stop().await;
    }
    shop.stop().await;
    if let Some((r, _)) = redis {
        r.stop().await;
    }
    Ok(analyse(
        s,
        Phase {
            instances,
            state,
            lived: &lived,
            ran_s,
            views: &views,
            hammer: hammered,
            load_average: (load_before, load_average()),
        },
    ))
}

/// How often an instance's `/metrics` is read for the shared store's state.
const STORE_EVERY: Duration = Duration::from_millis(250);

/// What one instance's `/metrics` said of the shared store.
#[derive(Debug, Clone, Copy, Default)]
struct StoreView {
    reads: u64,
    down_reads: u64,
    down_first_s: Option<f64>,
    down_last_s: Option<f64>,
    local_decisions: u64,
}

/// Reads `/metrics` every [`STORE_EVERY`] until `stop`: when the store was away.
async fn watch_store(admin: SocketAddr, t0: Instant, stop: Arc<AtomicBool>) -> StoreView {
    let me = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut v = StoreView::default();
    while !stop.load(Ordering::Relaxed) {
        let mut jar = http::Jar::default();
        if let Ok(r) = http::get(me, admin, "/metrics", http::Ask::Page, &mut jar).await {
            if let Some(up) = metric(&r.body, "floodgate_state_backend_up{backend=\"redis\"}") {
                v.reads += 1;
                if up < 1.0 {
                    let at = t0.elapsed().as_secs_f64();
                    v.down_reads += 1;
                    v.down_first_s.get_or_insert(at);
                    v.down_last_s = Some(at);
                }
            }
            if let Some(n) = metric(&r.body, "floodgate_state_local_decisions_total") {
                v.local_decisions = n as u64;
            }
        }
        tokio::time::sleep(STORE_EVERY).await;
    }
    v
}

/// Waits until the instance at `admin` has the shared store up and counts `n` live
/// instances (`/metrics`), so that no early request is decided on its own.
async fn wait_shared(admin: SocketAddr, n: usize) -> anyhow::Result<()> {
    let me = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let deadline = Instant::now() + SHARED_READY;
    let mut seen = (None, None);
    loop {
        let mut jar = http::Jar::default();
        if let Ok(r) = http::get(me, admin, "/metrics", http::Ask::Page, &mut jar).await {
            seen = (
                metric(&r.body, "floodgate_state_backend_up{backend=\"redis\"}"),
                metric(&r.body, "floodgate_state_live_instances"),
            );
            if seen.0 == Some(1.0) && seen.1 == Some(n as f64) {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway with admin {admin} did not share the store with {n} instances within \
             {SHARED_READY:?} (backend_up {:?}, live instances {:?})",
            seen.0,
            seen.1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sample's value in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What one instance's admin view showed.
#[derive(Debug, Clone, Copy, Default)]
struct View {
    reads: u64,
    max_active: u64,
    active_users: u64,
    store: StoreView,
}

/// Reads the room's admin view every `every` until `stop`.
async fn scrape(admin: SocketAddr, room: String, every: Duration, stop: Arc<AtomicBool>) -> View {
    let path = format!("/admin/waiting-rooms/{room}");
    let me = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut v = View::default();
    while !stop.load(Ordering::Relaxed) {
        let mut jar = http::Jar::default();
        if let Ok(r) = http::get(me, admin, &path, http::Ask::Poll, &mut jar).await {
            if let Ok(j) = serde_json::from_str::<serde_json::Value>(&r.body) {
                v.reads += 1;
                v.max_active = v.max_active.max(j["active"].as_u64().unwrap_or(0));
                v.active_users = j["active_users"].as_u64().unwrap_or(v.active_users);
            }
        }
        tokio::time::sleep(every).await;
    }
    v
}

/// Ranks with ties at their average (1-based), in the order of `keys`.
fn ranks(keys: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..keys.len()).collect();
    idx.sort_by(|a, b| keys[*a].total_cmp(&keys[*b]));
    let mut out = vec![0.0; keys.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && keys[idx[j + 1]] == keys[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in &idx[i..=j] {
            out[*k] = avg;
        }
        i = j + 1;
    }
    out
}

/// What one run gathered.
struct Phase<'a> {
    instances: usize,
    state: Backend,
    lived: &'a [(Person, Outcome)],
    ran_s: f64,
    views: &'a [View],
    hammer: Option<hammer::HammerReport>,
    load_average: (Option<f64>, Option<f64>),
}

fn analyse(s: &CheatScenario, ph: Phase<'_>) -> CheatReport {
    let lived = ph.lived;
    // Arrival: the pre-queue is one tie (its order is drawn); then arrival time.
    let arrival_keys: Vec<f64> = lived
        .iter()
        .map(|(_, o)| if o.prequeue { -1.0 } else { o.arrived_s })
        .collect();
    // Admission: time of admission; never admitted ties last.
    let admission_keys: Vec<f64> = lived
        .iter()
        .map(|(_, o)| o.admitted_s.unwrap_or(f64::INFINITY))
        .collect();
    let (ra, rd) = (ranks(&arrival_keys), ranks(&admission_keys));
    let mut by_group = Vec::new();
    for g in [
        Group::Honest,
        Group::Refresher,
        Group::ManyTabs,
        Group::CookieClearer,
        Group::TicketReplayer,
        Group::PassSharer,
    ] {
        let members: Vec<usize> = (0..lived.len())
            .filter(|i| lived[*i].0.group == g)
            .collect();
        if members.is_empty() {
            continue;
        }
        let gains: Vec<f64> = members.iter().map(|i| ra[*i] - rd[*i]).collect();
        let n = gains.len() as f64;
        let mean = gains.iter().sum::<f64>() / n;
        let var = gains.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let mut waits: Vec<f64> = members
            .iter()
            .filter_map(|i| lived[*i].1.admitted_s.map(|a| a - lived[*i].1.arrived_s))
            .collect();
        waits.sort_by(f64::total_cmp);
        by_group.push(GroupReport {
            group: g,
            people: members.len(),
            admitted: waits.len(),
            prequeue: members.iter().filter(|i| lived[**i].1.prequeue).count(),
            mean_places_gained: mean,
            stderr: (var / n).sqrt(),
            median_wait_s: waits.get(waits.len() / 2).copied(),
            tickets_per_person: members
                .iter()
                .map(|i| lived[*i].1.tickets as f64)
                .sum::<f64>()
                / n,
        });
    }
    let mut by_instance: Vec<InstanceReport> = ph
        .views
        .iter()
        .map(|v| InstanceReport {
            max_active: v.max_active,
            reads: v.reads,
            store_reads: v.store.reads,
            store_down_reads: v.store.down_reads,
            store_down_first_s: v.store.down_first_s,
            store_down_last_s: v.store.down_last_s,
            local_decisions: v.store.local_decisions,
            ..Default::default()
        })
        .collect();
    by_instance.resize(ph.instances, InstanceReport::default());
    for (_, o) in lived {
        for x in &o.samples {
            if let Some(i) = by_instance.get_mut(usize::from(x.instance)) {
                i.requests += 1;
            }
        }
        if let Some(i) = o.admitted_via.and_then(|v| by_instance.get_mut(v)) {
            i.admissions += 1;
        }
    }
    let sum = |f: fn(&Outcome) -> u32| lived.iter().map(|(_, o)| f(o)).sum::<u32>();
    let mut r = CheatReport {
        name: s.name.clone(),
        instances: ph.instances,
        state: ph.state,
        balance: s.balance,
        groups: s.groups.clone(),
        opens_after_s: s.opens_after.map(|d| d.as_secs_f64()),
        ran_s: ph.ran_s,
        by_group,
        order: order::order(lived, s.tick.as_secs_f64()),
        order_target: s.order_target,
        replays: sum(|o| o.replays),
        replay_passes: sum(|o| o.replay_passes),
        shared_requests: sum(|o| o.shared_requests),
        shared_served: sum(|o| o.shared_served),
        after_end_requests: sum(|o| o.after_end_requests),
        after_end_served: sum(|o| o.after_end_served),
        max_active: ph.views.iter().map(|v| v.max_active).max().unwrap_or(0),
        active_users: ph.views.iter().map(|v| v.active_users).max().unwrap_or(0),
        scrapes: ph.views.iter().map(|v| v.reads).sum(),
        by_instance,
        inside_max: order::inside_max(lived),
        latency: order::latency(lived),
        hammer: ph.hammer,
        errors: sum(|o| o.errors),
        load_average: ph.load_average,
        targets: Vec::new(),
        baseline: None,
    };
    r.targets = targets(&r);
    r
}

fn gained(g: &GroupReport) -> bool {
    g.mean_places_gained > GAIN_TOLERANCE.max(2.0 * g.stderr)
}

fn targets(r: &CheatReport) -> Vec<(String, bool)> {
    let mut t = Vec::new();
    for g in r.by_group.iter().filter(|g| g.group != Group::Honest) {
        t.push((
            format!(
                "{} no earlier than their arrival order ({:+.1} places)",
                g.group.as_str(),
                g.mean_places_gained
            ),
            !gained(g),
        ));
    }
    if r.replays > 0 || r.groups.ticket_replayers > 0 {
        t.push((
            format!(
                "no replayed ticket yields an extra pass ({} of {})",
                r.replay_passes, r.replays
            ),
            r.replay_passes == 0,
        ));
    }
    if r.order_target {
        let a = &r.order.arrival_admission;
        t.push((
            format!(
                "admission order = arrival order within a {:.0} ms tick (Kendall tau {}, {} discordant pairs)",
                r.order.tick_ms,
                a.tau.map_or("-".into(), |x| format!("{x:.4}")),
                a.discordant
            ),
            a.tau == Some(1.0),
        ));
    }
    t.push((
        format!(
            "active never above active_users on any instance ({} max, {} allowed)",
            r.max_active, r.active_users
        ),
        r.scrapes > 0 && r.max_active <= r.active_users,
    ));
    t.push((
        format!(
            "visitors never inside more than active_users at once ({} max)",
            r.inside_max
        ),
        r.active_users > 0 && r.inside_max <= r.active_users,
    ));
    if let Some(h) = &r.hammer {
        t.push((
            format!(
                "one client gets at most burst + rate × t on {} ({} passes in the worst {:.2} s window, {:.1} allowed)",
                h.hammer.path, h.worst_count, h.worst_window_s, h.worst_bound
            ),
            h.answered > 0 && h.worst_excess <= 1e-9,
        ));
    }
    t
}

fn fmt_tau(t: &order::Tau) -> String {
    format!(
        "tau {} ({} concordant, {} discordant, {} tied pairs)",
        t.tau.map_or("-".into(), |x| format!("{x:.4}")),
        t.concordant,
        t.discordant,
        t.tied
    )
}

fn fmt_pct(p: &order::Pct) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} requests)",
        p.p50_ms, p.p99_ms, p.max_ms, p.count
    )
}

fn fmt_who(w: &order::Who) -> String {
    format!(
        "#{} arrived {:.3} s, ticket {}, admitted {} via instance {}",
        w.id,
        w.arrived_s,
        w.ticket.map_or("-".into(), |t| t.to_string()),
        w.admitted_s.map_or("never".into(), |a| format!("{a:.3} s")),
        w.via.map_or("-".into(), |v| (v + 1).to_string())
    )
}

fn slash<T: std::fmt::Display>(xs: impl Iterator<Item = T>) -> String {
    xs.map(|x| x.to_string()).collect::<Vec<_>>().join(" / ")
}

/// The report for a terminal.
pub fn summary(r: &CheatReport) -> String {
    let mut out = phase_summary(r);
    if let Some(b) = &r.baseline {
        out.push_str(&format!(
            "\n---- baseline: {} instance, state {} (same scenario, same room settings) ----\n\n",
            b.instances,
            b.state.as_str()
        ));
        out.push_str(&phase_summary(b));
        let (x, y) = (&r.latency, &b.latency);
        let head = format!("{} × {}", r.instances, r.state.as_str());
        let base = format!("{} × {}", b.instances, b.state.as_str());
        out.push_str(&format!(
            "\ncomparison (visitor requests, ms)   {head:>18}  {base:>18}  {:>16}\n",
            "difference"
        ));
        for (what, p, q) in [
            ("all requests   p50 / p99", &x.all, &y.all),
            ("status polls   p50 / p99", &x.polls, &y.polls),
            ("page loads     p50 / p99", &x.pages, &y.pages),
        ] {
            out.push_str(&format!(
                "  {what:<34}{:>18}  {:>18}  {:>16}\n",
                format!("{:.1} / {:.1}", p.p50_ms, p.p99_ms),
                format!("{:.1} / {:.1}", q.p50_ms, q.p99_ms),
                format!("{:+.1} / {:+.1}", p.p50_ms - q.p50_ms, p.p99_ms - q.p99_ms)
            ));
        }
        out.push_str(&format!(
            "  {:<34}{:>18}  {:>18}\n",
            "Kendall tau",
            r.order
                .arrival_admission
                .tau
                .map_or("-".into(), |t| format!("{t:.4}")),
            b.order
                .arrival_admission
                .tau
                .map_or("-".into(), |t| format!("{t:.4}"))
        ));
        out.push_str(&format!(
            "  {:<34}{:>18}  {:>18}\n",
            "max active / active_users",
            format!("{} / {}", r.max_active, r.active_users),
            format!("{} / {}", b.max_active, b.active_users)
        ));
        if let (Some(h), Some(k)) = (&r.hammer, &b.hammer) {
            out.push_str(&format!(
                "  {:<34}{:>18}  {:>18}\n",
                "rate limit passes / bound",
                format!("{} / {:.1}", h.passed, h.bound),
                format!("{} / {:.1}", k.passed, k.bound)
            ));
        }
        out.push_str("\ntargets (baseline):\n");
        for (what, ok) in &b.targets {
            out.push_str(&format!(
                "  [{}] {what}\n",
                if *ok { "met" } else { "MISSED" }
            ));
        }
    }
    out
}

fn phase_summary(r: &CheatReport) -> String {
    let g = &r.groups;
    let who: Vec<String> = [
        (g.honest, "honest".to_string()),
        (g.refreshers, "refreshers".into()),
        (g.many_tabs, format!("with {} tabs", g.tabs)),
        (g.cookie_clearers, "cookie clearers".into()),
        (
            g.ticket_replayers,
            format!("ticket replayers ({} replays each)", g.replays),
        ),
        (
            g.pass_sharers,
            format!("pass sharers ({} friends each)", g.friends),
        ),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    let mut out = format!(
        "{}: {}; {}; {} gateway instance{} (state {}{}); ran {:.1} s\n\n",
        r.name,
        who.join(", "),
        r.opens_after_s
            .map_or("the line is open from the start".to_string(), |o| format!(
                "line opens {o:.0} s after the first arrival"
            )),
        r.instances,
        if r.instances == 1 { "" } else { "s" },
        r.state.as_str(),
        if r.instances > 1 {
            format!(
                ", each request to a {} instance",
                match r.balance {
                    Balance::Random => "random",
                    Balance::RoundRobin => "round-robin",
                }
            )
        } else {
            String::new()
        },
        r.ran_s
    );
    out.push_str(
        "group              people  admitted  pre-queue  tickets/person  places gained (±2se)  median wait\n",
    );
    for x in &r.by_group {
        out.push_str(&format!(
            "{:<18} {:>6}  {:>8}  {:>9}  {:>14.1}  {:>+12.1} (±{:.1})  {:>9}\n",
            x.group.as_str(),
            x.people,
            x.admitted,
            x.prequeue,
            x.tickets_per_person,
            x.mean_places_gained,
            2.0 * x.stderr,
            x.median_wait_s
                .map_or("-".to_string(), |w| format!("{w:.1} s"))
        ));
    }
    let o = &r.order;
    out.push_str(&format!(
        "\nadmission vs arrival order ({} of {} admitted; ties: arrivals within {:.0} ms, \
         admissions in one {:.0} ms tick): Kendall {}\n  \
         numbering (arrival vs ticket number): {}\n  \
         front (ticket number vs admission): {}\n",
        o.admitted,
        o.people,
        o.tick_ms,
        o.tick_ms,
        fmt_tau(&o.arrival_admission),
        fmt_tau(&o.arrival_ticket),
        fmt_tau(&o.ticket_admission),
    ));
    for d in &o.discordant {
        out.push_str(&format!(
            "  discordant: {}\n          vs {}\n",
            fmt_who(&d.first),
            fmt_who(&d.second)
        ));
    }
    if r.replays > 0 || r.shared_requests > 0 {
        out.push_str(&format!(
            "ticket replays: {} tried, {} yielded a pass\n\
             shared passes: friends' requests served {} of {}; after the sharer's session ended: {} of {}\n",
            r.replays,
            r.replay_passes,
            r.shared_served,
            r.shared_requests,
            r.after_end_served,
            r.after_end_requests,
        ));
    }
    out.push_str(&format!(
        "active (admin view, {} reads): max {}, active_users {}; per instance max {}\n\
         inside at once, as the visitors saw it: max {}\n\
         visitor requests per instance: {}; admissions answered per instance: {}\n\
         visitor request latency: {}\n  status polls: {}\n  page loads: {}\n",
        r.scrapes,
        r.max_active,
        r.active_users,
        slash(r.by_instance.iter().map(|i| i.max_active)),
        r.inside_max,
        slash(r.by_instance.iter().map(|i| i.requests)),
        slash(r.by_instance.iter().map(|i| i.admissions)),
        fmt_pct(&r.latency.all),
        fmt_pct(&r.latency.polls),
        fmt_pct(&r.latency.pages),
    ));
    if let Some(h) = &r.hammer {
        out.push_str(&format!(
            "rate limit ({} on {}), one client round-robin over {} instance{}: {} of {} \
             requests passed ({} refused 429, {} failed; per instance {}) in {:.2} s; \
             burst + rate × t = {:.1}; worst window {} passes in {:.3} s against {:.2} \
             (excess {:+.2})\n",
            h.hammer.limit,
            h.hammer.path,
            h.instances,
            if h.instances == 1 { "" } else { "s" },
            h.passed,
            h.hammer.requests,
            h.refused,
            h.failed,
            slash(h.passed_by_instance.iter()),
            h.span_s,
            h.bound,
            h.worst_count,
            h.worst_window_s,
            h.worst_bound,
            h.worst_excess
        ));
    }
    if r.state == Backend::Redis {
        let each: Vec<String> = r
            .by_instance
            .iter()
            .enumerate()
            .map(|(i, x)| {
                format!(
                    "instance {} down in {} of {} reads{}, {} rate-limit checks decided locally",
                    i + 1,
                    x.store_down_reads,
                    x.store_reads,
                    match (x.store_down_first_s, x.store_down_last_s) {
                        (Some(a), Some(b)) => format!(" (from {a:.1} s to {b:.1} s)"),
                        _ => String::new(),
                    },
                    x.local_decisions
                )
            })
            .collect();
        out.push_str(&format!(
            "shared store (backend_up on /metrics every {} ms): {}\n",
            STORE_EVERY.as_millis(),
            each.join("; ")
        ));
    }
    let la = |x: Option<f64>| x.map_or("-".into(), |l| format!("{l:.2}"));
    out.push_str(&format!(
        "failed requests: {}; machine load average {} at the start, {} at the end\n\ntargets:\n",
        r.errors,
        la(r.load_average.0),
        la(r.load_average.1)
    ));
    for (what, ok) in &r.targets {
        out.push_str(&format!(
            "  [{}] {what}\n",
            if *ok { "met" } else { "MISSED" }
        ));
    }
    out
}

/// The `cheat` subcommand: run, print, write JSON; the exit code says whether the
/// targets held when `strict`.
pub fn main(
    scenario: &Path,
    floodgate_bin: Option<&Path>,
    json: Option<&Path>,
    strict: bool,
) -> std::process::ExitCode {
    let result = (|| -> anyhow::Result<bool> {
        let s = CheatScenario::load(scenario)?;
        let bin = floodgate_bin.map_or_else(default_bin, Path::to_path_buf);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let r = rt.block_on(run(&s, &bin))?;
        println!("{}", summary(&r));
        if let Some(p) = json {
            std::fs::write(p, serde_json::to_string_pretty(&r)?)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(all_met(&r))
    })();
    match result {
        Ok(all) if all || !strict => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("floodgate-load cheat: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether every target held, the baseline's too.
pub fn all_met(r: &CheatReport) -> bool {
    r.targets.iter().all(|(_, ok)| *ok) && r.baseline.as_deref().map_or(true, all_met)
}

/// The release binary when built, else the debug one (this scenario is light).
fn default_bin() -> PathBuf {
    let release = spawn::default_floodgate_bin();
    if release.exists() {
        return release;
    }
    release
        .parent()
        .and_then(Path::parent)
        .map_or(release.clone(), |t| t.join("debug/floodgate"))
}

/// `2026-11-27T08:00:00Z` for a wall time (no calendar crate for one format).
fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_times_are_written_as_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_766_400);
        assert_eq!(rfc3339_utc(t), "2026-11-27T08:00:00Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn ties_share_their_average_rank() {
        assert_eq!(ranks(&[-1.0, 5.0, -1.0, 3.0]), [1.5, 4.0, 1.5, 3.0]);
        assert_eq!(ranks(&[f64::INFINITY, 1.0, f64::INFINITY]), [2.5, 1.0, 2.5]);
    }

    #[test]
    fn the_multi_instance_scenario_is_bounded_and_its_template_renders() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/cheat/multi-instance.toml");
        let s = CheatScenario::load(&path).unwrap();
        assert_eq!((s.instances, s.state), (3, Backend::Redis));
        assert!(s.compare_local && s.order_target && s.opens_after.is_none());
        assert!(2 * s.max_duration <= Duration::from_secs(90));
        let redis: SocketAddr = "127.0.0.1:6399".parse().unwrap();
        for (state, addr) in [(Backend::Redis, Some(redis)), (Backend::Local, None)] {
            let text = render_config(&s, state, addr, None).unwrap();
            let cfg: toml::Value = toml::from_str(&text).unwrap();
            assert_eq!(cfg.get("state").is_some(), state == Backend::Redis);
            let h = s.hammer.as_ref().unwrap();
            let (_, burst, rate) = hammer::client_limit(&cfg, &h.path).unwrap();
            assert_eq!((burst, rate), (10.0, 5.0));
        }
        assert!(s
            .people()
            .iter()
            .all(|p| people::person_ip(p.id).is_loopback()));
    }

    #[test]
    fn prometheus_samples_are_read_by_full_name() {
        let text = "# HELP x\nfloodgate_state_live_instances 3\n\
                    floodgate_state_backend_up{backend=\"redis\"} 1\n";
        assert_eq!(metric(text, "floodgate_state_live_instances"), Some(3.0));
        assert_eq!(
            metric(text, "floodgate_state_backend_up{backend=\"redis\"}"),
            Some(1.0)
        );
        assert_eq!(metric(text, "floodgate_state_live"), None);
    }

    #[test]
    fn the_shipped_scenario_parses_and_is_bounded() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/cheat/cheating.toml");
        let s = CheatScenario::load(&path).unwrap();
        assert!(s.max_duration <= MAX_RUN);
        assert!(s.gateway_config.exists());
        let people = s.people();
        assert!(people.windows(2).all(|w| w[0].arrival <= w[1].arrival));
        assert!(people.iter().all(|p| people::person_ip(p.id).is_loopback()));
    }
}
