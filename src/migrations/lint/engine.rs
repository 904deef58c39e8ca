//! The one place squawk runs: parse a file, lint it with the rules that
//! are on, and give each finding its line, level and fix. What squawk-cli
//! does for one file (`check_sql`), parse errors included as
//! `syntax-error`, so the findings are squawk-cli's, at miglock's levels.

use squawk_linter::Linter;
use squawk_syntax::SourceFile;

use super::depth;
use super::rules::{info, Level, RuleId, RuleInfo};
use super::Rules;

pub struct RawFinding {
    pub line: usize,
    pub column: usize,
    pub rule: &'static RuleInfo,
    pub level: Level,
    pub message: String,
    pub fix: Option<String>,
}

/// The stack a level of squawk's recursion takes, with room to spare: the
/// most measured is a call's parenthesis, 1.5 kB in the release build
/// (5,400 nested `coalesce(` overflow 8 MiB; a `(SELECT`, 1.1 kB; an
/// operator, 0.35 kB); a debug build's frames are about five times bigger.
const STACK_PER_LEVEL: usize = if cfg!(debug_assertions) { 16 } else { 3 } << 10;
/// What any thread that lints has to spare (a spawned thread gets 2 MiB).
const SPARE_STACK: usize = 1 << 20;
/// The most stack a file is given; one that would need more is not linted.
const MAX_STACK: usize = 256 << 20;

/// The findings of `text`, in the order of the file. `transactional`:
/// miglock runs it in one transaction (squawk's `assume_in_transaction`).
/// `Err(levels)`: nested too deep to lint (see [`depth`]): squawk's parser
/// would run out of stack, which aborts the process. A file nested deeper
/// than this thread can take is linted on a thread with the stack it needs.
pub fn lint(text: &str, transactional: bool, rules: &Rules) -> Result<Vec<RawFinding>, usize> {
    let levels = depth::levels(text);
    let stack = levels.saturating_mul(STACK_PER_LEVEL);
    if stack <= SPARE_STACK {
        return Ok(lint_here(text, transactional, rules));
    }
    if stack > MAX_STACK {
        return Err(levels);
    }
    std::thread::scope(|scope| {
        let linting = std::thread::Builder::new()
            .name("lint".into())
            .stack_size(stack + SPARE_STACK)
            .spawn_scoped(scope, || lint_here(text, transactional, rules));
        match linting {
            Ok(linting) => Ok(linting
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))),
            // No room for the stack (a strict overcommit limit): not linted.
            Err(_) => Err(levels),
        }
    })
}

fn lint_here(text: &str, transactional: bool, rules: &Rules) -> Vec<RawFinding> {
    let parse = SourceFile::parse(text);
    let lines = Lines::new(text);
    let mut found = Vec::new();
    let syntax = rules.level(RuleId::SyntaxError);
    if syntax != Level::Off {
        for error in parse.errors() {
            let (line, column) = lines.at(u32::from(error.range().start()) as usize);
            found.push(RawFinding {
                line,
                column,
                rule: info(RuleId::SyntaxError),
                level: syntax,
                message: error.message().to_string(),
                fix: None,
            });
        }
    }
    let on = rules
        .levels()
        .filter(|(_, level)| *level != Level::Off)
        .filter_map(|(rule, _)| match rule.id {
            RuleId::Squawk(rule) => Some(rule),
            RuleId::SyntaxError => None,
        });
    let mut linter = Linter::from(on);
    linter.settings.assume_in_transaction = transactional;
    for violation in linter.lint(&parse, text) {
        let id = RuleId::Squawk(violation.code);
        // squawk reports an unknown name in an ignore comment whatever the
        // rules: it is a rule like the others here.
        let level = rules.level(id);
        if level == Level::Off {
            continue;
        }
        let (line, column) = lines.at(u32::from(violation.text_range.start()) as usize);
        found.push(RawFinding {
            line,
            column,
            rule: info(id),
            level,
            message: violation.message,
            fix: violation.help.filter(|h| !h.trim().is_empty()),
        });
    }
    found.sort_by_key(|f| (f.line, f.column));
    found
}

/// Line and column (both 1-based) of a byte offset.
struct Lines<'a> {
    text: &'a str,
    /// Byte offset of each line's start.
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(at, _)| at + 1));
        Lines { text, starts }
    }

    fn at(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|s| *s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        (line, column + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based() {
        let lines = Lines::new("ab\ncd\n\nx");
        assert_eq!(lines.at(0), (1, 1));
        assert_eq!(lines.at(4), (2, 2));
        assert_eq!(lines.at(7), (4, 1));
        assert_eq!(lines.at(99), (4, 2));
    }
}
