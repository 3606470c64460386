//! The [`Verifier`] against a fake bundle endpoint (axum on 127.0.0.1:0)
//! whose answers each test controls: the bundle refreshed as its hint says
//! with `If-None-Match`, at once on an unknown `kid`, the last good one kept
//! when a refresh fails; the revocation feed followed by long-poll, failing
//! closed when it goes quiet, a gap healed from the snapshot, forged feed
//! documents never applied.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lanyard_ca::{JwtAuthority, JwtAuthorityKey, JwtKeyPurpose, TaskTokenTemplate, TrustBundle};
use lanyard_core::unix_secs;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::testkit::{AUDIENCE, Fixture, TASK, TOOL};
use crate::{Endpoint, Expect, Revoked, TaskTokenClaims, Verifier, VerifierConfig, VerifyError};

/// No test runs longer than this, whatever the verifier does.
const TEST_LIMIT: Duration = Duration::from_secs(20);
/// A second task, for tests that end two.
const TASK2: &str = "bb46899732aef3c24295cf6f76c2182f";

/// How `/bundle` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BundleMode {
    /// The bundle (200), or 304 when `If-None-Match` names its `ETag`.
    Serve,
    /// 500.
    Error,
    /// 200 with a body that is not a bundle.
    Garbage,
}

/// How often each path was asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Hits {
    bundle: usize,
    /// `/bundle` requests carrying `If-None-Match`.
    conditional: usize,
    /// `/bundle` answered 304.
    not_modified: usize,
    feed: usize,
    snapshot: usize,
}

/// What the fake serves; tests change it between requests.
struct Served {
    bundle_json: String,
    etag: String,
    bundle_mode: BundleMode,
    /// Whether the feed answers; when not, 503.
    feed_up: bool,
    /// The snapshot JWS; `None` answers 503.
    snapshot: Option<String>,
    /// Signs the heartbeats, at the real clock.
    signer: Arc<Fixture>,
    /// The head the heartbeats claim, when not the newest event served.
    head: Option<u64>,
    hits: Hits,
}

struct Fake {
    served: Mutex<Served>,
    /// The SETs as `(seq, JWS)`: a watch, so that a push wakes long-polls.
    events: watch::Sender<Vec<(u64, String)>>,
}

impl Fake {
    fn served(&self) -> MutexGuard<'_, Served> {
        self.served.lock().unwrap()
    }
}

#[derive(Deserialize)]
struct FeedQuery {
    after: u64,
    #[serde(default)]
    wait: u64,
}

async fn serve_bundle(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    let mut served = fake.served();
    served.hits.bundle += 1;
    let if_none_match = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned);
    served.hits.conditional += usize::from(if_none_match.is_some());
    match served.bundle_mode {
        BundleMode::Error => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        BundleMode::Garbage => return (StatusCode::OK, "{\"keys\": [").into_response(),
        BundleMode::Serve => {}
    }
    let etag = served.etag.clone();
    if if_none_match.as_deref() == Some(etag.as_str()) {
        served.hits.not_modified += 1;
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let headers = [(header::ETAG, etag), (header::CONTENT_TYPE, "application/json".to_owned())];
    (StatusCode::OK, headers, served.bundle_json.clone()).into_response()
}

