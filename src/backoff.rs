//! The one retry pace: every loop that waits before trying again (the lock,
//! reconnects, DDL lock timeouts, standby polling, `wait`) takes its pauses
//! from a [`Backoff`], so jitter and caps are decided in one place.

use std::time::Duration;

/// Exponential backoff with jitter: each pause is the current step times a
/// random factor in `[floor, 1]`, and the step doubles up to `max`.
///
/// The jitter spreads out replicas that started together (a deploy starts
/// them all at once); without it they would all retry in the same instant.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    step: Duration,
    /// The smallest random factor; 1.0 means no jitter.
    floor: f64,
}

impl Backoff {
    /// Steps from `first`, doubling to `max`; pauses of half a step to a
    /// whole one ("equal jitter").
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            step: first,
            floor: 0.5,
        }
    }

    /// Pauses between `floor` times the step and the step (`1.0`: exact).
    pub fn jitter(mut self, floor: f64) -> Backoff {
        self.floor = floor.clamp(0.0, 1.0);
        self
    }

    /// The next pause.
    pub fn next_pause(&mut self) -> Duration {
        self.next_pause_at_least(Duration::ZERO)
    }

    /// The next pause, its step at least `share` (so many waiters together
    /// keep to a budget of attempts per second).
    pub fn next_pause_at_least(&mut self, share: Duration) -> Duration {
        let step = self.step.max(share);
        self.step = (self.step * 2).min(self.max);
        if self.floor >= 1.0 {
            return step;
        }
        step.mul_f64(self.floor + fastrand::f64() * (1.0 - self.floor))
    }

    /// Back to the first step (progress was made; the next wait is new).
    pub fn reset(&mut self) {
        self.step = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_to_the_cap_within_their_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let steps = [100, 200, 400, 400];
        for step in steps {
            let pause = b.next_pause().as_secs_f64() * 1000.0;
            assert!(
                (f64::from(step) * 0.5..=f64::from(step)).contains(&pause),
                "{pause} for {step}"
            );
        }
        b.reset();
        assert!(b.next_pause() <= Duration::from_millis(100));
    }

    #[test]
    fn no_jitter_is_exact_and_a_share_raises_the_step() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).jitter(1.0);
        assert_eq!(b.next_pause(), Duration::from_millis(100));
        assert_eq!(b.next_pause(), Duration::from_millis(200));
        assert_eq!(
            b.next_pause_at_least(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(b.next_pause(), Duration::from_millis(800));
    }
}
