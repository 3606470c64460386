//! The records the store keeps besides entries and audit events.

use std::fmt;

use lanyard_core::{Entry, EntryId, SessionId, SpiffeId, Task};
use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

/// A node agent the server has attested.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// `spiffe://<td>/agent/<name>`.
    pub spiffe_id: SpiffeId,
    /// The name from its join token.
    pub name: String,
    /// Unix seconds of its node attestation.
    pub attested_at: u64,
    /// Lower-case hex serial of the newest SVID issued to it.
    pub svid_serial: String,
    /// Unix seconds at which that SVID expires.
    pub svid_expires_at: u64,
    /// A banned agent gets nothing.
    pub banned: bool,
    /// Unix seconds of its last call.
    pub last_seen: u64,
    /// The SVID the newest one replaced, while it is still accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_svid: Option<PreviousSvid>,
}

/// An agent SVID superseded by a renewal, accepted for a short while after
/// it so that calls the agent had out on its old connection are not
/// refused (the agent reconnects with the new SVID at once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSvid {
    /// Lower-case hex serial.
    pub serial: String,
    /// Unix seconds until which it is accepted (never past its own notAfter,
    /// which the TLS handshake and the server check as well).
    pub accepted_until: u64,
}

/// A one-time node bootstrap token, stored under the SHA-256 of its secret
/// (see [`hash_join_token`]); the token itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// The agent name the token attests.
    pub name: String,
    /// Unix seconds of creation.
    pub created_at: u64,
    /// Unix seconds after which the token is refused (checked by the caller).
    pub expires_at: u64,
}

/// The store key of a join token: SHA-256 of its secret.
pub fn hash_join_token(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

/// Held while one server changes signing keys ([`crate::Store::lock_keys`]);
/// released when dropped.
pub struct KeyLock(#[allow(dead_code, reason = "held for its drop")] Option<Box<dyn Send + Sync>>);

impl KeyLock {
    /// A lock with nothing to release: the store has one process.
    pub(crate) fn local() -> Self {
        Self(None)
    }

    /// A lock released by dropping `holder`.
    pub(crate) fn held_by(holder: impl Send + Sync + 'static) -> Self {
        Self(Some(Box::new(holder)))
    }
}

impl fmt::Debug for KeyLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "KeyLock(shared)" } else { "KeyLock(local)" })
    }
}

/// What a signing key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyKind {
    /// The X.509 CA that signs SVIDs.
    X509Ca,
    /// A JWT-SVID signing key.
    JwtSvid,
    /// A task-token signing key.
    TaskToken,
}

/// A signing key with its validity. `Debug` never prints the private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The JWT `kid`, or the CA certificate's serial in lower-case hex; unique across kinds.
    pub id: String,
    /// What the key signs.
    pub kind: KeyKind,
    /// PKCS#8 DER, or its encryption under the key-encryption key: the store
    /// does not look inside. Base64 in JSON.
    #[serde(with = "base64")]
    pub pkcs8: Vec<u8>,
    /// The CA certificate, DER, for [`KeyKind::X509Ca`]. Base64 in JSON.
    #[serde(with = "base64_opt")]
    pub cert_der: Option<Vec<u8>>,
    /// The public key (SPKI DER) of a JWT key, readable without the KEK
    /// that may seal `pkcs8`. Base64 in JSON; absent in older records.
    #[serde(default, with = "base64_opt")]
    pub public_der: Option<Vec<u8>>,
    /// Unix seconds from which the key is used.
    pub not_before: u64,
    /// Unix seconds after which the key is no longer used.
    pub not_after: u64,
    /// Unix seconds from which it signs; `None` while it is only prepared
    /// (published in the bundle, not yet signing). Records written before
    /// rotation existed have none.
    #[serde(default)]
    pub activated_at: Option<u64>,
    /// Unix seconds at which an operator revoked it: out of the bundle at once.
    #[serde(default)]
    pub revoked_at: Option<u64>,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("pkcs8", &format_args!("<{} bytes redacted>", self.pkcs8.len()))
            .field("cert_der", &self.cert_der.as_ref().map(Vec::len))
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("activated_at", &self.activated_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

/// What changed for one parent since a revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryChanges {
    /// Entries of this parent created or changed since; all of them when `snapshot`.
    pub upserted: Vec<Entry>,
    /// Entries that left this parent since (deleted or re-parented); empty when `snapshot`.
    pub removed: Vec<EntryId>,
    /// The store revision the answer is complete up to: the next `since`.
    pub revision: u64,
    /// The answer is the full set of the parent's entries: drop everything else held.
    pub snapshot: bool,
}

/// Which entries [`crate::Store::list_entries`] returns; every field set must match.
#[derive(Clone, Debug, Default)]
pub struct EntryFilter {
    /// Only entries served by this agent.
    pub parent_id: Option<SpiffeId>,
    /// Only entries handing out this identity.
    pub spiffe_id: Option<SpiffeId>,
}

