//! The Redis backend: shared GCRA buckets, admin broadcast, membership.
//!
//! Keys (with `P` the configured prefix; every multi-key script keeps its keys under
//! one hash tag, so Redis Cluster routes it to one slot):
//!
//! | key                      | what                                                  |
//! |--------------------------|-------------------------------------------------------|
//! | `P{rl:ROUTE:LIMIT:HEX}`  | one GCRA bucket: its theoretical arrival time, in µs  |
//! | `P{purge}:gen`, `…:log`  | purge generation and the last [`PURGE_LOG`] purges    |
//! | `P{room:NAME}:admin`     | a room's administered settings and their generation   |
//! | `P{members}`             | live instances, scored by their last heartbeat        |
//! | `P{room:NAME}:line`, …   | a room's shared line (see `redis_line.rs`)            |
//! | channel `Pevents`        | purges and room settings as they happen               |
//!
//! Every read-modify-write is a Lua script, loaded once and run with EVALSHA (the
//! client reloads it on `NOSCRIPT`, after a Redis restart). Times come from Redis
//! `TIME` inside the scripts, so instances never compare their own clocks.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use prometheus::{IntCounter, IntGauge};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Client, Script};
use tokio::sync::broadcast;

use super::config::RedisSettings;
use super::line::SharedLine;
use super::redis_line::RedisLine;
use super::{Consumed, Event, Gcra, SharedState, StateError, EVENT_CHANNEL, MAX_PENDING_EVENTS};
use crate::metrics::Metrics;

/// Purges kept in Redis for instances that missed the message: far more than an
/// instance misses in the few sync intervals a reconnect takes.
pub const PURGE_LOG: usize = 1000;
/// A TLS handshake to a Redis in another zone takes tens of milliseconds, more than
/// a call's `state.timeout`; past two seconds the address is wrong or down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two attempts to reach an unreachable Redis.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The Lua scripts, hashed once; the client runs them by SHA.
pub(super) struct Scripts {
    gcra: Script,
    heartbeat: Script,
    purge: Script,
    room: Script,
    pub(super) line_issue: Script,
    pub(super) line_advance: Script,
    pub(super) line_claim: Script,
    pub(super) line_pass: Script,
    pub(super) line_merge: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            gcra: Script::new(include_str!("lua/gcra.lua")),
            heartbeat: Script::new(include_str!("lua/heartbeat.lua")),
            purge: Script::new(include_str!("lua/purge.lua")),
            room: Script::new(include_str!("lua/room.lua")),
            line_issue: Script::new(include_str!("lua/line_issue.lua")),
            line_advance: Script::new(include_str!("lua/line_advance.lua")),
            line_claim: Script::new(include_str!("lua/line_claim.lua")),
            line_pass: Script::new(include_str!("lua/line_pass.lua")),
            line_merge: Script::new(include_str!("lua/line_merge.lua")),
        }
    }

    /// Loads every script, so the hot path's first EVALSHA finds it.
    async fn load(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        for s in [
            &self.gcra,
            &self.heartbeat,
            &self.purge,
            &self.room,
            &self.line_issue,
            &self.line_advance,
            &self.line_claim,
            &self.line_pass,
            &self.line_merge,
        ] {
            s.load_async(conn).await?;
        }
        Ok(())
    }
}

/// What a message or the store says, wrapped with its sender.
#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope {
    from: String,
    event: Event,
}

