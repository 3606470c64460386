//! Task tokens: JWTs that any JWT-SVID validator accepts as the connector's
//! identity for one audience, and that carry the task they were minted for.
//! `docs/token-format.md` describes every claim and how a verifier checks it.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lanyard_core::{Action, Audience, Classification, SessionId, SpiffeId, TaskId, Tool, User, unix_secs};
use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

use crate::CaError;
use crate::jwt::{JWT_TYP, JwtAuthority, random_jti};

/// The `type` of every `authorization_details` object Lanyard writes (RFC 9396).
pub const AUTHORIZATION_DETAIL_TYPE: &str = "lanyard_tool";

/// An authorized task-token request: every constraint applied, the lifetime
/// already the minimum of everything that bounds it. The key signs exactly this.
#[derive(Clone, Debug)]
pub struct TaskTokenTemplate {
    /// `iss`: the server's public URL, when it has one.
    pub issuer: Option<String>,
    /// `sub`: the connector's SPIFFE ID.
    pub connector: SpiffeId,
    /// `aud`: exactly one.
    pub audience: Audience,
    /// `txn`.
    pub task: TaskId,
    /// The tools the token is good for (non-empty).
    pub tools: Vec<Tool>,
    /// The task's action.
    pub action: Action,
    /// The task's classification.
    pub classification: Classification,
    /// The end user, kept apart from `sub`.
    pub user: User,
    /// `sid`.
    pub session: SessionId,
    /// Earlier actors, oldest first.
    pub chain: Vec<SpiffeId>,
    /// SHA-256 thumbprint of the connector's X.509-SVID (see [`x5t_s256`]).
    pub cnf_x5t_s256: String,
    /// When it expires (≤ every bound: request, default, task, SVID).
    pub expires_at: SystemTime,
}

/// One `authorization_details` object (RFC 9396).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationDetail {
    /// Always [`AUTHORIZATION_DETAIL_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The tool.
    pub identifier: String,
    /// The task's action.
    pub actions: Vec<String>,
    /// The audience the token is for.
    pub locations: Vec<String>,
    /// The task's classification.
    pub datatypes: Vec<String>,
}

/// The end user as a claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClaim {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
}

/// Proof-of-possession confirmation (RFC 8705): the connector's certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// base64url(SHA-256(DER certificate)).
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// The claims of a task token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskTokenClaims {
    /// Issuer URL, when configured.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub iss: Option<String>,
    /// The connector's SPIFFE ID.
    pub sub: String,
    /// One audience (a string, not an array).
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Random token id.
    pub jti: String,
    /// The task id.
    pub txn: String,
    /// `tool:<name>` for each tool, space-separated.
    pub scope: String,
    /// One object per tool.
    pub authorization_details: Vec<AuthorizationDetail>,
    /// The end user.
    pub user: UserClaim,
    /// The session.
    pub sid: String,
    /// Earlier actors, oldest first; absent for a root task.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub chain: Vec<String>,
    /// The connector's X.509-SVID thumbprint.
    pub cnf: Confirmation,
}

impl TaskTokenClaims {
    /// The claims for `t`, issued at `now` with token id `jti`.
    pub fn new(t: &TaskTokenTemplate, now: SystemTime, jti: String) -> Self {
        Self::expiring(t, t.expires_at, now, jti)
    }

    /// [`new`](Self::new) with `expires_at` in place of the template's.
    fn expiring(t: &TaskTokenTemplate, expires_at: SystemTime, now: SystemTime, jti: String) -> Self {
        let details = t
            .tools
            .iter()
            .map(|tool| AuthorizationDetail {
                kind: AUTHORIZATION_DETAIL_TYPE.to_owned(),
                identifier: tool.to_string(),
                actions: vec![t.action.to_string()],
                locations: vec![t.audience.to_string()],
                datatypes: vec![t.classification.to_string()],
            })
            .collect();
        Self {
            iss: t.issuer.clone(),
            sub: t.connector.to_string(),
            aud: t.audience.to_string(),
            exp: unix_secs(expires_at),
            iat: unix_secs(now),
            jti,
            txn: t.task.to_string(),
            scope: t.tools.iter().map(|tool| format!("tool:{tool}")).collect::<Vec<_>>().join(" "),
            authorization_details: details,
            user: UserClaim { iss: t.user.iss.to_string(), sub: t.user.sub.to_string() },
            sid: t.session.to_string(),
            chain: t.chain.iter().map(ToString::to_string).collect(),
            cnf: Confirmation { x5t_s256: t.cnf_x5t_s256.clone() },
        }
    }
}

/// A signed task token.
#[derive(Clone, Debug)]
pub struct SignedTaskToken {
    /// JWS compact serialization.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`.
    pub expires_at: SystemTime,
}

/// The X.509 certificate thumbprint of RFC 8705 (`x5t#S256`).
pub fn x5t_s256(cert_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, cert_der))
}

/// [`x5t_s256`] from the certificate's SHA-256, for a caller that has
/// hashed it already.
pub fn x5t_s256_of_digest(sha256: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(sha256)
}

/// Hex SHA-256 of a `jti`: what the audit log keeps instead of the id itself.
pub fn jti_hash(jti: &str) -> String {
    lanyard_core::hex::encode(digest(&SHA256, jti.as_bytes()).as_ref())
}

impl JwtAuthority {
    /// Signs a task token for `template` at `now`. The template's expiry must
    /// be in the future and within the key's own lifetime.
    pub fn sign_task_token(&self, template: &TaskTokenTemplate, now: SystemTime) -> Result<SignedTaskToken, CaError> {
        if template.tools.is_empty() {
            return Err(CaError::BadAudience("a task token names at least one tool"));
        }
        let expires_at = template.expires_at.min(self.not_after());
        if expires_at <= now {
            return Err(CaError::BadAudience("the task token would already be expired"));
        }
        let jti = random_jti()?;
        let claims = TaskTokenClaims::expiring(template, expires_at, now, jti.clone());
        let token = self.sign_claims_as(JWT_TYP, &claims)?;
        Ok(SignedTaskToken { token, jti, expires_at })
    }
}
