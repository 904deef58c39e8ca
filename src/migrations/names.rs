//! refinery's file-name rule, `V<version>__<name>.sql`, checked strictly:
//! a refused name comes with every reason it fails, so one rename fixes it.

/// Checks a file name against `V<version>__<name>.sql` as refinery reads
/// it (name made of word characters), with an ASCII version from 1 to
/// 2147483647 (refinery's history column is INT4). A refused name comes
/// with every reason it fails, so one rename fixes it.
pub fn parse_file_name(file_name: &str) -> Result<(i32, &str), String> {
    match check_file_name(file_name) {
        (Some(parsed), reasons) if reasons.is_empty() => Ok(parsed),
        (_, reasons) => Err(format!("{} ({FORM})", reasons.join("; "))),
    }
}

const FORM: &str = "expected V<version>__<name>.sql, e.g. V1__create_users.sql";

/// The version a refused name still gives (`V3__add-users.sql`: 3), if
/// its version part is good: what its file would be once renamed.
pub fn version_in(file_name: &str) -> Option<i32> {
    check_file_name(file_name).0.map(|(version, _)| version)
}

/// The version and name when the name is good, and every reason it is not.
/// Each part is checked even after an earlier one failed.
fn check_file_name(file_name: &str) -> (Option<(i32, &str)>, Vec<String>) {
    let mut reasons = Vec::new();
    let stem = match file_name.strip_suffix(".sql") {
        Some(stem) => stem,
        None => {
            reasons.push("the extension must be .sql in lower case".to_string());
            // `.SQL` and the like are ASCII, so the cut is on a boundary.
            match file_name.len().checked_sub(4) {
                Some(end) if has_sql_extension(file_name) => &file_name[..end],
                _ => file_name,
            }
        }
    };
    let rest = if let Some(rest) = stem.strip_prefix('V') {
        rest
    } else if let Some(name) = stem.strip_prefix("R__") {
        reasons.push(
            "repeatable (R__) migrations are not supported: make it a versioned V<version>__ file"
                .into(),
        );
        check_name(name, &mut reasons);
        return (None, reasons);
    } else if let Some(rest) = stem.strip_prefix('U') {
        reasons.push(
            "unversioned (U) migrations are not supported: give it a V<version> prefix".into(),
        );
        rest
    } else {
        reasons.push("the name must start with V (upper case)".into());
        // `v1__x`, `|1__x`: one stray character where the V belongs.
        let mut chars = stem.chars();
        match (chars.next(), chars.clone().next()) {
            (Some(_), Some(next)) if next.is_ascii_digit() => chars.as_str(),
            _ => stem,
        }
    };
    let Some((version, name)) = split_dunder(rest) else {
        reasons.push("no \"__\" between version and name".into());
        return (None, reasons);
    };
    let version = check_version(version, &mut reasons);
    check_name(name, &mut reasons);
    (version.map(|v| (v, name)), reasons)
}

fn check_version(version: &str, reasons: &mut Vec<String>) -> Option<i32> {
    if version.is_empty() {
        reasons
            .push("the version between V and \"__\" is missing: it is not a whole number".into());
        return None;
    }
    if !version.bytes().all(|b| b.is_ascii_digit()) {
        reasons.push(format!(
            "the version {version:?} is not a whole number (digits 0-9 only)"
        ));
        return None;
    }
    match version.parse::<u64>() {
        Ok(0) => {
            reasons.push("version 0 is not allowed: versions start at 1".into());
            None
        }
        Ok(v) if v <= i32::MAX as u64 => Some(v as i32),
        _ => {
            reasons.push(format!(
                "the version {version} is too large (at most {})",
                i32::MAX
            ));
            None
        }
    }
}

fn check_name(name: &str, reasons: &mut Vec<String>) {
    if name.is_empty() {
        reasons.push("the name after \"__\" is empty".into());
        return;
    }
    // refinery's `\w`: Unicode letters, marks, digits and connector punctuation.
    let mut bad: Vec<char> = Vec::new();
    for c in name.chars() {
        if !is_word_char(c) && !bad.contains(&c) {
            bad.push(c);
        }
    }
    if !bad.is_empty() {
        let list: Vec<String> = bad.iter().map(|c| format!("{c:?}")).collect();
        reasons.push(format!(
            "the name contains {}; use letters, digits and _ only",
            list.join(", ")
        ));
    }
}

