//! `--log-format json`: each log line as one JSON object on stderr, for a
//! log pipeline. The text line's event token (`LOCK_ACQUIRED`,
//! `MIGRATION_APPLIED`…) becomes `event`, its `key=value` pairs `fields`
//! (whole numbers as numbers), and the line itself stays in `message`, so
//! nothing the text format says is lost. The lines miglock prints itself
//! (`error: …`, the many-targets `SUMMARY`) are objects too: every line
//! parses.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Map, Value};

static ON: AtomicBool = AtomicBool::new(false);

/// Turns JSON lines on for the rest of the process.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// One log line: `level` (`INFO`…), `message` as the text format says it,
/// `target` the target a many-targets worker is on.
pub fn line(level: &str, message: &str, target: Option<&str>) -> String {
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let mut object = Map::new();
    object.insert("time".into(), json!(time));
    object.insert("level".into(), json!(level));
    if let Some(target) = target {
        object.insert("target".into(), json!(target));
    }
    let (event, rest) = match message.split_once(' ') {
        Some((first, rest)) if is_event(first) => (Some(first), rest),
        _ if is_event(message) => (Some(message), ""),
        _ => (None, message),
    };
    if let Some(event) = event {
        object.insert("event".into(), json!(event));
        let fields = fields(rest);
        if !fields.is_empty() {
            object.insert("fields".into(), Value::Object(fields));
        }
    }
    object.insert("message".into(), json!(message));
    Value::Object(object).to_string()
}

/// `LOCK_ACQUIRED`, `SUMMARY`: upper case, digits and `_`, a letter first,
/// four characters or more (`NOTICE:` is PostgreSQL's word, not an event).
fn is_event(word: &str) -> bool {
    word.len() >= 4
        && word.starts_with(|c: char| c.is_ascii_uppercase())
        && word
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// The `key=value` words of `text` (a value in double quotes as Rust's
/// `{:?}` writes it, with its escapes); other words are left to `message`.
fn fields(text: &str) -> Map<String, Value> {
    let mut found = Map::new();
    let mut rest = text;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let key_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
            .count();
        if key_len > 0 && rest[key_len..].starts_with('=') {
            let key = &rest[..key_len];
            let after = &rest[key_len + 1..];
            let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
                quoted_value(quoted)
            } else {
                let end = after.find(' ').unwrap_or(after.len());
                let word = &after[..end];
                let value = word
                    .parse::<i64>()
                    .map_or_else(|_| json!(word), |n| json!(n));
                (value, &after[end..])
            };
            found.entry(key).or_insert(value);
            rest = next;
        } else {
            rest = rest.find(' ').map_or("", |at| &rest[at..]);
        }
    }
    found
}

/// A `"…"` value (its opening quote already taken) up to its closing
/// quote, `\"` and `\\` undone; the text after it.
fn quoted_value(text: &str) -> (Value, &str) {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return (json!(value), &text[at + 1..]),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((_, other)) => value.push(other),
                None => break,
            },
            other => value.push(other),
        }
    }
    (json!(value), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(level: &str, message: &str, target: Option<&str>) -> Value {
        serde_json::from_str(&line(level, message, target)).unwrap()
    }

    #[test]
    fn an_event_line_gives_its_token_and_fields() {
        let v = parsed(
            "WARN",
            r#"CONNECT_RETRY attempt=2 target=app@db:5432/app retry_in_ms=200 reason="error connecting: \"x\" refused""#,
            Some("app@db:5432/t1"),
        );
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["event"], "CONNECT_RETRY");
        assert_eq!(v["target"], "app@db:5432/t1");
        assert_eq!(v["fields"]["attempt"], 2);
        assert_eq!(v["fields"]["target"], "app@db:5432/app");
        assert_eq!(v["fields"]["reason"], r#"error connecting: "x" refused"#);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        let v = parsed(
            "INFO",
            "SCHEMA_CURRENT version=V2__b applied=2 (this run applied 2)",
            None,
        );
        assert_eq!(v["fields"]["version"], "V2__b");
        assert_eq!(v["fields"]["applied"], 2);
        assert_eq!(
            v["message"],
            "SCHEMA_CURRENT version=V2__b applied=2 (this run applied 2)"
        );
    }

    #[test]
    fn a_plain_line_is_a_message() {
        let v = parsed(
            "ERROR",
            "migration V2__b failed (db/V2__b.sql, line 3): boom",
            None,
        );
        assert!(v.get("event").is_none(), "{v}");
        assert_eq!(
            v["message"],
            "migration V2__b failed (db/V2__b.sql, line 3): boom"
        );
        let v = parsed("INFO", "NOTICE: x", None);
        assert!(v.get("event").is_none(), "{v}");
        let v = parsed(
            "INFO",
            "SUMMARY 2 targets: 2 applied (outcome applied, exit 0)",
            None,
        );
        assert_eq!(v["event"], "SUMMARY");
    }
}
