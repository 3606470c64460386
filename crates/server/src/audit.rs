//! The audit log, server side: signed checkpoints, verification of the
//! chain and of its checkpoints, and records on the wire.
//!
//! The store chains every record to the one before it, so editing, removing
//! or reordering a record breaks the chain at that record. Cutting records off
//! the *end* leaves a shorter chain that still verifies; checkpoints close that
//! gap. Every [`ServerConfig::checkpoint_every`] records the server signs the
//! position and hash of the log (with the JWT-SVID key, published in the
//! bundle) and appends that checkpoint to the log and to its own log output.
//! Anyone who kept a checkpoint can later show the store was truncated.
//!
//! [`ServerConfig::checkpoint_every`]: crate::ServerConfig::checkpoint_every

use std::sync::Arc;

use lanyard_ca::JwtAuthority;
use lanyard_core::unix_secs;
use lanyard_jose::VerifyingKey;
use lanyard_store::{AuditEvent, AuditFilter, AuditRecord, KeyKind, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::state::State;

/// The `kind` of checkpoint records.
pub const CHECKPOINT_KIND: &str = "audit.checkpoint";
/// The JWS `typ` of a checkpoint.
pub const CHECKPOINT_TYP: &str = "lanyard-checkpoint+jwt";

/// What a checkpoint signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    /// The audit record it vouches for (and, through the chain, all before it).
    pub seq: u64,
    /// That record's hash, hex.
    pub hash: String,
    /// When it was signed, Unix seconds.
    pub iat: u64,
}

/// Why an audit log does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditVerifyError {
    /// A record is missing, altered or out of order.
    #[error("audit record {seq} is broken: {reason}")]
    Broken {
        /// The first bad record.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint is not signed by a known key or does not match the chain.
    #[error("checkpoint for record {seq} does not hold: {reason}")]
    Checkpoint {
        /// The record the checkpoint vouches for.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log is shorter than a checkpoint says it was.
    #[error("audit log was truncated: a checkpoint vouches for record {checkpoint} but the log ends at {records}")]
    Truncated {
        /// The checkpointed record.
        checkpoint: u64,
        /// Records present.
        records: u64,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(StoreError),
}

impl From<StoreError> for AuditVerifyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ChainBroken { seq, reason } => Self::Broken { seq, reason },
            other => Self::Store(other),
        }
    }
}

/// A verified log: how long it is, its head, and its newest checkpoint.
#[derive(Clone, Debug)]
pub struct AuditReport {
    /// Records in the chain.
    pub records: u64,
    /// Hash of the newest record.
    pub head: [u8; 32],
    /// The newest signed checkpoint (JWS), if any.
    pub checkpoint: Option<String>,
}

/// Signs a checkpoint over `record`.
pub(crate) fn sign_checkpoint(
    key: &JwtAuthority,
    record: &AuditRecord,
    now: u64,
) -> Result<String, lanyard_ca::CaError> {
    let claims = CheckpointClaims { seq: record.seq, hash: lanyard_core::hex::encode(&record.hash), iat: now };
    key.sign_claims_as(CHECKPOINT_TYP, &claims)
}

/// The public JWT-SVID keys in a store: what checkpoints are signed with.
pub async fn store_checkpoint_keys(store: &dyn Store) -> Result<Vec<VerifyingKey>, StoreError> {
    let mut keys = Vec::new();
    for record in store.list_keys().await? {
        if record.kind != KeyKind::JwtSvid {
            continue;
        }
        // The public half, readable without the KEK; older records have
        // only the private key, in the clear.
        let key = match &record.public_der {
            Some(spki) => VerifyingKey::from_spki_der(spki).ok(),
            None => lanyard_jose::SigningKey::from_pkcs8(&record.pkcs8).ok().map(|k| k.verifying_key()),
        };
        keys.extend(key);
    }
    Ok(keys)
}

/// Checks a checkpoint's signature and reads its claims.
fn open_checkpoint(jws: &str, keys: &[VerifyingKey]) -> Result<CheckpointClaims, String> {
    let verified = lanyard_jose::verify(jws, Some(&[CHECKPOINT_TYP]), |kid| keys.iter().find(|k| k.kid() == kid))
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&verified.claims).map_err(|e| e.to_string())
}

