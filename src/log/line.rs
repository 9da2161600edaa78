//! One record as one line: text (`key=value` fields after the message, the
//! `<N>` priority prefix under journald) or a JSON object.

use std::fmt::Write as _;
use std::time::SystemTime;

/// How lines are written (`log_format` in relay.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `TIME LEVEL message key=value ...`: for a person reading a terminal.
    Text,
    /// One JSON object per line: for a log aggregator.
    Json,
}

impl Format {
    /// Parses `text` or `json`.
    pub fn parse(text: &str) -> Option<Format> {
        match text.to_ascii_lowercase().as_str() {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// A field's value, typed so JSON keeps numbers as numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::U64(n) => write!(f, "{n}"),
            Value::I64(n) => write!(f, "{n}"),
            Value::F64(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// A record's key-values, in the order the call site wrote them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Fields(pub(crate) Vec<(String, Value)>);

impl Fields {
    /// The fields of a `log` record.
    pub(crate) fn of(record: &log::Record<'_>) -> Fields {
        let mut fields = Fields::default();
        // A visitor of ours never fails.
        let _ = record.key_values().visit(&mut fields);
        fields
    }

    /// The value of `key`, if the record has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<'kvs> log::kv::VisitSource<'kvs> for Fields {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let mut typed = Typed(None);
        value.visit(&mut typed)?;
        let value = typed.0.unwrap_or_else(|| Value::Str(value.to_string()));
        self.0.push((key.as_str().to_owned(), value));
        Ok(())
    }
}

/// Takes a `log` value's type when it has one (numbers, booleans, strings).
struct Typed(Option<Value>);

impl<'v> log::kv::VisitValue<'v> for Typed {
    fn visit_any(&mut self, value: log::kv::Value<'_>) -> Result<(), log::kv::Error> {
        self.0 = Some(Value::Str(value.to_string()));
        Ok(())
    }
    fn visit_u64(&mut self, value: u64) -> Result<(), log::kv::Error> {
        self.0 = Some(Value::U64(value));
        Ok(())
    }
    fn visit_i64(&mut self, value: i64) -> Result<(), log::kv::Error> {
        self.0 = Some(Value::I64(value));
        Ok(())
    }
    fn visit_f64(&mut self, value: f64) -> Result<(), log::kv::Error> {
        self.0 = Some(Value::F64(value));
        Ok(())
    }
    fn visit_bool(&mut self, value: bool) -> Result<(), log::kv::Error> {
        self.0 = Some(Value::Bool(value));
        Ok(())
    }
    fn visit_str(&mut self, value: &str) -> Result<(), log::kv::Error> {
        self.0 = Some(Value::Str(value.to_owned()));
        Ok(())
    }
}

/// Everything a line is made of.
pub(crate) struct Entry<'a> {
    pub(crate) now: SystemTime,
    pub(crate) level: log::Level,
    /// The connection of the logging thread's scope.
    pub(crate) conn: Option<u64>,
    /// The target of another crate's record (rustls, tungstenite).
    pub(crate) foreign: Option<&'a str>,
    pub(crate) message: &'a str,
    pub(crate) fields: &'a Fields,
}

/// The sd-daemon priority of a level (`<3>` err, `<4>` warning, `<6>` info,
/// `<7>` debug), which journald reads off the start of a line.
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

fn label(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARN",
        log::Level::Info => "INFO",
        log::Level::Debug => "DEBUG",
        log::Level::Trace => "TRACE",
    }
}

/// `[<N>]TIME LEVEL [conn=N ][TARGET: ]MESSAGE[ key=value...]\n`. The prefix
/// only under journald, which also stamps the time, but a line stays the
/// same line wherever it is read.
pub(crate) fn text(entry: &Entry<'_>, journal: bool) -> String {
    let mut line = String::with_capacity(96 + entry.message.len());
    if journal {
        let _ = write!(line, "<{}>", priority(entry.level));
    }
    let _ = write!(
        line,
        "{} {:5} ",
        super::timestamp(entry.now),
        label(entry.level)
    );
    if let Some(conn) = entry.conn.filter(|_| entry.fields.get("conn").is_none()) {
        let _ = write!(line, "conn={conn} ");
    }
    if let Some(target) = entry.foreign {
        let _ = write!(line, "{target}: ");
    }
    push_one_line(&mut line, entry.message);
    for (key, value) in &entry.fields.0 {
        let _ = write!(line, " {key}=");
        match value {
            Value::Str(s) if needs_quotes(s) => {
                let _ = write!(line, "{s:?}");
            }
            other => {
                let _ = write!(line, "{other}");
            }
        }
    }
    line.push('\n');
    line
}

/// A message is one line: a newline inside (from a peer's bytes in an
/// error) would forge a second record.
fn push_one_line(line: &mut String, message: &str) {
    for c in message.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            c => line.push(c),
        }
    }
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control())
}

