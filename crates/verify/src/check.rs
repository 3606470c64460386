//! The checks themselves, apart from any IO: a [`View`] (bundle, revocation
//! state, configuration) and `now` in, verified claims or the one check that
//! failed out. [`crate::Verifier`] builds the view from what its background
//! tasks keep fresh; tests and one-shot tools build it directly.

use std::cell::Cell;
use std::time::{Duration, SystemTime};

use lanyard_ca::task_token::{AUTHORIZATION_DETAIL_TYPE, x5t_s256};
use lanyard_ca::{JwtKeyPurpose, TaskTokenClaims, TrustBundle};
use lanyard_core::{SpiffeId, TrustDomain, unix_secs};
use lanyard_jose::claims::{Audience, DEFAULT_LEEWAY_SECS, Registered, check_registered};
use lanyard_jose::{JoseError, VerifyingKey};
use serde::Deserialize;

use crate::error::{Revoked, VerifyError};
use crate::revocation::RevocationState;

/// The `typ` a task token carries.
pub const TASK_TOKEN_TYP: &str = "JWT";
/// The `typ` values a JWT-SVID may carry (or none), per the SPIFFE spec.
pub const JWT_SVID_TYPS: &[&str] = &["JWT", "JOSE"];
/// Default bound on the trust bundle's age.
pub const DEFAULT_MAX_BUNDLE_AGE: Duration = Duration::from_secs(3600);
/// Default bound on the age of the revocation feed's newest heartbeat
/// (DESIGN.md: "fails closed when its view of the feed is older than a
/// configured bound (default 30 s)").
pub const DEFAULT_MAX_FEED_AGE: Duration = Duration::from_secs(30);

/// How strict a verifier is. Start from [`VerifierConfig::default`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierConfig {
    issuer: Option<String>,
    trust_domain: Option<TrustDomain>,
    leeway: Duration,
    max_bundle_age: Duration,
    max_feed_age: Duration,
    without_revocations: bool,
}

impl Default for VerifierConfig {
    /// No issuer check, the bundle's own trust domain, 30 s of clock skew,
    /// a bundle at most 1 h old, a feed heard from within 30 s.
    fn default() -> Self {
        Self {
            issuer: None,
            trust_domain: None,
            leeway: Duration::from_secs(DEFAULT_LEEWAY_SECS),
            max_bundle_age: DEFAULT_MAX_BUNDLE_AGE,
            max_feed_age: DEFAULT_MAX_FEED_AGE,
            without_revocations: false,
        }
    }
}

