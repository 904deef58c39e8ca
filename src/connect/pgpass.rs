//! The password file (`PGPASSFILE`, else `~/.pgpass`), read as libpq does:
//! `hostname:port:database:username:password` lines, `*` matching anything
//! in the first four fields, `\` escaping `:` and `\`; the first matching
//! line wins; a file others may read is ignored (with a warning).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a line is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    /// The host name, or for a Unix socket its directory.
    pub host: &'a str,
    /// Whether `host` is libpq's default socket directory, which also
    /// matches `localhost`.
    pub default_socket: bool,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
}

pub fn default_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(file) = env("PGPASSFILE").filter(|f| !f.is_empty()) {
        return Some(PathBuf::from(file));
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| Path::new(&home).join(".pgpass"))
}

/// The password for `lookup`, if the file exists, is private, and has a
/// matching line.
pub fn find(path: &Path, lookup: Lookup) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        log::warn!(
            "password file {} has group or world access and is ignored; make it u=rw (chmod 0600)",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    find_in(&text, lookup)
}

fn find_in(text: &str, lookup: Lookup) -> Option<String> {
    let port = lookup.port.to_string();
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .filter_map(fields)
        .find(|f| {
            let host_matches = f[0] == "*"
                || f[0] == lookup.host
                || (lookup.default_socket && f[0] == "localhost");
            host_matches
                && (f[1] == "*" || f[1] == port)
                && (f[2] == "*" || f[2] == lookup.database)
                && (f[3] == "*" || f[3] == lookup.user)
        })
        .map(|mut f| f.swap_remove(4))
}

/// The five fields of a line, unescaped; `None` for a malformed line.
fn fields(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    (fields.len() == 5).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment
db.example:5432:app:deploy:first\\:pass
*:*:*:deploy:fallback
localhost:5432:*:admin:local\\\\pw
malformed line
";

    fn lookup<'a>(host: &'a str, database: &'a str, user: &'a str) -> Lookup<'a> {
        Lookup {
            host,
            default_socket: false,
            port: 5432,
            database,
            user,
        }
    }

    #[test]
    fn first_matching_line_wins_with_escapes() {
        assert_eq!(
            find_in(FILE, lookup("db.example", "app", "deploy")).as_deref(),
            Some("first:pass")
        );
        assert_eq!(
            find_in(FILE, lookup("other", "x", "deploy")).as_deref(),
            Some("fallback")
        );
        assert_eq!(find_in(FILE, lookup("db.example", "app", "nobody")), None);
    }

    #[test]
    fn the_default_socket_matches_localhost() {
        let mut socket = lookup("/var/run/postgresql", "x", "admin");
        assert_eq!(find_in(FILE, socket), None);
        socket.default_socket = true;
        assert_eq!(find_in(FILE, socket).as_deref(), Some("local\\pw"));
    }

    #[test]
    fn a_file_others_can_read_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:*:pw\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find(&path, lookup("h", "d", "u")), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(find(&path, lookup("h", "d", "u")).as_deref(), Some("pw"));
        assert_eq!(
            find(&dir.path().join("missing"), lookup("h", "d", "u")),
            None
        );
    }
}
