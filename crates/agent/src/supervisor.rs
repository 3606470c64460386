//! Keeps the agent in step with the server: syncs entries, mints and rotates
//! workload SVIDs, renews the agent's own SVID, and reconnects with backoff
//! when the server is away — while the Workload API keeps serving the cache.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanyard_ca::svid::{self, Usage};
use lanyard_ca::{TrustBundle, csr};
use lanyard_core::{Entry, EntryId, Jitter, TrustDomain, rotation, unix_secs};
use lanyard_proto::node::node_client::NodeClient;
use lanyard_proto::node::{MintX509SvidsRequest, RenewAgentRequest, SyncRequest, SyncResponse, X509SvidRequest};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::AgentError;
use crate::backoff::Backoff;
use crate::cache::{CachedSvid, Snapshot};
use crate::convert::{bundle_from_proto, entry_from_proto};
use crate::identity::{self, AgentIdentity};
use crate::node_client::{self, ClientIdentity};

/// Most CSRs sent in one mint call.
pub(crate) const MINT_BATCH: usize = 500;
/// How soon a failed mint is retried.
pub(crate) const MINT_RETRY: Duration = Duration::from_secs(5);

/// The node-API client of the current session, shared with the Workload API
/// (which mints JWT-SVIDs through it); `None` while disconnected.
pub(crate) type ClientWatch = watch::Sender<Option<NodeClient<Channel>>>;

/// The sync/mint/rotate loop and the state it owns.
pub(crate) struct Supervisor {
    pub(crate) servers: Vec<String>,
    pub(crate) data_dir: std::path::PathBuf,
    pub(crate) td: TrustDomain,
    pub(crate) identity: AgentIdentity,
    pub(crate) roots: Vec<Vec<u8>>,
    pub(crate) snapshot: Snapshot,
    pub(crate) publish: watch::Sender<Arc<Snapshot>>,
    pub(crate) client: ClientWatch,
    pub(crate) server_index: usize,
    pub(crate) retry_at: Option<SystemTime>,
    /// Entries whose SVID no longer chains to the bundle (its CA was
    /// revoked): re-minted at the next chance, whatever their age.
    pub(crate) remint: std::collections::HashSet<EntryId>,
    /// The agent's own SVID no longer chains to the bundle: renew it over
    /// the connection that is still open.
    pub(crate) renew_now: bool,
    pub(crate) metrics: Arc<crate::metrics::AgentMetrics>,
}

/// A sync update being received in several messages.
#[derive(Default)]
struct Pending {
    snapshot: bool,
    upserted: Vec<Entry>,
    removed: Vec<EntryId>,
    bundle: Option<TrustBundle>,
    bundle_proto: Option<lanyard_proto::common::Bundle>,
}

