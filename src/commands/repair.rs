//! `miglock repair`: accept the edited file of an applied
//! migration (a comment fixed, whitespace, a typo in a name) by storing its
//! checksum, so `apply` stops refusing the set as divergent.
//!
//! It never runs a migration's SQL: the schema is not changed, only what
//! the history says about it. And the history keeps no copy of the applied
//! text (refinery's table has the name and a checksum only), so what
//! changed cannot be shown here; the person confirming has to know.

use std::io::IsTerminal;

use anyhow::anyhow;

use crate::config::{Format, RepairConfig};
use crate::context::Context;
use crate::error::Failure;
use crate::lock::{self, wait, LockSession};
use crate::migrations::history::HistoryRow;
use crate::migrations::{LocalMigration, MigrationSet};
use crate::outcome::Outcome;
use crate::pg_error;
use crate::report::{RepairedEntry, Report};
use crate::sql::Batch;

/// An applied migration whose file no longer matches its row.
struct Divergent<'a> {
    applied: HistoryRow,
    file: &'a LocalMigration,
}

impl Divergent<'_> {
    fn entry(&self) -> RepairedEntry {
        RepairedEntry {
            version: self.applied.id.version.clone(),
            name: self.file.id.name.clone(),
            old_name: (self.applied.id.name != self.file.id.name)
                .then(|| self.applied.id.name.clone()),
            old_checksum: self.applied.checksum.clone(),
            new_checksum: self.file.checksum.to_string(),
        }
    }
}

pub fn run(ctx: &Context, config: &RepairConfig, report: &mut Report) -> Result<Outcome, Failure> {
    let common = &config.common;
    report.set_database(common);
    report.dry_run = config.dry_run;
    // What a person reads before confirming: on stdout as the result, or
    // on stderr beside the JSON object.
    let say = |text: &str| {
        for line in text.lines() {
            if ctx.format == Format::Text {
                ctx.out.line(line);
            } else {
                log::info!("{line}");
            }
        }
    };

    if !config.yes && !config.dry_run && !std::io::stdin().is_terminal() {
        return Err(Failure::usage(anyhow!(
            "repair changes the history: confirm with --yes when stdin is not a terminal (or use \
             --dry-run to see what it would do); nothing was touched"
        )));
    }
    if common.table.layout() != crate::migrations::Layout::Refinery {
        return Err(Failure::usage(anyhow!(
            "repair stores refinery's checksums, and this folder is in the {} layout: for a \
             changed file there, use that tool's own repair, or revert the edit",
            common.table.layout()
        )));
    }
    let mut reading = common.read_migrations();
    reading.judge_writable(common.allow_world_writable, true);
    let set = reading.strict().map_err(|p| report.invalid(p))?;
    let mut session = LockSession::connect(
        common.lock_target(),
        common.identity("repair"),
        ctx.interrupt,
    )?;
    let history = session.read_history()?.unwrap_or_default();

    for version in &config.versions {
        if history.iter().all(|a| a.id.version != *version) {
            return Err(Failure::usage(anyhow!(
                "version {version} is not applied (the history table {} has no row for it): only \
                 applied migrations can be repaired; nothing was touched",
                common.table
            )));
        }
    }
    let all = divergent(&set, &history);
    for version in &config.versions {
        if all.iter().all(|d| d.applied.id.version != *version) {
            let row = history
                .iter()
                .find(|a| a.id.version == *version)
                .map_or_else(|| format!("V{version}"), |a| a.id.to_string());
            let why = if set.migrations.iter().any(|m| m.id.version == *version) {
                "its file matches the history"
            } else {
                "its file is gone, which a checksum cannot repair"
            };
            say(&format!("{row} is not divergent ({why}): left alone."));
        }
    }
    let chosen: Vec<Divergent> = all
        .into_iter()
        .filter(|d| config.versions.is_empty() || config.versions.contains(&d.file.id.version))
        .collect();
    report.repaired = Some(Vec::new());
    if chosen.is_empty() {
        say("Nothing to repair: no applied migration chosen has a file with another checksum.");
        return Ok(Outcome::Repaired);
    }
    say(&describe(&chosen));

    if config.dry_run {
        report.repaired = Some(chosen.iter().map(Divergent::entry).collect());
        say(&format!(
            "Would store {} checksum(s); nothing was changed (--dry-run).",
            chosen.len()
        ));
        return Ok(Outcome::Repaired);
    }
    lock::session_lock_only("repair", common.lock_mode, &mut session)?;
    if !config.yes && !confirm(chosen.len())? {
        return Err(Failure::new(
            Outcome::Declined,
            anyhow!("not confirmed: nothing was changed"),
        ));
    }

    let acquired = wait::acquire(
        &mut session,
        config.wait,
        ctx.interrupt,
        "nothing was repaired",
    )?;
    if !report.acquired(acquired) {
        return Ok(Outcome::Skipped);
    }
    store(&mut session, config, &chosen)?;
    session.release();
    for d in &chosen {
        log::info!(
            "CHECKSUM_REPAIRED version={} old={} new={}",
            d.applied.id.version,
            d.applied.checksum,
            d.file.checksum
        );
    }
    report.repaired = Some(chosen.iter().map(Divergent::entry).collect());
    say(&format!(
        "Stored {} checksum(s); no migration was run.",
        chosen.len()
    ));
    Ok(Outcome::Repaired)
}

