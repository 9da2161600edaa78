//! Line logging to stderr with a global level (`log_level` in relay.toml or `JET_RELAY_LOG`).

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

    fn label(self) -> &'static str {
        match self {
            Level::Off => "OFF",
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the level for the whole process.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// True when a message at `level` would be written.
pub fn enabled(level: Level) -> bool {
    level != Level::Off && level as u8 <= LEVEL.load(Ordering::Relaxed)
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

/// Queues one line; use the `error!`..`debug!` macros instead.
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    let line = format!(
        "{} {:5} {}\n",
        timestamp(SystemTime::now()),
        level.label(),
        args
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

/// Logs at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { if $crate::log::enabled($crate::log::Level::Error) { $crate::log::write($crate::log::Level::Error, format_args!($($arg)*)) } };
}
/// Logs at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { if $crate::log::enabled($crate::log::Level::Warn) { $crate::log::write($crate::log::Level::Warn, format_args!($($arg)*)) } };
}
/// Logs at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { if $crate::log::enabled($crate::log::Level::Info) { $crate::log::write($crate::log::Level::Info, format_args!($($arg)*)) } };
}
/// Logs at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { if $crate::log::enabled($crate::log::Level::Debug) { $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*)) } };
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
}
