//! The server's signing keys: kept in the store, rotated by the plan in
//! [`crate::key_lifecycle`], and published (the active keys and the bundle
//! of every published one) on a watch channel, so that sync streams, the
//! node API's TLS and the bundle endpoint all see each change.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanyard_ca::{JwtAuthority, JwtAuthorityKey, JwtKeyPurpose, TrustBundle, UpstreamCa, X509Authority};
use lanyard_core::{TrustDomain, from_unix_secs, unix_secs};
use lanyard_proto::admin::{KeyInfo, ListKeysResponse};
use lanyard_store::{AuditEvent, KeyKind, KeyRecord, Store};
use tokio::sync::watch;

use crate::StartError;
use crate::kek::{self, Kek};
use crate::key_lifecycle::{self, KINDS, Phase, Step};

/// How often relying parties are told to refresh the bundle, at most.
const BUNDLE_REFRESH_HINT: Duration = Duration::from_secs(300);

/// How long keys of each kind live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lifetimes {
    /// The X.509 CA.
    pub(crate) x509: Duration,
    /// JWT-SVID and task-token keys.
    pub(crate) jwt: Duration,
}

impl Lifetimes {
    fn of(self, kind: KeyKind) -> Duration {
        match kind {
            KeyKind::X509Ca => self.x509,
            KeyKind::JwtSvid | KeyKind::TaskToken => self.jwt,
        }
    }

    /// The bundle's refresh hint: 5 minutes, or less when keys live so
    /// briefly that a relying party polling that slowly could miss a key's
    /// publication (a twelfth of the shortest lifetime, at least a second).
    pub(crate) fn refresh_hint(self) -> Duration {
        BUNDLE_REFRESH_HINT.min(self.x509.min(self.jwt) / 12).max(Duration::from_secs(1))
    }

    /// How often the rotator looks: often enough for the shortest lifetime.
    pub(crate) fn tick(self) -> Duration {
        (self.x509.min(self.jwt) / 48).clamp(Duration::from_millis(200), Duration::from_secs(10))
    }
}

/// The active signing keys and the bundle that publishes them.
#[derive(Debug)]
pub(crate) struct Keys {
    /// Signs X.509-SVIDs.
    pub(crate) x509: X509Authority,
    /// Signs JWT-SVIDs (and audit checkpoints and the revocation feed).
    pub(crate) jwt: JwtAuthority,
    /// Signs task tokens: its own key, so verifiers can tell the two apart.
    pub(crate) task_tokens: JwtAuthority,
    /// Everything relying parties trust right now: prepared, active and
    /// retired keys, not expired ones nor revoked ones.
    pub(crate) bundle: TrustBundle,
    /// Which records these are.
    fingerprint: Fingerprint,
}

impl Keys {
    /// The store id of the active X.509 CA.
    pub(crate) fn active_x509_id(&self) -> &str {
        &self.fingerprint.0[0]
    }
}

/// What making and loading keys needs besides the store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyContext<'a> {
    /// The trust domain the CAs are for.
    pub(crate) td: &'a TrustDomain,
    /// How long keys live.
    pub(crate) lifetimes: Lifetimes,
    /// Seals private keys at rest, when configured.
    pub(crate) kek: Option<&'a Kek>,
    /// Issues Lanyard's CAs as intermediates, when configured.
    pub(crate) upstream: Option<&'a UpstreamCa>,
}

/// The published keys; subscribers learn of every change.
pub(crate) type KeyWatch = watch::Sender<Arc<Keys>>;

/// Takes every step now due for every kind of key (each durable and
/// audited before the next), then builds the keys from the store.
pub(crate) async fn reconcile(store: &dyn Store, ctx: KeyContext<'_>, now: SystemTime) -> Result<Keys, StartError> {
    let records = take_due_steps(store, ctx, now).await?;
    build(ctx, &records, unix_secs(now))
}

