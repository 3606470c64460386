//! The server's signing keys: loaded from the store at start, generated on
//! first start, and published (with the bundle they make) on a watch channel
//! so that sync streams see bundle changes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanyard_ca::{JwtAuthority, JwtAuthorityKey, JwtKeyPurpose, TrustBundle, X509Authority};
use lanyard_core::{TrustDomain, from_unix_secs, unix_secs};
use lanyard_store::{AuditEvent, KeyKind, KeyRecord, Store};
use tokio::sync::watch;

use crate::StartError;

/// How often relying parties are told to refresh the bundle.
pub(crate) const BUNDLE_REFRESH_HINT: Duration = Duration::from_secs(300);

/// The active signing keys and the bundle that publishes them.
#[derive(Debug)]
pub(crate) struct Keys {
    /// Signs X.509-SVIDs.
    pub(crate) x509: X509Authority,
    /// Signs JWT-SVIDs (and audit checkpoints).
    pub(crate) jwt: JwtAuthority,
    /// Signs task tokens: its own key, so verifiers can tell the two apart.
    pub(crate) task_tokens: JwtAuthority,
    /// Everything relying parties trust right now.
    pub(crate) bundle: TrustBundle,
}

/// Loads the newest valid CA and JWT key from the store, generating and
/// storing (durably, audited) whichever is missing.
pub(crate) async fn load_or_create(
    store: &dyn Store,
    td: &TrustDomain,
    now: SystemTime,
    ca_ttl: Duration,
    jwt_ttl: Duration,
) -> Result<Keys, StartError> {
    let records = store.list_keys().await?;
    let now_s = unix_secs(now);
    let newest = |kind: KeyKind| {
        records.iter().filter(|r| r.kind == kind && r.not_after > now_s).max_by_key(|r| r.not_after).cloned()
    };

    let x509 = match newest(KeyKind::X509Ca) {
        Some(r) => {
            let cert = r.cert_der.ok_or_else(|| StartError::Keys("stored CA key has no certificate".into()))?;
            X509Authority::from_parts(cert, &r.pkcs8)?
        }
        None => {
            let ca = X509Authority::generate(td, now, ca_ttl)?;
            let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der())
                .map_err(|e| StartError::Keys(format!("new CA certificate: {e}")))?;
            let id = lanyard_core::hex::encode(cert.raw_serial());
            let record = KeyRecord {
                id: id.clone(),
                kind: KeyKind::X509Ca,
                pkcs8: ca.pkcs8_der(),
                cert_der: Some(ca.cert_der().to_vec()),
                not_before: unix_secs(ca.not_before()),
                not_after: unix_secs(ca.not_after()),
            };
            store.put_key(record, key_audit(now_s, "x509-ca", &id)).await?;
            ca
        }
    };

    let (jwt, jwt_since) = load_or_create_jwt(store, &newest(KeyKind::JwtSvid), KeyKind::JwtSvid, now, jwt_ttl).await?;
    let (task_tokens, task_since) =
        load_or_create_jwt(store, &newest(KeyKind::TaskToken), KeyKind::TaskToken, now, jwt_ttl).await?;

    let bundle = TrustBundle {
        trust_domain: td.clone(),
        x509_authorities: vec![x509.cert_der().to_vec()],
        jwt_authorities: vec![
            JwtAuthorityKey {
                key: jwt.verifying_key(),
                expires_at: unix_secs(jwt.not_after()),
                purpose: JwtKeyPurpose::JwtSvid,
            },
            JwtAuthorityKey {
                key: task_tokens.verifying_key(),
                expires_at: unix_secs(task_tokens.not_after()),
                purpose: JwtKeyPurpose::TaskToken,
            },
        ],
        // The bundle changes only when a key is added, so the newest key's
        // start is a sequence that never goes back.
        sequence: unix_secs(x509.not_before()).max(jwt_since).max(task_since),
        refresh_hint: BUNDLE_REFRESH_HINT,
    };
    Ok(Keys { x509, jwt, task_tokens, bundle })
}

/// The stored JWT key of `kind`, or a new one (stored durably, audited).
/// Returns the key and when it came into use.
async fn load_or_create_jwt(
    store: &dyn Store,
    stored: &Option<KeyRecord>,
    kind: KeyKind,
    now: SystemTime,
    ttl: Duration,
) -> Result<(JwtAuthority, u64), StartError> {
    if let Some(r) = stored {
        return Ok((JwtAuthority::from_parts(&r.pkcs8, from_unix_secs(r.not_after))?, r.not_before));
    }
    let key = JwtAuthority::generate(now, ttl)?;
    let now_s = unix_secs(now);
    let record = KeyRecord {
        id: key.kid().to_owned(),
        kind,
        pkcs8: key.pkcs8_der().to_vec(),
        cert_der: None,
        not_before: now_s,
        not_after: unix_secs(key.not_after()),
    };
    let label = match kind {
        KeyKind::TaskToken => "task-token",
        _ => "jwt-svid",
    };
    store.put_key(record, key_audit(now_s, label, key.kid())).await?;
    Ok((key, now_s))
}

fn key_audit(at: u64, kind: &str, id: &str) -> AuditEvent {
    AuditEvent {
        at,
        kind: "key.create".into(),
        actor: "server".into(),
        subject: id.into(),
        detail: serde_json::json!({ "key_kind": kind }),
        ..AuditEvent::default()
    }
}

/// The published keys; subscribers learn of every change.
pub(crate) type KeyWatch = watch::Sender<Arc<Keys>>;
