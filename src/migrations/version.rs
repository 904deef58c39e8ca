//! [`Version`]: the one type for a migration's version, in the files, the
//! history, the JSON result and the library API.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// A migration's version: a whole number (refinery's `V42__`, and the
/// timestamps other tools use, such as `20210425153745`), or dotted parts
/// (Flyway's `1.0.25`). Versions compare part by part, numerically, so
/// `1.10` comes after `1.9`, and `2` equals `2.0`.
///
/// In JSON a whole number stays a number and dotted parts are a string.
#[derive(Debug, Clone)]
pub enum Version {
    Number(i64),
    Dotted(Box<[i64]>),
    /// No version: Flyway's repeatable migrations (`R__view.sql`), which
    /// run after every versioned one, each time their checksum changes.
    /// Shown as `R`, null in JSON.
    Repeatable,
}

impl Version {
    /// The parts to compare, without trailing zeros (`2.0` is `2`).
    fn parts(&self) -> &[i64] {
        let parts = match self {
            Version::Number(n) => std::slice::from_ref(n),
            Version::Dotted(parts) => parts,
            Version::Repeatable => return &[],
        };
        let end = parts.iter().rposition(|p| *p != 0).map_or(1, |i| i + 1);
        &parts[..end.min(parts.len())]
    }

    /// The version as one number, when it is one.
    pub fn as_number(&self) -> Option<i64> {
        match self {
            Version::Number(n) => Some(*n),
            Version::Dotted(_) | Version::Repeatable => None,
        }
    }

    pub fn is_repeatable(&self) -> bool {
        matches!(self, Version::Repeatable)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.is_repeatable().hash(state);
        self.parts().hash(state);
    }
}

impl Ord for Version {
    /// Repeatables after every versioned migration, as Flyway runs them.
    fn cmp(&self, other: &Version) -> Ordering {
        match (self.is_repeatable(), other.is_repeatable()) {
            (false, false) => self.parts().cmp(other.parts()),
            (a, b) => a.cmp(&b),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Number(n) => write!(f, "{n}"),
            Version::Dotted(parts) => {
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    write!(f, "{part}")?;
                }
                Ok(())
            }
            Version::Repeatable => f.write_str("R"),
        }
    }
}

impl From<i32> for Version {
    fn from(n: i32) -> Version {
        Version::Number(n.into())
    }
}

impl From<i64> for Version {
    fn from(n: i64) -> Version {
        Version::Number(n)
    }
}

impl From<u32> for Version {
    fn from(n: u32) -> Version {
        Version::Number(n.into())
    }
}

/// `42`, or dotted parts such as `1.0.25` (digits only).
impl FromStr for Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Version, String> {
        let part = |p: &str| -> Result<i64, String> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "invalid version {text:?}: expected digits, optionally dotted (42, 1.0.25)"
                ));
            }
            p.parse::<i64>()
                .map_err(|_| format!("invalid version {text:?}: a part is too large"))
        };
        if !text.contains('.') {
            return part(text).map(Version::Number);
        }
        let parts = text.split('.').map(part).collect::<Result<Vec<_>, _>>()?;
        Ok(Version::Dotted(parts.into_boxed_slice()))
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Version::Number(n) => serializer.serialize_i64(*n),
            Version::Dotted(_) => serializer.collect_str(self),
            Version::Repeatable => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically_part_by_part() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(v("9") < v("10"));
        assert!(v("1.9") < v("1.10"));
        assert_eq!(v("2"), v("2.0"));
        assert_eq!(v("2.0").to_string(), "2.0");
        assert!(v("1.0.25") > v("1"));
        assert!(v("20210425153745") > v("2021"));
        assert_eq!(Version::from(7), v("7"));
        assert_eq!(v("0"), Version::Number(0));
        assert!(Version::Repeatable > v("99999999999999"));
        assert_eq!(Version::Repeatable, Version::Repeatable);
        assert_eq!(Version::Repeatable.to_string(), "R");
        assert_eq!(serde_json::to_string(&Version::Repeatable).unwrap(), "null");
    }

    #[test]
    fn bad_versions_are_refused() {
        for bad in ["", "a", "1..2", "1.", "-1", "1e3", "99999999999999999999"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn json_keeps_whole_numbers_as_numbers() {
        assert_eq!(serde_json::to_string(&Version::from(42)).unwrap(), "42");
        let dotted: Version = "1.0.25".parse().unwrap();
        assert_eq!(serde_json::to_string(&dotted).unwrap(), "\"1.0.25\"");
    }
}
