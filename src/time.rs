//! Durations as the log lines and the JSON result write them.

use std::time::Duration;

/// Whole milliseconds, saturating (a `Duration` holds more than `u64` ms).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration as a person reads it, to the millisecond: `4s 999ms`, never
/// `4s 999ms 999us 802ns` (what is left of a deadline is rarely round).
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(millis(d))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_stop_at_the_millisecond() {
        assert_eq!(human(Duration::new(4, 999_999_802)), "4s 999ms");
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::ZERO), "0s");
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
