//! The errors of this crate: one enum per concern, each variant one reason.

use std::path::PathBuf;

/// Why a credential was refused: one variant per check, so a caller (and a
/// log line) can tell which check failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The trust bundle was last fetched (or revalidated) too long ago: the
    /// bundle endpoint is unreachable or the refresher stopped.
    #[error("stale view: the trust bundle is {age_secs}s old (limit {limit_secs}s)")]
    StaleBundle {
        /// Seconds since the bundle was last fetched.
        age_secs: u64,
        /// The configured bound.
        limit_secs: u64,
    },
    /// No signed heartbeat from the revocation feed within the bound (or
    /// never): a revocation may be missing, so nothing is accepted.
    #[error("stale view: the revocation feed {}", feed_age(*.age_secs, *.limit_secs))]
    StaleFeed {
        /// Seconds since the newest signed heartbeat; `None` when none arrived.
        age_secs: Option<u64>,
        /// The configured bound.
        limit_secs: u64,
    },
    /// Not a compact JWS of the one shape Lanyard issues (segments, base64url,
    /// header members, JSON payload), or claims of the wrong types.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm other than ES256 (`none`, HMAC, …).
    #[error("unsupported alg {0:?}: only ES256 is accepted")]
    UnsupportedAlg(String),
    /// No key of the trust bundle has this `kid`: a foreign signer, or a
    /// bundle older than the key.
    #[error("unknown kid {0:?}")]
    UnknownKid(String),
    /// The key is in the bundle but does not sign task tokens: a plain
    /// JWT-SVID was presented where a task token is required.
    #[error("key {0:?} signs JWT-SVIDs, not task tokens: a JWT-SVID is not a task token")]
    NotTaskTokenKey(String),
    /// The header `typ` is not one this kind of token carries (a revocation
    /// event or a heartbeat presented as a token, say).
    #[error("token typ {0:?} is not allowed here")]
    WrongTyp(Option<String>),
    /// The signature does not verify under the key its `kid` names: forged
    /// or tampered with.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed, even allowing for clock skew.
    #[error("token expired")]
    Expired,
    /// `nbf` is still ahead, even allowing for clock skew.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is ahead of this clock by more than the allowed skew.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `iss` is not the issuer this verifier was told to expect.
    #[error("wrong issuer: expected {expected:?}, token has {found:?}")]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
        /// The token's `iss`, if any.
        found: Option<String>,
    },
    /// `aud` is not exactly the expected audience (for a task token: one
    /// string, not an array).
    #[error("wrong audience: {0}")]
    WrongAudience(String),
    /// `sub` is not a SPIFFE ID of the bundle's trust domain.
    #[error("bad subject: {0}")]
    BadSubject(String),
    /// The revocation feed says the token (or what it stands for) is revoked.
    #[error("revoked: {0}")]
    Revoked(Revoked),
    /// The invoked tool is not both in `scope` and an `authorization_details`
    /// identifier of the token.
    #[error("tool {0:?} is not in the token")]
    ToolNotGranted(String),
    /// The token's grant for the tool does not include the invoked action.
    #[error("action {0:?} is not allowed by the token")]
    ActionNotAllowed(String),
    /// The client certificate is not the one the token is bound to (`cnf`):
    /// a token presented by someone other than its connector.
    #[error("cnf does not match the client certificate: the token is bound to another certificate")]
    CnfMismatch,
    /// The X.509-SVID chain does not verify against the bundle (expired,
    /// unknown CA, not an SVID, …).
    #[error("certificate chain refused: {0}")]
    BadChain(String),
}

fn feed_age(age: Option<u64>, limit: u64) -> String {
    match age {
        Some(age) => format!("was last heard from {age}s ago (limit {limit}s)"),
        None => "has not been heard from yet".to_owned(),
    }
}

/// What the revocation feed revoked, as a refusal gives it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Revoked {
    /// The task (`txn`) ended, or an ancestor of it did.
    #[error("task {0} ended")]
    Task(String),
    /// The user's session (`sid`) was revoked.
    #[error("session {0:?} revoked")]
    Session(String),
    /// This one token (`jti`) was revoked.
    #[error("token {0:?} revoked")]
    Token(String),
    /// The registration entry of the subject was deleted after it was issued.
    #[error("the entry of {0} was deleted")]
    EntryDeleted(String),
    /// The subject is a banned node agent.
    #[error("agent {0} is banned")]
    AgentBanned(String),
    /// The key that signed it was revoked (it may still be in a bundle
    /// fetched before).
    #[error("signing key {0:?} revoked")]
    Key(String),
    /// A blocking risk is open on the user, connector, agent or session
    /// (`user:alice`, `connector:spiffe://…`, …).
    #[error("open risk on {0}")]
    Risk(String),
}

