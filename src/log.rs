//! Line logging to stderr: the process's `log` logger, with a global level
//! (`log_level` in relay.toml or `JET_RELAY_LOG`) and the connection a thread
//! is serving added to each of its lines.
//!
//! The relay's own records (target `jet_relay...`) pass at the configured
//! level; other crates' (rustls, tungstenite) one level lower, so their
//! handshake chatter appears only at debug. Lines are text or JSON
//! (`log_format`), carry the record's key-value fields, start with the
//! journald priority under systemd, and warnings are rate-limited per reason.

mod limit;
mod line;

use limit::{Limiter, Verdict};
pub use line::Format;
use line::{Entry, Fields};
use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, LazyLock, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How much the relay says. Each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing at all.
    Off = 0,
    /// Failures of the relay itself (a listener died, a thread could not start).
    Error = 1,
    /// Rejected requests, timeouts and resource limits.
    Warn = 2,
    /// One line per connection event: accepted, paired, closed, expired.
    Info = 3,
    /// Everything, including each handshake step.
    Debug = 4,
}

impl Level {
    /// Parses `off`, `error`, `warn`, `info` or `debug`.
    pub fn parse(text: &str) -> Option<Level> {
        Some(match text.to_ascii_lowercase().as_str() {
            "off" => Level::Off,
            "error" => Level::Error,
            "warn" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        })
    }

    fn from_u8(value: u8) -> Level {
        match value {
            0 => Level::Off,
            1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            _ => Level::Debug,
        }
    }

    /// The `log` crate's filter for this level (trace is never written).
    fn filter(self) -> log::LevelFilter {
        match self {
            Level::Off => log::LevelFilter::Off,
            Level::Error => log::LevelFilter::Error,
            Level::Warn => log::LevelFilter::Warn,
            Level::Info => log::LevelFilter::Info,
            Level::Debug => log::LevelFilter::Debug,
        }
    }

