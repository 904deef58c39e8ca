//! What the user sees: log lines on stderr (with greppable event tokens),
//! progress on a terminal only, and the result on stdout.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
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
        builder.format(|buf, record| {
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