/// Takes every step now due for every kind of key; the records after them.
async fn take_due_steps(store: &dyn Store, ctx: KeyContext<'_>, now: SystemTime) -> Result<Vec<KeyRecord>, StartError> {
    let now_s = unix_secs(now);
    let mut records = store.list_keys().await?;
    let due = |records: &[KeyRecord]| {
        KINDS.iter().any(|kind| key_lifecycle::plan(records, *kind, now_s, ctx.lifetimes.of(*kind).as_secs()).is_some())
    };
    if !due(&records) {
        return Ok(records);
    }
    // One replica at a time: another may have taken the step while we waited.
    let _lock = store.lock_keys().await?;
    records = store.list_keys().await?;
    for kind in KINDS {
        // At most two steps per kind at a time (create, then nothing; or
        // revoke-driven activate): bounded, so a bug cannot spin here.
        for _ in 0..2 {
            let Some(step) = key_lifecycle::plan(&records, kind, now_s, ctx.lifetimes.of(kind).as_secs()) else {
                break;
            };
            take_step(store, ctx, &records, kind, step, now).await?;
            records = store.list_keys().await?;
        }
    }
    Ok(records)
}

/// Which records keys built at `now` are: the active ids (CA, JWT-SVID,
/// task token) and every published id. Equal fingerprints, equal keys.
type Fingerprint = (Vec<String>, BTreeSet<String>);

fn fingerprint(records: &[KeyRecord], now: u64) -> Fingerprint {
    let active = KINDS.iter().filter_map(|kind| key_lifecycle::active(records, *kind, now)).map(|r| r.id.clone());
    let published = records.iter().filter(|r| key_lifecycle::phase(records, r, now).published()).map(|r| r.id.clone());
    (active.collect(), published.collect())
}

/// Forces a new active key of `kind` now: the prepared one if there is one,
/// else a new one. The old key stays published until it expires.
pub(crate) async fn rotate_now(
    store: &dyn Store,
    ctx: KeyContext<'_>,
    kind: KeyKind,
    now: SystemTime,
    actor: &str,
) -> Result<(), StartError> {
    let _lock = store.lock_keys().await?;
    let records = store.list_keys().await?;
    let now_s = unix_secs(now);
    let active = key_lifecycle::active(&records, kind, now_s).map(|r| r.id.clone());
    let prepared = records
        .iter()
        .filter(|r| r.kind == kind && key_lifecycle::phase(&records, r, now_s) == Phase::Prepared)
        .max_by_key(|r| r.not_before);
    let step = match prepared {
        Some(p) if Some(&p.id) != active.as_ref() => Step::Activate(p.id.clone()),
        _ => Step::CreateActive,
    };
    tracing::info!(kind = kind_label(kind), %actor, ?step, "forced key rotation");
    take_step(store, ctx, &records, kind, step, now).await
}

async fn take_step(
    store: &dyn Store,
    ctx: KeyContext<'_>,
    records: &[KeyRecord],
    kind: KeyKind,
    step: Step,
    now: SystemTime,
) -> Result<(), StartError> {
    let now_s = unix_secs(now);
    // Activation times order the keys of a kind: a key activated in the same
    // second as the last one (a forced rotation) is stamped a second later.
    let activation = records
        .iter()
        .filter(|r| r.kind == kind)
        .filter_map(|r| r.activated_at)
        .max()
        .map_or(now_s, |last| now_s.max(last + 1));
    match step {
        Step::CreateActive | Step::Prepare => {
            let activated_at = (step == Step::CreateActive).then_some(activation);
            let record = seal(generate(ctx, kind, now, activated_at)?, ctx.kek)?;
            let what = if activated_at.is_some() { "key.create" } else { "key.prepare" };
            tracing::info!(kind = kind_label(kind), id = %record.id, what, "signing key created");
            let audit = key_audit(now_s, what, kind, &record.id);
            store.put_key(record, audit).await?;
        }
        Step::Activate(id) => {
            let Some(record) = records.iter().find(|r| r.id == id) else { return Ok(()) };
            let record = KeyRecord { activated_at: Some(activation), ..record.clone() };
            tracing::info!(kind = kind_label(kind), %id, "signing key activated");
            store.put_key(record, key_audit(now_s, "key.activate", kind, &id)).await?;
        }
    }
    Ok(())
}

