//! The [`Store`] contract, written once and run against both backends: the
//! embedded sled store in a temporary directory, and the PostgreSQL store
//! in a fresh database of the server named by `LANYARD_TEST_PG_URL`
//! (`scripts/with-postgres.sh` starts one and sets it; `.ci/run` does).
//!
//! Without that variable the PostgreSQL half of each test says it was
//! skipped, unless `LANYARD_REQUIRE_PG` is set (CI), where it fails.

mod audit;
mod entries;
pub(crate) mod helpers;
mod revocations;
mod tasks;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{PgStore, SledStore, Store};

/// Where a test's store lives; [`open`](Self::open) may be called again
/// (after dropping the last handle) to reopen it.
pub(crate) enum Fixture {
    Sled(tempfile::TempDir),
    Postgres(String),
}

impl Fixture {
    pub(crate) fn sled() -> Self {
        Self::Sled(tempfile::tempdir().expect("a temp dir"))
    }

    /// A new, empty database on the test server; `None` when there is none.
    pub(crate) async fn postgres() -> Option<Self> {
        let Ok(admin) = std::env::var("LANYARD_TEST_PG_URL") else {
            assert!(
                std::env::var_os("LANYARD_REQUIRE_PG").is_none(),
                "LANYARD_REQUIRE_PG is set but LANYARD_TEST_PG_URL is not"
            );
            eprintln!("skipped: no LANYARD_TEST_PG_URL (run under scripts/with-postgres.sh)");
            return None;
        };
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("lanyard_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let (client, connection) =
            tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("the test server");
        tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create a test database");
        let (base, _) = admin.rsplit_once('/').expect("a URL ending in /<database>");
        Some(Self::Postgres(format!("{base}/{name}")))
    }

    /// Opens (or reopens) the store.
    pub(crate) async fn open(&self) -> Arc<dyn Store> {
        match self {
            Self::Sled(dir) => Arc::new(SledStore::open(dir.path()).expect("open the sled store")),
            Self::Postgres(url) => Arc::new(PgStore::connect(url).await.expect("connect to the test database")),
        }
    }
}

/// For each contract test `name`, `name::sled` and `name::postgres`.
macro_rules! contract {
    ($($module:ident::$name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sled() {
                super::$module::$name(&super::Fixture::sled()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(fixture) = super::Fixture::postgres().await {
                    super::$module::$name(&fixture).await;
                }
            }
        }
    )*};
}

contract!(
    entries::entry_crud_bumps_revisions_and_checks_them,
    entries::list_entries_filters_and_pages_by_id,
    entries::change_feed_is_incremental_after_a_revision,
    entries::re_parenting_moves_an_entry_between_agents_feeds,
    entries::subscribers_see_revisions_once_durable,
    entries::join_tokens_are_single_use_even_when_raced,
    entries::agents_and_keys,
    audit::audit_chain_is_gapless_under_concurrency,
    audit::audit_batches_are_consecutive_and_atomic,
    audit::context_round_trips_and_queries_filter_on_it,
    audit::a_decision_is_not_recorded_once_a_revocation_got_in,
    audit::checks_made_at_a_revocation_seq_stand_until_the_next_revocation,
    tasks::tasks_are_created_read_and_listed_by_filter,
    tasks::ending_a_task_ends_every_descendant_in_one_event,
    tasks::revoking_a_session_ends_its_tasks_and_no_others,
    revocations::risks_keep_the_highest_level_and_match_users_across_issuers,
    revocations::every_kind_shares_one_gapless_feed,
    revocations::entry_deletion_and_agent_bans_are_one_write_with_their_event,
    revocations::subscribers_hear_of_each_durable_write,
    revocations::concurrent_revocations_and_audits_stay_gapless,
);

/// Two servers on one database: while one holds the key lock, the other
/// waits for it (one replica rotates keys at a time); a sled store, which
/// one process has to itself, hands it out at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_key_lock_is_held_by_one_replica_at_a_time() {
    let sled = Fixture::sled().open().await;
    let (_first, _second) = (sled.lock_keys().await.unwrap(), sled.lock_keys().await.unwrap());
    let Some(fixture) = Fixture::postgres().await else { return };
    let (a, b) = (fixture.open().await, fixture.open().await);
    let held = a.lock_keys().await.unwrap();
    let waiting = tokio::spawn(async move { b.lock_keys().await.map(|_| ()) });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second replica got the key lock while the first held it");
    drop(held);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("the lock is released when the holder drops it")
        .unwrap()
        .unwrap();
}