/// `{"time":..,"level":..,"message":..,"conn":..,fields..}\n`, in that
/// order (a person reading raw JSON finds the time first). A field whose key
/// was written before it is left out: keys stay unique.
pub(crate) fn json(entry: &Entry<'_>) -> String {
    let mut line = String::with_capacity(128 + entry.message.len());
    let mut seen: Vec<&str> = Vec::with_capacity(4 + entry.fields.0.len());
    let push = |line: &mut String, key: &'_ str, value: serde_json::Value| {
        line.push(if line.is_empty() { '{' } else { ',' });
        let _ = write!(line, "{}:{value}", serde_json::Value::from(key));
    };
    push(&mut line, "time", super::timestamp(entry.now).into());
    push(
        &mut line,
        "level",
        label(entry.level).to_ascii_lowercase().into(),
    );
    push(&mut line, "message", entry.message.into());
    seen.extend(["time", "level", "message"]);
    if let Some(target) = entry.foreign {
        push(&mut line, "target", target.into());
        seen.push("target");
    }
    // The call site's own `conn` wins over the thread's scope.
    let conn = match entry.fields.get("conn") {
        Some(_) => None,
        None => entry.conn,
    };
    if let Some(conn) = conn {
        push(&mut line, "conn", conn.into());
        seen.push("conn");
    }
    for (key, value) in &entry.fields.0 {
        if seen.contains(&key.as_str()) {
            continue;
        }
        seen.push(key);
        let value = match value {
            Value::U64(n) => serde_json::Value::from(*n),
            Value::I64(n) => serde_json::Value::from(*n),
            // NaN and infinities are not JSON numbers: null, as serde_json does.
            Value::F64(n) => serde_json::Value::from(*n),
            Value::Bool(b) => serde_json::Value::from(*b),
            Value::Str(s) => serde_json::Value::from(s.as_str()),
        };
        push(&mut line, key, value);
    }
    line.push_str("}\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn entry<'a>(fields: &'a Fields, conn: Option<u64>, message: &'a str) -> Entry<'a> {
        Entry {
            now: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            level: log::Level::Warn,
            conn,
            foreign: None,
            message,
            fields,
        }
    }

    #[test]
    fn text_puts_fields_after_the_message_and_quotes_what_has_spaces() {
        let fields = Fields(vec![
            ("bytes".into(), Value::U64(12)),
            ("reason".into(), Value::Str("peer eof".into())),
        ]);
        assert_eq!(
            text(&entry(&fields, Some(4), "pair closed"), false),
            "2026-11-18T11:06:40.123Z WARN  conn=4 pair closed bytes=12 reason=\"peer eof\"\n"
        );
    }

    #[test]
    fn journald_gets_the_priority_prefix() {
        let fields = Fields::default();
        let line = text(&entry(&fields, None, "x"), true);
        assert!(line.starts_with("<4>2026-"), "{line}");
    }

    #[test]
    fn a_newline_in_a_message_cannot_forge_a_line() {
        let fields = Fields::default();
        let line = text(&entry(&fields, None, "bad\nINFO  forged"), false);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
    }

    #[test]
    fn json_is_one_object_with_typed_fields() {
        let fields = Fields(vec![
            ("seconds".into(), Value::F64(1.5)),
            ("peer".into(), Value::Str("127.0.0.1:9".into())),
        ]);
        let line = json(&entry(&fields, Some(7), "pair \"closed\"\n"));
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["message"], "pair \"closed\"\n");
        assert_eq!(v["conn"], 7);
        assert_eq!(v["seconds"], 1.5);
        assert_eq!(v["peer"], "127.0.0.1:9");
        assert!(line.starts_with("{\"time\":"), "{line}");
    }

    #[test]
    fn json_keys_stay_unique() {
        let fields = Fields(vec![
            ("conn".into(), Value::U64(9)),
            ("level".into(), Value::Str("forged".into())),
            ("x".into(), Value::U64(1)),
            ("x".into(), Value::U64(2)),
        ]);
        let line = json(&entry(&fields, Some(7), "m"));
        assert_eq!(line.matches("\"conn\"").count(), 1, "{line}");
        assert_eq!(line.matches("\"level\"").count(), 1, "{line}");
        assert_eq!(line.matches("\"x\"").count(), 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (v["conn"].as_u64(), v["level"].as_str()),
            (Some(9), Some("warn"))
        );
    }

    #[test]
    fn formats_parse() {
        assert_eq!(Format::parse("JSON"), Some(Format::Json));
        assert_eq!(Format::parse("text"), Some(Format::Text));
        assert_eq!(Format::parse("xml"), None);
    }
}
