//! Checks Lanyard credentials in relying services.
//!
//! A [`Verifier`] is started from the issuer's bundle endpoint URL. It
//! fetches the SPIFFE trust bundle and refreshes it as `spiffe_refresh_hint`
//! says (keeping the last good one when a refresh fails), loads a signed
//! snapshot of what is revoked and then follows the revocation feed by
//! long-poll, so a task ended at the issuer is refused here within a second.
//! When either view grows older than its configured bound, every check fails
//! closed with a "stale view" error rather than trusting old data.
//!
//! ```no_run
//! # async fn run(token: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use lanyard_verify::{Endpoint, Expect, Verifier, VerifierConfig};
//! let endpoint = Endpoint::new("http://127.0.0.1:8443", &[])?;
//! let config = VerifierConfig::default().issuer("https://lanyard.example.org");
//! let verifier = Verifier::start(endpoint, config).await?;
//! let claims = verifier.task_token(token, &Expect::audience("api.github.com").tool("github.search"))?;
//! println!("{} acts for {} in task {}", claims.sub, claims.user.sub, claims.txn);
//! # Ok(()) }
//! ```
//!
//! The checks themselves are pure ([`View`]); [`layer`] wraps them as a
//! `tower` layer for axum and tonic services.

mod bundle;
mod check;
mod error;
mod feed;
mod fetch;
pub mod layer;
mod revocation;
#[cfg(test)]
mod testkit;

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

pub use bundle::{DEFAULT_REFRESH_HINT, MAX_BUNDLE_KEYS, parse_spiffe_bundle};
pub use check::{
    DEFAULT_MAX_BUNDLE_AGE, DEFAULT_MAX_FEED_AGE, Expect, JWT_SVID_TYPS, TASK_TOKEN_TYP, VerifiedJwtSvid,
    VerifierConfig, View,
};
pub use error::{BundleError, FeedError, FetchError, Revoked, StartError, VerifyError};
pub use feed::{
    EVENT_URI_PREFIX, FeedPage, HEARTBEAT_TYP, SET_TYP, SNAPSHOT_TYP, parse_page, parse_snapshot_answer, verify_event,
    verify_heartbeat, verify_snapshot,
};
pub use fetch::Endpoint;
pub use lanyard_ca::{TaskTokenClaims, TrustBundle};
pub use layer::{PeerCertificate, TaskTokenLayer};
pub use revocation::{EventKind, Heartbeat, RevocationEvent, RevocationState, Snapshot};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Largest bundle document accepted.
const MAX_BUNDLE_BYTES: usize = 1 << 20;
/// Largest feed page or snapshot accepted.
const MAX_FEED_BYTES: usize = 16 << 20;
/// Timeout of one bundle or snapshot request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest and longest waits between bundle refreshes.
const MIN_REFRESH: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A trust bundle and when it was last fetched or revalidated.
#[derive(Clone, Debug)]
pub struct FetchedBundle {
    /// The bundle.
    pub bundle: TrustBundle,
    /// When it was last known current.
    pub fetched_at: SystemTime,
    etag: Option<String>,
}

impl FetchedBundle {
    /// A bundle known current at `fetched_at`.
    pub fn new(bundle: TrustBundle, fetched_at: SystemTime) -> Self {
        Self { bundle, fetched_at, etag: None }
    }
}

/// Verifies Lanyard credentials against a bundle and revocation view that
/// background tasks keep fresh. Cheap to clone; the tasks stop when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Verifier {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("revocation_seq", &self.revocation_seq()).finish_non_exhaustive()
    }
}

struct Shared {
    config: VerifierConfig,
    bundle: RwLock<Arc<FetchedBundle>>,
    /// `None` for a bundle file checked without revocations.
    revocations: Option<RwLock<RevocationState>>,
    /// The newest event applied, for [`Verifier::wait_for_seq`].
    seq: watch::Sender<u64>,
    /// Asks the bundle refresher to fetch now (an unknown `kid` was seen).
    refresh_now: Notify,
}

/// The background tasks, aborted with the last [`Verifier`].
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        self.0.iter().for_each(JoinHandle::abort);
    }
}

