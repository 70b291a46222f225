//! The people of the cheating scenario: honest visitors and five kinds of cheater,
//! each a bounded loop of real requests from its own loopback address.

use super::http::{get, Ask, Jar, Reply};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Ticket and pass cookie name prefixes (a room may suffix its own names).
const TICKET: &str = "fg_ticket";
const PASS: &str = "fg_pass";
/// A cookie clearer takes at most this many tickets.
const MAX_CLEARED_TICKETS: usize = 6;
/// How often a cookie clearer starts over.
const CLEAR_EVERY: Duration = Duration::from_secs(1);
/// Requests each pass-sharing friend makes with the shared pass, per round.
const FRIEND_REQUESTS: usize = 3;

/// Who a person is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Takes one ticket and lets the page poll at its own pace.
    Honest,
    /// Reloads the whole page as fast as they can.
    Refresher,
    /// Opens several tabs with separate cookies, uses whichever gets in first.
    ManyTabs,
    /// Before the opening, clears cookies and takes a new ticket again and again,
    /// keeping every one (more draws in the pre-queue lottery).
    CookieClearer,
    /// Once admitted, replays the admitted ticket from friends' machines.
    TicketReplayer,
    /// Once admitted, shares the pass with friends elsewhere.
    PassSharer,
}

impl Group {
    /// Report spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Honest => "honest",
            Group::Refresher => "refreshers",
            Group::ManyTabs => "many_tabs",
            Group::CookieClearer => "cookie_clearers",
            Group::TicketReplayer => "ticket_replayers",
            Group::PassSharer => "pass_sharers",
        }
    }
}

/// How each request picks one of several gateway instances (a load balancer
/// without affinity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Any instance, at random, for every request.
    Random,
    /// The next instance, for every request of a person (each starts elsewhere).
    RoundRobin,
}

/// What is common to every person of a run.
#[derive(Debug, Clone)]
pub struct World {
    /// The gateway instances' proxy listeners (one for a single gateway).
    pub gateways: Arc<[SocketAddr]>,
    /// How a request picks its instance.
    pub balance: Balance,
    /// Seeds each person's choice of instances.
    pub seed: u64,
    /// When the run started (arrival offsets count from here).
    pub t0: Instant,
    /// When the line opens (before it: the pre-queue).
    pub opens: Instant,
    /// Nobody acts after this.
    pub deadline: Instant,
    /// The pace of polls (and of refreshes, twice as fast).
    pub poll: Duration,
    /// Tabs per many-tabs person.
    pub tabs: usize,
    /// Replays per ticket replayer.
    pub replays: usize,
    /// Friends per pass sharer.
    pub friends: usize,
    /// A poll that says at most this many people are ahead is followed by the next
    /// one after `near_poll` instead of `poll` (0: never), so that admission times
    /// are measured within a tick.
    pub near_front: u64,
    /// See `near_front`.
    pub near_poll: Duration,
    /// Pages an admitted shopper loads before the shop ends the session.
    pub pages: usize,
    /// Pause after each of those pages.
    pub page_interval: Duration,
}

/// One request a person made that was answered: which instance, how long.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// A status poll (else a page load).
    pub poll: bool,
    /// Index of the instance it went to.
    pub instance: u8,
    /// Send to end of body, milliseconds.
    pub ms: f32,
}

/// What happened to one person.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    /// Arrival, seconds after the start.
    pub arrived_s: f64,
    /// Whether the first answer was the pre-queue.
    pub prequeue: bool,
    /// Admission (first pass in any of their tabs), seconds after the start.
    pub admitted_s: Option<f64>,
    /// Tickets taken.
    pub tickets: u32,
    /// Ticket replays tried.
    pub replays: u32,
    /// Replays that gave a pass.
    pub replay_passes: u32,
    /// Requests friends made with a shared pass, and how many the shop served.
    pub shared_requests: u32,
    /// See `shared_requests`.
    pub shared_served: u32,
    /// Requests on the shared pass after the sharer ended the session, and served.
    pub after_end_requests: u32,
    /// See `after_end_requests`.
    pub after_end_served: u32,
    /// Requests that failed (connection, timeout).
    pub errors: u32,
    /// The number of the first ticket (or of the ticket behind a pass given at once).
    pub ticket: Option<u64>,
    /// The instance whose answer let them in.
    pub admitted_via: Option<usize>,
    /// When the shop's answer ending the session came back, seconds after the start.
    pub left_s: Option<f64>,
    /// When their last answer came back, seconds after the start.
    pub last_s: f64,
    /// Every answered request.
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

/// The ticket number a signed ticket or pass cookie carries (`v2.KIND.ROOM.NUMBER.…`);
/// 0 (a pass without a ticket) is none.
pub fn cookie_number(value: &str) -> Option<u64> {
    value
        .split('.')
        .nth(3)?
        .parse()
        .ok()
        .filter(|n: &u64| *n > 0)
}

