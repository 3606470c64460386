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
    /// PKCS#8 DER private key, generated here.
    pub(crate) key: Vec<u8>,
    /// Serial of the leaf, hex.
    pub(crate) serial: String,
    /// Validity window.
    pub(crate) not_before: SystemTime,
    /// Validity window.
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
}

impl Snapshot {
    /// Entries whose every selector the caller satisfies and that have not expired.
    pub(crate) fn matching(&self, attested: &[Selector], now_unix: u64) -> Vec<&Arc<Entry>> {
        self.entries
            .values()
            .filter(|e| !e.is_expired(now_unix) && selector::all_match(&e.selectors, attested))
            .collect()
    }

    /// Whether any entry needs the caller's executable hashed.
    pub(crate) fn needs_digest(&self) -> bool {
        self.entries
            .values()
            .any(|e| e.selectors.iter().any(Selector::needs_digest))
    }
}