/// Shared state in Redis. Started with [`RedisState::start`].
pub struct RedisState {
    pub(super) settings: RedisSettings,
    /// The client of the primary: the URL's, or the one the sentinels named last.
    client: ArcSwap<Client>,
    /// With Sentinel: where to ask for the primary again after a failover.
    sentinel: Option<tokio::sync::Mutex<SentinelClient>>,
    /// This process's membership name.
    id: String,
    pub(super) scripts: Arc<Scripts>,
    /// Itself, for the tasks an admin call spawns.
    me: std::sync::Weak<RedisState>,
    /// Set once the first connection succeeds; it reconnects by itself after that (to
    /// the same address: with Sentinel it is dropped on failure, and the next
    /// heartbeat asks the sentinels for the primary).
    conn: arc_swap::ArcSwapOption<ConnectionManager>,
    up: AtomicBool,
    /// Whether up or down was ever decided (the first heartbeat's answer).
    decided: AtomicBool,
    live: AtomicU32,
    /// This instance's rank among the live (their ids sorted), for outage numbering.
    rank: AtomicU32,
    gauge: IntGauge,
    /// `floodgate_state_live_instances`: N as last counted.
    live_gauge: IntGauge,
    /// `floodgate_state_local_decisions_total`: limit checks decided from the local
    /// share because Redis did not answer in time.
    local_decisions: IntCounter,
    events: broadcast::Sender<Event>,
    /// The receiver made before the background tasks start, so that the gateway's
    /// first subscriber misses nothing the first sync delivers.
    first_receiver: Mutex<Option<broadcast::Receiver<Event>>>,
    /// Admin actions taken here while Redis was away, published when it returns.
    pending: Mutex<VecDeque<Event>>,
    flushing: tokio::sync::Mutex<()>,
    /// The last purge generation applied here.
    purge_gen: Mutex<u64>,
    /// The last settings generation applied here, per room.
    room_gens: Mutex<HashMap<String, u64>>,
    rooms: ArcSwap<Vec<String>>,
    left: AtomicBool,
}

