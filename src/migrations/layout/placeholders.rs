//! Flyway's `${placeholders}`, replaced as Flyway replaces them: anywhere
//! in the text (comments and strings too), names in any case, and an
//! unknown name an error, never left as it is. A `$` not followed by `{`
//! takes the next character with it unread, so `$${x}` stays as it is, as
//! in Flyway.
//!
//! Values come from `--placeholder NAME=VALUE` (`MIGLOCK_PLACEHOLDERS`),
//! and Flyway's built-in `flyway:` ones that miglock can know without a
//! round trip: `flyway:table`, `flyway:database`, `flyway:user`,
//! `flyway:defaultSchema` (the `--table` schema, when it names one),
//! `flyway:timestamp` (in UTC), `flyway:filename`,
//! `flyway:workingDirectory` and `flyway:environment`.

use std::collections::BTreeMap;

/// The values a run replaces placeholders with, names lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placeholders {
    values: BTreeMap<String, String>,
}

/// The built-in placeholder named after each file.
pub const FILENAME: &str = "flyway:filename";

impl Placeholders {
    /// The values given, and the built-ins.
    pub fn new(
        given: &[(String, String)],
        table: &str,
        schema: Option<&str>,
        database: Option<&str>,
        user: Option<&str>,
    ) -> Placeholders {
        let mut values = BTreeMap::new();
        // Flyway's is the JVM's local time; a container's is usually UTC.
        let now = time::OffsetDateTime::now_utc();
        let timestamp = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        for (name, value) in [
            ("flyway:table", Some(table)),
            ("flyway:database", database),
            ("flyway:user", user),
            ("flyway:timestamp", Some(&timestamp)),
            ("flyway:workingdirectory", Some(&cwd)),
            ("flyway:environment", Some("default")),
            ("flyway:defaultschema", schema),
        ] {
            if let Some(value) = value {
                values.insert(name.to_string(), value.to_string());
            }
        }
        for (name, value) in given {
            values.insert(name.to_lowercase(), value.clone());
        }
        Placeholders { values }
    }

    /// The value of `name` (any case) for the file `file_name`.
    fn get<'a>(&'a self, name: &str, file_name: &'a str) -> Option<&'a str> {
        let name = name.to_lowercase();
        if name == FILENAME {
            return Some(file_name);
        }
        self.values.get(&name).map(String::as_str)
    }

    /// Whether `name` has a value.
    pub fn knows(&self, name: &str) -> bool {
        self.get(name, "").is_some()
    }

    /// `text` with every placeholder replaced, or the first without a value.
    pub fn replace(&self, text: &str, file_name: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            if c != '$' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some((_, '{')) => {
                    let start = at + 2;
                    let Some(len) = text[start..].find('}') else {
                        return Err(format!(
                            "an unterminated placeholder ${{{}",
                            crate::parse::shorten(&text[start..], 40)
                        ));
                    };
                    let name = &text[start..start + len];
                    let value = self.get(name, file_name).ok_or_else(|| unset(name))?;
                    out.push_str(value);
                    while chars.next_if(|(i, _)| *i <= start + len).is_some() {}
                }
                // Flyway's reader emits the character after a lone `$`
                // without looking at it again.
                Some((_, next)) => {
                    out.push('$');
                    out.push(next);
                }
                None => out.push('$'),
            }
        }
        Ok(out)
    }
}

/// The message for a placeholder without a value.
pub fn unset(name: &str) -> String {
    format!(
        "the placeholder ${{{name}}} has no value: give it with --placeholder {name}=VALUE (or \
         MIGLOCK_PLACEHOLDERS=\"{name}=VALUE\")"
    )
}

/// The placeholders of a text fed a chunk at a time, each once with the
/// line it starts on, found as [`Placeholders::replace`] finds them:
/// however long the line, wherever a chunk ends.
#[derive(Debug, Default)]
pub struct Scan {
    line: u64,
    state: State,
    found: Vec<(String, u64)>,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Text,
    /// Just past a `$`.
    Dollar,
    /// Inside `${…`: the name so far and its line.
    Name(String, u64),
}