/// Whether a refused name looks like one of Flyway's (`V1.0.10__x.sql`,
/// `V2_1__x.sql`, `R__x.sql`, `U1__x.sql`): such a set is usually being
/// moved over from Flyway whole, and wants a word on converting it.
pub(super) fn is_flyway_style(file_name: &str) -> bool {
    let stem = file_name
        .get(..file_name.len().saturating_sub(4))
        .unwrap_or(file_name);
    if stem.starts_with("R__") {
        return true;
    }
    let Some(rest) = stem.strip_prefix('V').or_else(|| stem.strip_prefix('U')) else {
        return false;
    };
    let Some((version, _)) = split_dunder(rest) else {
        return false;
    };
    let undo = stem.starts_with('U');
    let dotted = version.contains(['.', '_'])
        && version
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'_');
    dotted || (undo && !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether a refused name looks like goose's, dbmate's or sqlx's
/// (`00001_init.sql`, `20210425153745_create_users.sql`): `Some(true)` for
/// golang-migrate's (and sqlx's reversible) `.up.sql`/`.down.sql` pairs,
/// `Some(false)` for the others.
pub(super) fn is_other_tools_style(file_name: &str) -> Option<bool> {
    let stem = file_name.strip_suffix(".sql")?;
    let digits = stem.bytes().take_while(u8::is_ascii_digit).count();
    // `1__a.sql` is refinery's name without its V, not another tool's.
    if digits == 0
        || !stem[digits..].starts_with('_')
        || stem[digits..].starts_with("__")
        || stem.len() == digits + 1
    {
        return None;
    }
    Some(stem.ends_with(".up") || stem.ends_with(".down"))
}

/// refinery's `\w` (the regex crate's Unicode word class: letters, marks,
/// decimal digits, connector punctuation), from the table that class is
/// built from: the regex engine itself was a fifth of the binary, for one
/// character class.
fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    regex_syntax::try_is_word_character(c).unwrap_or(false)
}

pub fn has_sql_extension(file_name: &str) -> bool {
    let bytes = file_name.as_bytes();
    bytes.len() >= 4 && bytes[bytes.len() - 4..].eq_ignore_ascii_case(b".sql")
}

/// Where `pattern` first occurs in `text`, by bytes. For the short texts
/// read a name or a line at a time, cheaper than `str::find` with a string
/// pattern, which sets up a two-way searcher on each call: for the `__` of
/// 400 names, 0.25 M of a no-op run's 7.8 M instructions.
pub fn find_short(text: &str, pattern: &str) -> Option<usize> {
    if pattern.is_empty() {
        return Some(0);
    }
    text.as_bytes()
        .windows(pattern.len())
        .position(|window| window == pattern.as_bytes())
}

/// Where `text` has its first `__`, refinery's and Flyway's separator of
/// version and name (see [`find_short`]).
pub fn dunder(text: &str) -> Option<usize> {
    find_short(text, "__")
}