    /// What other crates may say at this level: one level less, but their
    /// debug records at debug (their trace records never).
    fn foreign(self) -> log::LevelFilter {
        match self {
            Level::Off | Level::Error => log::LevelFilter::Off,
            Level::Warn => log::LevelFilter::Error,
            Level::Info => log::LevelFilter::Warn,
            Level::Debug => log::LevelFilter::Debug,
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Installs the logger (once per process; later calls only change the level)
/// and sets the level. Until this is called, nothing is written.
///
/// Under systemd (`JOURNAL_STREAM` in the environment) text lines start with
/// the `<N>` priority journald reads, so `journalctl -p warning` finds
/// warnings.
pub fn init(level: Level) {
    // Err: a logger is installed already (ours, by an earlier call).
    let _ = log::set_logger(&LOGGER);
    JOURNAL.store(
        std::env::var_os("JOURNAL_STREAM").is_some_and(|v| !v.is_empty()),
        Ordering::Relaxed,
    );
    set_level(level);
}

/// Sets the level for the whole process.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    log::set_max_level(level.filter());
}

/// The level set last.
pub fn level() -> Level {
    Level::from_u8(LEVEL.load(Ordering::Relaxed))
}

thread_local! {
    static CONN: Cell<Option<u64>> = const { Cell::new(None) };
}

/// While the returned guard lives, this thread's log lines carry `conn=id`.
/// Scopes nest: dropping the guard restores the previous connection.
pub fn conn_scope(id: u64) -> ConnScope {
    let previous = CONN.with(|c| c.replace(Some(id)));
    ConnScope { previous }
}

/// The connection this thread is serving, if any (to carry the scope into a
/// thread that works for the same connection).
pub fn current_conn() -> Option<u64> {
    CONN.with(Cell::get)
}

/// Ends a [`conn_scope`] when dropped.
#[must_use = "the scope ends when the guard is dropped"]
pub struct ConnScope {
    previous: Option<u64>,
}

impl Drop for ConnScope {
    fn drop(&mut self) {
        CONN.with(|c| c.set(self.previous));
    }
}

/// Lines waiting for the writer thread; past this, new lines are dropped.
pub const QUEUE_LINES: usize = 4096;

/// How often the writer thread reports the lines the rate limit left out.
const SUMMARY_TICK: Duration = Duration::from_secs(1);

enum Message {
    Line(String),
    Flush(mpsc::SyncSender<()>),
}

static QUEUE: OnceLock<Option<mpsc::SyncSender<Message>>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);
static FORMAT: AtomicU8 = AtomicU8::new(Format::Text as u8);
static JOURNAL: AtomicBool = AtomicBool::new(false);
static LIMITER: LazyLock<Limiter> = LazyLock::new(|| Limiter::new(limit::INTERVAL));

/// Sets the line format for the whole process (a reload may change it).
pub fn set_format(format: Format) {
    FORMAT.store(format as u8, Ordering::Relaxed);
}

/// The format set last.
pub fn format() -> Format {
    match FORMAT.load(Ordering::Relaxed) {
        0 => Format::Text,
        _ => Format::Json,
    }
}

/// Connection threads never write to stderr themselves: a stalled reader of
/// stderr (a full pipe) would block them all. They queue lines for one writer
/// thread and drop lines when the queue is full.
fn queue() -> Option<&'static mpsc::SyncSender<Message>> {
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
            std::thread::Builder::new()
                .name("jet-log".into())
                .spawn(move || writer(rx))
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

fn writer(rx: mpsc::Receiver<Message>) {
    let mut summarised = Instant::now();
    loop {
        let message = rx.recv_timeout(SUMMARY_TICK);
        if summarised.elapsed() >= SUMMARY_TICK {
            summarised = Instant::now();
            write_summaries(false);
        }
        match message {
            Ok(Message::Line(line)) => {
                let dropped = DROPPED.swap(0, Ordering::Relaxed);
                let mut err = std::io::stderr().lock();
                if dropped > 0 {
                    let note = render(&Entry {
                        now: SystemTime::now(),
                        level: log::Level::Warn,
                        conn: None,
                        foreign: None,
                        message: &format!(
                            "{dropped} log line(s) dropped: stderr was not keeping up"
                        ),
                        fields: &Fields::default(),
                    });
                    let _ = err.write_all(note.as_bytes());
                }
                // A closed stderr is not a reason to disturb a relay.
                let _ = err.write_all(line.as_bytes());
            }
            Ok(Message::Flush(done)) => {
                // At exit: what was left out is said before the process goes.
                write_summaries(true);
                let _ = done.send(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Writes one line per reason whose interval ended with lines left out.
fn write_summaries(all: bool) {
    let due = LIMITER.take_due(Instant::now(), all);
    if due.is_empty() {
        return;
    }
    let mut err = std::io::stderr().lock();
    for summary in due {
        let line = render(&Entry {
            now: SystemTime::now(),
            level: summary.sample.level,
            conn: None,
            foreign: summary.sample.foreign.as_deref(),
            message: &summary.message(),
            fields: &summary.sample.fields,
        });
        let _ = err.write_all(line.as_bytes());
    }
}

/// A line in the format in force.
fn render(entry: &Entry<'_>) -> String {
    match format() {
        Format::Text => line::text(entry, JOURNAL.load(Ordering::Relaxed)),
        Format::Json => line::json(entry),
    }
}

/// The process's logger: formats on the calling thread, writes on the writer's.
struct Logger;

static LOGGER: Logger = Logger;

/// True for records of this crate (the library and the binary).
fn is_ours(target: &str) -> bool {
    target == "jet_relay" || target.starts_with("jet_relay::")
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let level = level();
        let filter = if is_ours(metadata.target()) {
            level.filter()
        } else {
            level.foreign()
        };
        metadata.level() <= filter
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let fields = Fields::of(record);
        let foreign = (!is_ours(record.target())).then(|| record.target());
        let mut suppressed = 0;
        // Warnings and errors are what a peer can provoke at will.
        if record.level() <= log::Level::Warn {
            let key = limit::Key::of(record, &fields);
            let verdict = LIMITER.check(key, Instant::now(), || limit::Sample {
                level: record.level(),
                foreign: foreign.map(str::to_owned),
                message: record.args().to_string(),
                fields: fields.clone(),
            });
            match verdict {
                Verdict::Suppress => return,
                Verdict::Write { suppressed: n } => suppressed = n,
            }
        }
        let mut message = record.args().to_string();
        if suppressed > 0 {
            message = limit::suffixed(&message, suppressed, limit::INTERVAL);
        }
        let line = render(&Entry {
            now: SystemTime::now(),
            level: record.level(),
            conn: current_conn(),
            foreign,
            message: &message,
            fields: &fields,
        });
        match queue() {
            Some(queue) => {
                if queue.try_send(Message::Line(line)).is_err() {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            // No writer thread could be started: write directly.
            None => {
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Waits (at most `limit`) until every line queued so far is written. Gives
/// up at once if the queue is full: shutdown must not wait on a stalled stderr.
pub fn flush(limit: std::time::Duration) {
    if let Some(queue) = QUEUE.get().and_then(Option::as_ref) {
        let (tx, rx) = mpsc::sync_channel(1);
        if queue.try_send(Message::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(limit);
        }
    }
}

/// RFC 3339 UTC time with milliseconds.
pub fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Converts days since 1970-01-01 to a (year, month, day) date in the proleptic
/// Gregorian calendar (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The `log` crate's macros, for the crate's own below (not a public API).
#[doc(hidden)]
pub mod __private {
    pub use log::{debug, error, info, warn};
}

/// Logs at error level (`log::error!` with this crate's target).
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::__private::error!($($arg)*) };
}
/// Logs at warn level (`log::warn!` with this crate's target).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::__private::warn!($($arg)*) };
}
/// Logs at info level (`log::info!` with this crate's target).
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::__private::info!($($arg)*) };
}
/// Logs at debug level (`log::debug!` with this crate's target).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::__private::debug!($($arg)*) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(timestamp(t), "2026-11-18T11:06:40.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(Level::parse("DEBUG"), Some(Level::Debug));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Warn < Level::Info);
    }

    #[test]
    fn other_crates_speak_one_level_lower_and_never_trace() {
        assert_eq!(Level::Warn.foreign(), log::LevelFilter::Error);
        assert_eq!(Level::Info.foreign(), log::LevelFilter::Warn);
        assert_eq!(Level::Debug.foreign(), log::LevelFilter::Debug);
        assert_eq!(Level::Error.foreign(), log::LevelFilter::Off);
        assert!(is_ours("jet_relay") && is_ours("jet_relay::relay::pump"));
        assert!(!is_ours("jet_relay_x") && !is_ours("rustls::conn"));
    }

    #[test]
    fn connection_scopes_nest_and_end_with_their_guard() {
        assert_eq!(current_conn(), None);
        let outer = conn_scope(1);
        assert_eq!(current_conn(), Some(1));
        {
            let _inner = conn_scope(2);
            assert_eq!(current_conn(), Some(2));
        }
        assert_eq!(current_conn(), Some(1));
        drop(outer);
        assert_eq!(current_conn(), None);
        // Another thread starts with no connection.
        let _scope = conn_scope(3);
        let seen = std::thread::spawn(current_conn).join().unwrap();
        assert_eq!(seen, None);
    }
}