/// The password from `FLOODGATE_REDIS_PASSWORD`, if set.
fn password() -> Option<String> {
    std::env::var("FLOODGATE_REDIS_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
}

/// The client for `settings`, with the password from `FLOODGATE_REDIS_PASSWORD`.
fn client_for(settings: &RedisSettings) -> redis::RedisResult<Client> {
    let mut info: redis::ConnectionInfo = settings.url.as_str().parse()?;
    if let Some(pw) = password() {
        info.redis.password = Some(pw);
    }
    Client::open(info)
}

/// The sentinels' client of `settings`, if it names sentinels: it asks them for the
/// current primary (the password, if any, is the primary's).
fn sentinel_for(settings: &RedisSettings) -> redis::RedisResult<Option<SentinelClient>> {
    let Some(s) = &settings.sentinel else {
        return Ok(None);
    };
    let node = password().map(|pw| SentinelNodeConnectionInfo {
        tls_mode: None,
        redis_connection_info: Some(redis::RedisConnectionInfo {
            password: Some(pw),
            ..Default::default()
        }),
    });
    SentinelClient::build(
        s.nodes.clone(),
        s.master.clone(),
        node,
        SentinelServerType::Master,
    )
    .map(Some)
}

fn instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    format!(
        "{host}:{}:{:016x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

impl RedisState {
    /// Starts the backend: connects, heartbeats, listens, syncs, all in the background.
    pub fn start(settings: RedisSettings, metrics: &Metrics) -> Arc<dyn SharedState> {
        // The URL was validated when the config was compiled.
        let client = client_for(&settings).expect("state.url validated at compile time");
        let sentinel = sentinel_for(&settings)
            .expect("state.sentinels validated at compile time")
            .map(tokio::sync::Mutex::new);
        let gauge = metrics.state_backend_up.with_label_values(&["redis"]);
        gauge.set(0);
        let (events, first) = broadcast::channel(EVENT_CHANNEL);
        let live_gauge = metrics.state_live_instances.clone();
        let local_decisions = IntCounter::new(
            "floodgate_state_local_decisions_total",
            "Rate-limit checks decided from this instance's 1/N share because the state backend did not answer",
        )
        .expect("valid metric");
        // One state per gateway and registry; a second one (a test building two
        // states on one registry) reports through the first's family.
        let _ = metrics.registry.register(Box::new(local_decisions.clone()));
        live_gauge.set(1);
        let state = Arc::new_cyclic(|me| RedisState {
            settings,
            client: ArcSwap::from_pointee(client),
            sentinel,
            id: instance_id(),
            scripts: Arc::new(Scripts::new()),
            me: me.clone(),
            conn: arc_swap::ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            decided: AtomicBool::new(false),
            live: AtomicU32::new(1),
            rank: AtomicU32::new(0),
            gauge,
            live_gauge,
            local_decisions,
            events,
            first_receiver: Mutex::new(Some(first)),
            pending: Mutex::new(VecDeque::new()),
            flushing: tokio::sync::Mutex::new(()),
            purge_gen: Mutex::new(0),
            room_gens: Mutex::new(HashMap::new()),
            rooms: ArcSwap::from_pointee(Vec::new()),
            left: AtomicBool::new(false),
        });
        tokio::spawn(supervise(Arc::downgrade(&state)));
        tokio::spawn(listen(Arc::downgrade(&state)));
        state
    }

    pub(super) fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.settings.prefix)
    }

    fn channel(&self) -> String {
        self.key("events")
    }

    /// Runs one Redis call within `state.timeout`.
    pub(super) async fn call<T, F>(&self, f: F) -> Result<T, StateError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.settings.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StateError::Backend(e.to_string())),
            Err(_) => Err(StateError::Timeout),
        }
    }

    /// Marks the backend up or down; logs and sets the gauge once per change (and
    /// once for the first verdict, so a Redis unreachable from the start is logged).
    fn set_up(&self, up: bool, why: &str) {
        let first = !self.decided.swap(true, Ordering::AcqRel);
        if self.up.swap(up, Ordering::AcqRel) != up || first {
            self.gauge.set(up as i64);
            if up {
                tracing::info!(
                    live_instances = self.live.load(Ordering::Relaxed),
                    "state backend redis is up: limits and admin actions are shared again"
                );
            } else {
                tracing::warn!(reason = why, live_instances = self.live.load(Ordering::Relaxed),
                    "state backend redis is down: serving from local state with this instance's 1/N share");
            }
        }
    }

    /// Whether the first heartbeat gave a verdict (up or down).
    pub(super) fn is_decided(&self) -> bool {
        self.decided.load(Ordering::Acquire)
    }

    /// A failed call: the hot path stops calling until the next heartbeat succeeds.
    /// With Sentinel the connection is dropped too: the primary may have moved.
    pub(super) fn failed(&self, e: &StateError) {
        if self.sentinel.is_some() {
            self.conn.store(None);
        }
        self.set_up(false, &e.to_string());
    }

    /// Connects if not connected yet, then renews membership and counts the live
    /// (and finds this instance's rank among them).
    async fn heartbeat(&self) -> Result<u32, StateError> {
        let mut conn = match self.conn.load_full() {
            Some(c) => ConnectionManager::clone(&c),
            None => {
                if let Some(sentinel) = &self.sentinel {
                    // Ask the sentinels where the primary is now.
                    let ask = async { sentinel.lock().await.async_get_client().await };
                    match tokio::time::timeout(CONNECT_TIMEOUT, ask).await {
                        Ok(Ok(c)) => self.client.store(Arc::new(c)),
                        Ok(Err(e)) => return Err(StateError::Backend(e.to_string())),
                        Err(_) => return Err(StateError::Timeout),
                    }
                }
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(self.settings.timeout)
                    .set_number_of_retries(1);
                let connect = async {
                    let mut c = self
                        .client
                        .load()
                        .get_connection_manager_with_config(cfg)
                        .await?;
                    self.scripts.load(&mut c).await?;
                    Ok::<_, redis::RedisError>(c)
                };
                let c = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => return Err(StateError::Backend(e.to_string())),
                    Err(_) => return Err(StateError::Timeout),
                };
                self.conn.store(Some(Arc::new(c.clone())));
                c
            }
        };
        let ttl = self.settings.member_ttl.as_millis() as u64;
        let mut members: Vec<String> = self
            .call(
                self.scripts
                    .heartbeat
                    .key(self.key("{members}"))
                    .arg(&self.id)
                    .arg(ttl)
                    .invoke_async(&mut conn),
            )
            .await?;
        members.sort();
        let rank = members.iter().position(|m| *m == self.id).unwrap_or(0);
        self.rank.store(rank as u32, Ordering::Relaxed);
        Ok((members.len() as u32).max(1))
    }

    pub(super) fn conn(&self) -> Result<ConnectionManager, StateError> {
        if !self.up.load(Ordering::Acquire) {
            return Err(StateError::Down);
        }
        self.conn.load().as_deref().cloned().ok_or(StateError::Down)
    }

    fn envelope(&self, event: &Event) -> String {
        serde_json::to_string(&Envelope {
            from: self.id.clone(),
            event: event.clone(),
        })
        .expect("events serialize")
    }

    /// Stores and publishes one event.
    async fn publish(&self, event: &Event) -> Result<(), StateError> {
        let mut conn = self.conn()?;
        let payload = self.envelope(event);
        let gen: u64 = match event {
            Event::Purge(_) => {
                self.call(
                    self.scripts
                        .purge
                        .key(self.key("{purge}:gen"))
                        .key(self.key("{purge}:log"))
                        .arg(self.channel())
                        .arg(&payload)
                        .arg(PURGE_LOG)
                        .invoke_async(&mut conn),
                )
                .await?
            }
            Event::Room(s) => {
                self.call(
                    self.scripts
                        .room
                        .key(self.room_key(&s.room))
                        .arg(self.channel())
                        .arg(&payload)
                        .invoke_async(&mut conn),
                )
                .await?
            }
        };
        // Our own message comes back on the channel; mark it applied so that it is not
        // applied twice, and never regress past a generation already seen.
        match event {
            Event::Purge(_) => {
                let mut g = self.purge_gen.lock().unwrap();
                if *g + 1 == gen {
                    *g = gen;
                }
            }
            Event::Room(s) => {
                let mut gens = self.room_gens.lock().unwrap();
                let g = gens.entry(s.room.clone()).or_default();
                *g = (*g).max(gen);
            }
        }
        Ok(())
    }

    fn room_key(&self, room: &str) -> String {
        self.key(&format!("{{room:{room}}}:admin"))
    }

    /// Publishes what was queued while Redis was away, oldest first.
    async fn flush_pending(&self) {
        // One flusher at a time, so that a pause and the resume after it reach Redis
        // in the order they were taken.
        let _one = self.flushing.lock().await;
        loop {
            let Some(ev) = self.pending.lock().unwrap().pop_front() else {
                return;
            };
            if let Err(e) = self.publish(&ev).await {
                self.pending.lock().unwrap().push_front(ev);
                self.failed(&e);
                return;
            }
        }
    }

    fn deliver(&self, payload: &str) {
        match serde_json::from_str::<Envelope>(payload) {
            Ok(env) if env.from == self.id => {}
            Ok(env) => {
                let _ = self.events.send(env.event);
            }
            Err(e) => tracing::warn!(error = %e, "unreadable state event ignored"),
        }
    }

    /// Applies the purges stored after the last one applied here.
    async fn catch_up_purges(&self, conn: &mut ConnectionManager) -> Result<(), StateError> {
        let stored: Option<u64> = self
            .call(
                redis::cmd("GET")
                    .arg(self.key("{purge}:gen"))
                    .query_async(conn),
            )
            .await?;
        let stored = stored.unwrap_or(0);
        let last = *self.purge_gen.lock().unwrap();
        if stored <= last {
            // An emptied Redis counts from 0 again: follow it down, or its next
            // purges would all look old.
            *self.purge_gen.lock().unwrap() = stored;
            return Ok(());
        }
        let log: Vec<String> = self
            .call(
                redis::cmd("LRANGE")
                    .arg(self.key("{purge}:log"))
                    .arg(0)
                    .arg(-1)
                    .query_async(conn),
            )
            .await?;
        let mut g = self.purge_gen.lock().unwrap();
        for entry in log {
            let Some((gen, payload)) = entry.split_once(' ') else {
                continue;
            };
            match gen.parse::<u64>() {
                Ok(gen) if gen > *g => {
                    self.deliver(payload);
                    *g = gen;
                }
                _ => {}
            }
        }
        *g = (*g).max(stored);
        Ok(())
    }

    /// Applies stored room settings newer than the ones applied here.
    async fn catch_up_rooms(&self, conn: &mut ConnectionManager) -> Result<(), StateError> {
        for room in self.rooms.load().iter() {
            let (gen, settings): (Option<u64>, Option<String>) = self
                .call(
                    redis::cmd("HMGET")
                        .arg(self.room_key(room))
                        .arg("gen")
                        .arg("settings")
                        .query_async(conn),
                )
                .await?;
            self.offer_room(room, gen.unwrap_or(0), settings.as_deref());
        }
        Ok(())
    }

    /// Applies room settings of generation `gen` if they are newer than ours.
    fn offer_room(&self, room: &str, gen: u64, payload: Option<&str>) {
        let mut gens = self.room_gens.lock().unwrap();
        let known = gens.entry(room.to_string()).or_default();
        if gen < *known {
            // Redis lost the room's settings (restart without persistence).
            *known = gen;
        } else if gen > *known {
            *known = gen;
            if let Some(p) = payload {
                self.deliver(p);
            }
        }
    }

    /// Handles one channel message: `purge GEN JSON` or `room GEN JSON`.
    async fn on_message(&self, msg: &str) {
        let mut parts = msg.splitn(3, ' ');
        let (Some(kind), Some(gen), Some(payload)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let Ok(gen) = gen.parse::<u64>() else { return };
        match kind {
            "purge" => {
                let in_order = {
                    let mut g = self.purge_gen.lock().unwrap();
                    if gen == *g + 1 {
                        *g = gen;
                        true
                    } else {
                        false
                    }
                };
                if in_order {
                    self.deliver(payload);
                } else if let Ok(mut conn) = self.conn() {
                    // A gap (or an emptied Redis): the stored log says what was missed.
                    if let Err(e) = self.catch_up_purges(&mut conn).await {
                        self.failed(&e);
                    }
                }
            }
            "room" => {
                let room = serde_json::from_str::<Envelope>(payload)
                    .ok()
                    .and_then(|e| match e.event {
                        Event::Room(s) => Some(s.room),
                        Event::Purge(_) => None,
                    });
                if let Some(room) = room {
                    self.offer_room(&room, gen, Some(payload));
                }
            }
            _ => {}
        }
    }

    async fn sync(&self) {
        let Ok(mut conn) = self.conn() else { return };
        let r = match self.catch_up_purges(&mut conn).await {
            Ok(()) => self.catch_up_rooms(&mut conn).await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            self.failed(&e);
        }
    }
}

