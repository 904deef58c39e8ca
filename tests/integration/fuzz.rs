//! Property tests ("fuzzing") of every parser that reads untrusted text:
//! migration file names and versions, whole migration folders, durations,
//! `RUN_MIGRATIONS`, `--set`, `--table`, `sslmode`, connection strings in
//! both of libpq's forms, the libpq environment, targets files, and the
//! password file.
//!
//! Each property runs 256 generated cases by default (a few seconds in
//! all), so it runs on every `cargo test`. For a longer campaign (20,000
//! cases per property take about two minutes on 2 cores):
//!
//! ```sh
//! PROPTEST_CASES=20000 cargo test --test integration fuzz::
//! ```
//!
//! Failing cases are saved in `tests/proptest-regressions/fuzz.txt` and
//! replayed first.
//!
//! The properties are of three kinds: nothing panics on any input; what is
//! accepted is what it should be (round trips, bounds, agreement with
//! refinery); and no message ever echoes a password.
//!
//! The statement splitter and the classifier have theirs in
//! `files::splitting`, beside the splitter's check against the server.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;

use miglock::testing::{
    parse, parse_file_name, parse_targets, pgpass, sql, take_params, ConnectTarget as Target,
    HistoryTable, Identity, MigrationSet, ProblemKind, SslMode,
};
use miglock::Version;

/// `parse::duration`'s documented bound.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
const TLS_PARAMS: &[&str] = &["sslmode", "sslrootcert"];
/// Every variable `Target::resolve` reads.
const LIBPQ_VARS: &[&str] = &[
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGPASSFILE",
    "HOME",
];

/// Strings shaped like migration file names, with the near misses that
/// matter (lower-case v, U, `|`, one or three underscores, signs, dots,
/// dashes, non-ASCII digits and letters, upper-case extensions), mixed with
/// arbitrary text.
fn file_name_like() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        8 => Just("V"),
        1 => Just("v"),
        1 => Just("U"),
        1 => Just("|"),
        1 => Just(""),
    ];
    let version = prop_oneof![
        6 => "[0-9]{1,10}",
        1 => "0{1,3}",
        1 => "[0-9]{11,25}",
        1 => "[+-][0-9]{1,3}",
        1 => "[0-9]\\.[0-9]",
        1 => "[٣१]{1,2}",
        1 => Just(String::new()),
    ];
    let separator = prop_oneof![
        8 => Just("__"),
        1 => Just("_"),
        1 => Just("___"),
        1 => Just(""),
    ];
    let name = prop_oneof![
        6 => "[a-zA-Z0-9_]{1,12}",
        3 => "\\w{1,8}",
        3 => "[a-z]{0,3}[éß²½①Ⅻ٣\u{301}\u{203F}. -][a-z_]{0,3}",
        1 => "\\PC{0,8}",
    ];
    let extension = prop_oneof![
        8 => Just(".sql"),
        1 => Just(".SQL"),
        1 => Just(".rs"),
        1 => Just(""),
    ];
    prop_oneof![
        6 => (prefix, version, separator, name, extension)
            .prop_map(|(p, v, s, n, e)| format!("{p}{v}{s}{n}{e}")),
        1 => any::<String>(),
    ]
}

/// An environment for `Target::resolve` built from a map.
fn env_of(vars: &BTreeMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| vars.get(name).cloned()
}

/// Arbitrary values for some of the libpq variables; never a password file
/// or HOME (so no real `~/.pgpass` or `~/.postgresql` is read) unless
/// asked.
fn libpq_env() -> impl Strategy<Value = BTreeMap<String, String>> {
    let value = prop_oneof![
        "[a-z0-9./-]{0,12}",
        "[0-9]{1,6}",
        Just(String::new()),
        any::<String>(),
    ];
    proptest::collection::btree_map(
        proptest::sample::select(&LIBPQ_VARS[..LIBPQ_VARS.len() - 2]).prop_map(str::to_string),
        value,
        0..6,
    )
}