/// `text` split at its first `__` (see [`dunder`]), without it.
pub fn split_dunder(text: &str) -> Option<(&str, &str)> {
    // `_` is ASCII: both sides end on a character boundary.
    dunder(text).map(|at| (&text[..at], &text[at + 2..]))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dunder_splits_at_the_first_double_underscore_as_split_once_does() {
        for text in [
            "1__a",
            "__",
            "1___a",
            "a_b__c__d",
            "1_a",
            "",
            "_",
            "é__ü",
            "x__",
        ] {
            assert_eq!(split_dunder(text), text.split_once("__"), "{text:?}");
            assert_eq!(dunder(text), text.find("__"), "{text:?}");
            for pattern in ["", "-", "--", "+goose", "é", "x__y"] {
                assert_eq!(
                    find_short(text, pattern),
                    text.find(pattern),
                    "{text:?} {pattern:?}"
                );
            }
        }
    }

    #[test]
    fn file_names_accepted_as_refinery_reads_them() {
        assert_eq!(parse_file_name("V1__init.sql"), Ok((1, "init")));
        assert_eq!(
            parse_file_name("V0010__add_users_2.sql"),
            Ok((10, "add_users_2"))
        );
        assert_eq!(
            parse_file_name("V2147483647__max.sql"),
            Ok((i32::MAX, "max"))
        );
        assert_eq!(
            parse_file_name("V3__créer_table.sql"),
            Ok((3, "créer_table"))
        );
    }

    #[test]
    fn file_names_refused_with_a_reason() {
        let cases = [
            ("V1_init.sql", "__"),
            ("V1__init.SQL", "lower case"),
            ("v1__init.sql", "start with V"),
            ("U1__init.sql", "unversioned"),
            ("|1__init.sql", "start with V"),
            ("V__init.sql", "whole number"),
            ("Vx__init.sql", "whole number"),
            ("V1.5__init.sql", "whole number"),
            ("R__init.sql", "repeatable"),
            ("V١__init.sql", "whole number"),
            ("V0__init.sql", "version 0"),
            ("V2147483648__big.sql", "too large"),
            ("V99999999999999999999999__big.sql", "too large"),
            ("V1__.sql", "empty"),
            ("V1__add-users.sql", "'-'"),
            ("V1__add users.sql", "' '"),
            ("V1__a.b.sql", "'.'"),
        ];
        for (name, why) in cases {
            let err = parse_file_name(name).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        }
    }

    #[test]
    fn a_bad_name_gets_every_reason_at_once() {
        let err = parse_file_name("V1.0.10__add-users to.sql").unwrap_err();
        assert!(err.contains("\"1.0.10\" is not a whole number"), "{err}");
        assert!(err.contains("'-', ' '"), "{err}");
        let err = parse_file_name("V99999999999__add-users.sql").unwrap_err();
        assert!(err.contains("too large") && err.contains("'-'"), "{err}");
        let err = parse_file_name("v0__.SQL").unwrap_err();
        for why in ["lower case", "start with V", "version 0", "empty"] {
            assert!(err.contains(why), "{why}: {err}");
        }
        let err = parse_file_name("R__views-all.sql").unwrap_err();
        assert!(err.contains("repeatable") && err.contains("'-'"), "{err}");
        assert_eq!(err.matches("expected V<version>").count(), 1, "{err}");
    }

    #[test]
    fn other_tools_names_are_told_apart() {
        assert_eq!(is_other_tools_style("00001_init.sql"), Some(false));
        assert_eq!(
            is_other_tools_style("20210425153745_create_users.sql"),
            Some(false)
        );
        assert_eq!(is_other_tools_style("0001_init.up.sql"), Some(true));
        assert_eq!(is_other_tools_style("0001_init.down.sql"), Some(true));
        for not_theirs in [
            "V1__a.sql",
            "1__a.sql",
            "_a.sql",
            "1_.sql",
            "init.sql",
            "1_a.txt",
        ] {
            assert_eq!(is_other_tools_style(not_theirs), None, "{not_theirs}");
        }
    }

    #[test]
    fn flyway_style_names_are_told_apart() {
        for flyway in ["V1.0.10__a.sql", "V2_1__b.sql", "R__c.sql", "U3__d.sql"] {
            assert!(is_flyway_style(flyway), "{flyway}");
        }
        for not_flyway in [
            "v1__a.sql",
            "V1__a-b.sql",
            "V1_a.sql",
            "Vx__a.sql",
            "U__a.sql",
        ] {
            assert!(!is_flyway_style(not_flyway), "{not_flyway}");
        }
    }

    #[test]
    fn refinery_agrees_with_the_names_accepted() {
        for name in ["V1__init", "V0010__add_users_2", "V3__créer_table"] {
            let m = refinery::Migration::unapplied(name, "select 1").unwrap();
            let file_name = format!("{name}.sql");
            let (v, n) = parse_file_name(&file_name).unwrap();
            assert_eq!((m.version(), m.name()), (v, n));
        }
    }
}
