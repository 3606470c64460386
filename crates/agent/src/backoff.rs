//! Exponential backoff with full jitter, for reconnecting to the server.

use std::time::Duration;

/// Delays that double from `base` up to `max`, each drawn uniformly from
/// `[0, current]` so that a fleet of agents does not reconnect in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `base`, capped at `max`.
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, current: base }
    }

    /// The next delay, given a uniformly random `r`.
    pub(crate) fn next_delay(&mut self, r: u32) -> Duration {
        let delay = self.current.mul_f64(f64::from(r) / f64::from(u32::MAX));
        self.current = (self.current * 2).min(self.max);
        delay.max(Duration::from_millis(50))
    }

    /// Back to `base` after a success.
    pub(crate) fn reset(&mut self) {
        self.current = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(b.next_delay(u32::MAX), Duration::from_secs(1));
        assert_eq!(b.next_delay(u32::MAX), Duration::from_secs(2));
        assert_eq!(b.next_delay(u32::MAX), Duration::from_secs(4));
        assert_eq!(b.next_delay(u32::MAX), Duration::from_secs(8));
        assert_eq!(b.next_delay(u32::MAX), Duration::from_secs(8));
        assert_eq!(b.next_delay(0), Duration::from_millis(50));
        b.reset();
        assert_eq!(b.next_delay(u32::MAX), Duration::from_secs(1));
    }
}