/// A password that is easy to search for in a message (a marker no parser
/// would produce on its own) plus characters that need percent-encoding.
fn password() -> impl Strategy<Value = (String, String)> {
    ("[a-z0-9]{6,10}", "[ @:/?#&=%'\"\\\\é+]{0,4}").prop_map(|(core, special)| {
        let marker = format!("Pw{core}Q");
        (format!("{marker}{special}"), marker)
    })
}

proptest! {
    // ---------------------------------------------------------------------
    // Migration file names and versions
    // ---------------------------------------------------------------------

    /// Never panics; an accepted name has a version from 1 to 2147483647,
    /// round-trips through its canonical spelling, and is read by refinery
    /// as the same version (and, see below, the same name).
    #[test]
    fn file_names_accepted_are_read_alike_by_refinery(name in file_name_like()) {
        if let Ok((version, parsed_name)) = parse_file_name(&name) {
            prop_assert!(version >= 1);
            prop_assert!(name.starts_with('V') && name.ends_with(".sql"));
            let canonical = format!("V{version}__{parsed_name}.sql");
            prop_assert_eq!(parse_file_name(&canonical), Ok((version, parsed_name)));
            let stem = &name[..name.len() - ".sql".len()];
            // miglock accepts exactly refinery's `\w` (letters, marks, decimal
            // digits, connector punctuation; not `²` or `½`), so refinery
            // reads every accepted name whole (the saved case in
            // tests/proptest-regressions/fuzz.txt replays `V1__a².sql`).
            match refinery::Migration::unapplied(stem, "SELECT 1") {
                Ok(migration) => {
                    prop_assert_eq!(migration.version(), version);
                    prop_assert_eq!(migration.name(), parsed_name);
                }
                Err(e) => prop_assert!(false, "refinery refuses {:?}: {}", name, e),
            }
        }
    }

    /// Every well-formed name is accepted with its version and name, with
    /// or without leading zeros; one past i32 is refused as too large.
    #[test]
    fn well_formed_file_names_are_accepted(
        version in 1..=i32::MAX,
        zeros in 0usize..3,
        name in "[a-zA-Z_][a-zA-Z0-9_éßü]{0,20}",
    ) {
        let file = format!("V{}{version}__{name}.sql", "0".repeat(zeros));
        prop_assert_eq!(parse_file_name(&file), Ok((version, name.as_str())));
        let too_large = format!("V{}__{name}.sql", i64::from(version) + i64::from(i32::MAX));
        let err = parse_file_name(&too_large).unwrap_err();
        prop_assert!(err.contains("too large"), "{}", err);
    }

    /// A whole folder of generated files: loading never panics; a set that
    /// loads has strictly increasing versions and only well-named files; a
    /// refused set names a file (or the folder) in every problem.
    #[test]
    fn migration_folders_load_or_list_their_problems(
        files in proptest::collection::vec(
            (file_name_like(), proptest::collection::vec(any::<u8>(), 0..40)),
            0..6,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut written = std::collections::BTreeSet::new();
        for (name, bytes) in &files {
            // Names the file system cannot hold are not the loader's business.
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0'])
                || name.len() > 200
            {
                continue;
            }
            if fs::write(dir.path().join(name), bytes).is_ok() {
                written.insert(name.clone());
            }
        }
        match MigrationSet::load(dir.path()) {
            Ok(set) => {
                let versions: Vec<&Version> = set.migrations.iter().map(|m| &m.id.version).collect();
                prop_assert!(versions.windows(2).all(|w| w[0] < w[1]), "{:?}", versions);
                for m in &set.migrations {
                    let file = m.path.file_name().unwrap().to_str().unwrap();
                    prop_assert_eq!(
                        parse_file_name(file).map(|(v, _)| Version::from(v)),
                        Ok(m.id.version.clone())
                    );
                    let sql = fs::read_to_string(&m.path).unwrap();
                    let script = sql.trim_start_matches('\u{feff}');
                    prop_assert!(!script.trim().is_empty());
                    // What miglock records is what refinery computes, so a
                    // history written by either is recognised by the other.
                    let stem = &file[..file.len() - ".sql".len()];
                    let theirs = refinery::Migration::unapplied(stem, &sql).unwrap();
                    prop_assert_eq!(Version::from(theirs.version()), m.id.version.clone());
                    prop_assert_eq!(theirs.name(), m.id.name.as_str());
                    prop_assert_eq!(theirs.checksum(), m.checksum);
                }
                let sql_files = written
                    .iter()
                    .filter(|n| n.to_ascii_lowercase().ends_with(".sql"))
                    .count();
                prop_assert_eq!(set.migrations.len(), sql_files, "{:?}", written);
            }
            Err(problems) => {
                prop_assert!(!problems.0.is_empty());
                for p in &problems.0 {
                    prop_assert!(p.file.is_some() || p.kind == ProblemKind::Missing, "{:?}", p);
                    prop_assert!(!p.message.is_empty());
                }
                prop_assert!(problems.to_string().starts_with("the migration set is unsafe to run"));
            }
        }
    }

    // ---------------------------------------------------------------------
    // Durations, RUN_MIGRATIONS, --set
    // ---------------------------------------------------------------------

    /// Never panics; whatever is accepted is at most 366 days.
    #[test]
    fn durations_never_panic_and_stay_bounded(
        text in prop_oneof![
            "[0-9. ]{0,25}(ns|us|µs|ms|s|sec|m|min|h|hours|d|days|w|M|y|parsecs)?( [0-9]{1,4}(s|m|h))?",
            "-?[0-9]{0,30}(\\.[0-9]{0,30})?(e[0-9]{1,3})?",
            any::<String>(),
        ],
    ) {
        match parse::duration(&text) {
            Ok(d) => prop_assert!(d <= MAX_DURATION, "{:?} -> {:?}", text, d),
            Err(e) => prop_assert!(e.contains("duration"), "{:?}: {}", text, e),
        }
    }

    /// `<n><unit>` means n units; beyond the bound it is "too long".
    #[test]
    fn durations_with_units_mean_what_they_say(
        n in 0u64..2_000_000,
        (unit, size) in proptest::sample::select(vec![
            ("ms", Duration::from_millis(1)),
            ("s", Duration::from_secs(1)),
            ("m", Duration::from_secs(60)),
            ("h", Duration::from_secs(3600)),
            ("d", Duration::from_secs(86400)),
        ]),
        space in proptest::bool::ANY,
    ) {
        let text = format!("{n}{}{unit}", if space { " " } else { "" });
        let expected = size * u32::try_from(n).unwrap();
        match parse::duration(&text) {
            Ok(d) => prop_assert_eq!(d, expected),
            Err(e) => {
                prop_assert!(expected > MAX_DURATION, "{:?} refused: {}", text, e);
                prop_assert!(e.contains("too long"), "{}", e);
            }
        }
    }

    /// A bare number is seconds (a decimal one to the millisecond here),
    /// and what humantime prints for a duration reads back as it.
    #[test]
    fn bare_seconds_and_formatted_durations_read_back(
        seconds in 0u64..40_000_000,
        millis in 0u32..1000,
    ) {
        let whole = Duration::from_secs(seconds);
        let bare = parse::duration(&seconds.to_string());
        if whole <= MAX_DURATION {
            prop_assert_eq!(bare, Ok(whole));
            let decimal = parse::duration(&format!("{seconds}.{millis:03}")).unwrap();
            let expected = whole + Duration::from_millis(millis.into());
            let off = decimal.abs_diff(expected);
            prop_assert!(off < Duration::from_micros(10), "{:?} vs {:?}", decimal, expected);
            let formatted = humantime::format_duration(expected).to_string();
            if expected <= MAX_DURATION {
                prop_assert_eq!(parse::duration(&formatted), Ok(expected), "{}", formatted);
            }
        } else {
            prop_assert!(bare.unwrap_err().contains("too long"));
        }
    }

    /// Exactly eight words (any case, trimmed) are understood; anything
    /// else is refused with a message naming the variable, cut short.
    #[test]
    fn run_migrations_understands_eight_words_only(
        value in prop_oneof![
            "[ ]?(1|0|true|false|yes|no|on|off|TRUE|Off|2|enabled|y|n|)[ ]?",
            any::<String>(),
        ],
    ) {
        let word = value.trim().to_ascii_lowercase();
        match parse::run_migrations(Some(&value)) {
            Ok(true) => prop_assert!(["1", "true", "yes", "on"].contains(&word.as_str())),
            Ok(false) => prop_assert!(["0", "false", "no", "off"].contains(&word.as_str())),
            Err(e) => {
                prop_assert!(
                    !["1", "true", "yes", "on", "0", "false", "no", "off"].contains(&word.as_str())
                );
                prop_assert!(e.starts_with("RUN_MIGRATIONS="), "{}", e);
                prop_assert!(e.chars().count() < 200, "{}", e);
            }
        }
    }

    /// `--set NAME=VALUE`: an accepted name is a plain (or dotted custom)
    /// setting name, so it can only ever reach SQL as a quoted literal;
    /// an accepted value holds no NUL and is not absurdly long.
    #[test]
    fn settings_accept_only_setting_names(
        text in prop_oneof![
            "[a-zA-Z_.$;' \"-]{0,12}=?\\PC{0,12}",
            any::<String>(),
        ],
    ) {
        if let Ok((name, value)) = parse::setting(&text) {
            prop_assert!(!name.is_empty() && name.len() <= 63);
            for part in name.split('.') {
                prop_assert!(part.starts_with(|c: char| c.is_ascii_lowercase() || c == '_'));
                prop_assert!(part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$'));
            }
            prop_assert!(!value.contains('\0') && value.len() <= parse::MAX_SETTING_VALUE);
            let (_, raw_value) = text.split_once('=').unwrap();
            prop_assert_eq!(value, raw_value.trim());
        }
    }

    /// What reaches SQL as a literal reads back as the value (without
    /// control characters) and cannot end the literal early.
    #[test]
    fn sql_literals_read_back(value in any::<String>()) {
        let literal = sql::literal(&value);
        prop_assert!(literal.starts_with("E'") && literal.ends_with('\''));
        let inner = &literal[2..literal.len() - 1];
        let mut decoded = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    // Inside the literal a quote only ever comes doubled.
                    prop_assert_eq!(chars.next(), Some('\''), "{}", literal);
                    decoded.push('\'');
                }
                '\\' => {
                    prop_assert_eq!(chars.next(), Some('\\'), "{}", literal);
                    decoded.push('\\');
                }
                c => decoded.push(c),
            }
        }
        let expected: String = value.chars().filter(|c| !c.is_control()).collect();
        prop_assert_eq!(decoded, expected);
    }

    // ---------------------------------------------------------------------
    // --table, sslmode, application_name
    // ---------------------------------------------------------------------

    /// Never panics; an accepted name is one or two lower-case identifiers
    /// made of letters, digits, `_` and `$`, always quoted in SQL, and
    /// reads back from its display; quotes, `;` and spaces never pass.
    #[test]
    fn history_table_names_are_safe_identifiers(
        text in prop_oneof![
            "[a-zA-Z_$0-9]{0,70}(\\.[a-zA-Z_$0-9]{0,70})?",
            "[a-z]{1,5}[;'\" .\\-]{1,3}[a-z ]{0,10}",
            any::<String>(),
        ],
    ) {
        match HistoryTable::parse(&text) {
            Ok(table) => {
                prop_assert!(!text.contains([';', '\'', '"', ' ', '\\', '-']));
                let shown = table.to_string();
                prop_assert_eq!(HistoryTable::parse(&shown), Ok(table.clone()));
                prop_assert_eq!(shown, text.to_ascii_lowercase());
                let sql_name = table.sql_name();
                for part in sql_name.split('.') {
                    prop_assert!(part.len() >= 3 && part.starts_with('"') && part.ends_with('"'));
                    let ident = &part[1..part.len() - 1];
                    prop_assert!(ident.len() <= 63);
                    prop_assert!(ident
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$'));
                }
            }
            Err(e) => {
                prop_assert!(e.starts_with("invalid history table name"), "{}", e);
                // The echo is cut: an over-long value cannot flood the log.
                prop_assert!(e.chars().count() < 400, "{}", e);
            }
        }
    }

    /// Exactly libpq's six modes, spelled exactly; they display as given.
    #[test]
    fn sslmodes_are_libpqs_six(
        text in prop_oneof![
            proptest::sample::select(vec![
                "disable", "allow", "prefer", "require", "verify-ca", "verify-full",
                "Require", "verify_full", " prefer", "", "true",
            ]).prop_map(str::to_string),
            any::<String>(),
        ],
    ) {
        const MODES: &[&str] = &["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];
        match SslMode::parse(&text) {
            Ok(mode) => {
                prop_assert!(MODES.contains(&text.as_str()));
                prop_assert_eq!(mode.to_string(), text);
            }
            Err(e) => {
                prop_assert!(!MODES.contains(&text.as_str()));
                prop_assert!(e.starts_with("unknown sslmode"), "{}", e);
                prop_assert!(e.chars().count() < 150, "{}", e);
            }
        }
    }

    /// `application_name` fits PostgreSQL's 63 bytes, has no control
    /// characters and starts with the command and state, whatever the
    /// instance name.
    #[test]
    fn application_names_fit_and_lead_with_the_state(
        instance in proptest::option::of(any::<String>()),
        state in proptest::sample::select(vec!["holding", "waiting"]),
    ) {
        let name = Identity::new("apply", instance.as_deref()).application_name(Some(state));
        prop_assert!(name.len() <= 63, "{} bytes: {:?}", name.len(), name);
        prop_assert!(!name.chars().any(char::is_control));
        let prefix = format!("miglock apply {state} host=");
        prop_assert!(name.starts_with(&prefix), "{:?}", name);
    }

    // ---------------------------------------------------------------------
    // Connection strings and the libpq environment
    // ---------------------------------------------------------------------

    /// Never panics on any text, URL-shaped or not.
    #[test]
    fn take_params_never_panics(
        text in prop_oneof![
            "postgres(ql)?://\\PC{0,30}",
            "[a-z_]{1,8} ?= ?('|\\\\)?\\PC{0,10}",
            any::<String>(),
        ],
    ) {
        let _ = take_params(&text, TLS_PARAMS);
    }

    /// `key='value'` strings: the TLS parameters come out with their values
    /// unescaped, in order, and the rest re-parses to exactly the other
    /// pairs, whatever quotes, backslashes and spaces the values hold.
    #[test]
    fn key_value_strings_round_trip(
        pairs in proptest::collection::vec(
            (
                prop_oneof![
                    3 => "[a-z_]{1,10}",
                    1 => proptest::sample::select(vec!["sslmode", "sslrootcert"]).prop_map(str::to_string),
                ],
                "[^\\x00]{0,12}",
                proptest::bool::ANY,
            ),
            0..7,
        ),
        separator in "[ \t\n]{1,3}",
    ) {
        let text: Vec<String> = pairs
            .iter()
            .map(|(key, value, quoted)| {
                let plain = !value.is_empty()
                    && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\');
                if plain && !quoted {
                    format!("{key}={value}")
                } else {
                    format!("{key} = '{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
                }
            })
            .collect();
        let text = text.join(&separator);
        let (rest, found) = take_params(&text, TLS_PARAMS).unwrap();
        let tls: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _, _)| TLS_PARAMS.contains(&k.as_str()))
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect();
        prop_assert_eq!(found, tls);
        let others: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _, _)| !TLS_PARAMS.contains(&k.as_str()))
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect();
        let keys: Vec<&str> = others.iter().map(|(k, _)| k.as_str()).collect();
        let (left, found_again) = take_params(&rest, &keys).unwrap();
        prop_assert_eq!(found_again, others);
        prop_assert_eq!(left, "");
    }

    /// URL query parameters: the TLS ones come out percent-decoded, the
    /// others stay in the URL untouched and in order.
    #[test]
    fn url_parameters_round_trip(
        pairs in proptest::collection::vec(
            (
                prop_oneof![
                    3 => "[a-z_]{1,10}",
                    1 => proptest::sample::select(vec!["sslmode", "sslrootcert"]).prop_map(str::to_string),
                ],
                "\\PC{0,12}",
            ),
            0..6,
        ),
        head in "postgres(ql)?://([a-z]{1,5}(:[a-z]{1,5})?@)?[a-z]{1,8}(:[0-9]{1,5})?/[a-z]{0,6}",
    ) {
        let encoded: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
            .collect();
        let url = if encoded.is_empty() {
            head.clone()
        } else {
            format!("{head}?{}", encoded.join("&"))
        };
        let (rest, found) = take_params(&url, TLS_PARAMS).unwrap();
        let tls: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| TLS_PARAMS.contains(&k.as_str()))
            .cloned()
            .collect();
        prop_assert_eq!(found, tls);
        let kept: Vec<&String> = pairs
            .iter()
            .zip(&encoded)
            .filter(|((k, _), _)| !TLS_PARAMS.contains(&k.as_str()))
            .map(|(_, e)| e)
            .collect();
        let expected = if kept.is_empty() {
            head.clone()
        } else {
            format!("{head}?{}", kept.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("&"))
        };
        prop_assert_eq!(rest, expected);
    }

    /// Resolving any URL with any libpq environment never panics; a refusal
    /// is a usage error (exit 2).
    #[test]
    fn resolving_a_target_never_panics(
        url in proptest::option::of(prop_oneof![
            "postgres(ql)?://\\PC{0,40}",
            "[a-z_]{1,8}=\\PC{0,10}( [a-z_]{1,8}=\\PC{0,10}){0,3}",
            any::<String>(),
        ]),
        vars in libpq_env(),
    ) {
        if let Err(failure) = Target::resolve(url.as_deref(), &env_of(&vars)) {
            prop_assert_eq!(failure.outcome.exit_code(), 2, "{}", failure.message());
        }
    }

    /// A password in a URL, in a `key=value` string or in `PGPASSWORD` is
    /// never part of what is shown: not in the target's display, not in
    /// any refusal, however the rest of the string is broken.
    #[test]
    fn passwords_never_appear_in_messages_or_the_target(
        (password, marker) in password(),
        user in "[a-z]{1,6}",
        host in prop_oneof!["[a-z]{1,8}(\\.[a-z]{2,4})?", Just("127.0.0.1".to_string()), Just("[::1]".to_string())],
        port in prop_oneof!["[0-9]{1,5}", "[a-z]{1,4}", "[0-9]{6}", Just(String::new())],
        db in "[a-z]{0,6}",
        query in prop_oneof![
            Just(String::new()),
            "\\?sslmode=[a-z\\-]{0,12}",
            "\\?[a-z_]{1,12}=[a-z0-9]{0,6}",
            "\\?[a-z_]{1,8}",
            "\\?sslmode=%[0-9A-F]{2}",
            "\\?application_name=[a-z]{1,6}&connect_timeout=[0-9a-z]{1,3}",
        ],
        form in 0..5,
        vars in libpq_env(),
    ) {
        let encoded = utf8_percent_encode(&password, NON_ALPHANUMERIC).to_string();
        let colon_port = if port.is_empty() { String::new() } else { format!(":{port}") };
        let mut vars = vars;
        let url = match form {
            0 => Some(format!("postgres://{user}:{encoded}@{host}{colon_port}/{db}{query}")),
            1 => {
                let escaped = password.replace('\\', "\\\\").replace('\'', "\\'");
                Some(format!(
                    "host={host} port={} user={user} password='{escaped}' dbname='{db}' {}",
                    if port.is_empty() { "5432" } else { &port },
                    query.trim_start_matches('?').replace('&', " "),
                ))
            }
            2 => {
                vars.insert("PGPASSWORD".into(), password.clone());
                Some(format!("postgres://{user}@{host}{colon_port}/{db}{query}"))
            }
            // The password in the query, an '@' after it (Azure's
            // `user=admin@server`), with a path or without.
            3 => Some(format!(
                "postgres://{host}{colon_port}/{db}?password={encoded}&user={user}@{host}"
            )),
            _ => Some(format!(
                "postgres://{host}{colon_port}?password={encoded}&user={user}@{host}"
            )),
        };
        // The marker is alphanumeric, so it reads the same encoded or not;
        // nothing else in the inputs has upper-case letters.
        let env = env_of(&vars);
        match Target::resolve(url.as_deref(), &env) {
            Ok(target) => {
                let shown = target.to_string();
                prop_assert!(!shown.contains(&marker), "{:?} shows {:?}", url, shown);
            }
            Err(failure) => {
                let message = failure.message();
                prop_assert!(!message.contains(&marker), "{:?}: {}", url, message);
            }
        };
    }

    // ---------------------------------------------------------------------
    // The targets file
    // ---------------------------------------------------------------------

    /// A line of a targets file with a password where a password goes (a
    /// URL's user information, raw with whatever it holds or
    /// percent-encoded; a `password` query parameter; a `password=` pair
    /// quoted, bare with libpq's escapes, or with its quote never closed),
    /// among good lines, and broken somewhere else: every bad line is
    /// reported, and no part of the password is in the message.
    #[test]
    fn passwords_never_appear_in_the_report_of_bad_target_lines(
        (password, marker) in password(),
        form in 0..6,
        user in "[a-z]{1,6}",
        host in prop_oneof!["[a-z]{1,8}(\\.[a-z]{2,4})?", Just("[::1]".to_string())],
        port in prop_oneof!["[0-9]{1,5}", "[a-z]{1,4}", Just(String::new())],
        db in "[a-z]{1,6}",
        breakage in prop_oneof![
            Just(String::new()),
            "schema=[0-9][a-z]{0,4}",
            "sslmode=[a-z]{1,6}",
            "[a-z]{1,6}=[a-z0-9]{0,4}",
            "[a-z]{1,6}",
            "connect_timeout=[a-z]{1,3}",
        ],
        good_before in 0usize..3,
        good_after in 0usize..3,
    ) {
        let encoded = utf8_percent_encode(&password, NON_ALPHANUMERIC).to_string();
        let colon_port = if port.is_empty() { String::new() } else { format!(":{port}") };
        let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
        let bare: String = password
            .chars()
            .flat_map(|c| match c {
                ' ' | '\\' | '\'' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let kv = |password_pair: String| {
            let port = if port.is_empty() { "5432" } else { &port };
            format!("host={host} port={port} user={user} {password_pair} dbname={db} {breakage}")
        };
        let url_query = if breakage.contains('=') { format!("?{breakage}") } else { String::new() };
        let line = match form {
            0 => format!("postgres://{user}:{password}@{host}{colon_port}/{db}{url_query}"),
            1 => format!("postgres://{user}:{encoded}@{host}{colon_port}/{db} {breakage}"),
            2 => format!(
                "postgres://{user}@{host}{colon_port}/{db}?password={encoded}&{breakage}"
            ),
            3 => kv(format!("password='{quoted}'")),
            4 => format!("{} password='{quoted}", kv(String::new())),
            _ => kv(format!("password={bare}")),
        };
        let good = format!("postgres://{user}@{host}/{db}\n# a comment\n");
        let text = format!(
            "{}{line}\n{}",
            good.repeat(good_before),
            good.repeat(good_after)
        );
        // No environment: nothing else supplies a password.
        if let Err(failure) = parse_targets(&text, "t.txt", &|_| None) {
            prop_assert_eq!(failure.outcome.exit_code(), 2);
            let message = failure.message();
            let number = 2 * good_before + 1;
            prop_assert!(
                message.contains(&format!("\n  - line {number}: ")),
                "{:?}: {}", line, message
            );
            prop_assert!(message.contains("1 bad line,"), "{}", message);
            // The marker's first and last two characters stand for any
            // part of it: nothing else in the inputs has upper-case letters.
            let end = &marker[marker.len() - 2..];
            for part in [marker.as_str(), &password, "Pw", end] {
                prop_assert!(!message.contains(part), "{:?} shows {:?}: {}", line, part, message);
            }
        }
    }

    /// Any targets file: read or refused (exit 2) with one entry per bad
    /// line, never a panic, whatever the bytes of a line.
    #[test]
    fn any_targets_file_is_read_or_refused_line_by_line(
        lines in proptest::collection::vec(
            prop_oneof![
                "postgres(ql)?://\\PC{0,40}",
                "[a-z_]{1,8} ?= ?'?\\PC{0,10}( [a-z_]{1,8}=\\PC{0,10}){0,3}",
                "#\\PC{0,10}",
                any::<String>(),
            ],
            0..6,
        ),
    ) {
        let text = lines.join("\n");
        if let Err(failure) = parse_targets(&text, "t.txt", &|_| None) {
            prop_assert_eq!(failure.outcome.exit_code(), 2);
            let message = failure.message();
            let reported = message.lines().filter(|l| l.starts_with("  - line ")).count();
            prop_assert!(reported >= 1 && reported <= text.lines().count(), "{}", message);
        }
    }

    // ---------------------------------------------------------------------
    // The password file
    // ---------------------------------------------------------------------

    /// Any content: never panics. A line written with libpq's escaping is
    /// found for exactly its host, port, database and user, and gives back
    /// the password as written; the first matching line wins.
    #[test]
    fn password_file_lines_are_found_as_written(
        noise in "[^\\x00]{0,80}",
        host in "[a-z0-9:\\\\.-][a-z0-9:\\\\.*-]{0,11}",
        port in 1u16..,
        database in "[a-z0-9:\\\\_]{1,10}",
        user in "[a-z0-9:\\\\_]{1,10}",
        password in "[^\\x00-\\x1f\\x7f]{1,20}",
        other in "[a-z]{1,8}",
    ) {
        let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        let line = format!(
            "{}:{port}:{}:{}:{}",
            escape(&host),
            escape(&database),
            escape(&user),
            escape(&password)
        );
        // Noise first (it may hold anything but a matching line), then the
        // line, then a second match that must lose.
        let noise: String = noise
            .lines()
            .filter(|l| !l.contains(&escape(&host)) && !l.starts_with('*'))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(&path, format!("{noise}{line}\n*:*:*:*:{other}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let lookup = pgpass::Lookup {
            host: &host,
            default_socket: false,
            port,
            database: &database,
            user: &user,
        };
        prop_assert_eq!(pgpass::find(&path, lookup), Some(password.clone()));
        let elsewhere = pgpass::Lookup { port: port.wrapping_add(1).max(1), ..lookup };
        if elsewhere.port != port {
            prop_assert_eq!(pgpass::find(&path, elsewhere), Some(other.clone()));
        }
        // Readable by others: ignored, whatever it holds.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        prop_assert_eq!(pgpass::find(&path, lookup), None);
    }

    /// Arbitrary bytes as a password file: never panics.
    #[test]
    fn any_password_file_is_survived(content in proptest::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        fs::write(&path, &content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let lookup = pgpass::Lookup {
            host: "h",
            default_socket: true,
            port: 5432,
            database: "d",
            user: "u",
        };
        let _ = pgpass::find(&path, lookup);
    }
}