impl Verifier {
    /// Fetches the bundle and the revocation snapshot from `endpoint`, then
    /// keeps both fresh in background tasks on the current tokio runtime.
    /// Fails when either first fetch fails: a verifier that cannot see
    /// revocations does not start.
    pub async fn start(endpoint: Endpoint, config: VerifierConfig) -> Result<Self, StartError> {
        let bundle = fetch_bundle(&endpoint, None, config.expected_trust_domain()).await?;
        let bundle =
            bundle.ok_or(BundleError::Fetch(FetchError::Status { url: endpoint.url().into(), status: 304 }))?;
        let state = fetch_snapshot(&endpoint, &bundle.bundle).await?;
        info!(url = endpoint.url(), trust_domain = %bundle.bundle.trust_domain, seq = state.seq(), "verifier started");
        let (seq, _) = watch::channel(state.seq());
        let shared = Arc::new(Shared {
            config,
            bundle: RwLock::new(Arc::new(bundle)),
            revocations: Some(RwLock::new(state)),
            seq,
            refresh_now: Notify::new(),
        });
        let tasks = vec![
            tokio::spawn(refresh_bundle(Arc::clone(&shared), endpoint.clone())),
            tokio::spawn(follow_feed(Arc::clone(&shared), endpoint)),
        ];
        Ok(Self { shared, _tasks: Arc::new(Tasks(tasks)) })
    }

    /// A verifier over a SPIFFE bundle file, with no revocation feed: it
    /// starts only when `config` says
    /// [`danger_without_revocations`](VerifierConfig::danger_without_revocations),
    /// since a revoked token then passes until it expires.
    pub fn from_bundle_file(path: &Path, config: VerifierConfig) -> Result<Self, StartError> {
        if !config.is_without_revocations() {
            return Err(StartError::NoRevocationFeed);
        }
        let json = std::fs::read(path).map_err(|source| BundleError::Read { path: path.to_owned(), source })?;
        let bundle = parse_spiffe_bundle(&json, config.expected_trust_domain())?;
        Ok(Self::fixed(FetchedBundle::new(bundle, SystemTime::now()), None, config))
    }

    /// A verifier over a fixed bundle and revocation state, refreshed by
    /// nobody: for tests and benchmarks.
    pub fn fixed(bundle: FetchedBundle, revocations: Option<RevocationState>, config: VerifierConfig) -> Self {
        let (seq, _) = watch::channel(revocations.as_ref().map_or(0, RevocationState::seq));
        let shared = Arc::new(Shared {
            config,
            bundle: RwLock::new(Arc::new(bundle)),
            revocations: revocations.map(RwLock::new),
            seq,
            refresh_now: Notify::new(),
        });
        Self { shared, _tasks: Arc::new(Tasks(Vec::new())) }
    }

    /// Verifies a task token now: see [`View::task_token`].
    pub fn task_token(&self, token: &str, expect: &Expect<'_>) -> Result<TaskTokenClaims, VerifyError> {
        self.with_view(|view| view.task_token(token, expect, SystemTime::now()))
    }

    /// Verifies a JWT-SVID for `audience` now: see [`View::jwt_svid`].
    pub fn jwt_svid(&self, token: &str, audience: &str) -> Result<VerifiedJwtSvid, VerifyError> {
        self.with_view(|view| view.jwt_svid(token, audience, SystemTime::now()))
    }

    /// Verifies an X.509-SVID chain (DER, leaf first) now: see [`View::x509_svid`].
    pub fn x509_svid(&self, chain: &[Vec<u8>]) -> Result<lanyard_core::SpiffeId, VerifyError> {
        self.with_view(|view| view.x509_svid(chain, SystemTime::now()))
    }

    /// The current trust bundle.
    pub fn bundle(&self) -> Arc<FetchedBundle> {
        Arc::clone(&read(&self.shared.bundle))
    }

    /// The newest revocation event applied (0 before any).
    pub fn revocation_seq(&self) -> u64 {
        *self.shared.seq.borrow()
    }

    /// Waits until the revocation event `seq` (or a later one) is applied.
    pub async fn wait_for_seq(&self, seq: u64) {
        let mut rx = self.shared.seq.subscribe();
        // The sender lives in `shared`, which `self` holds: this cannot fail.
        let _ = rx.wait_for(|applied| *applied >= seq).await;
    }

