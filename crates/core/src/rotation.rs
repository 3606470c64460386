//! When to renew a credential, given its validity window and `now`.
//!
//! Credentials are renewed at half of their lifetime, moved by a per-credential
//! jitter of up to ±10% of the lifetime so that a fleet minted together does not
//! renew together. Everything here takes `now`: nothing reads a clock.

use std::time::{Duration, SystemTime};

/// Largest jitter, as a fraction of the lifetime.
pub const MAX_JITTER: f64 = 0.10;

/// How far a minted certificate's notBefore is set back, for clock skew.
pub const BACKDATE: Duration = Duration::from_secs(10);

/// A rotation offset in [-[`MAX_JITTER`], +[`MAX_JITTER`]], fixed per credential.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Jitter(f64);

impl Jitter {
    /// No jitter: rotate at exactly half-life.
    pub const NONE: Self = Self(0.0);

    /// Maps a uniformly random `u32` onto the jitter range.
    pub fn from_random(r: u32) -> Self {
        let unit = f64::from(r) / f64::from(u32::MAX); // [0, 1]
        Self((unit * 2.0 - 1.0) * MAX_JITTER)
    }

    /// The fraction of the lifetime this jitter moves the rotation point.
    pub fn fraction(self) -> f64 {
        self.0
    }
}

/// The moment a credential valid over `[not_before, not_after)` should be renewed.
pub fn rotation_time(not_before: SystemTime, not_after: SystemTime, jitter: Jitter) -> SystemTime {
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        return not_after; // an inverted window is already due
    };
    let at = lifetime.mul_f64(0.5 + jitter.fraction());
    not_before + at
}

/// Whether a credential valid over `[not_before, not_after)` should be renewed at `now`.
pub fn should_rotate(now: SystemTime, not_before: SystemTime, not_after: SystemTime, jitter: Jitter) -> bool {
    now >= rotation_time(not_before, not_after, jitter)
}

/// When a credential valid from `not_before` was issued: Lanyard backdates
/// notBefore by [`BACKDATE`], so the issue time is that much later (never
/// past `not_after`). Rotation counts from here; counting from notBefore
/// would renew short-lived credentials early, and those of the minimum
/// lifetime at once.
pub fn issued_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    (not_before + BACKDATE).min(not_after)
}

/// The validity window of a credential minted at `now` for `ttl`, never
/// outliving its issuer: notBefore backdated by [`BACKDATE`], notAfter
/// `min(now + ttl, issuer_not_after)`.
pub fn validity(now: SystemTime, ttl: Duration, issuer_not_after: SystemTime) -> (SystemTime, SystemTime) {
    let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
    let not_after = (now + ttl).min(issuer_not_after);
    (not_before, not_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        T0 + Duration::from_secs(secs)
    }

    #[test]
    fn half_life_without_jitter() {
        assert!(!should_rotate(at(1049), at(1000), at(1100), Jitter::NONE));
        assert!(should_rotate(at(1050), at(1000), at(1100), Jitter::NONE));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        assert_eq!(Jitter::from_random(0).fraction(), -MAX_JITTER);
        assert_eq!(Jitter::from_random(u32::MAX).fraction(), MAX_JITTER);
        assert_eq!(rotation_time(at(0), at(100), Jitter::from_random(0)), at(40));
        assert_eq!(rotation_time(at(0), at(100), Jitter::from_random(u32::MAX)), at(60));
    }

    #[test]
    fn validity_is_capped_by_issuer_and_backdated() {
        let (nb, na) = validity(at(1000), Duration::from_secs(3600), at(2000));
        assert_eq!(nb, at(990));
        assert_eq!(na, at(2000));
        let (_, na) = validity(at(1000), Duration::from_secs(60), at(2000));
        assert_eq!(na, at(1060));
    }

    #[test]
    fn issue_time_undoes_the_backdate() {
        let (nb, na) = validity(at(1000), Duration::from_secs(10), at(5000));
        assert_eq!(issued_at(nb, na), at(1000));
        // Minimum lifetime: renewal is 5 s after issue, not at once.
        assert_eq!(rotation_time(issued_at(nb, na), na, Jitter::NONE), at(1005));
        assert_eq!(issued_at(at(0), at(5)), at(5));
    }

    #[test]
    fn inverted_window_rotates_at_once() {
        assert!(should_rotate(at(5), at(10), at(0), Jitter::NONE));
    }

    proptest! {
        #[test]
        fn rotation_point_lies_between_40_and_60_percent(nb in 0u64..1_000_000, life in 1u64..1_000_000, r in any::<u32>()) {
            let t = rotation_time(at(nb), at(nb + life), Jitter::from_random(r));
            let offset = t.duration_since(at(nb)).unwrap().as_secs_f64();
            prop_assert!(offset >= life as f64 * 0.4 - 1e-6);
            prop_assert!(offset <= life as f64 * 0.6 + 1e-6);
        }
    }
}
