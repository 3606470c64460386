//! The revocation feed's documents, verified: SETs (RFC 8417), heartbeats
//! and snapshots, each an ES256 JWS signed by a JWT-SVID key of the trust
//! bundle with its own `typ`, so none of them passes for another or for a
//! token. Pure: bytes and a bundle in, typed values out.

use lanyard_ca::{JwtKeyPurpose, TrustBundle};
use lanyard_jose::VerifyingKey;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::FeedError;
use crate::revocation::{EventKind, Heartbeat, RevocationEvent, Snapshot};

/// `typ` of a revocation event.
pub const SET_TYP: &str = "secevent+jwt";
/// `typ` of a feed heartbeat.
pub const HEARTBEAT_TYP: &str = "lanyard-feed+jwt";
/// `typ` of a snapshot.
pub const SNAPSHOT_TYP: &str = "lanyard-snapshot+jwt";
/// Prefix of the event type URIs (`urn:lanyard:revocation:task_ended`, …).
pub const EVENT_URI_PREFIX: &str = "urn:lanyard:revocation:";

/// One answer of `GET /v1/revocations`, verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedPage {
    /// The events, oldest first.
    pub events: Vec<RevocationEvent>,
    /// What to ask after next time.
    pub next: u64,
    /// The oldest event the feed still serves.
    pub oldest: u64,
    /// The signed heartbeat.
    pub heartbeat: Heartbeat,
}

/// The page as sent.
#[derive(Deserialize)]
struct WirePage {
    events: Vec<String>,
    next: u64,
    #[serde(default)]
    oldest: u64,
    heartbeat: String,
}

