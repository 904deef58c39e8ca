//! Parsers for the untrusted text miglock reads from flags and the
//! environment. Each returns a message fit to show the user as is.

use std::time::Duration;

/// The longest duration accepted anywhere: beyond a year is a typo, and it
/// keeps every `Instant + Duration` far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// What a duration may be, said after every refusal.
const DURATION_FORMS: &str =
    "a number with a unit, ms, s, m, h or d (500ms, 30s, 2m, 1h 30m), or a bare number of seconds";

/// `500ms`, `30s`, `2m`, `1h 30m`, or a bare number of seconds (`30`, `1.5`).
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty duration: use {DURATION_FORMS}"));
    }
    let parsed = if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        text.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite())
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| format!("invalid duration {text:?}: not a number of seconds"))?
    } else if seconds_bound(text) > u128::from(u64::MAX >> 1) {
        // Far past a year: said so before humantime sees it (2.4 panics
        // on a sum that reaches u64::MAX seconds with a second of
        // nanoseconds left, where it errs on other overflows).
        return Err(format!(
            "duration {:?} is too long (at most 366 days)",
            shorten(text, 40)
        ));
    } else {
        humantime::parse_duration(text).map_err(|e| duration_refused(text, &e))?
    };
    if parsed > MAX_DURATION {
        return Err(format!("duration {text:?} is too long (at most 366 days)"));
    }
    Ok(parsed)
}

/// More than the seconds `text` can name: each number taken in a year's
/// seconds (humantime's longest unit), or in one second when a unit below
/// one follows it, and its fraction as one more. humantime reads digits
/// across spaces (`1844674407 3709551615s` is one number), so spaces are
/// left out first. A duration of at most 366 days stays below 2^55 (in
/// nanoseconds, 3.2e16 of them).
fn seconds_bound(text: &str) -> u128 {
    const YEAR: u128 = 31_557_600;
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut total: u128 = 0;
    let mut rest = text.as_str();
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let number = &rest[start..];
        let digits = number
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(number.len());
        let mut n = number[..digits].parse::<u128>().unwrap_or(u128::MAX);
        let mut after = &number[digits..];
        // A fraction is less than one more of its unit.
        if let Some(fraction) = after.strip_prefix('.') {
            n = n.saturating_add(1);
            after = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
        }
        let below_a_second = after.starts_with(['n', 'u', 'µ'])
            || after.starts_with("ms")
            || after.starts_with("milli");
        let each = if below_a_second { 1 } else { YEAR };
        total = total.saturating_add(n.saturating_mul(each));
        rest = after;
    }
    total
}

/// humantime's refusal in words of the units miglock documents (its own
/// message lists every spelling it knows, "ns, us/µs, … (and few
/// variations)").
fn duration_refused(text: &str, error: &humantime::DurationError) -> String {
    use humantime::DurationError as E;
    let what = match error {
        E::UnknownUnit { unit, .. } => format!("unknown unit {:?}", shorten(unit, 20)),
        E::NumberExpected(_) => "a number is missing".to_string(),
        E::InvalidCharacter(_) => "it holds a character no duration has".to_string(),
        E::NumberOverflow => "the number is too large".to_string(),
        E::Empty => "it is empty".to_string(),
    };
    format!(
        "invalid duration {:?} ({what}): use {DURATION_FORMS}",
        shorten(text, 40)
    )
}

/// `--statement-timeout`: a PostgreSQL timeout, `off` (or `0`) for none
/// (zero is PostgreSQL's own word for no timeout).
pub fn pg_duration_or_off(text: &str) -> Result<Duration, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    pg_duration(text).map_err(|e| format!("{e}; or off"))
}

/// `--cancel-blockers-after`: a duration, or `off` (`None`); `0` is a
/// duration (at once), not off.
pub fn duration_or_off(text: &str) -> Result<Option<Duration>, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    duration(text).map(Some).map_err(|e| format!("{e}; or off"))
}

/// A whole number from `min` to `max`, or a message naming `what` it is
/// (rather than clap's `0..9223372036854775807`).
fn whole_number(text: &str, min: i128, max: i128, what: &str) -> Result<i128, String> {
    let range = format!("{what} is a whole number from {min} to {max}");
    let text = text.trim();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not a whole number: {range}"));
    }
    // Longer than any i128: out of range whatever it says.
    match text.parse::<i128>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) if n < min => Err(format!("below {min}: {range}")),
        _ => Err(format!("above {max}: {range}")),
    }
}

