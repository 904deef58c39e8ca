//! What the user sees: log lines on stderr (with greppable event tokens;
//! one JSON object each with `--log-format json`: [`json`]), progress on a
//! terminal only, and the result on stdout.

mod json;

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::outcome::Outcome;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
pub use json::enable as enable_json_logs;
use log::LevelFilter;

/// `-q`/`-v`/`-vv` win over `RUST_LOG`; without either, info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
    Trace,
}

impl Verbosity {
    pub fn from_flags(quiet: u8, verbose: u8) -> Verbosity {
        match (quiet, verbose) {
            (q, _) if q > 0 => Verbosity::Quiet,
            (_, 0) => Verbosity::Normal,
            (_, 1) => Verbosity::Verbose,
            _ => Verbosity::Trace,
        }
    }
}

/// Terminal output: progress bars share stderr with the log lines, which
/// are printed above the bars instead of through them.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    enabled: bool,
}

impl Progress {
    /// Sets up logging and, when stderr is a terminal and not `-q`, progress.
    pub fn init(verbosity: Verbosity, rust_log: Option<&str>) -> Progress {
        let mut builder = env_logger::Builder::new();
        // Dependencies stay at warn unless RUST_LOG asks: tokio-postgres
        // logs every statement at debug.
        builder.filter_level(LevelFilter::Warn);
        match (verbosity, rust_log) {
            (Verbosity::Normal, Some(spec)) if !spec.trim().is_empty() => {
                builder.parse_filters(spec);
            }
            (Verbosity::Quiet, _) => {
                builder.filter_module("miglock", LevelFilter::Warn);
            }
            (Verbosity::Normal, _) => {
                builder.filter_module("miglock", LevelFilter::Info);
            }
            (Verbosity::Verbose, _) => {
                builder.filter_module("miglock", LevelFilter::Debug);
            }
            (Verbosity::Trace, _) => {
                builder.filter_module("miglock", LevelFilter::Trace);
            }
        }
        // Whatever RUST_LOG asks, tokio-postgres does not echo the
        // statements it sends (at debug): they hold migrations with Flyway's
        // placeholders replaced, a role's password among them, and the
        // session's `--set` values. The server's log has them for whoever
        // may read it.
        for statements in [
            "tokio_postgres::simple_query",
            "tokio_postgres::query",
            "tokio_postgres::prepare",
        ] {
            builder.filter_module(statements, LevelFilter::Info);
        }
        builder.format(|buf, record| {
            if json::enabled() {
                let message = record.args().to_string();
                let target = log_context();
                return writeln!(
                    buf,
                    "{}",
                    json::line(record.level().as_str(), &message, target.as_deref())
                );
            }
            // With many targets, a worker's lines name the target they are about.
            if let Some(target) = log_context() {
                return writeln!(
                    buf,
                    "{} {:<5} [{target}] {}",
                    buf.timestamp_millis(),
                    record.level(),
                    record.args()
                );
            }
            writeln!(
                buf,
                "{} {:<5} {}",
                buf.timestamp_millis(),
                record.level(),
                record.args()
            )
        });
        builder.target(env_logger::Target::Stderr);
        let logger = builder.build();
        let level = logger.filter();

        let enabled = verbosity != Verbosity::Quiet && std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        // A second init (tests embedding the library) keeps the first logger.
        if indicatif_log_bridge::LogWrapper::new(multi.clone(), logger)
            .try_init()
            .is_ok()
        {
            log::set_max_level(level);
        }
        Progress { multi, enabled }
    }

    /// No progress and no logger: for a library caller, whose own logger
    /// (if any) receives the log lines.
    pub fn hidden() -> Progress {
        Progress {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            enabled: false,
        }
    }

    pub fn spinner(&self, message: String) -> Option<ProgressBar> {
        if !self.enabled {
            return None;
        }
        // Cleared when dropped, on whatever path the command leaves by.
        let bar = self
            .multi
            .add(ProgressBar::new_spinner().with_finish(ProgressFinish::AndClear));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    }

    pub fn bar(&self, len: u64) -> Option<ProgressBar> {
        if !self.enabled {
            return None;
        }
        let bar = self
            .multi
            .add(ProgressBar::new(len).with_finish(ProgressFinish::AndClear));
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    }
}

/// The result on stdout, written through a handle that reports errors
/// instead of panicking as `println!` does. The first error is kept and
/// nothing more is written after it: a reader that went away (`| head`)
/// ends the output quietly; any other failure (a full disk, a closed
/// stdout) is the run's to report.
pub struct Console {
    enabled: bool,
    error: RefCell<Option<std::io::Error>>,
}