/// Why a trust bundle could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Not SPIFFE bundle JSON (a JWKS with `keys`).
    #[error("not a SPIFFE bundle: {0}")]
    Json(String),
    /// One key of the bundle is unusable (bad `x5c`, bad point, no `kid`).
    #[error("bundle key {index}: {reason}")]
    BadKey {
        /// Position in `keys`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Two JWT keys share a `kid`, so a token could not name one.
    #[error("bundle has two keys with kid {0:?}")]
    DuplicateKid(String),
    /// The bundle holds no key at all.
    #[error("bundle has no x509-svid or jwt-svid key")]
    Empty,
    /// No CA certificate names the trust domain, and none was configured.
    #[error("no CA certificate names a trust domain; configure one")]
    NoTrustDomain,
    /// The bundle is another trust domain's.
    #[error("bundle is for trust domain {found}, expected {expected}")]
    WrongTrustDomain {
        /// The configured (or first seen) trust domain.
        expected: String,
        /// What the bundle's CA names.
        found: String,
    },
    /// The bundle file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bundle endpoint could not be reached or answered badly.
    #[error("bundle endpoint: {0}")]
    Fetch(#[from] FetchError),
}

/// Why an HTTP(S) request to the bundle endpoint failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is not `http://` or `https://` with a host, or has a query.
    #[error("bad url {0:?}: expected http(s)://host[:port][/path]")]
    BadUrl(String),
    /// The CA certificates for https do not parse, or there are none.
    #[error("bad CA certificates: {0}")]
    BadCa(String),
    /// `https://` without CA certificates: this crate trusts no system roots.
    #[error("an https bundle url needs CA certificates (--ca): no system roots are trusted")]
    NoCa,
    /// TCP connect or TLS handshake failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(String),
    /// The server answered a status other than 200 (or 304 when revalidating).
    #[error("{url} answered HTTP {status}")]
    Status {
        /// What was fetched.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body was larger than the limit for this document.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// No complete answer within the timeout.
    #[error("no answer within {0}s")]
    Timeout(u64),
}

/// Why the revocation feed (or its snapshot) could not be followed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The feed could not be fetched.
    #[error("revocation feed: {0}")]
    Fetch(#[from] FetchError),
    /// The answer is not the feed's JSON.
    #[error("revocation feed answer is not valid: {0}")]
    BadAnswer(String),
    /// A SET, heartbeat or snapshot is not signed by a JWT-SVID key of the
    /// bundle, or has the wrong `typ`.
    #[error("revocation feed {what} refused: {source}")]
    Signature {
        /// `event`, `heartbeat` or `snapshot`.
        what: &'static str,
        /// The JOSE check that failed.
        source: lanyard_jose::JoseError,
    },
    /// A signed document's claims are not what the feed sends.
    #[error("revocation feed {what} has bad claims: {reason}")]
    BadClaims {
        /// `event`, `heartbeat` or `snapshot`.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An event arrived out of order: one was skipped (withheld or lost).
    #[error("revocation event {found} arrived where {expected} was due")]
    Gap {
        /// The next sequence number expected.
        expected: u64,
        /// The one that arrived.
        found: u64,
    },
    /// The feed no longer holds the events after our position.
    #[error("the feed starts at event {oldest}; events after {after} are gone: start from the snapshot")]
    Behind {
        /// Our position.
        after: u64,
        /// The oldest event the feed still serves.
        oldest: u64,
    },
    /// The feed's signed head is behind events already applied: the issuer's
    /// store was restored from an older backup, so its sequence numbers
    /// will be reused. Start again from its snapshot.
    #[error("the feed went back: its head is {head}, events up to {at} were applied (store restored?)")]
    Rewound {
        /// Where we are.
        at: u64,
        /// Where the feed says it is.
        head: u64,
    },
    /// The feed kept announcing more events than it delivered.
    #[error("the feed did not catch up to its head {head} (at {at})")]
    NotCaughtUp {
        /// Where we are.
        at: u64,
        /// Where the feed says it is.
        head: u64,
    },
}

/// Why a [`Verifier`](crate::Verifier) could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The first bundle could not be loaded.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The first revocation view could not be loaded.
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// A bundle file has no revocation feed, and the configuration did not
    /// accept checking without one.
    #[error(
        "a bundle file has no revocation feed: use a bundle url, or accept no revocation checks \
         (VerifierConfig::danger_without_revocations)"
    )]
    NoRevocationFeed,
}
