//! Log output: human-readable lines by default, JSON for log shippers; access-log
//! events to a file of their own when `log.access_log_file` is set.
//!
//! The access log (to its file, or to stderr without one) is written by one background
//! thread (tracing-appender's `non_blocking`, a well-kept crate for exactly this): a
//! request only pushes its line
//! into a bounded channel, so a slow or stalled disk never holds up a request. When the
//! channel is full, lines are dropped and counted (`floodgate_access_log_dropped_total`)
//! rather than waited for. SIGUSR1 reopens the file by name, for logrotate.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// The tracing target of access-log events (see `src/proxy.rs`).
pub const ACCESS_TARGET: &str = "floodgate::access";

/// Access-log lines held in memory while the disk is slow, at most. A line is about
/// 300 bytes, so this is ~20 MiB at worst: about three seconds of a stalled disk at
/// 20,000 requests per second. Past it, lines are dropped and counted, never waited for.
pub const ACCESS_LOG_BUFFERED_LINES: usize = 65_536;

/// Bytes gathered before a write to the file. The writer thread also flushes whenever
/// it has no more lines waiting, so an idle gateway's lines reach the disk at once.
const ACCESS_LOG_WRITE_BUFFER: usize = 64 * 1024;

/// Set by [`reopen_access_log`]; the writer thread reopens the file before its next line.
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Lines dropped because the channel to the writer thread was full.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Swaps the level filter of the installed subscriber (a reload's `log.level`).
type SetLevel = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static SET_LEVEL: OnceLock<SetLevel> = OnceLock::new();

/// What a reload's new `log.level` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelChange {
    /// In force now.
    Applied,
    /// `RUST_LOG` is set and wins over the config; nothing changed.
    OverriddenByEnv,
    /// No subscriber of ours is installed (a test, an embedding): nothing to change.
    NoSubscriber,
}

/// Applies `level` (an `EnvFilter` directive such as `info` or `floodgate=debug`).
pub fn set_level(level: &str) -> Result<LevelChange, String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(LevelChange::OverriddenByEnv);
    }
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    match SET_LEVEL.get() {
        Some(set) => set(filter).map(|()| LevelChange::Applied),
        None => Ok(LevelChange::NoSubscriber),
    }
}

/// Keeps the access-log writer thread alive; dropping it flushes what is buffered.
#[must_use = "dropping it stops the access-log writer"]
pub struct LogGuard {
    _worker: Option<WorkerGuard>,
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`.
pub fn init(format: LogFormat, level: &str) {
    let _ = init_with_access_log(format, level, None);
}

/// Like [`init`], sending access-log events to `access_log_file` (opened for append,
/// created if missing) instead of stderr.
pub fn init_with_access_log(
    format: LogFormat,
    level: &str,
    access_log_file: Option<&Path>,
) -> io::Result<LogGuard> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = io::IsTerminal::is_terminal(&io::stderr());
    // The level filter sits behind a reload handle, so `log.level` follows reloads.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let _ = SET_LEVEL.set(Box::new(move |f| {
        handle.reload(f).map_err(|e| e.to_string())
    }));
    // Access lines go through a buffered writer thread, to the file or to stderr, so a
    // stalled reader of stderr (a full pipe) never holds a request up; a full buffer
    // drops lines (counted). It bought no throughput: with the log on, cache hits ran at
    // 78 % of log-off against 85 % before (loadtests/peers/access-log-bench.sh, within
    // that run's noise). The cost is in formatting the line, not in writing it.
    let sink: Box<dyn Write + Send> = match access_log_file {
        Some(path) => Box::new(ReopeningFile::open(path.to_path_buf())?),
        None => Box::new(io::stderr()),
    };
    let (writer, worker) = NonBlockingBuilder::default()
        .buffered_lines_limit(ACCESS_LOG_BUFFERED_LINES)
        .lossy(true)
        .thread_name("floodgate-access-log")
        .finish(sink);
    let _ = DROPPED.set(writer.error_counter());

    let not_access = filter_fn(|m| m.target() != ACCESS_TARGET);
    // Access events go to the file whatever the level filter says: the config asked
    // for them explicitly (`log.access_log`).
    let only_access = Targets::new().with_target(ACCESS_TARGET, tracing::Level::INFO);
    // Each arm builds its own layers: a layer's type depends on the layers below it.
    let registry = tracing_subscriber::registry();
    let _ = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(io::stderr)
                    .with_ansi(ansi)
                    .with_filter(filter.and(not_access)),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(false)
                    .with_filter(only_access),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(io::stderr)
                    .with_filter(filter.and(not_access)),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(writer)
                    .with_filter(only_access),
            )
            .try_init(),
    };
    Ok(LogGuard {
        _worker: Some(worker),
    })
}

/// Asks the access-log writer to reopen its file by name before its next line: after
/// logrotate renamed it, lines go to a new file of the configured name.
pub fn reopen_access_log() {
    REOPEN.store(true, Ordering::Release);
}

/// Access-log lines dropped so far because the disk could not keep up.
pub fn access_log_dropped() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Reopens the access log on every SIGUSR1, for as long as the runtime runs.
///
/// Installed before anything else starts, as SIGUSR1's default action ends the process.
pub fn reopen_on_sigusr1() -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1())?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            tracing::info!("SIGUSR1: reopening the access log file");
            reopen_access_log();
        }
    });
    Ok(())
}

/// The access-log file: appended to through a buffer, reopened by name on request.
struct ReopeningFile {
    path: PathBuf,
    file: BufWriter<File>,
}

impl ReopeningFile {
    fn open(path: PathBuf) -> io::Result<Self> {
        let file = open_append(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("log.access_log_file {}: {e}", path.display()),
            )
        })?;
        Ok(ReopeningFile {
            path,
            file: BufWriter::with_capacity(ACCESS_LOG_WRITE_BUFFER, file),
        })
    }

    /// Swaps in a freshly opened file if asked to; on failure keeps the old one (the
    /// lines still land somewhere) and says so.
    fn reopen_if_asked(&mut self) {
        if !REOPEN.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self.file.flush() {
            tracing::error!(error = %e, "access log: cannot flush before reopening");
        }
        match open_append(&self.path) {
            Ok(f) => self.file = BufWriter::with_capacity(ACCESS_LOG_WRITE_BUFFER, f),
            Err(e) => tracing::error!(
                path = %self.path.display(),
                error = %e,
                "access log: cannot reopen; still writing to the old file"
            ),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for ReopeningFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.reopen_if_asked();
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// `floodgate_access_log_dropped_total`: a counter that reads the writer's own count
/// when scraped, so the request path does no extra work for it.
pub(crate) struct DroppedLines {
    counter: prometheus::IntCounter,
}

impl DroppedLines {
    /// The collector, to register once.
    pub(crate) fn new() -> Self {
        DroppedLines {
            counter: prometheus::IntCounter::new(
                "floodgate_access_log_dropped_total",
                "Access-log lines dropped because the log file's disk could not keep up",
            )
            .expect("valid metric"),
        }
    }
}

impl prometheus::core::Collector for DroppedLines {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.counter.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let now = access_log_dropped();
        let seen = self.counter.get();
        if now > seen {
            self.counter.inc_by(now - seen);
        }
        self.counter.collect()
    }
}
