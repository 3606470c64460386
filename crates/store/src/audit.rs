//! The tamper-evident audit log: events, hash-chained records, and the walk
//! that verifies a chain.
//!
//! Record `n` commits to record `n - 1` through `prev_hash`, so altering,
//! removing or reordering any record breaks every hash after it. Truncating
//! the tail is only detectable against a head hash kept elsewhere: export
//! [`ChainReport::head`] to anchor it.

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, StoreError};
use crate::records::hex32;

/// The `prev_hash` of record 1.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// An audit event as the caller describes it; the store adds seq and hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unix seconds, by the caller's clock.
    pub at: u64,
    /// What happened: `entry.create`, `x509svid.mint`, …
    pub kind: String,
    /// Who asked: `admin:uid=0`, an agent's SPIFFE ID, …
    pub actor: String,
    /// What it is about: a SPIFFE ID, an entry id, …
    pub subject: String,
    /// Anything else worth keeping, as JSON.
    pub detail: Value,
}

/// A stored audit record: one link of a hash chain.
///
/// `hash = SHA-256(prev_hash || seq as 8 bytes big-endian || canonical JSON
/// of event)`, see [`chain_hash`]. Hashes are lower-case hex in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3, … without gaps.
    pub seq: u64,
    /// What happened.
    pub event: AuditEvent,
    /// The `hash` of record `seq - 1`, or [`GENESIS_HASH`] for record 1.
    #[serde(with = "hex32")]
    pub prev_hash: [u8; 32],
    /// This record's hash.
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
}

/// The outcome of a successful chain verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// How many records were checked.
    pub records: u64,
    /// The hash of the last record ([`GENESIS_HASH`] for an empty log).
    pub head: [u8; 32],
}

/// The hash of record `seq` holding `event` after a record whose hash is `prev_hash`.
pub fn chain_hash(prev_hash: &[u8; 32], seq: u64, event: &AuditEvent) -> [u8; 32] {
    let mut input = Vec::with_capacity(128);
    input.extend_from_slice(prev_hash);
    input.extend_from_slice(&seq.to_be_bytes());
    input.extend_from_slice(canonical_event(event).as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, &input).as_ref());
    out
}