/// Which tasks [`crate::Store::list_tasks`] returns; every field set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks active at this Unix second: not ended, and `expires_at` after it.
    pub active_at: Option<u64>,
    /// Only tasks served by this connector.
    pub connector: Option<SpiffeId>,
    /// Only tasks of this session.
    pub session: Option<SessionId>,
}

impl TaskFilter {
    /// Whether `task` passes the filter.
    pub fn matches(&self, task: &Task) -> bool {
        self.active_at.is_none_or(|t| task.ended_at.is_none() && task.expires_at > t)
            && self.connector.as_ref().is_none_or(|c| task.connector == *c)
            && self.session.as_ref().is_none_or(|s| task.session == *s)
    }
}

/// Serde for `[u8; 32]` as 64 lower-case hex digits.
pub(crate) mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&lanyard_core::hex::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        lanyard_core::hex::decode_lower(&s).ok_or_else(|| D::Error::custom("expected 64 lower-case hex digits"))
    }
}

/// Serde for bytes as standard, padded base64 (RFC 4648 §4).
pub(crate) mod base64 {
    use ::base64::Engine;
    use ::base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    pub(crate) fn decode(s: &str) -> Option<Vec<u8>> {
        STANDARD.decode(s).ok()
    }

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        decode(&String::deserialize(d)?).ok_or_else(|| D::Error::custom("invalid base64"))
    }
}

/// Serde for `Option<Vec<u8>>` as base64 or `null`.
pub(crate) mod base64_opt {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&super::base64::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::base64::decode(&s).ok_or_else(|| D::Error::custom("invalid base64")))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in vectors {
            assert_eq!(base64::encode(plain.as_bytes()), coded);
            assert_eq!(base64::decode(coded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64::decode(&base64::encode(&all)).unwrap(), all);
        for bad in ["Zg=", "Zg===", "Z===", "Zg==Zm8=", "Zm9*", "Zm 9"] {
            assert_eq!(base64::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn key_record_json_and_debug() {
        let key = KeyRecord {
            id: "k1".into(),
            kind: KeyKind::JwtSvid,
            pkcs8: b"secret key bytes".to_vec(),
            cert_der: None,
            public_der: None,
            not_before: 1,
            not_after: 2,
            activated_at: None,
            revoked_at: None,
        };
        let json = serde_json::to_value(&key).unwrap();
        assert_eq!(json["pkcs8"], "c2VjcmV0IGtleSBieXRlcw==");
        assert_eq!(json["cert_der"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<KeyRecord>(json).unwrap(), key);
        let with_cert = KeyRecord { cert_der: Some(vec![0x30, 0x82]), ..key.clone() };
        let json = serde_json::to_string(&with_cert).unwrap();
        assert_eq!(serde_json::from_str::<KeyRecord>(&json).unwrap(), with_cert);
        // Records from before rotation existed read as never activated nor revoked.
        let mut old = serde_json::to_value(&key).unwrap();
        old.as_object_mut().unwrap().retain(|k, _| k != "activated_at" && k != "revoked_at");
        assert_eq!(serde_json::from_value::<KeyRecord>(old).unwrap(), key);
        let debug = format!("{key:?}");
        assert!(!debug.contains("115, 101"), "{debug}");
        assert!(debug.contains("redacted"));
    }

    #[test]
    fn join_token_hash_is_sha256() {
        assert_eq!(
            lanyard_core::hex::encode(&hash_join_token("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

/// What must still hold when an allow decision's audit record is written:
/// checked under the same lock as every revocation, so a decision and a
/// revocation are ordered in the log the way they took effect.
#[derive(Clone, Debug, Default)]
pub struct Preconditions {
    /// Tasks that must not have ended and must not expire before `now`.
    pub tasks: Vec<lanyard_core::TaskId>,
    /// Unix seconds of the decision.
    pub now: u64,
    /// A session that must not be revoked.
    pub session: Option<lanyard_core::SessionId>,
    /// Subjects that must have no open risk at one of `blocking_levels`.
    pub risks: Vec<crate::RiskSubject>,
    /// Risk levels that block (e.g. `["low", "medium", "high"]`).
    pub blocking_levels: Vec<String>,
    /// The revocation feed's seq ([`Store::revocation_seq`](crate::Store::revocation_seq))
    /// read before the caller read the tasks, session and risks and checked
    /// them itself (expiry included). If no revocation has been committed
    /// since, nothing above can have changed and the store does not read it
    /// again; otherwise it checks everything above under the lock.
    pub checked_at_revocation: Option<u64>,
}

impl Preconditions {
    /// Whether the caller's own checks still stand: no revocation was
    /// committed after `checked_at_revocation`, the feed being at `head`.
    pub(crate) fn still_hold_at(&self, head: u64) -> bool {
        self.checked_at_revocation == Some(head)
    }
}
