//! When signing keys are prepared, activated, published and retired — pure:
//! key records and `now` in, the next step out.
//!
//! Each kind of key (X.509 CA, JWT-SVID, task token) goes through the same
//! life, as in SPIRE's prepare/activate split:
//!
//! 1. **prepared** at half the active key's lifetime: stored and published
//!    in the bundle, signing nothing yet, so agents and verifiers learn it
//!    before anything they must check is signed by it;
//! 2. **active** once it has been published for a sixth of its lifetime and
//!    the old key is two thirds through its own: it signs from then on;
//! 3. **retired**: the old key stays in the bundle until its `not_after`,
//!    which caps everything it signed, then leaves it.
//!
//! A key an operator revokes leaves the bundle at once; if it was active, a
//! new key is created and activated in the same step. Records are never
//! deleted: audit checkpoints signed by old keys stay verifiable.

use lanyard_store::{KeyKind, KeyRecord};

/// The kinds of signing key, in the order they are planned.
pub(crate) const KINDS: [KeyKind; 3] = [KeyKind::X509Ca, KeyKind::JwtSvid, KeyKind::TaskToken];

/// What to do next for one kind of key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// No usable key: create one and activate it at once (first start, or
    /// the active key was revoked or expired with nothing prepared).
    CreateActive,
    /// Create the next key and publish it, not yet signing.
    Prepare,
    /// Make this prepared key the one that signs.
    Activate(String),
}

/// Where a key is in its life at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Published, not signing yet.
    Prepared,
    /// Signing.
    Active,
    /// Published for what it signed; signs nothing new.
    Retired,
    /// Past `not_after`: out of the bundle.
    Expired,
    /// Revoked by an operator: out of the bundle.
    Revoked,
}

impl Phase {
    /// The word `ca show` prints.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Prepared => "prepared",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    /// Whether relying parties trust keys in this phase.
    pub(crate) fn published(self) -> bool {
        matches!(self, Self::Prepared | Self::Active | Self::Retired)
    }
}

fn live(r: &KeyRecord, now: u64) -> bool {
    r.revoked_at.is_none() && r.not_after > now
}

/// The key of `kind` that signs at `now`: the most recently activated live
/// one. Records from before activation was recorded count as activated at
/// their start.
pub(crate) fn active(records: &[KeyRecord], kind: KeyKind, now: u64) -> Option<&KeyRecord> {
    let legacy = !records.iter().any(|r| r.kind == kind && r.activated_at.is_some());
    records
        .iter()
        .filter(|r| r.kind == kind && live(r, now))
        .filter_map(|r| match (r.activated_at, legacy) {
            (Some(at), _) => Some((at, r)),
            (None, true) => Some((r.not_before, r)),
            (None, false) => None,
        })
        .max_by_key(|(at, r)| (*at, r.not_before))
        .map(|(_, r)| r)
}

/// Where `record` is in its life at `now`.
pub(crate) fn phase(records: &[KeyRecord], record: &KeyRecord, now: u64) -> Phase {
    if record.revoked_at.is_some() {
        return Phase::Revoked;
    }
    if record.not_after <= now {
        return Phase::Expired;
    }
    match active(records, record.kind, now) {
        Some(a) if a.id == record.id => Phase::Active,
        Some(a) if record.activated_at.is_none() && record.not_before >= a.not_before => Phase::Prepared,
        None if record.activated_at.is_none() => Phase::Prepared,
        _ => Phase::Retired,
    }
}

/// The next step for `kind` at `now`, for keys living `lifetime` seconds;
/// `None` when nothing is due.
pub(crate) fn plan(records: &[KeyRecord], kind: KeyKind, now: u64, lifetime: u64) -> Option<Step> {
    let prepared = |after: u64| {
        records
            .iter()
            .filter(|r| r.kind == kind && live(r, now) && r.activated_at.is_none() && r.not_before >= after)
            .max_by_key(|r| r.not_before)
    };
    let Some(active) = active(records, kind, now) else {
        // Nothing signs: use a prepared key if there is one, else make one.
        return Some(match prepared(0) {
            Some(p) => Step::Activate(p.id.clone()),
            None => Step::CreateActive,
        });
    };
    // Lifetimes count from each key's start (`not_before`), when its
    // validity, and so the cap on what it signs, begins.
    let started = active.not_before;
    match prepared(active.not_before) {
        Some(p) if p.id != active.id => {
            let published_long_enough = now >= p.not_before + lifetime / 6;
            let old_enough = now >= started + lifetime * 2 / 3;
            // Never let the active key run out while a successor waits.
            let running_out = active.not_after.saturating_sub(now) <= lifetime / 12;
            ((published_long_enough && old_enough) || running_out).then(|| Step::Activate(p.id.clone()))
        }
        _ => (now >= started + lifetime / 2).then_some(Step::Prepare),
    }
}