/// Marks the backend down after a failed hot-path call; returns the error.
fn fail(me: &std::sync::Weak<RedisState>, e: StateError) -> StateError {
    if let Some(s) = me.upgrade() {
        s.failed(&e);
    }
    e
}

/// Heartbeats (which also detect Redis coming back) and periodic syncs, until the
/// state is dropped or left.
async fn supervise(state: std::sync::Weak<RedisState>) {
    let mut next_beat = tokio::time::Instant::now();
    loop {
        let Some(s) = state.upgrade() else { return };
        if s.left.load(Ordering::Acquire) {
            return;
        }
        if tokio::time::Instant::now() >= next_beat {
            match s.heartbeat().await {
                Ok(n) => {
                    s.live.store(n, Ordering::Relaxed);
                    s.live_gauge.set(n as i64);
                    let was_up = s.up.load(Ordering::Acquire);
                    s.set_up(true, "");
                    if !was_up {
                        tracing::debug!("state backend back: publishing queued admin actions");
                    }
                    next_beat += s.settings.heartbeat_interval;
                }
                Err(e) => {
                    s.failed(&e);
                    next_beat = tokio::time::Instant::now() + RETRY_PAUSE;
                }
            }
            if next_beat < tokio::time::Instant::now() {
                next_beat = tokio::time::Instant::now();
            }
        }
        if s.is_up() {
            s.flush_pending().await;
        }
        s.sync().await;
        let pause = s.settings.sync_interval;
        drop(s);
        tokio::time::sleep(pause).await;
    }
}