/// The canonical JSON of an event: no whitespace, object keys sorted by
/// their UTF-8 bytes at every depth, strings escaped minimally.
///
/// Independent of serde_json's map ordering features, so a record hashes the
/// same whichever crates are linked in.
pub fn canonical_event(event: &AuditEvent) -> String {
    let mut out = String::with_capacity(96);
    out.push_str("{\"actor\":");
    write_string(&event.actor, &mut out);
    out.push_str(",\"at\":");
    out.push_str(&event.at.to_string());
    out.push_str(",\"detail\":");
    write_value(&event.detail, &mut out);
    out.push_str(",\"kind\":");
    write_string(&event.kind, &mut out);
    out.push_str(",\"subject\":");
    write_string(&event.subject, &mut out);
    out.push('}');
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut fields: Vec<_> = map.iter().collect();
            fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The head of the chain: what the next record links to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChainHead {
    /// Seq of the last record, 0 for an empty log.
    pub(crate) seq: u64,
    /// Hash of the last record.
    pub(crate) hash: [u8; 32],
}

impl ChainHead {
    /// The head of an empty log.
    pub(crate) const GENESIS: Self = Self { seq: 0, hash: GENESIS_HASH };

    /// The record that would follow this head.
    pub(crate) fn next(&self, event: AuditEvent) -> AuditRecord {
        let seq = self.seq + 1;
        AuditRecord { seq, hash: chain_hash(&self.hash, seq, &event), prev_hash: self.hash, event }
    }

    /// The head after `record`.
    pub(crate) fn after(record: &AuditRecord) -> Self {
        Self { seq: record.seq, hash: record.hash }
    }
}

/// Checks records one by one, in key order, from seq 1.
#[derive(Debug)]
pub(crate) struct ChainWalker {
    head: ChainHead,
}

impl ChainWalker {
    /// A walker expecting record 1.
    pub(crate) fn new() -> Self {
        Self { head: ChainHead::GENESIS }
    }

    /// Checks the record stored under `key_seq` with raw JSON `bytes`.
    pub(crate) fn check(&mut self, key_seq: u64, bytes: &[u8]) -> Result<()> {
        let want = self.head.seq + 1;
        let broken = |reason: String| StoreError::ChainBroken { seq: want, reason };
        if key_seq != want {
            return Err(broken(format!("record {want} is missing (next is {key_seq})")));
        }
        let record: AuditRecord =
            serde_json::from_slice(bytes).map_err(|e| broken(format!("record does not decode: {e}")))?;
        if record.seq != want {
            return Err(broken(format!("record claims seq {}", record.seq)));
        }
        if record.prev_hash != self.head.hash {
            return Err(broken("prev_hash is not the previous record's hash".into()));
        }
        if chain_hash(&record.prev_hash, record.seq, &record.event) != record.hash {
            return Err(broken("hash does not match the record's contents".into()));
        }
        self.head = ChainHead::after(&record);
        Ok(())
    }

    /// The report once every record has been checked; `expected_seq` is the
    /// head the store knew before the walk, so a missing tail is caught.
    pub(crate) fn finish(self, expected_seq: u64) -> Result<ChainReport> {
        if self.head.seq < expected_seq {
            return Err(StoreError::ChainBroken {
                seq: self.head.seq + 1,
                reason: format!("records after {} are missing", self.head.seq),
            });
        }
        Ok(ChainReport { records: self.head.seq, head: self.head.hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(n: u64) -> AuditEvent {
        AuditEvent {
            at: 1_700_000_000 + n,
            kind: "entry.create".into(),
            actor: "admin:uid=0".into(),
            subject: format!("e{n}"),
            detail: json!({"z": 1, "a": [true, null, "x\"\n\u{1}"], "m": {"b": 1.5, "a": -2}}),
        }
    }

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut head = ChainHead::GENESIS;
        (1..=n)
            .map(|i| {
                let r = head.next(event(i));
                head = ChainHead::after(&r);
                r
            })
            .collect()
    }

    #[test]
    fn canonical_form_sorts_keys_and_matches_serde_json_escaping() {
        let e = event(1);
        let canon = canonical_event(&e);
        assert_eq!(
            canon,
            r#"{"actor":"admin:uid=0","at":1700000001,"detail":{"a":[true,null,"x\"\n\u0001"],"m":{"a":-2,"b":1.5},"z":1},"kind":"entry.create","subject":"e1"}"#
        );
        // Same value built in another key order hashes the same.
        let mut other = e.clone();
        other.detail = json!({"m": {"a": -2, "b": 1.5}, "z": 1, "a": [true, null, "x\"\n\u{1}"]});
        assert_eq!(canonical_event(&other), canon);
        // And it is JSON that decodes back to the event.
        assert_eq!(serde_json::from_str::<AuditEvent>(&canon).unwrap(), e);
    }

    #[test]
    fn records_link_and_verify() {
        let records = chain(3);
        assert_eq!(records[0].prev_hash, GENESIS_HASH);
        assert_eq!(records[1].prev_hash, records[0].hash);
        let mut walker = ChainWalker::new();
        for r in &records {
            walker.check(r.seq, &serde_json::to_vec(r).unwrap()).unwrap();
        }
        let report = walker.finish(3).unwrap();
        assert_eq!(report.records, 3);
        assert_eq!(report.head, records[2].hash);
    }

    #[test]
    fn hashes_are_hex_in_json() {
        let r = &chain(1)[0];
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["prev_hash"], json!("0".repeat(64)));
        assert_eq!(serde_json::from_value::<AuditRecord>(v).unwrap(), *r);
    }

    fn broken_at(records: &[AuditRecord], keys: &[u64], bodies: &[Vec<u8>]) -> (u64, String) {
        let mut walker = ChainWalker::new();
        for (k, b) in keys.iter().zip(bodies) {
            if let Err(StoreError::ChainBroken { seq, reason }) = walker.check(*k, b) {
                return (seq, reason);
            }
        }
        match walker.finish(records.len() as u64) {
            Err(StoreError::ChainBroken { seq, reason }) => (seq, reason),
            other => panic!("chain verified: {other:?}"),
        }
    }

    #[test]
    fn each_kind_of_tampering_is_caught() {
        let records = chain(3);
        let bodies: Vec<Vec<u8>> = records.iter().map(|r| serde_json::to_vec(r).unwrap()).collect();

        let mut edited = records[1].clone();
        edited.event.actor = "mallory".into();
        let mut b = bodies.clone();
        b[1] = serde_json::to_vec(&edited).unwrap();
        let (seq, reason) = broken_at(&records, &[1, 2, 3], &b);
        assert_eq!((seq, reason.contains("hash does not match")), (2, true));

        // Re-hashing the edited record moves the break to the next link.
        edited.hash = chain_hash(&edited.prev_hash, 2, &edited.event);
        b[1] = serde_json::to_vec(&edited).unwrap();
        let (seq, reason) = broken_at(&records, &[1, 2, 3], &b);
        assert_eq!((seq, reason.contains("prev_hash")), (3, true));

        let (seq, _) = broken_at(&records, &[1, 3], &[bodies[0].clone(), bodies[2].clone()]);
        assert_eq!(seq, 2, "gap");
        let (seq, _) = broken_at(&records, &[1, 2], &bodies[..2]);
        assert_eq!(seq, 3, "truncated tail");
        let (seq, _) = broken_at(&records, &[1], &[b"{".to_vec()]);
        assert_eq!(seq, 1, "undecodable");
        let (seq, _) = broken_at(&records, &[1, 2], &[bodies[0].clone(), bodies[2].clone()]);
        assert_eq!(seq, 2, "record under the wrong key");
    }
}
