//! Line logging to stderr: the process's `log` logger, with a global level
//! (`log_level` in relay.toml or `JET_RELAY_LOG`) and the connection a thread
//! is serving added to each of its lines.
//!
//! The relay's own records (target `jet_relay...`) pass at the configured
//! level; other crates' (rustls, tungstenite) one level lower, so their
//! handshake chatter appears only at debug.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

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
pub fn init(level: Level) {
    // Err: a logger is installed already (ours, by an earlier call).
    let _ = log::set_logger(&LOGGER);
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

enum Message {
    Line(String),
    Flush(mpsc::SyncSender<()>),
}

static QUEUE: OnceLock<Option<mpsc::SyncSender<Message>>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

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
    for message in rx {
        match message {
            Message::Line(line) => {
                let dropped = DROPPED.swap(0, Ordering::Relaxed);
                let mut err = std::io::stderr().lock();
                if dropped > 0 {
                    let _ = writeln!(
                        err,
                        "{} WARN  {dropped} log line(s) dropped: stderr was not keeping up",
                        timestamp(SystemTime::now())
                    );
                }
                // A closed stderr is not a reason to disturb a relay.
                let _ = err.write_all(line.as_bytes());
            }
            Message::Flush(done) => {
                let _ = done.send(());
            }
        }
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
        let line = format_line(
            SystemTime::now(),
            record.level(),
            current_conn(),
            (!is_ours(record.target())).then(|| record.target()),
            record.args(),
        );
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

/// One line: `TIMESTAMP LEVEL [conn=N ][TARGET: ]MESSAGE\n`; the target only
/// for other crates' records.
fn format_line(
    now: SystemTime,
    level: log::Level,
    conn: Option<u64>,
    foreign: Option<&str>,
    args: &std::fmt::Arguments<'_>,
) -> String {
    let label = match level {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARN",
        log::Level::Info => "INFO",
        log::Level::Debug => "DEBUG",
        log::Level::Trace => "TRACE",
    };
    let mut line = format!("{} {label:5} ", timestamp(now));
    if let Some(conn) = conn {
        let _ = write!(line, "conn={conn} ");
    }
    if let Some(target) = foreign {
        let _ = write!(line, "{target}: ");
    }
    let _ = writeln!(line, "{args}");
    line
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
    fn lines_carry_the_level_the_connection_and_a_foreign_target() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let line = |level, conn, foreign| {
            format_line(at, level, conn, foreign, &format_args!("paired x={}", 1))
        };
        assert_eq!(
            line(log::Level::Info, Some(7), None),
            "2026-11-18T11:06:40.123Z INFO  conn=7 paired x=1\n"
        );
        assert_eq!(
            line(log::Level::Debug, None, Some("rustls::server::hs")),
            "2026-11-18T11:06:40.123Z DEBUG rustls::server::hs: paired x=1\n"
        );
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