/// Subscribes to the event channel, and re-subscribes after every disconnection.
async fn listen(state: std::sync::Weak<RedisState>) {
    loop {
        let Some(s) = state.upgrade() else { return };
        if s.left.load(Ordering::Acquire) {
            return;
        }
        let client = Client::clone(&s.client.load());
        let channel = s.channel();
        let connect = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        let ps = tokio::time::timeout(Duration::from_secs(2), connect).await;
        drop(s);
        let Ok(Ok(ps)) = ps else {
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        };
        let mut stream = ps.into_on_message();
        while let Some(msg) = stream.next().await {
            let Some(s) = state.upgrade() else { return };
            if let Ok(payload) = msg.get_payload::<String>() {
                s.on_message(&payload).await;
            }
        }
        // The connection broke: whatever was published meanwhile is in the store,
        // and the next sync after reconnecting applies it.
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

impl SharedState for RedisState {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn live_instances(&self) -> u32 {
        self.live.load(Ordering::Relaxed).max(1)
    }

    fn rank(&self) -> u32 {
        self.rank.load(Ordering::Relaxed)
    }

    fn line(&self, room: &str) -> Option<Arc<dyn SharedLine>> {
        let me = self.me.upgrade()?;
        Some(Arc::new(RedisLine::new(me, room)))
    }

    fn consume(
        &self,
        key: String,
        gcra: Gcra,
    ) -> Option<BoxFuture<'static, Result<Consumed, StateError>>> {
        let conn = self.conn();
        let timeout = self.settings.timeout;
        let scripts = self.scripts.clone();
        let me = self.me.clone();
        let local = self.local_decisions.clone();
        Some(Box::pin(async move {
            let Ok(mut conn) = conn else {
                local.inc();
                return Err(StateError::Down);
            };
            let mut invocation = scripts.gcra.key(key);
            invocation
                .arg(gcra.interval.as_micros().max(1) as u64)
                .arg(gcra.capacity);
            let answer = tokio::time::timeout(timeout, invocation.invoke_async(&mut conn)).await;
            let (ok, n): (u8, u64) = match answer {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    local.inc();
                    return Err(fail(&me, StateError::Backend(e.to_string())));
                }
                Err(_) => {
                    local.inc();
                    return Err(fail(&me, StateError::Timeout));
                }
            };
            Ok(if ok == 1 {
                Consumed::Allowed {
                    remaining: n.min(u32::MAX as u64) as u32,
                }
            } else {
                Consumed::Refused {
                    wait: Duration::from_micros(n),
                }
            })
        }))
    }

    fn bucket_prefix(&self) -> String {
        self.key("")
    }

    fn broadcast(&self, event: Event) {
        {
            let mut q = self.pending.lock().unwrap();
            if q.len() >= MAX_PENDING_EVENTS {
                q.pop_front();
                tracing::warn!("admin events queued for Redis overflowed: the oldest was dropped");
            }
            q.push_back(event);
        }
        if let Some(me) = self.me.upgrade() {
            tokio::spawn(async move { me.flush_pending().await });
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        let first = self.first_receiver.lock().unwrap().take();
        first.unwrap_or_else(|| self.events.subscribe())
    }

    fn track_rooms(&self, rooms: Vec<String>) {
        self.rooms.store(Arc::new(rooms));
    }

    fn leave(&self) -> BoxFuture<'static, ()> {
        self.left.store(true, Ordering::Release);
        let conn = self.conn();
        let key = self.key("{members}");
        let id = self.id.clone();
        let timeout = self.settings.timeout;
        Box::pin(async move {
            if let Ok(mut conn) = conn {
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(key).arg(id);
                let _ = tokio::time::timeout(timeout, zrem.query_async::<()>(&mut conn)).await;
            }
        })
    }
}