impl Console {
    pub fn stdout() -> Console {
        Console {
            enabled: true,
            error: RefCell::new(None),
        }
    }

    /// Prints nothing (`--format json` for text, or a library caller).
    pub fn none() -> Console {
        Console {
            enabled: false,
            error: RefCell::new(None),
        }
    }

    pub fn print(&self, text: &str) {
        self.print_bytes(text.as_bytes());
    }

    pub fn print_bytes(&self, bytes: &[u8]) {
        if !self.enabled || self.error.borrow().is_some() {
            return;
        }
        if stdout_was_closed() {
            *self.error.borrow_mut() = Some(std::io::Error::other("stdout is closed"));
            return;
        }
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
            *self.error.borrow_mut() = Some(e);
        }
    }

    pub fn line(&self, text: &str) {
        self.print(&format!("{text}\n"));
    }

    /// The first write error, if any.
    pub fn take_error(&self) -> Option<std::io::Error> {
        self.error.borrow_mut().take()
    }

    /// The run's exit code once its result is written: the outcome's,
    /// unless stdout could not take the result. A reader that went away
    /// (`| head`) is no failure, as for any Unix tool; any other write
    /// error (a full disk, a closed stdout) is exit 1, said on stderr.
    pub fn exit_code(&self, outcome: Outcome, exit_code: u8) -> u8 {
        match self.take_error() {
            None => exit_code,
            Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit_code,
            Some(e) => {
                let mut message = format!("error: cannot write the result to stdout: {e}");
                match outcome {
                    Outcome::Applied => message.push_str(
                        "\nThe migrations were applied (the log above names them); only the result \
                         could not be written.",
                    ),
                    Outcome::Created | Outcome::Baselined | Outcome::Repaired => {
                        message.push_str(&format!(
                            "\nThe command did its work ({outcome}); only its result could not be \
                             written."
                        ));
                    }
                    _ => {}
                }
                error_line(&message);
                Outcome::Failed.exit_code()
            }
        }
    }
}

/// Asks `question` on stderr (`[y/N]`) and reads the answer from stdin:
/// yes only for `y` or `yes`.
pub fn confirm(question: &str) -> std::io::Result<bool> {
    use std::io::BufRead;
    error_text(&format!("{question} [y/N] "));
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// A line on stderr. Unlike `eprintln!`, never panics: with stderr gone
/// there is nobody left to tell.
pub fn error_line(text: &str) {
    error_text(&format!("{text}\n"));
}

/// Text on stderr; with `--log-format json`, a finished text (one ending
/// in a newline) is one JSON object, its level read from its `error:` or
/// `warning:` prefix (a prompt stays as it is: a person reads it).
pub fn error_text(text: &str) {
    if json::enabled() && text.ends_with('\n') {
        let text = text.trim_end();
        let (level, message) = if let Some(rest) = text.strip_prefix("error: ") {
            ("ERROR", rest)
        } else if let Some(rest) = text.strip_prefix("warning: ") {
            ("WARN", rest)
        } else {
            ("INFO", text)
        };
        let line = json::line(level, message, log_context().as_deref());
        let _ = writeln!(std::io::stderr().lock(), "{line}");
        return;
    }
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Whether stdout was closed when the process started. The Rust runtime
/// opens /dev/null on a closed standard descriptor before `main`, so writes
/// to it succeed and the result would be lost without a word; this looks
/// at descriptor 1 earlier, from the loader's initialisers (`.init_array`),
/// which run before the runtime's. (Telling by the /dev/null left behind
/// would be wrong: launchers open /dev/null read-write for stdout too.)
pub fn stdout_was_closed() -> bool {
    STDOUT_CLOSED_AT_START.load(std::sync::atomic::Ordering::Relaxed)
}

static STDOUT_CLOSED_AT_START: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_stdout_at_start() {
    // SAFETY: F_GETFD only reads the descriptor's flags; -1 means it is
    // not open.
    let closed = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_GETFD) } == -1;
    STDOUT_CLOSED_AT_START.store(closed, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static NOTE_STDOUT_AT_START: extern "C" fn() = note_stdout_at_start;

thread_local! {
    /// The target a worker thread is running (many databases), for its log
    /// lines.
    static LOG_CONTEXT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The target this thread's log lines are about (`None` outside a worker).
pub fn log_context() -> Option<String> {
    LOG_CONTEXT.with(|c| c.borrow().clone())
}

pub fn set_log_context(label: Option<String>) {
    LOG_CONTEXT.with(|c| *c.borrow_mut() = label);
}
