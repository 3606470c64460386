//! Token-bucket rate limits, per caller, with a bounded number of callers
//! tracked — pure: the caller passes `now`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// How fast, and how bursty, one caller may be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after a quiet spell.
    pub burst: f64,
}

impl Rate {
    /// `per_second` sustained with a burst of twice that (at least 1).
    pub fn per_second(per_second: u32) -> Self {
        let per_second = f64::from(per_second);
        Self { per_second, burst: (per_second * 2.0).max(1.0) }
    }
}

/// One caller's bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A token bucket per key. At most `max_keys` keys are tracked; when full,
/// buckets that have refilled completely (idle callers) are dropped first,
/// and a new key beyond that is treated as a full bucket, so tracking never
/// grows without bound and never refuses a caller it could not track.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter of `rate` per key, tracking at most `max_keys` keys.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self { rate, max_keys, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key` at `now`; `false` when its bucket is empty.
    pub fn allow(&self, key: &K, now: Instant) -> bool {
        let Rate { per_second, burst } = self.rate;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_second < burst);
            if buckets.len() >= self.max_keys {
                return true;
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket { tokens: burst, last: now });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How many keys are tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::new(Rate { per_second: 10.0, burst: 5.0 }, 100);
        let t0 = Instant::now();
        let allowed = (0..20).filter(|_| limiter.allow(&"a", t0)).count();
        assert_eq!(allowed, 5, "the burst");
        // A tenth of a second buys one more; a second buys ten, up to the burst.
        assert!(limiter.allow(&"a", t0 + Duration::from_millis(100)));
        assert!(!limiter.allow(&"a", t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(10);
        assert_eq!((0..20).filter(|_| limiter.allow(&"a", later)).count(), 5);
        // Another caller has its own bucket.
        assert!(limiter.allow(&"b", later));
    }

    #[test]
    fn tracking_is_bounded_and_never_refuses_an_untracked_caller() {
        let limiter = RateLimiter::new(Rate { per_second: 1.0, burst: 1.0 }, 3);
        let t0 = Instant::now();
        for key in 0..3 {
            assert!(limiter.allow(&key, t0));
        }
        // Full, and every bucket is busy: a fourth caller passes untracked.
        assert!(limiter.allow(&99, t0));
        assert_eq!(limiter.tracked(), 3);
        // Once the others have refilled, they are dropped to make room.
        let later = t0 + Duration::from_secs(5);
        assert!(limiter.allow(&100, later));
        assert!(limiter.tracked() <= 3);
        assert!(!limiter.allow(&100, later), "and the new caller is limited");
    }

    #[test]
    fn per_second_sets_a_burst_of_two_seconds() {
        assert_eq!(Rate::per_second(100), Rate { per_second: 100.0, burst: 200.0 });
        assert_eq!(Rate::per_second(0).burst, 1.0);
    }
}