/// A number that grows whenever the published set changes: the newest of
/// every key's start, every revocation, and every expiry already past.
pub(crate) fn bundle_sequence(records: &[KeyRecord], now: u64) -> u64 {
    records
        .iter()
        .flat_map(|r| [Some(r.not_before), r.revoked_at, (r.not_after <= now).then_some(r.not_after)])
        .flatten()
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: u64 = 600;

    fn key(id: &str, kind: KeyKind, not_before: u64, activated_at: Option<u64>) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            kind,
            pkcs8: vec![],
            cert_der: None,
            public_der: None,
            not_before,
            not_after: not_before + L,
            activated_at,
            revoked_at: None,
        }
    }

    /// The records as they stood at `now`: later keys absent, later
    /// activations and revocations not yet made.
    fn as_of(records: &[KeyRecord], now: u64) -> Vec<KeyRecord> {
        records
            .iter()
            .filter(|r| r.not_before <= now)
            .map(|r| KeyRecord {
                activated_at: r.activated_at.filter(|t| *t <= now),
                revoked_at: r.revoked_at.filter(|t| *t <= now),
                ..r.clone()
            })
            .collect()
    }

    /// Runs the plan from `t0` to `t1` one second at a time, applying each
    /// step; the records and every step taken, with its time.
    fn simulate(mut records: Vec<KeyRecord>, t0: u64, t1: u64) -> (Vec<KeyRecord>, Vec<(u64, Step)>) {
        let mut steps = Vec::new();
        let mut n = 0;
        for now in t0..t1 {
            if let Some(step) = plan(&records, KeyKind::JwtSvid, now, L) {
                match &step {
                    Step::CreateActive => {
                        n += 1;
                        records.push(key(&format!("k{n}"), KeyKind::JwtSvid, now, Some(now)));
                    }
                    Step::Prepare => {
                        n += 1;
                        records.push(key(&format!("k{n}"), KeyKind::JwtSvid, now, None));
                    }
                    Step::Activate(id) => {
                        records.iter_mut().find(|r| &r.id == id).unwrap().activated_at = Some(now);
                    }
                }
                steps.push((now, step));
            }
        }
        (records, steps)
    }

    #[test]
    fn first_start_creates_an_active_key() {
        assert_eq!(plan(&[], KeyKind::X509Ca, 100, L), Some(Step::CreateActive));
        let records = [key("a", KeyKind::X509Ca, 100, Some(100))];
        assert_eq!(plan(&records, KeyKind::X509Ca, 101, L), None);
        // Other kinds are planned on their own.
        assert_eq!(plan(&records, KeyKind::TaskToken, 101, L), Some(Step::CreateActive));
    }

    #[test]
    fn a_key_is_prepared_at_half_life_and_activated_after_a_sixth_published() {
        let (records, steps) = simulate(vec![], 1000, 1000 + 2 * L);
        let expected = [
            (1000, Step::CreateActive),
            (1000 + L / 2, Step::Prepare),
            // Published for L/6 (1400) but the old key must reach 2L/3 (1400): both at 1400.
            (1000 + 2 * L / 3, Step::Activate("k2".into())),
            (1000 + L / 2 + L / 2, Step::Prepare),
            (1000 + L / 2 + L / 2 + L / 6, Step::Activate("k3".into())),
        ];
        assert_eq!(steps[..5], expected);
        // At every moment exactly one key signs, and it has been published
        // for at least a sixth of its lifetime (except the very first).
        for now in 1000..1000 + 2 * L {
            let then = as_of(&records, now);
            let a = active(&then, KeyKind::JwtSvid, now);
            let a = a.unwrap_or_else(|| panic!("no active key at {now}"));
            assert!(a.id == "k1" || now >= a.not_before + L / 6, "{} active too soon at {now}", a.id);
        }
    }

    #[test]
    fn the_old_key_stays_published_until_it_expires() {
        let (records, _) = simulate(vec![], 0, L + 10);
        let phase_at = |id: &str, now: u64| {
            let then = as_of(&records, now);
            let record = then.iter().find(|r| r.id == id).unwrap().clone();
            phase(&then, &record, now)
        };
        assert_eq!(phase_at("k1", 2 * L / 3 + 1), Phase::Retired);
        assert!(phase_at("k1", L - 1).published());
        assert_eq!(phase_at("k1", L), Phase::Expired);
        assert!(!phase_at("k1", L).published());
        assert_eq!(phase_at("k2", L / 2 + 1), Phase::Prepared);
        assert_eq!(phase_at("k2", 2 * L / 3), Phase::Active);
    }

    #[test]
    fn a_server_down_through_half_life_prepares_late_and_activates_before_running_out() {
        let records = vec![key("a", KeyKind::JwtSvid, 0, Some(0))];
        // Back at 0.9 L: prepare now; activation waits for publication, but
        // not past the point where the active key has 1/12 left.
        let (records, steps) = simulate(records, 9 * L / 10, L);
        assert_eq!(steps[0], (9 * L / 10, Step::Prepare));
        let activated = steps.iter().find(|(_, s)| matches!(s, Step::Activate(_))).unwrap().0;
        assert_eq!(activated, L - L / 12);
        assert!(active(&records, KeyKind::JwtSvid, L - 1).is_some_and(|k| k.id == "k1"));
    }

    #[test]
    fn revoking_the_active_key_brings_a_prepared_one_in_or_a_new_one() {
        let mut records = vec![key("a", KeyKind::JwtSvid, 0, Some(0)), key("b", KeyKind::JwtSvid, L / 2, None)];
        records[0].revoked_at = Some(L / 2 + 1);
        assert_eq!(plan(&records, KeyKind::JwtSvid, L / 2 + 1, L), Some(Step::Activate("b".into())));
        assert_eq!(phase(&records, &records[0].clone(), L / 2 + 1), Phase::Revoked);
        records[1].revoked_at = Some(L / 2 + 2);
        assert_eq!(plan(&records, KeyKind::JwtSvid, L / 2 + 2, L), Some(Step::CreateActive));
    }

    #[test]
    fn records_from_before_rotation_count_as_active_from_their_start() {
        let records = [key("old", KeyKind::X509Ca, 0, None)];
        assert_eq!(active(&records, KeyKind::X509Ca, 10).unwrap().id, "old");
        assert_eq!(phase(&records, &records[0], 10), Phase::Active);
        assert_eq!(plan(&records, KeyKind::X509Ca, L / 2, L), Some(Step::Prepare));
    }

    #[test]
    fn the_bundle_sequence_grows_with_every_change_to_the_published_set() {
        let mut records: Vec<KeyRecord> = Vec::new();
        let (mut last_seq, mut last_set) = (0, Vec::new());
        for now in 0..2 * L {
            match plan(&records, KeyKind::JwtSvid, now, L) {
                Some(Step::CreateActive) => records.push(key(&format!("k{now}"), KeyKind::JwtSvid, now, Some(now))),
                Some(Step::Prepare) => records.push(key(&format!("k{now}"), KeyKind::JwtSvid, now, None)),
                Some(Step::Activate(id)) => records.iter_mut().find(|r| r.id == id).unwrap().activated_at = Some(now),
                None => {}
            }
            if now == L + 7 {
                let victim = records.iter_mut().find(|r| r.activated_at.is_none()).unwrap();
                victim.revoked_at = Some(now);
            }
            let set: Vec<String> =
                records.iter().filter(|r| phase(&records, r, now).published()).map(|r| r.id.clone()).collect();
            let seq = bundle_sequence(&records, now);
            assert!(seq >= last_seq, "sequence went back at {now}");
            assert!(set == last_set || seq > last_seq || now == 0, "the set changed at {now}, the sequence did not");
            (last_seq, last_set) = (seq, set);
        }
    }
}
