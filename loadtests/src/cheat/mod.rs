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

mod http;
pub mod people;

use crate::scenario::ShopProfile;
use crate::spawn;
use anyhow::Context as _;
use people::{Group, Outcome, Person, World};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// How often the room's admin view is read.
pub const SCRAPE_EVERY: Duration = Duration::from_millis(200);
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
    opens_after: String,
    max_duration: String,
    poll_interval: String,
    #[serde(default)]
    seed: u64,
    shop: RawShop,
    groups: Groups,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShop {
    capacity: u32,
    latency: String,
    collapse: u32,
}

/// How many people of each kind, and how hard the cheaters try.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
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

/// A parsed cheating scenario.
#[derive(Debug, Clone)]
pub struct CheatScenario {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Gateway config template (`{listen}`, `{admin_listen}`, `{shop_addr}`, `{opens_at}`).
    pub gateway_config: PathBuf,
    /// The waiting room's name in that config.
    pub room: String,
    /// The shop.
    pub shop: ShopProfile,
    /// Arrivals are spread over this long.
    pub arrivals: Duration,
    /// The line opens this long after the first arrival.
    pub opens_after: Duration,
    /// Hard stop of the whole run.
    pub max_duration: Duration,
    /// Honest polling pace.
    pub poll_interval: Duration,
    /// Random sequence of arrivals.
    pub seed: u64,
    /// Who comes.
    pub groups: Groups,
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
            opens_after: dur("opens_after", &raw.opens_after)?,
            max_duration: dur("max_duration", &raw.max_duration)?,
            poll_interval: dur("poll_interval", &raw.poll_interval)?,
            seed: raw.seed,
            groups: raw.groups,
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

/// The whole result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheatReport {
    /// Scenario name.
    pub name: String,
    /// Who came.
    pub groups: Groups,
    /// Seconds from first arrival to the opening.
    pub opens_after_s: f64,
    /// Run length, seconds.
    pub ran_s: f64,
    /// Per group.
    pub by_group: Vec<GroupReport>,
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
    /// The most `active` the admin view showed.
    pub max_active: u64,
    /// The room's `active_users`.
    pub active_users: u64,
    /// Admin views read.
    pub scrapes: u64,
    /// Failed requests (connection, timeout).
    pub errors: u32,
    /// Each target and whether it held.
    pub targets: Vec<(String, bool)>,
}