/// Revokes key `id`: out of the bundle from now; when it was the active key,
/// the next [`reconcile`] activates a prepared key or creates one.
pub(crate) async fn revoke(
    store: &dyn Store,
    id: &str,
    now: SystemTime,
    actor: &str,
) -> Result<KeyRecord, RevokeError> {
    let _lock = store.lock_keys().await.map_err(StartError::from)?;
    let records = store.list_keys().await.map_err(StartError::from)?;
    let record = records.iter().find(|r| r.id == id).ok_or_else(|| RevokeError::NotFound(id.to_owned()))?;
    if record.revoked_at.is_some() {
        return Err(RevokeError::AlreadyRevoked(id.to_owned()));
    }
    let now_s = unix_secs(now);
    let revoked = KeyRecord { revoked_at: Some(now_s), ..record.clone() };
    let mut audit = key_audit(now_s, "key.revoke", record.kind, id);
    audit.actor = actor.to_owned();
    // A revocation event too, so verifiers following the feed stop
    // trusting the key within a second, not at their next bundle refresh.
    store.revoke_key(revoked.clone(), now_s, audit).await.map_err(StartError::from)?;
    tracing::warn!(kind = kind_label(record.kind), %id, %actor, "signing key revoked");
    Ok(revoked)
}

/// Why a key could not be revoked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RevokeError {
    #[error("no key with id {0:?}")]
    NotFound(String),
    #[error("key {0:?} is already revoked")]
    AlreadyRevoked(String),
    #[error(transparent)]
    Store(#[from] StartError),
}

/// `record` with its private key sealed under `kek`, when there is one.
fn seal(record: KeyRecord, kek: Option<&Kek>) -> Result<KeyRecord, StartError> {
    match kek {
        None => Ok(record),
        Some(kek) => {
            let pkcs8 = kek.seal(&record.id, &record.pkcs8).map_err(|e| StartError::Keys(e.to_string()))?;
            Ok(KeyRecord { pkcs8, ..record })
        }
    }
}

/// At start: with a KEK, seals every private key still stored in the clear
/// (a store from before the KEK was set) and records the public half of JWT
/// keys; without one, warns when keys are in the clear.
pub(crate) async fn seal_at_rest(store: &dyn Store, kek: Option<&Kek>, now: SystemTime) -> Result<(), StartError> {
    let records = store.list_keys().await?;
    let Some(kek) = kek else {
        if records.iter().any(|r| !kek::is_sealed(&r.pkcs8)) {
            tracing::warn!("signing keys are stored unencrypted: give the server a KEK (--kek-file) to seal them");
        }
        return Ok(());
    };
    for record in records.into_iter().filter(|r| !kek::is_sealed(&r.pkcs8)) {
        let public_der = match (&record.public_der, record.kind) {
            (None, KeyKind::JwtSvid | KeyKind::TaskToken) => Some(
                JwtAuthority::from_parts(&record.pkcs8, from_unix_secs(record.not_after))?.verifying_key().spki_der(),
            ),
            (known, _) => known.clone(),
        };
        let (id, kind) = (record.id.clone(), record.kind);
        let sealed = seal(KeyRecord { public_der, ..record }, Some(kek))?;
        store.put_key(sealed, key_audit(unix_secs(now), "key.seal", kind, &id)).await?;
        tracing::info!(%id, kind = kind_label(kind), "signing key sealed under the KEK");
    }
    Ok(())
}