    fn with_view<T>(&self, check: impl FnOnce(&View<'_>) -> Result<T, VerifyError>) -> Result<T, VerifyError> {
        let bundle = self.bundle();
        let revocations = self.shared.revocations.as_ref().map(read);
        let view = View {
            config: &self.shared.config,
            bundle: &bundle.bundle,
            bundle_fetched_at: bundle.fetched_at,
            revocations: revocations.as_deref(),
        };
        let result = check(&view);
        if let Err(VerifyError::UnknownKid(_)) = &result {
            // Maybe a key newer than our bundle: refresh (at most once a second).
            self.shared.refresh_now.notify_one();
        }
        result
    }
}

/// A read lock that a panicked writer does not poison for ever: the data
/// is replaced whole under the lock, so it is never half-written.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `issuer` the endpoint's OIDC discovery document names — what tokens
/// carry as `iss` — or `None` when it serves none (no public URL set).
pub async fn discovered_issuer(endpoint: &Endpoint) -> Result<Option<String>, FetchError> {
    let path = "/.well-known/openid-configuration";
    let answer = endpoint.get(path, None, MAX_BUNDLE_BYTES, REQUEST_TIMEOUT).await?;
    match answer.status.as_u16() {
        404 => Ok(None),
        200 => {
            let doc: serde_json::Value =
                serde_json::from_slice(&answer.body).map_err(|e| FetchError::Http(format!("discovery: {e}")))?;
            Ok(doc.get("issuer").and_then(serde_json::Value::as_str).map(str::to_owned))
        }
        status => Err(FetchError::Status { url: format!("{}{path}", endpoint.url()), status }),
    }
}

/// Fetches `/bundle`; `None` when the server says our `etag` is current.
async fn fetch_bundle(
    endpoint: &Endpoint,
    etag: Option<&str>,
    trust_domain: Option<&lanyard_core::TrustDomain>,
) -> Result<Option<FetchedBundle>, BundleError> {
    let answer = endpoint.get("/bundle", etag, MAX_BUNDLE_BYTES, REQUEST_TIMEOUT).await?;
    match answer.status.as_u16() {
        304 if etag.is_some() => Ok(None),
        200 => {
            let bundle = parse_spiffe_bundle(&answer.body, trust_domain)?;
            Ok(Some(FetchedBundle { bundle, fetched_at: SystemTime::now(), etag: answer.etag }))
        }
        status => Err(FetchError::Status { url: format!("{}/bundle", endpoint.url()), status }.into()),
    }
}

/// Fetches and verifies `/v1/revocations/snapshot`.
async fn fetch_snapshot(endpoint: &Endpoint, bundle: &TrustBundle) -> Result<RevocationState, FeedError> {
    let path = "/v1/revocations/snapshot";
    let answer = endpoint.get(path, None, MAX_FEED_BYTES, REQUEST_TIMEOUT).await?;
    if answer.status != http::StatusCode::OK {
        return Err(
            FetchError::Status { url: format!("{}{path}", endpoint.url()), status: answer.status.as_u16() }.into()
        );
    }
    Ok(RevocationState::from_snapshot(parse_snapshot_answer(&answer.body, bundle)?))
}

/// Keeps the bundle fresh: refetches (with `If-None-Match`) as its refresh
/// hint says — often enough that it never reaches the staleness bound while
/// the endpoint answers — and at once when asked, at most once a second.
async fn refresh_bundle(shared: Arc<Shared>, endpoint: Endpoint) {
    let mut wait = next_refresh(&shared);
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.refresh_now.notified() => tokio::time::sleep(MIN_REFRESH).await,
        }
        let current = Arc::clone(&read(&shared.bundle));
        let td = Some(&current.bundle.trust_domain);
        match fetch_bundle(&endpoint, current.etag.as_deref(), td).await {
            Ok(Some(fresh)) => {
                if fresh.bundle != current.bundle {
                    info!(sequence = fresh.bundle.sequence, "trust bundle changed");
                }
                *write(&shared.bundle) = Arc::new(fresh);
                wait = next_refresh(&shared);
            }
            Ok(None) => {
                let mut fresh = (*current).clone();
                fresh.fetched_at = SystemTime::now();
                *write(&shared.bundle) = Arc::new(fresh);
                wait = next_refresh(&shared);
            }
            Err(e) => {
                warn!(error = %e, "trust bundle refresh failed; keeping the last good bundle");
                wait = next_refresh(&shared).min(MAX_BACKOFF);
            }
        }
    }
}

/// The refresh hint, bounded to between a second and a third of the bundle
/// staleness limit.
fn next_refresh(shared: &Shared) -> Duration {
    let hint = read(&shared.bundle).bundle.refresh_hint;
    hint.min(shared.config.bundle_age_limit() / 3).max(MIN_REFRESH)
}