/// Runs the scenario: spawns shop and gateway, lets everyone live, reports.
pub async fn run(s: &CheatScenario, floodgate_bin: &Path) -> anyhow::Result<CheatReport> {
    let dir = spawn::scratch_dir()?;
    let (shop, shop_addr) = spawn::start_shop(floodgate_bin, &s.shop, None, &dir).await?;
    let opens_wall = SystemTime::now() + START_SLACK + s.opens_after;
    let template = std::fs::read_to_string(&s.gateway_config)
        .with_context(|| format!("reading {}", s.gateway_config.display()))?
        .replace("{opens_at}", &rfc3339_utc(opens_wall));
    let rendered = dir.join("cheating-gateway-template.toml");
    std::fs::write(&rendered, template)?;
    let gw = spawn::start_gateway(floodgate_bin, &rendered, shop_addr, &dir).await?;
    // Arrivals start `opens_after` before the opening, whatever the start took.
    let until_open = opens_wall
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let now = Instant::now();
    let opens = now + until_open;
    let t0 = opens.checked_sub(s.opens_after).unwrap_or(now).max(now);
    let world = World {
        gateway: gw.listen,
        t0,
        opens,
        deadline: t0 + s.max_duration,
        poll: s.poll_interval,
        tabs: s.groups.tabs,
        replays: s.groups.replays,
        friends: s.groups.friends,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let max_active = Arc::new(AtomicU64::new(0));
    let monitor = tokio::spawn(scrape(
        gw.admin,
        s.room.clone(),
        stop.clone(),
        max_active.clone(),
    ));
    let everyone = s.people();
    let tasks: Vec<_> = everyone
        .into_iter()
        .map(|p| tokio::spawn(people::live(world.clone(), p)))
        .collect();
    let mut lived = Vec::new();
    for t in tasks {
        // Each visit is bounded by the deadline; a hard stop guards the join.
        let left =
            (world.deadline + Duration::from_secs(5)).saturating_duration_since(Instant::now());
        if let Ok(Ok(r)) = tokio::time::timeout(left, t).await {
            lived.push(r);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (scrapes, active_users) = monitor.await.unwrap_or((0, 0));
    let ran_s = t0.elapsed().as_secs_f64();
    gw.proc.stop().await;
    shop.stop().await;
    Ok(analyse(
        s,
        &lived,
        ran_s,
        max_active.load(Ordering::Relaxed),
        active_users,
        scrapes,
    ))
}

/// Reads the room's admin view every [`SCRAPE_EVERY`]; (views read, active_users).
async fn scrape(
    admin: SocketAddr,
    room: String,
    stop: Arc<AtomicBool>,
    max_active: Arc<AtomicU64>,
) -> (u64, u64) {
    let path = format!("/admin/waiting-rooms/{room}");
    let me = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (mut n, mut active_users) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let mut jar = http::Jar::default();
        if let Ok(r) = http::get(me, admin, &path, http::Ask::Poll, &mut jar).await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) {
                n += 1;
                max_active.fetch_max(v["active"].as_u64().unwrap_or(0), Ordering::Relaxed);
                active_users = v["active_users"].as_u64().unwrap_or(active_users);
            }
        }
        tokio::time::sleep(SCRAPE_EVERY).await;
    }
    (n, active_users)
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

fn analyse(
    s: &CheatScenario,
    lived: &[(Person, Outcome)],
    ran_s: f64,
    max_active: u64,
    active_users: u64,
    scrapes: u64,
) -> CheatReport {
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
    let sum = |f: fn(&Outcome) -> u32| lived.iter().map(|(_, o)| f(o)).sum::<u32>();
    let mut r = CheatReport {
        name: s.name.clone(),
        groups: s.groups.clone(),
        opens_after_s: s.opens_after.as_secs_f64(),
        ran_s,
        by_group,
        replays: sum(|o| o.replays),
        replay_passes: sum(|o| o.replay_passes),
        shared_requests: sum(|o| o.shared_requests),
        shared_served: sum(|o| o.shared_served),
        after_end_requests: sum(|o| o.after_end_requests),
        after_end_served: sum(|o| o.after_end_served),
        max_active,
        active_users,
        scrapes,
        errors: sum(|o| o.errors),
        targets: Vec::new(),
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
    t.push((
        format!(
            "no replayed ticket yields an extra pass ({} of {})",
            r.replay_passes, r.replays
        ),
        r.replay_passes == 0,
    ));
    t.push((
        format!(
            "active never above active_users ({} max, {} allowed)",
            r.max_active, r.active_users
        ),
        r.scrapes > 0 && r.max_active <= r.active_users,
    ));
    t
}

/// The report for a terminal.
pub fn summary(r: &CheatReport) -> String {
    let g = &r.groups;
    let mut out = format!(
        "{}: {} honest, {} refreshers, {} with {} tabs, {} cookie clearers, {} ticket \
         replayers ({} replays each), {} pass sharers ({} friends each); line opens \
         {:.0} s after the first arrival; ran {:.1} s\n\n",
        r.name,
        g.honest,
        g.refreshers,
        g.many_tabs,
        g.tabs,
        g.cookie_clearers,
        g.ticket_replayers,
        g.replays,
        g.pass_sharers,
        g.friends,
        r.opens_after_s,
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
    out.push_str(&format!(
        "\nticket replays: {} tried, {} yielded a pass\n\
         shared passes: friends' requests served {} of {}; after the sharer's session ended: {} of {}\n\
         active (admin view, {} reads): max {}, active_users {}\n\
         failed requests: {}\n\ntargets:\n",
        r.replays,
        r.replay_passes,
        r.shared_served,
        r.shared_requests,
        r.after_end_served,
        r.after_end_requests,
        r.scrapes,
        r.max_active,
        r.active_users,
        r.errors
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
        Ok(r.targets.iter().all(|(_, ok)| *ok))
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
