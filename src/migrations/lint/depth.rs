//! How deep squawk's parser may recurse on a text, from above.
//!
//! Its recursive descent takes a level for each bracket, each prefix
//! operator (`NOT NOT …`, `- - …`, `-+-+…`), each right-recursive operator
//! of a chain (`a || b || …`, `a -> 'b' -> …`, `x IN (1) IN (1) …`) and
//! each `CASE`, with nothing to stop it: 5,400 nested calls, 16,000 nested
//! parentheses or 24,000 `||` overflow the 8 MiB of a main thread (an
//! abort, not an error). [`levels`] counts, at each point, the brackets
//! open and every operator character, `NOT`, `IN`, `OPERATOR` and `CASE`
//! since the last comma of each; strings, quoted names, dollar quotes and
//! comments (nested, as the server nests them) are skipped. It counts more
//! than the parser recurses (a left-recursive `+`, a `CASE` already
//! closed): it sizes a stack, and a stack too big is only address space.

/// The most levels open at any point of `text`.
pub fn levels(text: &str) -> usize {
    let b = text.as_bytes();
    // The run of operators of each bracket still open, then the current.
    let mut open: Vec<usize> = Vec::new();
    let mut run = 0usize;
    let mut below = 0usize;
    let mut deepest = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'(' | b'[' => {
                open.push(run);
                below += run + 1;
                run = 0;
                i += 1;
            }
            b')' | b']' => {
                if let Some(outer) = open.pop() {
                    below -= outer + 1;
                    run = outer;
                }
                i += 1;
            }
            b',' | b';' => {
                run = 0;
                i += 1;
            }
            b'\'' => i = quoted(b, i, b'\'', escapes(b, i)),
            b'"' => i = quoted(b, i, b'"', false),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n' || c == b'\r')
                    .map_or(b.len(), |n| i + n);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = past_comment(b, i),
            b'$' if !after_word(b, i) => i = dollar_quoted(b, i),
            _ if operator(c) => {
                // Each character may be a level: the parser cuts `-+-+`
                // into prefix signs.
                while i < b.len() && operator(b[i]) {
                    // A comment ends the operator (`+--`, `-/*`).
                    if b[i..].starts_with(b"--") || b[i..].starts_with(b"/*") {
                        break;
                    }
                    run += 1;
                    i += 1;
                }
            }
            _ if word(c) => {
                let start = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                let w = &b[start..i];
                if [&b"not"[..], b"case", b"in", b"operator"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k))
                {
                    run += 1;
                }
            }
            _ => i += 1,
        }
        deepest = deepest.max(below + run);
    }
    deepest
}

/// PostgreSQL's operator characters.
fn operator(c: u8) -> bool {
    b"+-*/<>=~!@#%^&|`?".contains(&c)
}

/// A name's or a number's bytes (any byte of a multi-byte character too).
fn word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn after_word(b: &[u8], i: usize) -> bool {
    i > 0 && word(b[i - 1])
}

/// `E'…'`: a backslash escapes the next byte.
fn escapes(b: &[u8], i: usize) -> bool {
    i > 0 && b[i - 1].eq_ignore_ascii_case(&b'e') && !(i > 1 && word(b[i - 2]))
}

/// Past the string or quoted name opening at `i` (a doubled quote is one
/// of its characters); the end of the text when it does not close.
fn quoted(b: &[u8], i: usize, quote: u8, escapes: bool) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        if escapes && b[j] == b'\\' {
            j += 2;
        } else if b[j] == quote {
            if b.get(j + 1) == Some(&quote) {
                j += 2;
            } else {
                return j + 1;
            }
        } else {
            j += 1;
        }
    }
    b.len()
}

/// Past the dollar quote opening at `i` (`$$…$$`, `$fn$…$fn$`); a `$1`
/// parameter is one byte.
fn dollar_quoted(b: &[u8], i: usize) -> usize {
    let tag_end = b[i + 1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80))
        .map(|n| i + 1 + n);
    match tag_end {
        Some(end) if b[end] == b'$' && !b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
            let tag = &b[i..=end];
            find(b, end + 1, tag).map_or(b.len(), |at| at + tag.len())
        }
        _ => i + 1,
    }
}

/// Past the comment opening at `i`, the comments in it closed first, as
/// the server reads them.
fn past_comment(b: &[u8], i: usize) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j + 1 < b.len() {
        if b[j] == b'/' && b[j + 1] == b'*' {
            depth += 1;
            j += 2;
        } else if b[j] == b'*' && b[j + 1] == b'/' {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += 1;
        }
    }
    b.len()
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|n| from + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_and_operator_chains_count_strings_and_comments_do_not() {
        assert_eq!(levels("CREATE TABLE t (id int);"), 1);
        assert_eq!(
            levels(&format!("SELECT {}1{};", "(".repeat(50), ")".repeat(50))),
            50
        );
        assert_eq!(levels(&format!("SELECT {}true;", "NOT ".repeat(40))), 40);
        assert_eq!(levels(&format!("SELECT 'a'{};", " || 'a'".repeat(30))), 60);
        assert_eq!(levels(&format!("SELECT a{};", " -> 'b'".repeat(30))), 60);
        assert_eq!(levels(&format!("SELECT {}1;", "- ".repeat(20))), 20);
        assert_eq!(levels(&format!("SELECT {}1;", "-+".repeat(20))), 40);
        assert_eq!(levels(&format!("SELECT 1{};", " IN (1)".repeat(20))), 21);
        // A run ends at a comma: a list of negative numbers is no chain.
        assert_eq!(
            levels(&format!("VALUES {};", vec!["(-1, -2)"; 500].join(", "))),
            2
        );
        // Inside a bracket, the run outside it still counts.
        assert_eq!(levels("SELECT a || (b || (c || d));"), 8);
        for skipped in [
            "SELECT '((((((((((';",
            "SELECT E'\\'((((((((((';",
            "SELECT \"((((((((((\";",
            "-- ((((((((((\nSELECT 1;",
            "/* (((((((((( */ SELECT 1;",
            "CREATE FUNCTION f() RETURNS int AS $body$ SELECT ((((((((((1)))))))))) $body$ LANGUAGE sql;",
            "SELECT $$((((((((((' $$;",
        ] {
            assert!(levels(skipped) <= 2, "{skipped}: {}", levels(skipped));
        }
        // What follows a nested comment, or a comment ended by a lone
        // carriage return, is counted.
        let deep = "SELECT ((((((((((1))))))))));";
        assert_eq!(levels(&format!("/* a /* b */ don't */ {deep}")), 10);
        assert_eq!(levels(&format!("-- x\r{deep}")), 10);
        // A `$1` parameter opens no quote; a name may hold a `$`.
        assert_eq!(levels("SELECT a$b$c, $1 || $2 || (((1)));"), 7);
    }

    #[test]
    fn an_unclosed_string_or_bracket_ends_with_the_text() {
        assert_eq!(levels("SELECT 'abc"), 0);
        assert_eq!(levels("SELECT ((("), 3);
        assert_eq!(levels("SELECT )))"), 0);
        assert_eq!(levels("SELECT $tag$ ((("), 0);
        assert_eq!(levels("SELECT E'\\"), 0);
    }
}