/// A new key of `kind`, as a store record.
fn generate(
    ctx: KeyContext<'_>,
    kind: KeyKind,
    now: SystemTime,
    activated_at: Option<u64>,
) -> Result<KeyRecord, StartError> {
    let lifetime = ctx.lifetimes.of(kind);
    let now_s = unix_secs(now);
    Ok(match kind {
        KeyKind::X509Ca => {
            let ca = match ctx.upstream {
                Some(upstream) => X509Authority::generate_under(ctx.td, now, lifetime, upstream)?,
                None => X509Authority::generate(ctx.td, now, lifetime)?,
            };
            let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der())
                .map_err(|e| StartError::Keys(format!("new CA certificate: {e}")))?;
            KeyRecord {
                id: lanyard_core::hex::encode(cert.raw_serial()),
                kind,
                pkcs8: ca.pkcs8_der(),
                cert_der: Some(ca.cert_der().to_vec()),
                public_der: None,
                not_before: now_s,
                not_after: unix_secs(ca.not_after()),
                activated_at,
                revoked_at: None,
            }
        }
        KeyKind::JwtSvid | KeyKind::TaskToken => {
            let key = JwtAuthority::generate(now, lifetime)?;
            KeyRecord {
                id: key.kid().to_owned(),
                kind,
                pkcs8: key.pkcs8_der().to_vec(),
                cert_der: None,
                public_der: Some(key.verifying_key().spki_der()),
                not_before: now_s,
                not_after: unix_secs(key.not_after()),
                activated_at,
                revoked_at: None,
            }
        }
    })
}

/// The active keys and the bundle of every published one.
fn build(ctx: KeyContext<'_>, records: &[KeyRecord], now: u64) -> Result<Keys, StartError> {
    let kek = ctx.kek;
    let active = |kind| {
        key_lifecycle::active(records, kind, now)
            .ok_or_else(|| StartError::Keys(format!("no active {} key", kind_label(kind))))
    };
    let private = |r: &KeyRecord| kek::unseal(kek, &r.id, &r.pkcs8).map_err(|e| StartError::Keys(e.to_string()));
    let jwt_key =
        |r: &KeyRecord| Ok::<_, StartError>(JwtAuthority::from_parts(&private(r)?, from_unix_secs(r.not_after))?);
    let public_key = |r: &KeyRecord| match &r.public_der {
        Some(spki) => lanyard_jose::VerifyingKey::from_spki_der(spki).map_err(|e| StartError::Keys(e.to_string())),
        None => Ok(jwt_key(r)?.verifying_key()),
    };
    let x509_record = active(KeyKind::X509Ca)?;
    let cert =
        x509_record.cert_der.clone().ok_or_else(|| StartError::Keys("stored CA key has no certificate".into()))?;
    let x509 = X509Authority::from_parts(cert, &private(x509_record)?)?;
    let jwt_record = active(KeyKind::JwtSvid)?;
    let task_record = active(KeyKind::TaskToken)?;
    let (jwt, task_tokens) = (jwt_key(jwt_record)?, jwt_key(task_record)?);

    let mut published: Vec<&KeyRecord> =
        records.iter().filter(|r| key_lifecycle::phase(records, r, now).published()).collect();
    published.sort_by_key(|r| (r.not_before, KINDS.iter().position(|k| *k == r.kind), r.id.clone()));
    // The upstream root anchors everything its intermediates sign; the
    // intermediates are published too, so a relying party without the root
    // (or one reading the trust domain off a CA) still verifies.
    let mut x509_authorities: Vec<Vec<u8>> = ctx.upstream.map(|u| u.cert_der().to_vec()).into_iter().collect();
    let mut jwt_authorities = Vec::new();
    for r in &published {
        match r.kind {
            KeyKind::X509Ca => x509_authorities.extend(r.cert_der.clone()),
            KeyKind::JwtSvid | KeyKind::TaskToken => {
                let purpose =
                    if r.kind == KeyKind::TaskToken { JwtKeyPurpose::TaskToken } else { JwtKeyPurpose::JwtSvid };
                jwt_authorities.push(JwtAuthorityKey { key: public_key(r)?, expires_at: r.not_after, purpose });
            }
        }
    }
    let bundle = TrustBundle {
        trust_domain: ctx.td.clone(),
        x509_authorities,
        jwt_authorities,
        sequence: key_lifecycle::bundle_sequence(records, now),
        refresh_hint: ctx.lifetimes.refresh_hint(),
    };
    Ok(Keys { x509, jwt, task_tokens, bundle, fingerprint: fingerprint(records, now) })
}

