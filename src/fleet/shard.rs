//! `--shard INDEX/COUNT`: a worker's slice of the targets. A target's shard
//! is a hash of what it names (its server, user, database and schema), not
//! its place in the list, so workers that each read the list (a file
//! shipped in the image, `--all-databases`, whose order may change between
//! their runs) still cover every target exactly once.

use md5::{Digest, Md5};

use crate::config::Shard;
use crate::targets::Target;

/// The targets of `shard` (all of them without one), in list order.
pub fn select(targets: Vec<Target>, shard: Option<Shard>) -> Vec<Target> {
    match shard {
        Some(shard) => targets.into_iter().filter(|t| of(t, shard)).collect(),
        None => targets,
    }
}

/// How many of `targets` fall in `shard`.
pub fn count(targets: &[Target], shard: Shard) -> usize {
    targets.iter().filter(|t| of(t, shard)).count()
}

fn of(target: &Target, shard: Shard) -> bool {
    // The target as printed (never its password), and its schema: the
    // same on every worker, whatever else it reads.
    let name = format!(
        "{}\0{}",
        target.database,
        target.schema.as_deref().unwrap_or("")
    );
    let digest = Md5::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % u64::from(shard.count) == u64::from(shard.index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::ConnectTarget;

    fn targets(n: usize) -> Vec<Target> {
        let server = ConnectTarget::resolve(Some("postgres://app@db:5432/app"), &|_| None).unwrap();
        (0..n)
            .map(|i| Target {
                database: server.with_database(&format!("tenant_{i}")),
                schema: (i % 3 == 0).then(|| format!("s{i}")),
                line: None,
            })
            .collect()
    }

    fn labels(targets: &[Target]) -> Vec<String> {
        targets.iter().map(|t| t.label()).collect()
    }

    #[test]
    fn shards_cover_every_target_once_whatever_the_order() {
        let all = targets(200);
        for count in [1, 2, 3, 7, 250] {
            let mut seen = Vec::new();
            for index in 0..count {
                let shard = Shard { index, count };
                let mine = select(targets(200), Some(shard));
                assert_eq!(mine.len(), count_of(&all, shard));
                // Reversed, the list gives the same shard.
                let mut reversed = targets(200);
                reversed.reverse();
                let mut again = labels(&select(reversed, Some(shard)));
                again.reverse();
                assert_eq!(again, labels(&mine), "{index}/{count}");
                seen.extend(labels(&mine));
            }
            seen.sort();
            let mut expected = labels(&all);
            expected.sort();
            assert_eq!(seen, expected, "{count} shards");
        }
        // Three shards of 200 are roughly even.
        for index in 0..3 {
            let n = count_of(&all, Shard { index, count: 3 });
            assert!((40..=95).contains(&n), "shard {index}/3 has {n}");
        }
    }

    fn count_of(targets: &[Target], shard: Shard) -> usize {
        count(targets, shard)
    }
}