#[derive(Deserialize)]
struct SetClaims {
    iat: u64,
    seq: u64,
    events: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct EventPayload {
    subject: String,
    #[serde(default)]
    tasks: Vec<String>,
    /// Absent on a raised risk: taken as blocking (fail closed).
    #[serde(default)]
    blocking: Option<bool>,
}

#[derive(Deserialize)]
struct HeartbeatClaims {
    iat: u64,
    head: u64,
}

#[derive(Deserialize)]
struct SnapshotClaims {
    iat: u64,
    as_of: u64,
    #[serde(default)]
    ended_tasks: Vec<String>,
    #[serde(default)]
    revoked_sessions: Vec<String>,
    #[serde(default)]
    revoked_jtis: Vec<String>,
    #[serde(default)]
    deleted_entries: Vec<String>,
    #[serde(default)]
    banned_agents: Vec<String>,
    #[serde(default)]
    risks: Vec<SnapshotRisk>,
    #[serde(default)]
    revoked_keys: Vec<String>,
}

#[derive(Deserialize)]
struct SnapshotRisk {
    subject: String,
    #[serde(default)]
    blocking: Option<bool>,
}

/// Verifies a feed answer (the JSON body) and every document in it.
pub fn parse_page(body: &[u8], bundle: &TrustBundle) -> Result<FeedPage, FeedError> {
    let page: WirePage = serde_json::from_slice(body).map_err(|e| FeedError::BadAnswer(e.to_string()))?;
    let events = page.events.iter().map(|set| verify_event(set, bundle)).collect::<Result<Vec<_>, _>>()?;
    Ok(FeedPage { events, next: page.next, oldest: page.oldest, heartbeat: verify_heartbeat(&page.heartbeat, bundle)? })
}

/// Verifies the answer of `GET /v1/revocations/snapshot` (`{"snapshot": JWS}`).
pub fn parse_snapshot_answer(body: &[u8], bundle: &TrustBundle) -> Result<Snapshot, FeedError> {
    #[derive(Deserialize)]
    struct Answer {
        snapshot: String,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|e| FeedError::BadAnswer(e.to_string()))?;
    verify_snapshot(&answer.snapshot, bundle)
}

/// Verifies one SET: signature, `typ`, exactly one Lanyard event.
pub fn verify_event(jws: &str, bundle: &TrustBundle) -> Result<RevocationEvent, FeedError> {
    const WHAT: &str = "event";
    let claims: SetClaims = verify_as(jws, SET_TYP, WHAT, bundle)?;
    let bad = |reason: String| FeedError::BadClaims { what: WHAT, reason };
    let mut events = claims.events.into_iter();
    let (Some((uri, payload)), None) = (events.next(), events.next()) else {
        return Err(bad("a SET must carry exactly one event".into()));
    };
    let name = uri.strip_prefix(EVENT_URI_PREFIX).ok_or_else(|| bad(format!("unknown event type {uri:?}")))?;
    let payload: EventPayload = serde_json::from_value(payload).map_err(|e| bad(e.to_string()))?;
    Ok(RevocationEvent {
        seq: claims.seq,
        at: claims.iat,
        kind: EventKind::from_name(name),
        subject: payload.subject,
        tasks: payload.tasks,
        blocking: payload.blocking.unwrap_or(true),
    })
}

/// Verifies a heartbeat.
pub fn verify_heartbeat(jws: &str, bundle: &TrustBundle) -> Result<Heartbeat, FeedError> {
    let claims: HeartbeatClaims = verify_as(jws, HEARTBEAT_TYP, "heartbeat", bundle)?;
    Ok(Heartbeat { at: claims.iat, head: claims.head })
}

/// Verifies a snapshot.
pub fn verify_snapshot(jws: &str, bundle: &TrustBundle) -> Result<Snapshot, FeedError> {
    let c: SnapshotClaims = verify_as(jws, SNAPSHOT_TYP, "snapshot", bundle)?;
    Ok(Snapshot {
        at: c.iat,
        as_of: c.as_of,
        ended_tasks: c.ended_tasks,
        revoked_sessions: c.revoked_sessions,
        revoked_jtis: c.revoked_jtis,
        deleted_entries: c.deleted_entries,
        banned_agents: c.banned_agents,
        blocking_risks: c.risks.into_iter().filter(|r| r.blocking.unwrap_or(true)).map(|r| r.subject).collect(),
        revoked_keys: c.revoked_keys,
    })
}

/// Checks a feed document's signature (by a JWT-SVID key: the issuer signs
/// the feed with it) and `typ`, then reads its claims.
fn verify_as<T: DeserializeOwned>(
    jws: &str,
    typ: &str,
    what: &'static str,
    bundle: &TrustBundle,
) -> Result<T, FeedError> {
    let verified = lanyard_jose::verify(jws, Some(&[typ]), |kid| feed_key(bundle, kid))
        .map_err(|source| FeedError::Signature { what, source })?;
    serde_json::from_slice(&verified.claims).map_err(|e| FeedError::BadClaims { what, reason: e.to_string() })
}

fn feed_key<'b>(bundle: &'b TrustBundle, kid: &str) -> Option<&'b VerifyingKey> {
    bundle.jwt_authorities.iter().find(|k| k.purpose == JwtKeyPurpose::JwtSvid && k.key.kid() == kid).map(|k| &k.key)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testkit::Fixture;

    #[test]
    fn events_heartbeats_and_snapshots_verify_with_their_own_typ_only() {
        let f = Fixture::new();
        let set = f.set(3, "session_revoked", json!({"subject": "s1", "tasks": ["t1", "t2"]}));
        let event = verify_event(&set, &f.bundle).unwrap();
        assert_eq!((event.seq, event.kind.clone(), event.subject.as_str()), (3, EventKind::SessionRevoked, "s1"));
        assert_eq!(event.tasks, ["t1", "t2"]);
        assert!(matches!(verify_heartbeat(&set, &f.bundle), Err(FeedError::Signature { what: "heartbeat", .. })));
        assert!(matches!(verify_snapshot(&set, &f.bundle), Err(FeedError::Signature { .. })));

        let beat = f.heartbeat(5);
        assert_eq!(verify_heartbeat(&beat, &f.bundle).unwrap(), Heartbeat { at: f.now_secs(), head: 5 });
        assert!(matches!(verify_event(&beat, &f.bundle), Err(FeedError::Signature { .. })));
    }

    #[test]
    fn feed_documents_signed_by_the_task_token_key_or_a_stranger_are_refused() {
        let f = Fixture::new();
        let claims = json!({"iat": f.now_secs(), "head": 1});
        let by_task_key = f.task_key.sign_claims_as(HEARTBEAT_TYP, &claims).unwrap();
        let stranger = lanyard_jose::SigningKey::generate().unwrap().sign_claims(HEARTBEAT_TYP, &claims).unwrap();
        for jws in [by_task_key, stranger] {
            assert!(matches!(
                verify_heartbeat(&jws, &f.bundle),
                Err(FeedError::Signature { source: lanyard_jose::JoseError::UnknownKid(_), .. })
            ));
        }
    }

    #[test]
    fn sets_with_no_or_two_events_or_foreign_types_are_refused() {
        let f = Fixture::new();
        let sign = |events| {
            let claims = json!({"iat": 1, "jti": "x", "seq": 1, "events": events});
            f.jwt_svid.sign_claims_as(SET_TYP, &claims).unwrap()
        };
        let two = json!({"urn:lanyard:revocation:task_ended": {"subject": "a"},
                         "urn:lanyard:revocation:token_revoked": {"subject": "b"}});
        for events in [json!({}), two, json!({"urn:other:thing": {"subject": "a"}})] {
            assert!(matches!(verify_event(&sign(events), &f.bundle), Err(FeedError::BadClaims { .. })));
        }
        // A kind this build does not know still carries its tasks.
        let future = verify_event(&sign(json!({"urn:lanyard:revocation:later": {"subject": "a"}})), &f.bundle);
        assert_eq!(future.unwrap().kind, EventKind::Other("later".into()));
    }

    #[test]
    fn a_page_verifies_every_event_and_the_heartbeat() {
        let f = Fixture::new();
        let page = json!({
            "events": [f.set(1, "task_ended", json!({"subject": "t1", "tasks": ["t1"]}))],
            "next": 1, "head": 1, "oldest": 1, "heartbeat": f.heartbeat(1),
        });
        let parsed = parse_page(page.to_string().as_bytes(), &f.bundle).unwrap();
        assert_eq!((parsed.events.len(), parsed.next, parsed.heartbeat.head), (1, 1, 1));
        let mut tampered = page.clone();
        tampered["events"][0] = json!(format!("{}x", page["events"][0].as_str().unwrap()));
        assert!(parse_page(tampered.to_string().as_bytes(), &f.bundle).is_err());
    }
}