/// `down --to`: a version, or 0 for all of them.
pub fn down_to(text: &str) -> Result<i64, String> {
    whole_number(text, 0, i64::MAX.into(), "a version to go down to").map(|n| n as i64)
}

/// `--lock-key`: PostgreSQL's bigint, never negative (derived keys are not).
pub fn lock_key(text: &str) -> Result<i64, String> {
    whole_number(text, 0, i64::MAX.into(), "a lock key").map(|n| n as i64)
}

/// A migration version, from 1: other tools' versions are timestamps, so
/// up to PostgreSQL's bigint (refinery's files cannot go past its INT4).
pub fn version(text: &str) -> Result<i64, String> {
    whole_number(text, 1, i64::MAX.into(), "a version").map(|n| n as i64)
}

/// `--jobs`: at least one, and no more connections than a server likes
/// from one client.
pub fn jobs(text: &str) -> Result<u16, String> {
    whole_number(text, 1, 256, "the number of jobs").map(|n| n as u16)
}

/// The most shards a fleet is split into (`--shard`, `--shards`).
pub const MAX_SHARDS: i128 = 10_000;

/// `--shard INDEX/COUNT`: this worker's slice of the targets, from 0.
pub fn shard(text: &str) -> Result<(u32, u32), String> {
    let form = "give INDEX/COUNT, e.g. 0/3 (INDEX from 0 to COUNT-1)";
    let (index, count) = text
        .split_once('/')
        .ok_or_else(|| format!("no '/' between INDEX and COUNT: {form}"))?;
    let count = whole_number(count, 1, MAX_SHARDS, "COUNT")? as u32;
    let index = whole_number(index, 0, i128::from(count) - 1, "INDEX")
        .map_err(|e| format!("{e} (it counts from 0); {form}"))?;
    Ok((index as u32, count))
}

/// `--canary N`, `--max-failures N`: a count of targets.
pub fn targets_count(text: &str) -> Result<usize, String> {
    whole_number(text, 1, 1_000_000, "a number of targets").map(|n| n as usize)
}

/// `--shards COUNT`.
pub fn shard_count(text: &str) -> Result<u32, String> {
    whole_number(text, 1, MAX_SHARDS, "the number of shards").map(|n| n as u32)
}

/// `--ddl-retries`: a count, or `unlimited` (`None`, the default: the
/// budget alone bounds the attempts).
pub fn retries(text: &str) -> Result<Option<u32>, String> {
    if text.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    whole_number(text, 0, 100_000, "the number of retries")
        .map(|n| Some(n as u32))
        .map_err(|e| format!("{e}, or unlimited"))
}

/// A duration PostgreSQL takes as a timeout setting (milliseconds in an
/// int4): up to about 24.8 days.
pub fn pg_duration(text: &str) -> Result<Duration, String> {
    let parsed = duration(text)?;
    if parsed.as_millis() > i32::MAX as u128 {
        return Err(format!(
            "duration {text:?} is too long for a PostgreSQL timeout (at most 24 days)"
        ));
    }
    Ok(parsed)
}

/// `RUN_MIGRATIONS`: `None` when unset (enabled).
pub fn run_migrations(value: Option<&str>) -> Result<bool, String> {
    let Some(value) = value else { return Ok(true) };
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "RUN_MIGRATIONS={:?} is not understood: use 1/true/yes/on to migrate or 0/false/no/off to skip",
            shorten(value, 40)
        )),
    }
}

/// A yes-or-no environment value (`MIGLOCK_ALLOW_WORLD_WRITABLE`), read as
/// `RUN_MIGRATIONS` is: anything else is a mistake, not a no.
pub fn switch(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "{:?} is not understood: use 1/true/yes/on or 0/false/no/off",
            shorten(value, 40)
        )),
    }
}

/// The longest `--set` value accepted: far beyond any real setting (a
/// long `search_path` is a few hundred bytes), short of a pasted file.
pub const MAX_SETTING_VALUE: usize = 8192;