/// Events after `after`, at once when there are some, else when one is
/// pushed or `wait` seconds are over; with a heartbeat signed now.
async fn serve_feed(State(fake): State<Arc<Fake>>, Query(q): Query<FeedQuery>) -> Response {
    {
        let mut served = fake.served();
        served.hits.feed += 1;
        if !served.feed_up {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    let mut events = fake.events.subscribe();
    let wait = Duration::from_secs(q.wait.min(30));
    let arrived = events.wait_for(|all| all.iter().any(|(seq, _)| *seq > q.after));
    let _ = tokio::time::timeout(wait, async { arrived.await.map(|_| ()) }).await;
    let served = fake.served();
    if !served.feed_up {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let (sets, head) = {
        let all = fake.events.borrow();
        let sets: Vec<(u64, String)> = all.iter().filter(|(seq, _)| *seq > q.after).cloned().collect();
        (sets, all.iter().map(|(seq, _)| *seq).max().unwrap_or(0))
    };
    let head = served.head.unwrap_or(head);
    let next = sets.last().map_or(q.after, |(seq, _)| *seq);
    let heartbeat = served.signer.heartbeat_at(head, unix_secs(SystemTime::now()));
    let sets: Vec<String> = sets.into_iter().map(|(_, set)| set).collect();
    Json(json!({"events": sets, "next": next, "head": head, "oldest": 1, "heartbeat": heartbeat})).into_response()
}

async fn serve_snapshot(State(fake): State<Arc<Fake>>) -> Response {
    let mut served = fake.served();
    served.hits.snapshot += 1;
    match &served.snapshot {
        Some(jws) => Json(json!({"snapshot": jws})).into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// The fake endpoint, serving until dropped.
struct Issuer {
    fake: Arc<Fake>,
    url: String,
    server: JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Issuer {
    /// Serves `bundle` (ETag `"v1"`), an empty feed and a snapshot as of 0,
    /// all signed by `f`.
    async fn start(f: &Arc<Fixture>, bundle: &TrustBundle) -> Self {
        let served = Served {
            bundle_json: bundle.spiffe_json().unwrap(),
            etag: "\"v1\"".into(),
            bundle_mode: BundleMode::Serve,
            feed_up: true,
            snapshot: Some(fresh_snapshot(f, 0, &[])),
            signer: Arc::clone(f),
            head: None,
            hits: Hits::default(),
        };
        let fake = Arc::new(Fake { served: Mutex::new(served), events: watch::Sender::new(Vec::new()) });
        let router = Router::new()
            .route("/bundle", get(serve_bundle))
            .route("/v1/revocations", get(serve_feed))
            .route("/v1/revocations/snapshot", get(serve_snapshot))
            .with_state(Arc::clone(&fake));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { fake, url, server }
    }

    async fn verifier(&self, config: VerifierConfig) -> Verifier {
        let endpoint = Endpoint::new(&self.url, &[]).unwrap();
        Verifier::start(endpoint, config).await.unwrap()
    }

    fn change(&self, change: impl FnOnce(&mut Served)) {
        change(&mut self.fake.served());
    }

    fn hits(&self) -> Hits {
        self.fake.served().hits
    }

    /// Forgets every SET, as an issuer restored from an older backup has.
    fn rewind(&self) {
        self.fake.events.send_replace(Vec::new());
    }

    /// Serves these SETs too (as `(seq, JWS)`), waking long-polls.
    fn push(&self, sets: impl IntoIterator<Item = (u64, String)>) {
        self.fake.events.send_modify(|all| all.extend(sets));
    }
}

/// A fixture at the real clock, which the verifier reads.
fn fixture() -> Arc<Fixture> {
    Arc::new(Fixture::at(SystemTime::now()))
}

/// The fixture's bundle with this refresh hint.
fn with_hint(f: &Fixture, secs: u64) -> TrustBundle {
    TrustBundle { refresh_hint: Duration::from_secs(secs), ..f.bundle.clone() }
}

/// A snapshot as of `as_of` with these tasks ended, signed now.
fn fresh_snapshot(f: &Fixture, as_of: u64, ended_tasks: &[&str]) -> String {
    let now = unix_secs(SystemTime::now());
    f.snapshot(json!({"iat": now, "as_of": as_of, "ended_tasks": ended_tasks}))
}

/// The SET that ends `task`.
fn task_ended(f: &Fixture, seq: u64, task: &str) -> (u64, String) {
    (seq, f.set(seq, "task_ended", json!({"subject": task, "tasks": [task]})))
}

/// A task token for another task of the same connector, user and session.
fn token_for_task(f: &Fixture, task: &str) -> String {
    let template = TaskTokenTemplate { task: task.parse().unwrap(), ..f.template() };
    f.task_key.sign_task_token(&template, f.now).unwrap().token
}

fn expect() -> Expect<'static> {
    Expect::audience(AUDIENCE).tool(TOOL)
}

fn is_task_revoked(result: &Result<TaskTokenClaims, VerifyError>, task: &str) -> bool {
    matches!(result, Err(VerifyError::Revoked(Revoked::Task(t))) if t == task)
}

/// Runs a test body, failing it when it takes longer than [`TEST_LIMIT`].
async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, test).await.expect("the test took too long");
}

/// Polls `probe` every 50 ms until it gives `Ok`, failing with its last
/// `Err` after `within`.
async fn eventually<T>(within: Duration, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => panic!("{what}: not within {within:?}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_against_the_endpoint_and_refuses_a_task_once_the_feed_ends_it() {
    bounded(async {
        let f = fixture();
        let issuer = Issuer::start(&f, &f.bundle).await;
        let verifier = issuer.verifier(f.config.clone()).await;
        let token = f.task_token();
        let claims = verifier.task_token(&token, &expect()).unwrap();
        assert_eq!(claims.txn, TASK);
        assert_eq!(verifier.revocation_seq(), 0);
        assert_eq!(issuer.hits().snapshot, 1);

        issuer.push([task_ended(&f, 1, TASK)]);
        tokio::time::timeout(Duration::from_secs(5), verifier.wait_for_seq(1)).await.unwrap();
        let refused = verifier.task_token(&token, &expect());
        assert!(is_task_revoked(&refused, TASK), "{refused:?}");
        assert_eq!(verifier.revocation_seq(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_is_revalidated_with_its_etag_as_often_as_its_refresh_hint_says() {
    bounded(async {
        let f = fixture();
        let issuer = Issuer::start(&f, &with_hint(&f, 1)).await;
        let verifier = issuer.verifier(f.config.clone()).await;
        let first = verifier.bundle();
        assert_eq!(first.bundle.refresh_hint, Duration::from_secs(1));
        let start = issuer.hits();
        assert_eq!((start.bundle, start.conditional), (1, 0));

        tokio::time::sleep(Duration::from_millis(3500)).await;
        let hits = issuer.hits();
        assert!(hits.conditional >= 2, "{hits:?}");
        assert_eq!(hits.not_modified, hits.conditional, "{hits:?}");
        assert_eq!(hits.bundle, 1 + hits.conditional, "every refresh carried If-None-Match: {hits:?}");
        let now = verifier.bundle();
        assert!(now.fetched_at > first.fetched_at, "{:?} !> {:?}", now.fetched_at, first.fetched_at);
        assert_eq!(now.bundle, first.bundle);
        verifier.task_token(&f.task_token(), &expect()).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refreshes_the_bundle_early_and_its_new_key_is_then_trusted() {
    bounded(async {
        let f = fixture();
        // A long hint: only the unknown kid can explain a refresh.
        let issuer = Issuer::start(&f, &with_hint(&f, 300)).await;
        let verifier = issuer.verifier(f.config.clone()).await;

        let new_key = JwtAuthority::generate(f.now, Duration::from_secs(86_400)).unwrap();
        let mut rotated = with_hint(&f, 300);
        rotated.sequence += 1;
        rotated.jwt_authorities.push(JwtAuthorityKey {
            key: new_key.verifying_key(),
            expires_at: unix_secs(new_key.not_after()),
            purpose: JwtKeyPurpose::TaskToken,
        });
        issuer.change(|s| {
            s.bundle_json = rotated.spiffe_json().unwrap();
            s.etag = "\"v2\"".into();
        });
        let token = new_key.sign_task_token(&f.template(), f.now).unwrap().token;

        // Nothing refreshes by itself for a while.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(issuer.hits().bundle, 1);
        let refused = verifier.task_token(&token, &expect());
        assert!(matches!(&refused, Err(VerifyError::UnknownKid(kid)) if kid == new_key.kid()), "{refused:?}");

        let claims = eventually(Duration::from_secs(3), "the new key is trusted", || {
            verifier.task_token(&token, &expect()).map_err(|e| e.to_string())
        })
        .await;
        assert_eq!(claims.txn, TASK);
        let hits = issuer.hits();
        assert!(hits.bundle >= 2 && hits.conditional >= 1, "{hits:?}");
        assert_eq!(verifier.bundle().bundle.sequence, rotated.sequence);
        // The old key still signs.
        verifier.task_token(&f.task_token(), &expect()).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_bundle_is_kept_while_refreshes_fail() {
    bounded(async {
        let f = fixture();
        let issuer = Issuer::start(&f, &with_hint(&f, 1)).await;
        let verifier = issuer.verifier(f.config.clone()).await;
        let good = verifier.bundle();
        let token = f.task_token();

        for mode in [BundleMode::Error, BundleMode::Garbage] {
            issuer.change(|s| s.bundle_mode = mode);
            // One refresh may have been under way: count from the next one.
            let from = issuer.hits().bundle + 1;
            eventually(Duration::from_secs(4), "a failed refresh", || {
                (issuer.hits().bundle > from).then_some(()).ok_or_else(|| format!("{:?}", issuer.hits()))
            })
            .await;
            let kept = verifier.bundle();
            eventually(Duration::from_secs(4), "another failed refresh", || {
                (issuer.hits().bundle >= from + 2).then_some(()).ok_or_else(|| format!("{:?}", issuer.hits()))
            })
            .await;
            let now = verifier.bundle();
            assert_eq!(now.bundle, good.bundle, "{mode:?}");
            assert_eq!(now.fetched_at, kept.fetched_at, "{mode:?}: a failed refresh is no revalidation");
            verifier.task_token(&token, &expect()).unwrap();
        }

        let failed_since = verifier.bundle().fetched_at;
        issuer.change(|s| s.bundle_mode = BundleMode::Serve);
        eventually(Duration::from_secs(4), "revalidated once the endpoint is back", || {
            let at = verifier.bundle().fetched_at;
            (at > failed_since).then_some(()).ok_or_else(|| format!("{:?}", issuer.hits()))
        })
        .await;
        assert!(issuer.hits().not_modified >= 1, "{:?}", issuer.hits());
        verifier.task_token(&token, &expect()).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_fail_closed_while_the_feed_is_down_and_recover_when_it_is_back() {
    bounded(async {
        let f = fixture();
        let issuer = Issuer::start(&f, &f.bundle).await;
        let config = f.config.clone().max_feed_age(Duration::from_secs(2));
        let verifier = issuer.verifier(config).await;
        let token = f.task_token();
        verifier.task_token(&token, &expect()).unwrap();

        issuer.change(|s| s.feed_up = false);
        let stale = eventually(Duration::from_secs(6), "stale feed", || match verifier.task_token(&token, &expect()) {
            Err(e @ VerifyError::StaleFeed { .. }) => Ok(e),
            Ok(_) => Err("still passes".into()),
            Err(e) => panic!("refused for another reason: {e:?}"),
        })
        .await;
        assert!(matches!(stale, VerifyError::StaleFeed { age_secs: Some(_), limit_secs: 2 }), "{stale:?}");

        issuer.change(|s| s.feed_up = true);
        eventually(Duration::from_secs(8), "recovered", || {
            verifier.task_token(&token, &expect()).map_err(|e| e.to_string())
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_feed_is_not_skipped_but_healed_from_the_snapshot() {
    bounded(async {
        let f = fixture();
        let issuer = Issuer::start(&f, &f.bundle).await;
        let verifier = issuer.verifier(f.config.clone()).await;
        let (token1, token2) = (f.task_token(), token_for_task(&f, TASK2));
        verifier.task_token(&token1, &expect()).unwrap();
        verifier.task_token(&token2, &expect()).unwrap();

        // Event 2 is missing; the snapshot is still as of 0.
        issuer.push([task_ended(&f, 1, TASK), task_ended(&f, 3, TASK2)]);
        eventually(Duration::from_secs(5), "the gap sends the verifier to the snapshot", || {
            let hits = issuer.hits();
            (hits.snapshot >= 2).then_some(()).ok_or_else(|| format!("{hits:?}"))
        })
        .await;
        verifier.task_token(&token2, &expect()).expect("event 3 must not be applied without event 2");
        assert!(verifier.revocation_seq() < 3, "{}", verifier.revocation_seq());

        issuer.change(|s| s.snapshot = Some(fresh_snapshot(&f, 3, &[TASK, TASK2])));
        tokio::time::timeout(Duration::from_secs(5), verifier.wait_for_seq(3)).await.unwrap();
        assert_eq!(verifier.revocation_seq(), 3);
        for (token, task) in [(&token1, TASK), (&token2, TASK2)] {
            let refused = verifier.task_token(token, &expect());
            assert!(is_task_revoked(&refused, task), "{refused:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_documents_signed_by_a_stranger_are_never_applied() {
    bounded(async {
        let f = fixture();
        let stranger = fixture();
        let issuer = Issuer::start(&f, &f.bundle).await;
        let config = f.config.clone().max_feed_age(Duration::from_secs(2));
        let verifier = issuer.verifier(config).await;
        let token = f.task_token();
        verifier.task_token(&token, &expect()).unwrap();

        // Both the event and the heartbeats now come from a key not in the bundle.
        issuer.change(|s| s.signer = Arc::clone(&stranger));
        let feed_before = issuer.hits().feed;
        issuer.push([task_ended(&stranger, 1, TASK)]);
        let stale = eventually(Duration::from_secs(6), "stale feed", || match verifier.task_token(&token, &expect()) {
            Err(e @ VerifyError::StaleFeed { .. }) => Ok(e),
            Ok(_) => Err("still passes".into()),
            Err(e) => panic!("forged data was believed, or another refusal: {e:?}"),
        })
        .await;
        assert!(matches!(stale, VerifyError::StaleFeed { age_secs: Some(_), limit_secs: 2 }), "{stale:?}");
        assert_eq!(verifier.revocation_seq(), 0);
        let hits = issuer.hits();
        assert!(hits.feed > feed_before, "the forged page was served: {hits:?}");
        // An unknown kid in the feed asks for the bundle early (hint 300 s).
        eventually(Duration::from_secs(3), "an early bundle refresh", || {
            let hits = issuer.hits();
            (hits.bundle >= 2).then_some(()).ok_or_else(|| format!("{hits:?}"))
        })
        .await;
    })
    .await;
}

// A misbehaving endpoint must not make the follower spin or lose track of
// what it applied.

/// Requests of `path` (as [`Hits`] counts them) during one second, after
/// the verifier has had `settle` to get going.
async fn requests_per_second(issuer: &Issuer, settle: Duration, count: fn(Hits) -> usize) -> usize {
    tokio::time::sleep(settle).await;
    let before = count(issuer.hits());
    tokio::time::sleep(Duration::from_secs(1)).await;
    count(issuer.hits()) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_the_snapshot_cannot_heal_is_retried_with_backoff() {
    bounded(async {
        let f = fixture();
        let issuer = Issuer::start(&f, &f.bundle).await;
        let _verifier = issuer.verifier(f.config.clone()).await;
        // The snapshot stays as of 0, so reloading it heals nothing.
        issuer.push([task_ended(&f, 1, TASK), task_ended(&f, 3, TASK2)]);
        let snapshots = requests_per_second(&issuer, Duration::from_millis(500), |h| h.snapshot).await;
        assert!(snapshots <= 20, "{snapshots} snapshot requests in one second");
        // Nor when the snapshot cannot be had at all.
        issuer.change(|s| s.snapshot = None);
        let snapshots = requests_per_second(&issuer, Duration::from_millis(100), |h| h.snapshot).await;
        assert!(snapshots <= 20, "{snapshots} snapshot requests in one second");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_applied_before_a_gap_is_reported_by_revocation_seq() {
    bounded(async {
        let f = fixture();
        let issuer = Issuer::start(&f, &f.bundle).await;
        let verifier = issuer.verifier(f.config.clone()).await;
        issuer.push([task_ended(&f, 1, TASK), task_ended(&f, 3, TASK2)]);
        eventually(Duration::from_secs(5), "the gap sends the verifier to the snapshot", || {
            let hits = issuer.hits();
            (hits.snapshot >= 2).then_some(()).ok_or_else(|| format!("{hits:?}"))
        })
        .await;
        // Event 1 is applied: its task is refused…
        let refused = verifier.task_token(&f.task_token(), &expect());
        assert!(is_task_revoked(&refused, TASK), "{refused:?}");
        // …so the verifier should say so.
        let waited = tokio::time::timeout(Duration::from_secs(2), verifier.wait_for_seq(1)).await;
        assert!(waited.is_ok(), "revocation_seq() is {} with event 1 applied", verifier.revocation_seq());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_ahead_of_the_events_served_is_not_polled_in_a_busy_loop() {
    bounded(async {
        let f = fixture();
        let issuer = Issuer::start(&f, &f.bundle).await;
        issuer.change(|s| s.head = Some(5));
        // Long-polls of a second: the first answer comes soon.
        let _verifier = issuer.verifier(f.config.clone().max_feed_age(Duration::from_secs(2))).await;
        let polls = requests_per_second(&issuer, Duration::from_millis(1500), |h| h.feed).await;
        assert!(polls <= 20, "{polls} feed requests in one second");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_goes_back_is_followed_again_from_its_snapshot() {
    bounded(async {
        let f = fixture();
        let issuer = Issuer::start(&f, &f.bundle).await;
        let config = f.config.clone().max_feed_age(Duration::from_secs(2));
        let verifier = issuer.verifier(config).await;
        let (token1, token2) = (f.task_token(), token_for_task(&f, TASK2));
        issuer.push([task_ended(&f, 1, TASK), task_ended(&f, 2, TASK2)]);
        tokio::time::timeout(Duration::from_secs(5), verifier.wait_for_seq(2)).await.unwrap();

        // The issuer's store is restored from before both events: its feed
        // starts again at 0, and its next event is numbered 1 again.
        issuer.rewind();
        issuer.change(|s| s.snapshot = Some(fresh_snapshot(&f, 0, &[])));
        eventually(Duration::from_secs(8), "the verifier to follow the rewound feed", || {
            match (verifier.revocation_seq(), verifier.task_token(&token1, &expect())) {
                (0, Ok(_)) => Ok(()),
                (seq, r) => Err(format!("at {seq}: {r:?}")),
            }
        })
        .await;
        issuer.push([task_ended(&f, 1, TASK2)]);
        tokio::time::timeout(Duration::from_secs(5), verifier.wait_for_seq(1)).await.unwrap();
        let refused = verifier.task_token(&token2, &expect());
        assert!(is_task_revoked(&refused, TASK2), "the new event 1 is applied, not skipped: {refused:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_old_snapshot_cannot_undo_revocations_even_when_the_feed_seems_to_go_back() {
    bounded(async {
        let f = fixture();
        let old_snapshot = fresh_snapshot(&f, 0, &[]);
        let issuer = Issuer::start(&f, &f.bundle).await;
        let config = f.config.clone().max_feed_age(Duration::from_secs(2));
        let verifier = issuer.verifier(config).await;
        issuer.push([task_ended(&f, 1, TASK)]);
        tokio::time::timeout(Duration::from_secs(5), verifier.wait_for_seq(1)).await.unwrap();
        // Let the state be known current after the old snapshot was signed.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // An attacker replays an old head and an old (genuinely signed) snapshot.
        issuer.change(|s| {
            s.head = Some(0);
            s.snapshot = Some(old_snapshot);
        });
        eventually(Duration::from_secs(5), "the verifier to ask for the snapshot again", || {
            let hits = issuer.hits();
            (hits.snapshot >= 2).then_some(()).ok_or_else(|| format!("{hits:?}"))
        })
        .await;
        let refused = verifier.task_token(&f.task_token(), &expect());
        assert!(
            is_task_revoked(&refused, TASK) || matches!(refused, Err(VerifyError::StaleFeed { .. })),
            "the ended task stays ended: {refused:?}"
        );
        assert_eq!(verifier.revocation_seq(), 1);
    })
    .await;
}
