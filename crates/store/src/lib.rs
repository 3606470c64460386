//! Lanyard's persistent state: registration entries, agents, join tokens,
//! signing keys, tasks, the revocation feed, risk reports and the
//! hash-chained audit log.
//!
//! The server codes against the [`Store`] trait (held as `Arc<dyn Store>`);
//! [`SledStore`] is the embedded implementation, one directory and no
//! setup. A write is acknowledged only once it is durable, atomically with
//! its audit record; concurrent writers share one fsync (group commit).
//! Entry writes carry a global revision that agents sync from
//! incrementally ([`Store::entry_changes`]).
//!
//! ```
//! use lanyard_store::{AuditEvent, SledStore, Store};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let rt = tokio::runtime::Runtime::new()?;
//! rt.block_on(async {
//!     let store = SledStore::open(dir.path())?;
//!     let event = AuditEvent {
//!         at: 1_700_000_000,
//!         kind: "server.start".into(),
//!         actor: "server".into(),
//!         subject: "spiffe://example.org/lanyard/server".into(),
//!         detail: serde_json::json!({}),
//!         ..AuditEvent::default()
//!     };
//!     let record = store.append_audit(event).await?; // durable on return
//!     assert_eq!(record.seq, 1);
//!     assert_eq!(store.verify_audit_chain().await?.head, record.hash);
//!     assert_eq!(store.audit_head(), 1);
//!
//!     // Revocations are one gapless feed, each event atomic with its audit record.
//!     let revoked = store.revoke_token("jti-1", 1_700_000_001, AuditEvent::default()).await?;
//!     assert_eq!(store.revocations_since(0, 10).await?, vec![revoked]);
//!     Ok::<_, lanyard_store::StoreError>(())
//! })?;
//! # Ok(())
//! # }
//! ```

mod audit;
mod commit;
#[cfg(test)]
mod contract;
mod ending;
mod error;
mod migrate;
mod pg_store;
mod records;
mod revocation;
mod sled_store;
mod store;

pub use audit::{
    AuditContext, AuditEvent, AuditFilter, AuditRecord, ChainReport, GENESIS_HASH, canonical_event, chain_hash,
};
pub use commit::WriteIntent;
pub use error::{Result, StoreError};
pub use migrate::{MigrationReport, StoreExport, Tombstone};
pub use pg_store::{PG_SCHEMA_VERSION, PgStore};
pub use records::{
    AgentRecord, EntryChanges, EntryFilter, JoinTokenRecord, KeyKind, KeyLock, KeyRecord, Preconditions, PreviousSvid,
    TaskFilter, hash_join_token,
};
pub use revocation::{Revocation, RevocationKind, RiskRecord, RiskSubject};
pub use sled_store::{BackupManifest, SledStore};
pub use store::Store;