/// Keeps the keys rotating: every tick, takes the steps due and publishes
/// the keys when the active or published set changed.
pub(crate) async fn rotate_loop(state: Arc<crate::state::State>) {
    let lifetimes = state.config.lifetimes();
    loop {
        tokio::time::sleep(lifetimes.tick()).await;
        let _serial = state.key_ops.lock().await;
        if let Err(e) = refresh(&state).await {
            tracing::error!(error = %e, "key rotation failed; retrying");
        }
    }
}

/// One rotation pass; publishes the keys when they changed. Callers hold
/// `state.key_ops`.
pub(crate) async fn refresh(state: &crate::state::State) -> Result<(), StartError> {
    let now = state.now();
    let records = take_due_steps(state.store.as_ref(), state.key_context(), now).await?;
    let current = state.keys();
    // Most ticks change nothing: no keys to parse or unseal then.
    if fingerprint(&records, unix_secs(now)) != current.fingerprint {
        let mut keys = build(state.key_context(), &records, unix_secs(now))?;
        // Two changes within one second: the sequence still moves on.
        keys.bundle.sequence = keys.bundle.sequence.max(current.bundle.sequence + 1);
        tracing::info!(
            sequence = keys.bundle.sequence,
            x509_authorities = keys.bundle.x509_authorities.len(),
            jwt_authorities = keys.bundle.jwt_authorities.len(),
            "trust bundle changed"
        );
        state.keys.send_replace(Arc::new(keys));
    }
    Ok(())
}

/// Every key with its phase, as the admin API lists them.
pub(crate) async fn list(state: &crate::state::State) -> Result<ListKeysResponse, StartError> {
    let records = state.store.list_keys().await?;
    let now = unix_secs(state.now());
    let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
    let mut keys: Vec<KeyInfo> = records
        .iter()
        .map(|r| KeyInfo {
            id: r.id.clone(),
            kind: kind_label(r.kind).to_owned(),
            phase: key_lifecycle::phase(&records, r, now).as_str().to_owned(),
            not_before: secs(r.not_before),
            not_after: secs(r.not_after),
            activated_at: r.activated_at.map_or(0, secs),
            revoked_at: r.revoked_at.map_or(0, secs),
        })
        .collect();
    keys.sort_by(|a, b| (&a.kind, a.not_before, &a.id).cmp(&(&b.kind, b.not_before, &b.id)));
    Ok(ListKeysResponse { keys, bundle_sequence: state.keys().bundle.sequence })
}

/// The kind a `ca rotate --kind` names.
pub(crate) fn parse_kind(s: &str) -> Option<KeyKind> {
    KINDS.into_iter().find(|k| kind_label(*k) == s)
}

/// The name of a kind in logs, audit records and `ca show`.
pub(crate) fn kind_label(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::X509Ca => "x509-ca",
        KeyKind::JwtSvid => "jwt-svid",
        KeyKind::TaskToken => "task-token",
    }
}

fn key_audit(at: u64, what: &str, kind: KeyKind, id: &str) -> AuditEvent {
    AuditEvent {
        at,
        kind: what.into(),
        actor: "server".into(),
        subject: id.into(),
        detail: serde_json::json!({ "key_kind": kind_label(kind) }),
        ..AuditEvent::default()
    }
}