/// Walks the whole chain, then checks every checkpoint in it: signed by one
/// of `keys`, and naming the hash the chain has at its position.
pub async fn verify_audit(store: &dyn Store, keys: &[VerifyingKey]) -> Result<AuditReport, AuditVerifyError> {
    let chain = store.verify_audit_chain().await?;
    let filter = AuditFilter { kind: Some(CHECKPOINT_KIND.to_owned()), ..AuditFilter::default() };
    let mut newest = None;
    let mut from = 1;
    loop {
        let page = store.query_audit(&filter, from, 1000).await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for record in &page {
            let jws = record.event.detail["jws"].as_str().unwrap_or_default().to_owned();
            check_checkpoint(store, keys, &jws, chain.records).await?;
            newest = Some(jws);
        }
    }
    Ok(AuditReport { records: chain.records, head: chain.head, checkpoint: newest })
}

/// Checks one checkpoint (from the log, or one kept elsewhere) against a
/// store whose chain has `records` records.
pub async fn check_checkpoint(
    store: &dyn Store,
    keys: &[VerifyingKey],
    jws: &str,
    records: u64,
) -> Result<CheckpointClaims, AuditVerifyError> {
    let claims = open_checkpoint(jws, keys).map_err(|reason| AuditVerifyError::Checkpoint { seq: 0, reason })?;
    if claims.seq > records {
        return Err(AuditVerifyError::Truncated { checkpoint: claims.seq, records });
    }
    let at = store.audit_range(claims.seq, 1).await?;
    match at.first() {
        Some(r) if r.seq == claims.seq && lanyard_core::hex::encode(&r.hash) == claims.hash => Ok(claims),
        _ => Err(AuditVerifyError::Checkpoint {
            seq: claims.seq,
            reason: "the log's record at this position has another hash".into(),
        }),
    }
}

/// Appends a signed checkpoint whenever the log crosses a multiple of
/// `every` records. Runs until the server stops.
pub(crate) async fn checkpoint_loop(state: Arc<State>, every: u64) {
    if every == 0 {
        return;
    }
    let mut heads = state.store.subscribe_audit();
    let mut done = last_checkpointed(&state).await;
    loop {
        let head = *heads.borrow_and_update();
        let due = head / every * every;
        if due > done {
            match append_checkpoint(&state, due).await {
                Ok(()) => done = due,
                Err(e) => tracing::error!(error = %e, seq = due, "could not write an audit checkpoint"),
            }
        }
        if heads.changed().await.is_err() {
            return;
        }
    }
}

async fn last_checkpointed(state: &State) -> u64 {
    let filter = AuditFilter { kind: Some(CHECKPOINT_KIND.to_owned()), ..AuditFilter::default() };
    let mut last = 0;
    let mut from = 1;
    while let Ok(page) = state.store.query_audit(&filter, from, 1000).await {
        let Some(end) = page.last() else { break };
        from = end.seq + 1;
        last = page.iter().filter_map(|r| r.event.detail["seq"].as_u64()).max().unwrap_or(last).max(last);
    }
    last
}

async fn append_checkpoint(state: &State, seq: u64) -> Result<(), String> {
    let record = state.store.audit_range(seq, 1).await.map_err(|e| e.to_string())?;
    let record = record.into_iter().find(|r| r.seq == seq).ok_or("checkpointed record is missing")?;
    let now = unix_secs(state.now());
    let jws = sign_checkpoint(&state.keys().jwt, &record, now).map_err(|e| e.to_string())?;
    let hash = lanyard_core::hex::encode(&record.hash);
    // The server's own log is the second place the checkpoint lives.
    tracing::info!(seq, hash = %hash, checkpoint = %jws, "audit checkpoint");
    let event = AuditEvent {
        at: now,
        kind: CHECKPOINT_KIND.into(),
        actor: "server".into(),
        subject: seq.to_string(),
        detail: serde_json::json!({ "seq": seq, "hash": hash, "jws": jws }),
        ..AuditEvent::default()
    };
    state.store.append_audit(event).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// A record on the wire: its sequence number and its JSON.
pub(crate) fn record_to_proto(r: &AuditRecord) -> lanyard_proto::admin::AuditRecord {
    lanyard_proto::admin::AuditRecord { seq: r.seq, json: serde_json::to_string(r).unwrap_or_default() }
}
