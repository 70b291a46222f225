//! The people of the cheating scenario: honest visitors and five kinds of cheater,
//! each a bounded loop of real requests from its own loopback address.

use super::http::{get, Ask, Jar, Reply};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

/// What is common to every person of a run.
#[derive(Debug, Clone)]
pub struct World {
    /// The gateway's proxy listener.
    pub gateway: SocketAddr,
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
}

impl Me<'_> {
    fn secs(&self, at: Instant) -> f64 {
        at.duration_since(self.w.t0).as_secs_f64()
    }

    fn path(&self) -> String {
        format!("/products/{}", self.p.id % 500 + 1)
    }

    async fn ask(&mut self, ip: IpAddr, path: &str, ask: Ask, jar: &mut Jar) -> Option<Reply> {
        match get(ip, self.w.gateway, path, ask, jar).await {
            Ok(r) => Some(r),
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
                Ask::Poll => r.state().as_deref() == Some("admitted") || r.sets(PASS),
                Ask::Page => r.is_shop() || r.sets(PASS),
            },
            None => false,
        }
    }

    /// Polls every tab until one is in; the winning tab, or None at the deadline.
    async fn wait_in_line(&mut self, tabs: &mut Vec<Jar>, how: Ask, clear: bool) -> Option<usize> {
        let pace = match how {
            Ask::Poll => self.w.poll,
            Ask::Page => self.w.poll / 2,
        };
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
            tokio::time::sleep(pace).await;
        }
        None
    }

    /// Two pages, then the shop ends the session (what a confirmed order does).
    async fn shop_and_leave(&mut self, ip: IpAddr, jar: &mut Jar) {
        for k in 0..2 {
            let path = format!("/products/{}", (self.p.id * 7 + k) % 500 + 1);
            self.ask(ip, &path, Ask::Page, jar).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.ask(ip, "/__shop/session?value=end", Ask::Page, jar)
            .await;
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
    let mut me = Me {
        w: &w,
        p: &p,
        ip: person_ip(p.id),
        out: Outcome::default(),
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