impl Supervisor {
    /// Runs until the task is dropped.
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            match self.session(&mut backoff).await {
                Ok(()) => {}
                Err(e) => {
                    self.client.send_replace(None);
                    let delay = backoff.next_delay(lanyard_ca::rand::u32().unwrap_or(u32::MAX / 2));
                    tracing::warn!(error = %e, retry_in = ?delay, "lost the server; serving from cache");
                    self.server_index = self.server_index.wrapping_add(1);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One connection: sync, mint and rotate until something breaks or the
    /// agent SVID is renewed (which needs a new connection).
    async fn session(&mut self, backoff: &mut Backoff) -> Result<(), AgentError> {
        let server = self.servers[self.server_index % self.servers.len()].clone();
        let me = ClientIdentity { chain: self.identity.chain.clone(), key: self.identity.key.clone() };
        let mut client = node_client::connect(&server, &self.td, &self.roots, Some(&me)).await?;
        let mut stream = client
            .sync_entries(SyncRequest { since_revision: self.snapshot.revision })
            .await
            .map_err(|s| AgentError::Rpc("sync", s))?
            .into_inner();
        self.client.send_replace(Some(client.clone()));
        tracing::info!(%server, since = self.snapshot.revision, "connected to server");
        let mut pending = Pending::default();
        loop {
            let sleep = tokio::time::sleep(self.next_deadline());
            tokio::select! {
                message = stream.message() => {
                    let message = message.map_err(|s| AgentError::Rpc("sync", s))?
                        .ok_or_else(|| AgentError::Protocol("server closed the sync stream".into()))?;
                    if self.accept(message, &mut pending)? {
                        backoff.reset();
                        if self.renew_now {
                            // Our certificate's CA left the bundle: renew while
                            // this connection (made before) still stands.
                            self.renew_agent(&mut client).await?;
                            self.renew_now = false;
                            return Ok(());
                        }
                        self.mint_due(&mut client).await?;
                    }
                }
                () = sleep => {
                    if self.agent_svid_due() {
                        self.renew_agent(&mut client).await?;
                        return Ok(());
                    }
                    self.mint_due(&mut client).await?;
                }
            }
        }
    }

    /// Folds one sync message into `pending`; applies the update once the
    /// last message of it arrives. Returns whether it applied.
    fn accept(&mut self, m: SyncResponse, pending: &mut Pending) -> Result<bool, AgentError> {
        if m.snapshot {
            *pending = Pending { snapshot: true, ..Pending::default() };
        }
        if let Some(b) = &m.bundle {
            let bundle = bundle_from_proto(b)?;
            if bundle.trust_domain != self.td {
                return Err(AgentError::Protocol(format!("bundle is for {}, not {}", bundle.trust_domain, self.td)));
            }
            pending.bundle = Some(bundle);
            pending.bundle_proto = Some(b.clone());
        }
        for e in &m.upserted {
            pending.upserted.push(entry_from_proto(e)?);
        }
        for id in &m.removed {
            pending.removed.push(EntryId::parse(id).map_err(|e| AgentError::Protocol(format!("removed id: {e}")))?);
        }
        if m.more {
            return Ok(false);
        }
        let update = std::mem::take(pending);
        self.apply(update, m.revision)?;
        Ok(true)
    }

    fn apply(&mut self, update: Pending, revision: u64) -> Result<(), AgentError> {
        let snap = &mut self.snapshot;
        if let (Some(bundle), Some(proto)) = (update.bundle, update.bundle_proto) {
            identity::save_bundle(&self.data_dir, &proto)?;
            self.roots = bundle.x509_authorities.clone();
            snap.bundle = Some(Arc::new(bundle));
            // A CA that left the bundle early was revoked: whatever it
            // signed is re-minted now rather than at its rotation time.
            let now = SystemTime::now();
            let vouched = |leaf: &[u8]| svid::verify_chain(&[leaf.to_vec()], &self.roots, now, Usage::Client).is_ok();
            for (id, s) in &snap.svids {
                if !vouched(&s.leaf_der) {
                    tracing::warn!(entry = %id, serial = %s.serial, "SVID's CA left the bundle; re-minting");
                    self.remint.insert(id.clone());
                }
            }
            if !self.identity.chain.first().is_some_and(|leaf| vouched(leaf)) {
                tracing::warn!("agent SVID's CA left the bundle; renewing now");
                self.renew_now = true;
            }
        }
        if update.snapshot {
            snap.entries.clear();
        }
        for id in &update.removed {
            snap.entries.remove(id);
        }
        for entry in update.upserted {
            // INVARIANT: the server sends only entries whose parent is this
            // agent; drop anything else rather than trust it.
            if entry.parent_id == self.identity.spiffe_id {
                snap.entries.insert(entry.id.clone(), Arc::new(entry));
            }
        }
        let entries = &snap.entries;
        snap.svids.retain(|id, _| entries.contains_key(id));
        snap.revision = revision;
        snap.synced = snap.bundle.is_some();
        let metrics = &self.metrics;
        metrics.last_sync.store(unix_secs(SystemTime::now()), std::sync::atomic::Ordering::Relaxed);
        metrics.entries.store(snap.entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(revision, entries = snap.entries.len(), "sync applied");
        self.publish.send_replace(Arc::new(snap.clone().indexed()));
        Ok(())
    }

    /// The soonest moment something needs doing: an SVID to rotate, the
    /// agent SVID to renew, a failed mint to retry.
    fn next_deadline(&self) -> Duration {
        let now = SystemTime::now();
        let agent = rotation::rotation_time(self.identity.issued_at, self.identity.not_after, Jitter::NONE);
        let svids = self.snapshot.svids.values().map(|s| rotation::rotation_time(s.issued_at, s.not_after, s.jitter));
        let soonest = svids.chain(std::iter::once(agent)).chain(self.retry_at).min().unwrap_or(agent);
        soonest.duration_since(now).unwrap_or(Duration::ZERO).max(Duration::from_millis(100))
    }

    fn agent_svid_due(&self) -> bool {
        rotation::should_rotate(SystemTime::now(), self.identity.issued_at, self.identity.not_after, Jitter::NONE)
    }

    async fn renew_agent(&mut self, client: &mut NodeClient<Channel>) -> Result<(), AgentError> {
        let (key, request) = csr::new_key_and_csr().map_err(|e| AgentError::Keys(e.to_string()))?;
        let reply = client
            .renew_agent(RenewAgentRequest { csr: request })
            .await
            .map_err(|s| AgentError::Rpc("renew", s))?
            .into_inner();
        let renewed = AgentIdentity::new(reply.svid_chain, key)?;
        svid::verify_chain(&renewed.chain, &self.roots, SystemTime::now(), Usage::Client)
            .map_err(|e| AgentError::Protocol(format!("renewed agent SVID: {e}")))?;
        renewed.save(&self.data_dir)?;
        tracing::info!(not_after = unix_secs(renewed.not_after), "agent SVID renewed");
        self.identity = renewed;
        // The server now refuses the old SVID: no call may use this
        // connection any more; they wait for the next session's.
        self.client.send_replace(None);
        Ok(())
    }

    /// Mints SVIDs for entries that have none, whose entry changed, or that
    /// are due for rotation; publishes the result.
    async fn mint_due(&mut self, client: &mut NodeClient<Channel>) -> Result<(), AgentError> {
        let now = SystemTime::now();
        if self.retry_at.is_some_and(|t| now < t) && !self.has_missing() {
            return Ok(());
        }
        self.retry_at = None;
        let due: Vec<Arc<Entry>> = self
            .snapshot
            .entries
            .values()
            .filter(|e| !e.is_expired(unix_secs(now)))
            .filter(|e| match self.snapshot.svids.get(&e.id) {
                _ if self.remint.contains(&e.id) => true,
                None => true,
                Some(s) => {
                    s.entry_revision != e.revision || rotation::should_rotate(now, s.issued_at, s.not_after, s.jitter)
                }
            })
            .cloned()
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        for batch in due.chunks(MINT_BATCH) {
            self.mint_batch(client, batch).await?;
        }
        self.metrics.svids.store(self.snapshot.svids.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.publish.send_replace(Arc::new(self.snapshot.clone().indexed()));
        Ok(())
    }

    fn has_missing(&self) -> bool {
        self.snapshot.entries.keys().any(|id| !self.snapshot.svids.contains_key(id))
    }

    async fn mint_batch(&mut self, client: &mut NodeClient<Channel>, batch: &[Arc<Entry>]) -> Result<(), AgentError> {
        let count = batch.len();
        let keys = tokio::task::spawn_blocking(move || {
            (0..count).map(|_| csr::new_key_and_csr()).collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| AgentError::Keys(e.to_string()))?
        .map_err(|e| AgentError::Keys(e.to_string()))?;
        let requests = batch
            .iter()
            .zip(&keys)
            .map(|(e, (_, csr))| X509SvidRequest { entry_id: e.id.to_string(), csr: csr.clone() })
            .collect();
        let reply = client
            .mint_x509_svids(MintX509SvidsRequest { requests })
            .await
            .map_err(|s| AgentError::Rpc("mint", s))?
            .into_inner();
        for ((entry, (key, csr_der)), result) in batch.iter().zip(keys).zip(reply.results) {
            if !result.error.is_empty() || result.entry_id != entry.id.as_str() {
                tracing::warn!(entry = %entry.id, error = %result.error, "server refused to mint");
                self.retry_at = Some(SystemTime::now() + MINT_RETRY);
                continue;
            }
            match self.check_svid(entry, &result.svid_chain, &csr_der) {
                Ok(svid) => {
                    tracing::debug!(entry = %entry.id, serial = %svid.serial, "SVID minted");
                    self.remint.remove(&entry.id);
                    match self.snapshot.svids.contains_key(&entry.id) {
                        true => self.metrics.rotations.inc(),
                        false => self.metrics.first_mints.inc(),
                    }
                    self.snapshot.svids.insert(entry.id.clone(), Arc::new(CachedSvid { key, ..svid }));
                }
                Err(e) => {
                    tracing::error!(entry = %entry.id, error = %e, "server returned an unusable SVID");
                    self.retry_at = Some(SystemTime::now() + MINT_RETRY);
                }
            }
        }
        Ok(())
    }

    /// Checks a returned chain before handing it to anyone: it verifies
    /// against the bundle, names the entry's SPIFFE ID and certifies our key.
    fn check_svid(&self, entry: &Entry, chain: &[Vec<u8>], csr_der: &[u8]) -> Result<CachedSvid, AgentError> {
        let info = svid::verify_chain(chain, &self.roots, SystemTime::now(), Usage::Client)
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        if info.spiffe_id != entry.spiffe_id {
            return Err(AgentError::Protocol(format!("SVID names {}, entry is {}", info.spiffe_id, entry.spiffe_id)));
        }
        let ours = csr::parse_csr(csr_der).map_err(|e| AgentError::Keys(e.to_string()))?;
        if info.spki_der != ours.spki_der() {
            return Err(AgentError::Protocol("SVID certifies a key that is not ours".into()));
        }
        Ok(CachedSvid {
            entry_revision: entry.revision,
            spiffe_id: info.spiffe_id,
            chain_der: chain.concat(),
            leaf_der: chain.first().cloned().unwrap_or_default(),
            key: Vec::new(),
            serial: info.serial,
            issued_at: rotation::issued_at(info.not_before, info.not_after),
            not_after: info.not_after,
            jitter: Jitter::from_random(lanyard_ca::rand::u32().unwrap_or(u32::MAX / 2)),
            hint: entry.hint.clone(),
        })
    }
}