/// Follows the revocation feed for ever, backing off on errors (the view
/// then ages until checks fail closed).
async fn follow_feed(shared: Arc<Shared>, endpoint: Endpoint) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    let mut backoff = FIRST_BACKOFF;
    // The snapshot we started from was current.
    let mut caught_up = true;
    loop {
        match follow(&shared, &endpoint, caught_up).await {
            Ok(now_caught_up) => {
                caught_up = now_caught_up;
                backoff = FIRST_BACKOFF;
                continue;
            }
            Err(e @ (FeedError::Behind { .. } | FeedError::Gap { .. } | FeedError::Rewound { .. })) => {
                info!(error = %e, "reloading the revocation snapshot");
                let rewound = matches!(e, FeedError::Rewound { .. });
                let bundle = Arc::clone(&read(&shared.bundle));
                match fetch_snapshot(&endpoint, &bundle.bundle).await {
                    Ok(state) => install(&shared, state, rewound),
                    Err(e) => warn!(error = %e, "revocation snapshot failed"),
                }
            }
            Err(e) => {
                if let FeedError::Signature { source: lanyard_jose::JoseError::UnknownKid(_), .. } = &e {
                    shared.refresh_now.notify_one();
                }
                warn!(error = %e, retry_in = ?backoff, "revocation feed failed");
            }
        }
        // Whatever went wrong may go wrong again at once: never spin.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Replaces the revocation state with one from a snapshot, unless ours is
/// newer. When the feed went back (a restored issuer), a snapshot with a
/// lower sequence is the truth — but only one signed after our state was
/// last known current, so a replayed old snapshot cannot undo revocations.
fn install(shared: &Shared, state: RevocationState, rewound: bool) {
    let Some(lock) = &shared.revocations else { return };
    let mut current = write(lock);
    let newer = state.current_at() >= current.current_at();
    if state.seq() >= current.seq() || (rewound && newer) {
        *current = state;
        shared.seq.send_replace(current.seq());
    }
}

/// One long-poll: waits for events after our position (not at all when the
/// last page said more are due), verifies and applies them in order.
/// Returns whether the feed's signed head says we are now caught up.
async fn follow(shared: &Shared, endpoint: &Endpoint, caught_up: bool) -> Result<bool, FeedError> {
    let Some(lock) = &shared.revocations else { return Ok(true) };
    let seq = read(lock).seq();
    let poll = (shared.config.feed_age_limit() / 2).clamp(Duration::from_secs(1), Duration::from_secs(20));
    let wait = if caught_up { poll.as_secs() } else { 0 };
    let path = format!("/v1/revocations?after={seq}&wait={wait}");
    let answer = endpoint.get(&path, None, MAX_FEED_BYTES, Duration::from_secs(wait) + REQUEST_TIMEOUT).await?;
    if answer.status != http::StatusCode::OK {
        let url = format!("{}{path}", endpoint.url());
        return Err(FetchError::Status { url, status: answer.status.as_u16() }.into());
    }
    let bundle = Arc::clone(&read(&shared.bundle));
    let page = parse_page(&answer.body, &bundle.bundle)?;
    if page.heartbeat.head < seq {
        return Err(FeedError::Rewound { at: seq, head: page.heartbeat.head });
    }
    if page.oldest > seq + 1 && page.events.first().is_none_or(|e| e.seq != seq + 1) {
        return Err(FeedError::Behind { after: seq, oldest: page.oldest });
    }
    let mut state = write(lock);
    let mut applied = Ok(());
    for event in &page.events {
        match state.apply(event) {
            Ok(true) => {
                debug!(seq = event.seq, kind = ?event.kind, subject = %event.subject, "revocation applied");
                if event.kind == EventKind::KeyRevoked {
                    // The bundle still holds it: fetch the one without it.
                    shared.refresh_now.notify_one();
                }
            }
            Ok(false) => {}
            Err(e) => {
                applied = Err(e);
                break;
            }
        }
    }
    // What was applied is in force: say so even when a gap stopped us.
    shared.seq.send_replace(state.seq());
    applied?;
    let caught_up = state.observe(page.heartbeat);
    if !caught_up && page.events.is_empty() {
        // The signed head is ahead of every event served: not progress.
        return Err(FeedError::NotCaughtUp { at: state.seq(), head: page.heartbeat.head });
    }
    Ok(caught_up)
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod follow_tests;
