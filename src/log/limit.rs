//! Warnings and errors cannot flood the log: one line per reason per
//! interval, the others counted and reported in one line when the interval
//! ends (or the log is flushed at exit).
//!
//! The reason is the call site (module and line), refined by the record's
//! `status` and `reason` fields when it has them: never the message text,
//! which can carry whatever a peer sent.

use super::line::{Fields, Value};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One line per reason per this interval.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// The most reasons tracked with their `reason` field; past it, a call
/// site's records share one key (call sites are few: the map stays bounded).
pub const MAX_REASONS: usize = 1024;

/// A stable name for the cause of a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    site: &'static str,
    line: u32,
    reason: Option<String>,
}

impl Key {
    /// The key of a record: its call site and its `status` and `reason`
    /// fields (call sites put only stable values there).
    pub(crate) fn of(record: &log::Record<'_>, fields: &Fields) -> Key {
        let part = |name| fields.get(name).map(Value::to_string);
        let reason = match (part("status"), part("reason")) {
            (None, None) => None,
            (status, reason) => Some(format!(
                "{} {}",
                status.unwrap_or_default(),
                reason.unwrap_or_default()
            )),
        };
        Key {
            site: record.module_path_static().unwrap_or("?"),
            line: record.line().unwrap_or(0),
            reason,
        }
    }
}

/// The first line of an interval, kept to name the ones it stood for.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) level: log::Level,
    pub(crate) foreign: Option<String>,
    pub(crate) message: String,
    pub(crate) fields: Fields,
}

struct Window {
    started: Instant,
    suppressed: u64,
    sample: Sample,
}

/// What to do with a record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write it; `suppressed` lines like it were left out since the last one
    /// written (the line says so).
    Write { suppressed: u64 },
    /// Leave it out (counted).
    Suppress,
}

/// Lines left out for one reason, to report.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) sample: Sample,
    pub(crate) suppressed: u64,
    pub(crate) over: Duration,
}

impl Summary {
    /// `MESSAGE (N more like this in the last S s)`.
    pub(crate) fn message(&self) -> String {
        suffixed(&self.sample.message, self.suppressed, self.over)
    }
}

/// `message (N more like this in the last S s)`; the seconds rounded up.
pub(crate) fn suffixed(message: &str, suppressed: u64, over: Duration) -> String {
    let secs = over.as_secs() + u64::from(over.subsec_nanos() > 0);
    format!(
        "{message} ({suppressed} more like this in the last {} s)",
        secs.max(1)
    )
}

/// The windows of every reason seen lately.
pub(crate) struct Limiter {
    interval: Duration,
    windows: Mutex<HashMap<Key, Window>>,
}

impl Limiter {
    pub(crate) fn new(interval: Duration) -> Limiter {
        Limiter {
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Window>> {
        // Map updates cannot panic halfway: a poisoned lock is still usable.
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides on a record of `key` at `now`; `sample` is called only when
    /// the record opens a new window.
    pub(crate) fn check(
        &self,
        mut key: Key,
        now: Instant,
        sample: impl FnOnce() -> Sample,
    ) -> Verdict {
        let mut windows = self.lock();
        if windows.len() >= MAX_REASONS && !windows.contains_key(&key) {
            key.reason = None;
        }
        match windows.get_mut(&key) {
            Some(w) if now.saturating_duration_since(w.started) < self.interval => {
                w.suppressed += 1;
                Verdict::Suppress
            }
            Some(w) => {
                let suppressed = w.suppressed;
                *w = Window {
                    started: now,
                    suppressed: 0,
                    sample: sample(),
                };
                Verdict::Write { suppressed }
            }
            None => {
                windows.insert(
                    key,
                    Window {
                        started: now,
                        suppressed: 0,
                        sample: sample(),
                    },
                );
                Verdict::Write { suppressed: 0 }
            }
        }
    }

    /// Ends the windows older than the interval (all of them when `all`, at
    /// exit) and returns those that left lines out.
    pub(crate) fn take_due(&self, now: Instant, all: bool) -> Vec<Summary> {
        let mut due = Vec::new();
        self.lock().retain(|_, w| {
            let over = now.saturating_duration_since(w.started);
            if !all && over < self.interval {
                return true;
            }
            if w.suppressed > 0 {
                due.push(Summary {
                    sample: w.sample.clone(),
                    suppressed: w.suppressed,
                    over: over.min(self.interval),
                });
            }
            false
        });
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(line: u32, reason: Option<&str>) -> Key {
        Key {
            site: "jet_relay::x",
            line,
            reason: reason.map(str::to_owned),
        }
    }

    fn sample(message: &str) -> Sample {
        Sample {
            level: log::Level::Warn,
            foreign: None,
            message: message.into(),
            fields: Fields::default(),
        }
    }

    #[test]
    fn one_line_per_reason_per_interval_and_the_rest_counted() {
        let limiter = Limiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(
            limiter.check(key(1, None), t0, || sample("a")),
            Verdict::Write { suppressed: 0 }
        );
        for i in 0..1000 {
            let at = t0 + Duration::from_millis(i);
            assert_eq!(
                limiter.check(key(1, None), at, || sample("a")),
                Verdict::Suppress
            );
        }
        // Another reason at the same site, and another site, pass.
        let other = limiter.check(key(1, Some("503")), t0, || sample("b"));
        assert_eq!(other, Verdict::Write { suppressed: 0 });
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            limiter.check(key(1, None), later, || sample("a")),
            Verdict::Write { suppressed: 1000 }
        );
    }

    #[test]
    fn due_windows_report_what_they_left_out() {
        let limiter = Limiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        limiter.check(key(1, None), t0, || sample("malformed"));
        limiter.check(key(1, None), t0, || sample("malformed"));
        limiter.check(key(2, None), t0, || sample("quiet"));
        assert!(limiter
            .take_due(t0 + Duration::from_secs(1), false)
            .is_empty());
        let due = limiter.take_due(t0 + Duration::from_secs(11), false);
        assert_eq!(due.len(), 1, "only the window that left a line out");
        assert_eq!(
            due[0].message(),
            "malformed (1 more like this in the last 10 s)"
        );
        // Both windows ended: the next records pass at once.
        assert_eq!(
            limiter.check(key(2, None), t0 + Duration::from_secs(11), || sample("q")),
            Verdict::Write { suppressed: 0 }
        );
    }

    #[test]
    fn reasons_beyond_the_cap_share_their_call_site() {
        let limiter = Limiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..MAX_REASONS + 500 {
            limiter.check(key(3, Some(&i.to_string())), t0, || sample("x"));
        }
        assert!(limiter.lock().len() <= MAX_REASONS + 1);
    }
}
