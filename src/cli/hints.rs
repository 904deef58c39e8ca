//! Other tools' verbs: `miglock migrate` or `miglock up` is what a dbmate,
//! goose or sqlx user types first. clap's "unrecognized subcommand" is
//! kept (exit 2: a script must not run something it did not name), with a
//! tip saying which command does that here.

use clap::builder::StyledStr;
use clap::error::{ContextKind, ContextValue, ErrorKind};

/// A verb of another migration tool and what to say about it.
struct Verb {
    word: &'static str,
    tip: &'static str,
}

const VERBS: &[Verb] = &[
    Verb {
        word: "migrate",
        tip: "did you mean 'miglock apply'? It applies every pending migration (migrate in \
              dbmate, sqlx-cli, refinery and Flyway)",
    },
    Verb {
        word: "up",
        tip: "did you mean 'miglock apply'? It applies every pending migration (up in dbmate, \
              goose and golang-migrate)",
    },
    Verb {
        word: "run",
        tip: "did you mean 'miglock apply'? It applies every pending migration (sqlx migrate run)",
    },
    Verb {
        word: "deploy",
        tip: "did you mean 'miglock apply'? It applies every pending migration (prisma migrate \
              deploy)",
    },
    Verb {
        word: "create",
        tip: "did you mean 'miglock new NAME'? It creates the next migration file (create in \
              goose and golang-migrate)",
    },
    Verb {
        word: "add",
        tip: "did you mean 'miglock new NAME'? It creates the next migration file (sqlx migrate \
              add)",
    },
    Verb {
        word: "init",
        tip: "there is no set-up step: 'miglock new NAME' creates the folder and the first \
              migration file, and 'miglock apply' creates the history table",
    },
    Verb {
        word: "info",
        tip: "did you mean 'miglock status'? It lists applied and pending migrations (Flyway's \
              info)",
    },
    Verb {
        word: "validate",
        tip: "did you mean 'miglock status --check'? It exits 6 for an invalid set and 7 while \
              migrations are pending (Flyway's validate)",
    },
    Verb {
        word: "version",
        tip: "'miglock status' shows which versions are applied (goose's version); \
              'miglock --version' prints miglock's own",
    },
    Verb {
        word: "rollback",
        tip: "did you mean 'miglock down --to VERSION'? It runs the down scripts of goose, \
              dbmate, golang-migrate and sqlx folders (a refinery or Flyway folder has none: \
              write a migration that reverses the change, 'miglock new NAME')",
    },
    Verb {
        word: "redo",
        tip: "did you mean 'miglock down --to VERSION' then 'miglock apply'? (a refinery or \
              Flyway folder has no down scripts: write a migration that reverses the change)",
    },
];

/// The tip for another tool's `word`, if miglock knows it.
fn tip(word: &str) -> Option<&'static str> {
    VERBS
        .iter()
        .find(|v| v.word.eq_ignore_ascii_case(word))
        .map(|v| v.tip)
}

/// clap's error, with the tip for another tool's verb in place of clap's
/// own guess at a similar name.
pub fn explain(mut error: clap::Error) -> clap::Error {
    if error.kind() != ErrorKind::InvalidSubcommand {
        return error;
    }
    let Some(ContextValue::String(word)) = error.get(ContextKind::InvalidSubcommand) else {
        return error;
    };
    if let Some(tip) = tip(word) {
        error.remove(ContextKind::SuggestedSubcommand);
        error.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![StyledStr::from(tip.to_string())]),
        );
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(args: &[&str]) -> (ErrorKind, String) {
        let err = super::super::Cli::parse_args(args.iter().copied()).unwrap_err();
        (err.kind(), err.render().to_string())
    }

    #[test]
    fn other_tools_verbs_get_a_tip_and_stay_usage_errors() {
        for (word, says) in [
            ("migrate", "did you mean 'miglock apply'?"),
            ("up", "did you mean 'miglock apply'?"),
            ("run", "did you mean 'miglock apply'?"),
            ("create", "did you mean 'miglock new NAME'?"),
            ("add", "did you mean 'miglock new NAME'?"),
            ("init", "there is no set-up step: 'miglock new NAME'"),
            ("validate", "did you mean 'miglock status --check'?"),
            ("rollback", "did you mean 'miglock down --to VERSION'?"),
            ("Redo", "did you mean 'miglock down --to VERSION' then"),
        ] {
            let (kind, text) = rendered(&["miglock", word]);
            assert_eq!(kind, ErrorKind::InvalidSubcommand, "{word}");
            assert!(
                text.contains(&format!("unrecognized subcommand '{word}'")),
                "{text}"
            );
            assert!(text.contains(&format!("tip: {says}")), "{word}: {text}");
            assert_eq!(text.matches("tip:").count(), 1, "{word}: {text}");
        }
        // Options before it do not hide the word.
        let (_, text) = rendered(&["miglock", "--format", "json", "up"]);
        assert!(text.contains("did you mean 'miglock apply'?"), "{text}");
    }

    #[test]
    fn other_unknown_words_keep_clap_s_own_suggestion() {
        let (kind, text) = rendered(&["miglock", "aply"]);
        assert_eq!(kind, ErrorKind::InvalidSubcommand);
        assert!(
            text.contains("a similar subcommand exists: 'apply'"),
            "{text}"
        );
        let (_, text) = rendered(&["miglock", "frobnicate"]);
        assert!(!text.contains("tip: did you mean 'miglock"), "{text}");
    }
}
