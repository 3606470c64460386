//! JWT-SVIDs already minted, reused until half their lifetime has passed.

use std::collections::HashMap;
use std::sync::Mutex;

use lanyard_core::EntryId;

/// Most tokens held. Keys include caller-chosen audiences, so the cache is
/// bounded: past this size expired tokens go first, then everything.
pub(crate) const MAX_CACHED_JWTS: usize = 4096;

/// Entry, the entry's revision, sorted audiences.
type Key = (EntryId, u64, Vec<String>);

/// A bounded cache of JWT-SVIDs.
#[derive(Default)]
pub(crate) struct JwtCache {
    tokens: Mutex<HashMap<Key, Cached>>,
}

#[derive(Clone)]
struct Cached {
    token: String,
    issued_at: u64,
    expires_at: u64,
}

impl JwtCache {
    /// A cached token for `key` still in the first half of its life at `now`.
    pub(crate) fn get(&self, entry: &EntryId, revision: u64, audiences: &[String], now: u64) -> Option<String> {
        let tokens = self.tokens.lock().ok()?;
        let c = tokens.get(&(entry.clone(), revision, audiences.to_vec()))?;
        let half_life = c.issued_at + (c.expires_at.saturating_sub(c.issued_at)) / 2;
        (now < half_life).then(|| c.token.clone())
    }

    /// Remembers a token.
    pub(crate) fn put(
        &self,
        entry: &EntryId,
        revision: u64,
        audiences: &[String],
        token: String,
        now: u64,
        expires_at: u64,
    ) {
        let Ok(mut tokens) = self.tokens.lock() else {
            return;
        };
        if tokens.len() >= MAX_CACHED_JWTS {
            tokens.retain(|_, c| c.expires_at > now);
            if tokens.len() >= MAX_CACHED_JWTS {
                tokens.clear();
            }
        }
        tokens.insert((entry.clone(), revision, audiences.to_vec()), Cached { token, issued_at: now, expires_at });
    }

    /// How many tokens are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.tokens.lock().map(|t| t.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_until_half_life_and_stays_bounded() {
        let cache = JwtCache::default();
        let id = EntryId::parse("e").unwrap();
        let aud = vec!["a".to_owned()];
        cache.put(&id, 1, &aud, "t".into(), 100, 200);
        assert_eq!(cache.get(&id, 1, &aud, 149).as_deref(), Some("t"));
        assert_eq!(cache.get(&id, 1, &aud, 150), None);
        assert_eq!(cache.get(&id, 2, &aud, 120), None, "a changed entry does not reuse");
        for i in 0..(MAX_CACHED_JWTS + 10) {
            cache.put(&id, 1, &[format!("aud{i}")], "t".into(), 100, 200);
        }
        assert!(cache.len() <= MAX_CACHED_JWTS);
    }
}
