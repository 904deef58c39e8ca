//! Other tools' annotations that matter to a file miglock runs whole. To
//! PostgreSQL `-- +goose Down` and `-- migrate:down` are comments, so a
//! goose or dbmate file renamed to `V<n>__…` would run its Down section
//! right after its Up section, in the same transaction: the migration
//! recorded as applied, its tables dropped again. Such a file is refused
//! before anything runs (see `ForbiddenKind::DownSection`).

/// The tool whose Down section `comment` (a `--` comment that starts its
/// line, from its `--` to the end of the line) opens: goose's
/// `-- +goose Down` (goose trims the line and is case-sensitive; any case is
/// taken here, the safer way) or dbmate's `-- migrate:down`.
pub fn down_marker(comment: &str) -> Option<&'static str> {
    let rest = comment.strip_prefix("--")?.trim_start();
    if let Some(annotation) = strip_prefix_ignore_case(rest, "+goose") {
        let word = annotation.trim_start();
        if annotation.len() > word.len() && first_word(word).eq_ignore_ascii_case("down") {
            return Some("goose");
        }
    }
    if let Some(annotation) = strip_prefix_ignore_case(rest, "+migrate") {
        let word = annotation.trim_start();
        if annotation.len() > word.len() && first_word(word).eq_ignore_ascii_case("down") {
            return Some("sql-migrate");
        }
    }
    if rest.trim_end().eq_ignore_ascii_case("down migration") {
        return Some("node-pg-migrate");
    }
    let word = first_word(strip_prefix_ignore_case(rest, "migrate:")?);
    word.eq_ignore_ascii_case("down").then_some("dbmate")
}

/// `text` without `prefix`, compared without regard to ASCII case (no
/// copy: this runs on every comment that starts a line).
fn strip_prefix_ignore_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn first_word(text: &str) -> &str {
    text.split(|c: char| c.is_whitespace()).next().unwrap_or("")
}

/// The refusal of a Down section that starts on `line`.
pub fn refusal(tool: &str, line: usize) -> String {
    let marker = match tool {
        "goose" => "-- +goose Down",
        "sql-migrate" => "-- +migrate Down",
        "node-pg-migrate" => "-- Down Migration",
        _ => "-- migrate:down",
    };
    let layout = if matches!(tool, "goose" | "dbmate") {
        format!(", or run the folder as {tool}'s (--layout {tool}), whose Down sections miglock down runs")
    } else {
        String::new()
    };
    format!(
        "line {line}: {marker} starts {tool}'s Down section, which miglock would run right after \
         the Up section (to PostgreSQL the marker is a comment): remove the Down section from the \
         file (put a reversal in a new migration){layout}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_markers_of_goose_and_dbmate_are_found() {
        for (comment, tool) in [
            ("-- +goose Down", Some("goose")),
            ("--+goose Down", Some("goose")),
            ("-- +goose down -- why", Some("goose")),
            ("-- +goose Down\r", Some("goose")),
            ("-- migrate:down", Some("dbmate")),
            ("--migrate:down transaction:false", Some("dbmate")),
            ("-- +goose Up", None),
            ("-- +goose StatementBegin", None),
            ("-- +gooseDown", None),
            ("-- +goose Downgrade", None),
            ("-- migrate:up", None),
            ("-- migrate:downtime", None),
            ("-- roll it down later", None),
            ("-- +migrate Down", Some("sql-migrate")),
            ("-- +migrate Up", None),
            ("-- Down Migration", Some("node-pg-migrate")),
            ("-- Down migrations are elsewhere", None),
        ] {
            assert_eq!(down_marker(comment), tool, "{comment:?}");
        }
    }
}