impl Scan {
    pub fn new() -> Scan {
        Scan {
            line: 1,
            ..Scan::default()
        }
    }

    pub fn feed(&mut self, text: &str) {
        for c in text.chars() {
            self.state = match std::mem::take(&mut self.state) {
                State::Text if c == '$' => State::Dollar,
                State::Dollar if c == '{' => State::Name(String::new(), self.line),
                // A lone `$` takes the next character unread.
                State::Text | State::Dollar => State::Text,
                State::Name(name, line) if c == '}' => {
                    self.add(name, line);
                    State::Text
                }
                State::Name(mut name, line) => {
                    // A name is short; what runs on is an unterminated one.
                    if name.len() < 200 {
                        name.push(c);
                    }
                    State::Name(name, line)
                }
            };
            if c == '\n' {
                self.line += 1;
            }
        }
    }

    fn add(&mut self, name: String, line: u64) {
        if !self.found.iter().any(|(n, _)| *n == name) {
            self.found.push((name, line));
        }
    }

    /// Each name once, with its first line (an unterminated one too: it
    /// has no value).
    pub fn finish(mut self) -> Vec<(String, u64)> {
        if let State::Name(name, line) = std::mem::take(&mut self.state) {
            self.add(name, line);
        }
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Placeholders {
        Placeholders::new(
            &[
                ("Schema".into(), "app".into()),
                ("empty".into(), String::new()),
            ],
            "flyway_schema_history",
            None,
            Some("shop"),
            Some("deploy"),
        )
    }

    #[test]
    fn placeholders_are_replaced_as_flyway_replaces_them() {
        let v = values();
        assert_eq!(
            v.replace("CREATE TABLE ${schema}.t (); -- in ${SCHEMA}", "V1__x.sql")
                .unwrap(),
            "CREATE TABLE app.t (); -- in app"
        );
        assert_eq!(
            v.replace(
                "select '${flyway:database}', '${flyway:filename}'",
                "V2__y.sql"
            )
            .unwrap(),
            "select 'shop', 'V2__y.sql'"
        );
        assert_eq!(v.replace("a${empty}b", "f").unwrap(), "ab");
        // A lone `$` takes the next character unread: `$${x}` stays.
        assert_eq!(v.replace("$${schema}", "f").unwrap(), "$${schema}");
        assert_eq!(v.replace("$$${schema}$$", "f").unwrap(), "$$app$$");
        assert_eq!(v.replace("$1 $a ${schema}", "f").unwrap(), "$1 $a app");
        assert!(v
            .replace("${nope}", "f")
            .unwrap_err()
            .contains("${nope} has no value"));
        assert!(v
            .replace("${schema", "f")
            .unwrap_err()
            .contains("unterminated"));
        assert!(!v.knows("flyway:defaultSchema"));
        assert!(v.knows("flyway:filename"));
    }

    #[test]
    fn the_stream_finds_what_replace_finds_wherever_chunks_end() {
        let text = format!(
            "{}${{env}} $${{not}}\nx ${{a}} ${{env}}\n${{cut",
            "y".repeat(5000)
        );
        for step in [1, 2, 7, 4096, 10_000] {
            let mut scan = Scan::new();
            let chars: Vec<char> = text.chars().collect();
            for chunk in chars.chunks(step) {
                scan.feed(&chunk.iter().collect::<String>());
            }
            assert_eq!(
                scan.finish(),
                [
                    ("env".to_string(), 1),
                    ("a".to_string(), 2),
                    ("cut".to_string(), 3)
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn the_names_a_line_holds() {
        let names = |text: &str| -> Vec<String> {
            let mut scan = Scan::new();
            scan.feed(text);
            scan.finish().into_iter().map(|(name, _)| name).collect()
        };
        assert_eq!(names("${a} $${b} ${c} ${d"), ["a", "c", "d"]);
        assert!(names("$$ body $$").is_empty());
    }
}