/// `NAME=VALUE` for `--set`: a PostgreSQL setting name (letters, digits,
/// `_` and `$`, not starting with a digit or `$`; custom ones have dotted
/// parts, as in `app.flag`), folded to lower case as PostgreSQL folds it,
/// and a value without NUL of at most [`MAX_SETTING_VALUE`] bytes, which
/// is passed as a quoted literal. Whether the server knows the name and
/// takes the value is checked once connected (`settings`).
pub fn setting(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{:?} is not NAME=VALUE", shorten(text, 40)))?;
    let name = name.trim().to_ascii_lowercase();
    let part = |p: &str| {
        p.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
    };
    if name.len() > 63 || !name.split('.').all(part) {
        return Err(format!(
            "{:?} is not a setting name (letters, digits, _ and $, dotted for custom ones: app.flag)",
            shorten(&name, 40)
        ));
    }
    let value = value.trim();
    if value.contains('\0') {
        return Err(format!("the value of {name} holds a NUL character"));
    }
    if value.len() > MAX_SETTING_VALUE {
        return Err(format!(
            "the value of {name} is too long ({} bytes, at most {MAX_SETTING_VALUE})",
            value.len()
        ));
    }
    Ok((name, value.to_string()))
}

/// Cuts user-supplied text that is echoed back in a message.
pub fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max_chars).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_documented_form() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(duration(" 0 "), Ok(Duration::ZERO));
        assert_eq!(duration("1.5"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn bad_durations_are_refused_with_the_text() {
        for bad in [
            "",
            "abc",
            "-1",
            "-5s",
            "1..2",
            "10 parsecs",
            "1e3",
            "999999999999999999999",
        ] {
            let err = duration(bad).unwrap_err();
            assert!(err.contains("duration"), "{bad:?}: {err}");
        }
        assert!(duration("400d").unwrap_err().contains("too long"));
    }

    #[test]
    fn a_duration_summing_past_u64_seconds_is_too_long_not_a_crash() {
        // humantime 2.4 panics on these (`Duration::new` overflows with
        // u64::MAX seconds and a whole second of nanoseconds).
        for huge in [
            "18446744073709551615s 1000ms",
            "18446744073709551615s1000ms",
            "18446744073709551615s 999999999ns 1ns",
            "584542046090y 1000ms",
            // humantime reads digits across spaces.
            "1844674407 3709551615s 1000ms",
            "18 446 744 073 709 551 615s 1000ms",
        ] {
            let err = duration(huge).unwrap_err();
            assert!(err.contains("too long"), "{huge:?}: {err}");
        }
        // The longest durations there are, in their smallest units, and
        // fractions, stay what they are.
        let year = Duration::from_secs(366 * 24 * 3600);
        assert_eq!(duration("366d"), Ok(year));
        assert_eq!(duration("31622400000000000ns"), Ok(year));
        assert_eq!(duration("31622400000000us"), Ok(year));
        assert_eq!(duration("31622400000msec"), Ok(year));
        assert_eq!(duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            duration("1.5000000000000d"),
            Ok(Duration::from_secs(129_600))
        );
        assert_eq!(duration("1 5s"), Ok(Duration::from_secs(15)));
        assert_eq!(duration("1y"), Ok(Duration::from_secs(31_557_600)));
    }

    #[test]
    fn an_unknown_unit_names_the_units_miglock_documents() {
        let err = duration("10x").unwrap_err();
        assert_eq!(
            err,
            "invalid duration \"10x\" (unknown unit \"x\"): use a number with a unit, ms, s, m, \
             h or d (500ms, 30s, 2m, 1h 30m), or a bare number of seconds"
        );
        // humantime's own list of spellings stays out.
        for bad in ["10x", "1 parsec", "m5", "5s!"] {
            let err = duration(bad).unwrap_err();
            assert!(!err.contains("supported units"), "{bad}: {err}");
            assert!(err.contains("ms, s, m, h or d"), "{bad}: {err}");
        }
    }

    #[test]
    fn off_is_a_word_for_no_timeout() {
        assert_eq!(pg_duration_or_off("off"), Ok(Duration::ZERO));
        assert_eq!(pg_duration_or_off("OFF "), Ok(Duration::ZERO));
        assert_eq!(pg_duration_or_off("2s"), Ok(Duration::from_secs(2)));
        assert!(pg_duration_or_off("soon")
            .unwrap_err()
            .ends_with("; or off"));
        assert_eq!(duration_or_off("off"), Ok(None));
        assert_eq!(duration_or_off("0"), Ok(Some(Duration::ZERO)));
        assert_eq!(retries("unlimited"), Ok(None));
        assert_eq!(retries("0"), Ok(Some(0)));
        assert_eq!(
            retries("100001").unwrap_err(),
            "above 100000: the number of retries is a whole number from 0 to 100000, or unlimited"
        );
    }

    #[test]
    fn ranges_are_said_in_words() {
        assert_eq!(lock_key("0"), Ok(0));
        assert_eq!(lock_key("9223372036854775807"), Ok(i64::MAX));
        for (bad, start) in [
            ("-1", "below 0: "),
            ("9223372036854775808", "above 9223372036854775807: "),
            ("99999999999999999999999999999999999999999", "above "),
            ("abc", "not a whole number: "),
            ("1.5", "not a whole number: "),
            ("", "not a whole number: "),
        ] {
            let err = lock_key(bad).unwrap_err();
            assert!(err.starts_with(start), "{bad}: {err}");
            assert!(
                err.ends_with("a lock key is a whole number from 0 to 9223372036854775807"),
                "{bad}: {err}"
            );
            assert!(!err.contains(".."), "{bad}: {err}");
        }
        assert_eq!(version("20240101000000"), Ok(20240101000000));
        assert_eq!(
            version("0").unwrap_err(),
            "below 1: a version is a whole number from 1 to 9223372036854775807"
        );
        assert_eq!(jobs("256"), Ok(256));
        assert!(jobs("257").unwrap_err().contains("from 1 to 256"));
    }

    #[test]
    fn timeouts_fit_in_postgresql() {
        assert_eq!(pg_duration("24d"), Ok(Duration::from_secs(24 * 86400)));
        assert!(pg_duration("30d")
            .unwrap_err()
            .contains("PostgreSQL timeout"));
    }

    #[test]
    fn run_migrations_values() {
        assert_eq!(run_migrations(None), Ok(true));
        for on in ["1", "true", "YES", "On"] {
            assert_eq!(run_migrations(Some(on)), Ok(true), "{on}");
        }
        for off in ["0", "false", "No", "OFF", " 0 "] {
            assert_eq!(run_migrations(Some(off)), Ok(false), "{off}");
        }
        for bad in ["", "2", "maybe", "enabled"] {
            assert!(run_migrations(Some(bad))
                .unwrap_err()
                .contains("RUN_MIGRATIONS"));
        }
    }

    #[test]
    fn switches_are_yes_or_no() {
        assert_eq!(switch(" Yes"), Ok(true));
        assert_eq!(switch("0"), Ok(false));
        assert!(switch("maybe").unwrap_err().contains("1/true/yes/on"));
        assert!(switch("").is_err());
    }

    #[test]
    fn settings_are_name_equals_value() {
        assert_eq!(
            setting("tcp_keepalives_idle=30"),
            Ok(("tcp_keepalives_idle".into(), "30".into()))
        );
        assert_eq!(
            setting("App.Flag = a b"),
            Ok(("app.flag".into(), "a b".into()))
        );
        assert_eq!(
            setting("work_mem='64MB'"),
            Ok(("work_mem".into(), "'64MB'".into()))
        );
        assert_eq!(
            setting("my_ext.Sub.x$1=on"),
            Ok(("my_ext.sub.x$1".into(), "on".into()))
        );
        assert_eq!(setting("x="), Ok(("x".into(), "".into())));
        for bad in [
            "novalue", "=1", "a;b=1", "1x=2", "a b=1", "$a=1", "a.=1", ".a=1", "a..b=1", "a.1b=1",
            "a-b=1", "é=1",
        ] {
            let err = setting(bad).unwrap_err();
            assert!(err.contains("not"), "{bad}: {err}");
        }
        assert!(setting(&format!("{}=1", "a".repeat(64)))
            .unwrap_err()
            .contains("is not a setting name"));
        assert!(setting("app.x=a\0b").unwrap_err().contains("NUL"));
        let long = format!("search_path={}", "s,".repeat(MAX_SETTING_VALUE));
        assert!(setting(&long).unwrap_err().contains("too long"));
        let longest = format!("search_path={}", "s".repeat(MAX_SETTING_VALUE));
        assert!(setting(&longest).is_ok());
    }

    #[test]
    fn shorten_counts_characters_not_bytes() {
        assert_eq!(shorten("ééé", 3), "ééé");
        assert_eq!(shorten("éééé", 3), "ééé…");
    }
}