/// The applied migrations whose file has another name or checksum: the
/// same test as `apply`'s divergence check, so after a repair `apply`
/// accepts the set.
fn divergent<'a>(set: &'a MigrationSet, history: &[HistoryRow]) -> Vec<Divergent<'a>> {
    history
        .iter()
        .filter_map(|applied| {
            let file = set
                .migrations
                .iter()
                .find(|m| m.id.version == applied.id.version)?;
            let same = file.id.name == applied.id.name
                && applied.checksum.parse::<u64>() == Ok(file.checksum);
            (!same).then(|| Divergent {
                applied: applied.clone(),
                file,
            })
        })
        .collect()
}

fn describe(chosen: &[Divergent]) -> String {
    let mut text = format!(
        "{} applied migration(s) with an edited file:\n",
        chosen.len()
    );
    for d in chosen {
        let file = d.file;
        text.push_str(&format!(
            "  {file} ({}), applied on {}\n",
            file.path.display(),
            d.applied.applied_on
        ));
        if d.applied.id.name != file.id.name {
            text.push_str(&format!(
                "    name      {} -> {}\n",
                d.applied.id.name, file.id.name
            ));
        }
        text.push_str(&format!(
            "    checksum  {} -> {}\n    file now  {} line(s), {} bytes\n",
            d.applied.checksum, file.checksum, file.size.lines, file.size.bytes
        ));
    }
    text.push_str(
        "The history keeps no copy of the applied SQL, so what changed cannot be shown: check the \
         edit (e.g. git log -p on the file) before storing the new checksum. The schema is not \
         changed, and no SQL is run.",
    );
    text
}

fn confirm(count: usize) -> Result<bool, Failure> {
    crate::output::confirm(&format!(
        "Store the file's checksum for {count} migration(s)?"
    ))
    .map_err(|e| Failure::failed(anyhow!("cannot read the answer: {e}")))
}

/// One transaction, committed only when every row was still as shown: a
/// row another run changed between the confirmation and the lock is not
/// overwritten with a decision made about something else.
fn store(
    session: &mut LockSession,
    config: &RepairConfig,
    chosen: &[Divergent],
) -> Result<(), Failure> {
    let table = &config.common.table;
    let mut batch = Batch::new();
    batch.push("BEGIN");
    let slots: Vec<_> = chosen
        .iter()
        .map(|d| batch.push(&table.repair_sql(&d.applied, &d.file.id.name, d.file.checksum)))
        .collect();
    let results = session.query(&batch).map_err(|e| {
        session.rollback();
        pg_error::failed(&e, format!("cannot update the history table {table}"))
    });
    let results = results?;
    let changed: Vec<String> = chosen
        .iter()
        .zip(&slots)
        .filter(|(_, slot)| results.rows(**slot).is_empty())
        .map(|(d, _)| d.applied.id.to_string())
        .collect();
    if !changed.is_empty() {
        session.rollback();
        return Err(Failure::failed(anyhow!(
            "the history row of {} changed since it was read: nothing was repaired; run repair \
             again to see the rows as they are now",
            changed.join(", ")
        )));
    }
    let mut commit = Batch::new();
    commit.push("COMMIT");
    session
        .query(&commit)
        .map(drop)
        .map_err(|e| pg_error::failed(&e, format!("cannot update the history table {table}")))
}