/// One person of the scenario.
#[derive(Debug, Clone)]
pub struct Person {
    /// Index, also their address.
    pub id: usize,
    /// Who they are.
    pub group: Group,
    /// When they arrive, after the start.
    pub arrival: Duration,
}

/// The person's own address: 127.1.x.y.
pub fn person_ip(id: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        1,
        (id / 250) as u8,
        (id % 250 + 1) as u8,
    ))
}

/// Friend `k` of person `id`: 127.2.id.k (another machine, another network).
pub fn friend_ip(id: usize, k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 2, (id % 250) as u8, (k % 250 + 1) as u8))
}

struct Me<'a> {
    w: &'a World,
    p: &'a Person,
    ip: IpAddr,
    out: Outcome,
    rng: SmallRng,
    /// The next instance (round robin), and the one the last answer came from.
    next: usize,
    last: usize,
    /// People ahead, as the last poll said.
    ahead: Option<u64>,
}

impl Me<'_> {
    fn secs(&self, at: Instant) -> f64 {
        at.duration_since(self.w.t0).as_secs_f64()
    }

    fn path(&self) -> String {
        format!("/products/{}", self.p.id % 500 + 1)
    }

    /// The instance this request goes to.
    fn pick(&mut self) -> usize {
        let n = self.w.gateways.len();
        match self.w.balance {
            _ if n == 1 => 0,
            Balance::Random => self.rng.random_range(0..n),
            Balance::RoundRobin => {
                self.next = (self.next + 1) % n;
                self.next
            }
        }
    }

    async fn ask(&mut self, ip: IpAddr, path: &str, ask: Ask, jar: &mut Jar) -> Option<Reply> {
        let i = self.pick();
        let sent = Instant::now();
        match get(ip, self.w.gateways[i], path, ask, jar).await {
            Ok(r) => {
                self.last = i;
                self.out.last_s = self.secs(Instant::now());
                self.out.samples.push(Sample {
                    poll: ask == Ask::Poll,
                    instance: i as u8,
                    ms: sent.elapsed().as_secs_f32() * 1000.0,
                });
                Some(r)
            }
            Err(_) => {
                self.out.errors += 1;
                None
            }
        }
    }

    /// A new tab: the landing page, which hands out a ticket (or a pass at once).
    async fn open_tab(&mut self) -> (Jar, bool) {
        let mut jar = Jar::default();
        let path = self.path();
        let ip = self.ip;
        let r = self.ask(ip, &path, Ask::Page, &mut jar).await;
        let admitted = r.as_ref().is_some_and(|r| r.is_shop() || r.sets(PASS));
        if r.as_ref().is_some_and(|r| r.sets(TICKET)) {
            self.out.tickets += 1;
        }
        if self.out.ticket.is_none() {
            self.out.ticket = [TICKET, PASS]
                .iter()
                .find_map(|c| jar.find(c).and_then(|(_, v)| cookie_number(&v)));
        }
        if r.as_ref()
            .is_some_and(|r| r.body.contains("data-state=\"prequeue\""))
        {
            self.out.prequeue = true;
        }
        (jar, admitted)
    }

    /// Whether this tab is in now: a poll (honest pace) or a whole reload.
    async fn check(&mut self, jar: &mut Jar, how: Ask) -> bool {
        let path = self.path();
        let ip = self.ip;
        match self.ask(ip, &path, how, jar).await {
            Some(r) => match how {
                Ask::Poll => {
                    self.ahead = r.people_ahead();
                    r.state().as_deref() == Some("admitted") || r.sets(PASS)
                }
                Ask::Page => r.is_shop() || r.sets(PASS),
            },
            None => false,
        }
    }

    /// Polls every tab until one is in; the winning tab, or None at the deadline.
    async fn wait_in_line(&mut self, tabs: &mut Vec<Jar>, how: Ask, clear: bool) -> Option<usize> {
        let mut last_clear = Instant::now();
        while Instant::now() < self.w.deadline {
            for (i, tab) in tabs.iter_mut().enumerate() {
                if self.check(tab, how).await {
                    return Some(i);
                }
            }
            if clear
                && Instant::now() < self.w.opens
                && tabs.len() < MAX_CLEARED_TICKETS
                && last_clear.elapsed() >= CLEAR_EVERY
            {
                last_clear = Instant::now();
                let (jar, admitted) = self.open_tab().await;
                tabs.push(jar);
                if admitted {
                    return Some(tabs.len() - 1);
                }
            }
            tokio::time::sleep(self.pace(how)).await;
        }
        None
    }

    /// The pause before the next check: the poll pace, shorter near the front (and
    /// before the first poll said where the front is).
    fn pace(&self, how: Ask) -> Duration {
        match how {
            Ask::Page => self.w.poll / 2,
            Ask::Poll
                if self.w.near_front > 0 && self.ahead.map_or(true, |a| a <= self.w.near_front) =>
            {
                self.w.near_poll
            }
            Ask::Poll => self.w.poll,
        }
    }

    /// A few pages, then the shop ends the session (what a confirmed order does).
    async fn shop_and_leave(&mut self, ip: IpAddr, jar: &mut Jar) {
        for k in 0..self.w.pages {
            let path = format!("/products/{}", (self.p.id * 7 + k) % 500 + 1);
            self.ask(ip, &path, Ask::Page, jar).await;
            tokio::time::sleep(self.w.page_interval).await;
        }
        if self
            .ask(ip, "/__shop/session?value=end", Ask::Page, jar)
            .await
            .is_some()
        {
            self.out.left_s = Some(self.secs(Instant::now()));
        }
    }

    /// Friends replay the admitted ticket: each from their own address.
    async fn replay_ticket(&mut self, ticket: &(String, String)) {
        for k in 0..self.w.replays {
            let mut jar = Jar::default();
            jar.set(&ticket.0, &ticket.1);
            let path = self.path();
            self.out.replays += 1;
            let got = match self
                .ask(friend_ip(self.p.id, k), &path, Ask::Page, &mut jar)
                .await
            {
                Some(r) => r.is_shop() || r.sets(PASS),
                None => false,
            };
            if got {
                self.out.replay_passes += 1;
            }
        }
    }

    /// Friends use the shared pass; the sharer ends the session; friends try again.
    async fn share_pass(&mut self, own: &mut Jar) {
        let Some(pass) = own.find(PASS) else { return };
        let mut jars: Vec<Jar> = (0..self.w.friends)
            .map(|_| {
                let mut j = Jar::default();
                j.set(&pass.0, &pass.1);
                j
            })
            .collect();
        for _ in 0..FRIEND_REQUESTS {
            for (k, jar) in jars.iter_mut().enumerate() {
                let path = format!("/products/{}", (self.p.id + k) % 500 + 1);
                self.out.shared_requests += 1;
                let r = self
                    .ask(friend_ip(self.p.id, k), &path, Ask::Page, jar)
                    .await;
                if r.is_some_and(|r| r.is_shop()) {
                    self.out.shared_served += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ip = self.ip;
        self.shop_and_leave(ip, own).await;
        for (k, jar) in jars.iter_mut().enumerate() {
            // The pass as copied, not as renewed: what a friend's script would keep.
            jar.set(&pass.0, &pass.1);
            self.out.after_end_requests += 1;
            let path = format!("/products/{}", (self.p.id + k) % 500 + 1);
            let r = self
                .ask(friend_ip(self.p.id, k), &path, Ask::Page, jar)
                .await;
            if r.is_some_and(|r| r.is_shop()) {
                self.out.after_end_served += 1;
            }
        }
    }
}

/// Lives one person's visit; bounded by the world's deadline.
pub async fn live(w: World, p: Person) -> (Person, Outcome) {
    tokio::time::sleep_until(w.t0 + p.arrival).await;
    let n = w.gateways.len();
    let mut me = Me {
        w: &w,
        p: &p,
        ip: person_ip(p.id),
        out: Outcome::default(),
        rng: SmallRng::seed_from_u64(w.seed ^ (p.id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        next: p.id % n.max(1),
        last: 0,
        ahead: None,
    };
    me.out.arrived_s = me.secs(Instant::now());
    let n_tabs = if p.group == Group::ManyTabs {
        w.tabs
    } else {
        1
    };
    let mut tabs = Vec::new();
    let mut won = None;
    for i in 0..n_tabs {
        let (jar, admitted) = me.open_tab().await;
        tabs.push(jar);
        if admitted && won.is_none() {
            won = Some(i);
        }
    }
    // The ticket as the replayer copies it, before the room swaps it for a pass.
    let ticket = tabs[0].find(TICKET);
    let won = match won {
        Some(i) => Some(i),
        None => {
            let how = if p.group == Group::Refresher {
                Ask::Page
            } else {
                Ask::Poll
            };
            me.wait_in_line(&mut tabs, how, p.group == Group::CookieClearer)
                .await
        }
    };
    let Some(i) = won else {
        let out = me.out;
        return (p, out);
    };
    me.out.admitted_s = Some(me.secs(Instant::now()));
    me.out.admitted_via = Some(me.last);
    let mut jar = std::mem::take(&mut tabs[i]);
    let ip = me.ip;
    match p.group {
        Group::TicketReplayer => {
            if let Some(t) = ticket {
                me.replay_ticket(&t).await;
            }
            me.shop_and_leave(ip, &mut jar).await;
        }
        Group::PassSharer => me.share_pass(&mut jar).await,
        _ => me.shop_and_leave(ip, &mut jar).await,
    }
    let out = me.out;
    (p, out)
}
