//! What the agent knows, published as immutable snapshots: every Workload
//! API call reads the latest one without locks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use lanyard_ca::TrustBundle;
use lanyard_core::{Entry, EntryId, Jitter, Selector, SpiffeId, selector};

/// An X.509-SVID held for a workload.
#[derive(Clone)]
pub(crate) struct CachedSvid {
    /// The revision of the entry it was minted for; a newer entry re-mints.
    pub(crate) entry_revision: u64,
    /// The identity.
    pub(crate) spiffe_id: SpiffeId,
    /// DER certificates, concatenated, leaf first (the Workload API form).
    pub(crate) chain_der: Vec<u8>,
    /// The leaf alone: what binds a task token to this SVID.
    pub(crate) leaf_der: Vec<u8>,
    /// PKCS#8 DER private key, generated here.
    pub(crate) key: Vec<u8>,
    /// Serial of the leaf, hex.
    pub(crate) serial: String,
    /// When it was issued; rotation counts from here.
    pub(crate) issued_at: SystemTime,
    /// When it expires.
    pub(crate) not_after: SystemTime,
    /// Fixed per SVID so the fleet spreads its renewals.
    pub(crate) jitter: Jitter,
    /// Operator hint from the entry.
    pub(crate) hint: String,
}

impl std::fmt::Debug for CachedSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// One consistent view of entries, SVIDs and the bundle.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    /// The trust bundle; `None` until the first sync.
    pub(crate) bundle: Option<Arc<TrustBundle>>,
    /// Entries this agent serves.
    pub(crate) entries: BTreeMap<EntryId, Arc<Entry>>,
    /// SVIDs by entry.
    pub(crate) svids: HashMap<EntryId, Arc<CachedSvid>>,
    /// The store revision the entries are complete up to.
    pub(crate) revision: u64,
    /// Whether a sync with the server has completed since start.
    pub(crate) synced: bool,
    /// Entry ids by their first selector: an entry matches only callers that
    /// have that selector, so lookups never scan every entry.
    by_first_selector: HashMap<Selector, Vec<EntryId>>,
    /// Whether any entry has a `unix:sha256` selector.
    needs_digest: bool,
}

impl Snapshot {
    /// This snapshot with its lookup index rebuilt; call before publishing.
    pub(crate) fn indexed(mut self) -> Self {
        self.by_first_selector.clear();
        for entry in self.entries.values() {
            if let Some(first) = entry.selectors.first() {
                self.by_first_selector.entry(first.clone()).or_default().push(entry.id.clone());
            }
        }
        self.needs_digest = self.entries.values().any(|e| e.selectors.iter().any(Selector::needs_digest));
        self
    }

    /// Entries whose every selector the caller satisfies and that have not
    /// expired, in entry-id order.
    pub(crate) fn matching(&self, attested: &[Selector], now_unix: u64) -> Vec<&Arc<Entry>> {
        let mut found: Vec<&Arc<Entry>> = attested
            .iter()
            .filter_map(|s| self.by_first_selector.get(s))
            .flatten()
            .filter_map(|id| self.entries.get(id))
            .filter(|e| !e.is_expired(now_unix) && selector::all_match(&e.selectors, attested))
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.dedup_by(|a, b| a.id == b.id);
        found
    }

    /// Whether any entry needs the caller's executable hashed.
    pub(crate) fn needs_digest(&self) -> bool {
        self.needs_digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanyard_core::{SpiffeId, Ttl};

    fn entry(id: &str, selectors: &[&str], expires_at: Option<u64>) -> Arc<Entry> {
        Arc::new(Entry {
            id: EntryId::parse(id).unwrap(),
            spiffe_id: SpiffeId::parse(&format!("spiffe://example.org/{id}")).unwrap(),
            parent_id: SpiffeId::parse("spiffe://example.org/agent/a").unwrap(),
            selectors: selectors.iter().map(|s| Selector::parse(s).unwrap()).collect(),
            x509_ttl: Ttl::ONE_HOUR,
            jwt_ttl: Ttl::FIVE_MINUTES,
            dns_names: vec![],
            expires_at,
            hint: String::new(),
            revision: 1,
            tools: vec![],
            audiences: vec![],
            max_classification: lanyard_core::Classification::Public,
            delegate_to: vec![],
            task_authority: false,
        })
    }

    #[test]
    fn matching_uses_every_selector_and_skips_expired() {
        let mut snap = Snapshot::default();
        let digest = format!("unix:sha256:{}", "0".repeat(64));
        for e in [
            entry("a", &["unix:uid:1"], None),
            entry("b", &["unix:gid:2", "unix:uid:1"], None),
            entry("c", &["unix:path:/x", "unix:uid:1"], None),
            entry("d", &["unix:uid:1"], Some(10)),
            entry("e", &["unix:uid:2"], None),
            entry("f", &[digest.as_str()], None),
        ] {
            snap.entries.insert(e.id.clone(), e);
        }
        let snap = snap.indexed();
        let caller: Vec<Selector> = ["unix:uid:1", "unix:gid:2"].iter().map(|s| Selector::parse(s).unwrap()).collect();
        let ids: Vec<_> = snap.matching(&caller, 20).iter().map(|e| e.id.to_string()).collect();
        assert_eq!(ids, ["a", "b"]);
        let ids: Vec<_> = snap.matching(&caller, 5).iter().map(|e| e.id.to_string()).collect();
        assert_eq!(ids, ["a", "b", "d"]);
        assert!(snap.needs_digest());
        assert!(snap.matching(&[], 0).is_empty());
    }
}