impl VerifierConfig {
    /// Tokens must carry this `iss` (the issuer's public URL; a trailing `/`
    /// is ignored).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        let issuer: String = issuer.into();
        self.issuer = Some(issuer.trim_end_matches('/').to_owned());
        self
    }

    /// The bundle must be this trust domain's (default: whatever its CA names).
    pub fn trust_domain(mut self, td: TrustDomain) -> Self {
        self.trust_domain = Some(td);
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat` (capped at 5 minutes).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Refuse everything once the bundle is older than this.
    pub fn max_bundle_age(mut self, age: Duration) -> Self {
        self.max_bundle_age = age;
        self
    }

    /// Refuse everything once the revocation feed's newest heartbeat is older than this.
    pub fn max_feed_age(mut self, age: Duration) -> Self {
        self.max_feed_age = age;
        self
    }

    /// Check without the revocation feed: a revoked token passes until it
    /// expires. For offline checks against a bundle file only.
    pub fn danger_without_revocations(mut self) -> Self {
        self.without_revocations = true;
        self
    }

    /// The expected issuer, if any.
    pub fn expected_issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The configured trust domain, if any.
    pub fn expected_trust_domain(&self) -> Option<&TrustDomain> {
        self.trust_domain.as_ref()
    }

    /// The bundle age bound.
    pub fn bundle_age_limit(&self) -> Duration {
        self.max_bundle_age
    }

    /// The revocation feed age bound.
    pub fn feed_age_limit(&self) -> Duration {
        self.max_feed_age
    }

    /// Whether revocation checks are off.
    pub fn is_without_revocations(&self) -> bool {
        self.without_revocations
    }
}

/// What the caller is about to do with a task token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect<'a> {
    /// This service's audience: `aud` must be exactly this string.
    pub audience: &'a str,
    /// The invoked tool: it must be in `scope` and `authorization_details`.
    pub tool: Option<&'a str>,
    /// The invoked action: the tool's grant must list it.
    pub action: Option<&'a str>,
    /// The client certificate (DER) the caller presented over mTLS: the
    /// token's `cnf` must be its thumbprint.
    pub peer_cert_der: Option<&'a [u8]>,
}

impl<'a> Expect<'a> {
    /// Only the audience; add the rest with the other methods.
    pub fn audience(audience: &'a str) -> Self {
        Self { audience, tool: None, action: None, peer_cert_der: None }
    }

    /// The invoked tool.
    pub fn tool(self, tool: &'a str) -> Self {
        Self { tool: Some(tool), ..self }
    }

    /// The invoked action.
    pub fn action(self, action: &'a str) -> Self {
        Self { action: Some(action), ..self }
    }

    /// The client certificate the caller presented.
    pub fn peer_cert(self, der: &'a [u8]) -> Self {
        Self { peer_cert_der: Some(der), ..self }
    }
}

/// A verified JWT-SVID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedJwtSvid {
    /// Its subject.
    pub spiffe_id: SpiffeId,
    /// Every claim, as signed.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Everything a check reads, at one moment.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// How strict to be.
    pub config: &'a VerifierConfig,
    /// The trust bundle.
    pub bundle: &'a TrustBundle,
    /// When the bundle was last fetched or revalidated.
    pub bundle_fetched_at: SystemTime,
    /// The revocation state; `None` when there is none (then nothing passes
    /// unless the configuration is [`VerifierConfig::danger_without_revocations`]).
    pub revocations: Option<&'a RevocationState>,
}

/// The claims as read, with `nbf`, which task tokens do not carry but a
/// forged one might.
#[derive(Deserialize)]
struct TaskTokenWire {
    #[serde(flatten)]
    claims: TaskTokenClaims,
    #[serde(default)]
    nbf: Option<u64>,
}

impl View<'_> {
    /// Verifies a task token for `expect` at `now`: the view is fresh; ES256
    /// by a task-token key of the bundle, `typ: JWT`; `exp`/`nbf`/`iat` with
    /// bounded skew; `iss` when one is configured; `aud` exactly the
    /// audience; `sub` a SPIFFE ID of the trust domain; the tool in `scope`
    /// and `authorization_details` with the action; `cnf` when a client
    /// certificate is given; and nothing revoked.
    pub fn task_token(
        &self,
        token: &str,
        expect: &Expect<'_>,
        now: SystemTime,
    ) -> Result<TaskTokenClaims, VerifyError> {
        self.check_fresh(now)?;
        let other_purpose = Cell::new(false);
        let revoked_key = Cell::new(false);
        let verified = lanyard_jose::verify(token, None, |kid| {
            if self.key_revoked(kid) {
                revoked_key.set(true);
                return None;
            }
            let key = self.bundle.jwt_authorities.iter().find(|k| k.key.kid() == kid)?;
            other_purpose.set(key.purpose != JwtKeyPurpose::TaskToken);
            (key.purpose == JwtKeyPurpose::TaskToken).then_some(&key.key)
        })
        .map_err(|e| match e {
            JoseError::UnknownKid(kid) if revoked_key.get() => VerifyError::Revoked(Revoked::Key(kid)),
            JoseError::UnknownKid(kid) if other_purpose.get() => VerifyError::NotTaskTokenKey(kid),
            e => from_jose(e),
        })?;
        if verified.header.typ.as_deref() != Some(TASK_TOKEN_TYP) {
            return Err(VerifyError::WrongTyp(verified.header.typ));
        }
        let TaskTokenWire { claims, nbf } = read_task_claims(&verified.claims)?;
        let registered = Registered {
            sub: claims.sub.clone(),
            aud: Audience::One(claims.aud.clone()),
            exp: claims.exp,
            iat: Some(claims.iat),
            nbf,
            iss: claims.iss.clone(),
            jti: None,
        };
        // `aud` is one string here, so "contains" is "equals".
        self.check_registered(&registered, expect.audience, now)?;
        self.check_subject(&claims.sub)?;
        check_grant(&claims, expect)?;
        if let Some(der) = expect.peer_cert_der
            && x5t_s256(der) != claims.cnf.x5t_s256
        {
            return Err(VerifyError::CnfMismatch);
        }
        if let Some(state) = self.revocations {
            state.check_task_token(&claims).map_err(VerifyError::Revoked)?;
        }
        Ok(claims)
    }

    /// Verifies a JWT-SVID for `audience` at `now`: the view is fresh;
    /// ES256 by any JWT key of the bundle (a task token is a JWT-SVID too);
    /// `typ` absent, `JWT` or `JOSE`; registered claims; `aud` containing
    /// the audience; `sub` a SPIFFE ID of the trust domain; its `jti` and
    /// subject not revoked — and, for a task token, its task, session and
    /// user not revoked either.
    pub fn jwt_svid(&self, token: &str, audience: &str, now: SystemTime) -> Result<VerifiedJwtSvid, VerifyError> {
        self.check_fresh(now)?;
        let verified = lanyard_jose::verify(token, None, |kid| match self.key_revoked(kid) {
            true => None,
            false => find_key(self.bundle, kid),
        })
        .map_err(|e| match e {
            JoseError::UnknownKid(kid) if self.key_revoked(&kid) => VerifyError::Revoked(Revoked::Key(kid)),
            e => from_jose(e),
        })?;
        if verified.header.typ.as_deref().is_some_and(|t| !JWT_SVID_TYPS.contains(&t)) {
            return Err(VerifyError::WrongTyp(verified.header.typ));
        }
        let registered: Registered =
            serde_json::from_slice(&verified.claims).map_err(|e| VerifyError::Malformed(format!("claims: {e}")))?;
        self.check_registered(&registered, audience, now)?;
        let spiffe_id = self.check_subject(&registered.sub)?;
        if let Some(state) = self.revocations {
            // A task token is a JWT-SVID too: presented as one, its task,
            // session and user are still checked against the feed.
            if let Ok(TaskTokenWire { claims, .. }) = serde_json::from_slice::<TaskTokenWire>(&verified.claims) {
                state.check_task_token(&claims).map_err(VerifyError::Revoked)?;
            }
            if let Some(jti) = &registered.jti {
                state.check_token(jti).map_err(VerifyError::Revoked)?;
            }
            // Without `iat` the issue time is unknown: any deletion revokes it.
            let issued_at = registered.iat.unwrap_or(0);
            state.check_workload(spiffe_id.as_str(), issued_at).map_err(VerifyError::Revoked)?;
        }
        let claims = serde_json::from_slice(&verified.claims).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        Ok(VerifiedJwtSvid { spiffe_id, claims })
    }

    /// Verifies an X.509-SVID chain (DER, leaf first) presented by a client
    /// at `now`, through rustls-webpki against the bundle's CAs; its SPIFFE
    /// ID must be of the trust domain and not revoked.
    pub fn x509_svid(&self, chain: &[Vec<u8>], now: SystemTime) -> Result<SpiffeId, VerifyError> {
        self.check_fresh(now)?;
        let info =
            lanyard_ca::svid::verify_chain(chain, &self.bundle.x509_authorities, now, lanyard_ca::svid::Usage::Client)
                .map_err(|e| VerifyError::BadChain(e.to_string()))?;
        if !info.spiffe_id.is_member_of(&self.bundle.trust_domain) {
            return Err(VerifyError::BadSubject(format!(
                "{} is not in trust domain {}",
                info.spiffe_id, self.bundle.trust_domain
            )));
        }
        if let Some(state) = self.revocations {
            // notBefore is backdated for clock skew; the issue time is not.
            let issued_at = unix_secs(lanyard_core::rotation::issued_at(info.not_before, info.not_after));
            state.check_workload(info.spiffe_id.as_str(), issued_at).map_err(VerifyError::Revoked)?;
        }
        Ok(info.spiffe_id)
    }

    /// Whether the feed revoked key `kid`: it may still be in a bundle
    /// fetched before the revocation.
    fn key_revoked(&self, kid: &str) -> bool {
        self.revocations.is_some_and(|state| state.check_key(kid).is_err())
    }

    /// Fails closed when the bundle or the revocation feed is too old.
    pub fn check_fresh(&self, now: SystemTime) -> Result<(), VerifyError> {
        let limit = self.config.max_bundle_age;
        let age = now.duration_since(self.bundle_fetched_at).unwrap_or_default();
        if age > limit {
            return Err(VerifyError::StaleBundle { age_secs: age.as_secs(), limit_secs: limit.as_secs() });
        }
        if self.config.without_revocations {
            return Ok(());
        }
        let limit_secs = self.config.max_feed_age.as_secs();
        match self.revocations.and_then(RevocationState::current_at) {
            None => Err(VerifyError::StaleFeed { age_secs: None, limit_secs }),
            Some(at) => match unix_secs(now).saturating_sub(at) {
                age if age > limit_secs => Err(VerifyError::StaleFeed { age_secs: Some(age), limit_secs }),
                _ => Ok(()),
            },
        }
    }

    fn check_registered(&self, c: &Registered, audience: &str, now: SystemTime) -> Result<(), VerifyError> {
        check_registered(c, audience, unix_secs(now), self.config.leeway.as_secs()).map_err(|e| match e {
            JoseError::WrongAudience => VerifyError::WrongAudience(format!("token is not for {audience:?}")),
            e => from_jose(e),
        })?;
        if let Some(expected) = &self.config.issuer
            && c.iss.as_deref() != Some(expected.as_str())
        {
            return Err(VerifyError::WrongIssuer { expected: expected.clone(), found: c.iss.clone() });
        }
        Ok(())
    }

    fn check_subject(&self, sub: &str) -> Result<SpiffeId, VerifyError> {
        let id = SpiffeId::parse(sub).map_err(|e| VerifyError::BadSubject(format!("sub {sub:?}: {e}")))?;
        if !id.is_member_of(&self.bundle.trust_domain) {
            return Err(VerifyError::BadSubject(format!("{id} is not in trust domain {}", self.bundle.trust_domain)));
        }
        Ok(id)
    }
}

/// Reads task-token claims; when they do not parse, says why, and calls an
/// `aud` array what it is: the wrong audience (a task token has one).
fn read_task_claims(payload: &[u8]) -> Result<TaskTokenWire, VerifyError> {
    serde_json::from_slice(payload).map_err(|e| match serde_json::from_slice::<Registered>(payload) {
        Ok(Registered { aud: Audience::Many(all), .. }) => {
            VerifyError::WrongAudience(format!("a task token names one audience, not an array of {}", all.len()))
        }
        _ => VerifyError::Malformed(format!("not task-token claims: {e}")),
    })
}

/// The invoked tool must be in `scope` and have an `authorization_details`
/// grant, which must list the invoked action.
fn check_grant(c: &TaskTokenClaims, expect: &Expect<'_>) -> Result<(), VerifyError> {
    let mut grants = c.authorization_details.iter().filter(|d| d.kind == AUTHORIZATION_DETAIL_TYPE);
    let allows = |actions: &[String], action: &str| actions.iter().any(|a| a == action);
    match (expect.tool, expect.action) {
        (Some(tool), action) => {
            let in_scope = c.scope.split(' ').any(|s| s.strip_prefix("tool:") == Some(tool));
            let grant = grants.find(|d| d.identifier == tool).filter(|_| in_scope);
            let grant = grant.ok_or_else(|| VerifyError::ToolNotGranted(tool.to_owned()))?;
            match action {
                Some(action) if !allows(&grant.actions, action) => {
                    Err(VerifyError::ActionNotAllowed(action.to_owned()))
                }
                _ => Ok(()),
            }
        }
        (None, Some(action)) if !grants.any(|d| allows(&d.actions, action)) => {
            Err(VerifyError::ActionNotAllowed(action.to_owned()))
        }
        (None, _) => Ok(()),
    }
}

fn find_key<'b>(bundle: &'b TrustBundle, kid: &str) -> Option<&'b VerifyingKey> {
    bundle.jwt_authorities.iter().find(|k| k.key.kid() == kid).map(|k| &k.key)
}

/// The JOSE layer's refusals as this crate's.
fn from_jose(e: JoseError) -> VerifyError {
    match e {
        JoseError::UnsupportedAlg(alg) => VerifyError::UnsupportedAlg(alg),
        JoseError::UnknownKid(kid) => VerifyError::UnknownKid(kid),
        JoseError::BadSignature => VerifyError::BadSignature,
        JoseError::WrongTyp => VerifyError::WrongTyp(None),
        JoseError::Expired => VerifyError::Expired,
        JoseError::NotYetValid => VerifyError::NotYetValid,
        JoseError::IssuedInFuture => VerifyError::IssuedInFuture,
        JoseError::WrongAudience => VerifyError::WrongAudience("token is not for this audience".into()),
        JoseError::Malformed => VerifyError::Malformed("expected three non-empty segments, at most 16 KiB".into()),
        other => VerifyError::Malformed(other.to_string()),
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
