//! Group commit: many writers, one fsync.
//!
//! A writer applies its change to sled (in memory, in the log buffers) and
//! only then takes a ticket. One dedicated thread waits until some ticket is
//! not yet flushed, reads the newest ticket as its target, flushes, and
//! wakes the writers whose tickets are up to the target. Since every ticket
//! up to the target was taken after its write was applied, and the flush
//! starts after the target was read, the flush covers all those writes:
//! concurrent writers share one fsync, and a writer awaits its wake-up
//! instead of blocking.
//!
//! Writers that arrive during a flush form the next group, so groups grow
//! with the load. The flusher waits for more writers before it flushes (a
//! database's `commit_delay`) only while at least [`SIBLINGS`] others are
//! on their way to a write (PostgreSQL's `commit_siblings`): writers
//! announce that with a [`WriteIntent`] when they start the work that ends
//! in one. Then the machine is saturated: each flush costs the CPU the
//! writers need (on the 2-vCPU VM of docs/benchmarks.md about 60 µs of
//! system time), so fewer, larger groups mint more (in process, 64 in
//! flight: 19 tokens a sync instead of 4, about 12% more tokens a second),
//! and the wait adds little to a latency that the queue sets anyway. Below
//! that load a wait would only add to every answer (an unconditional 100 or
//! 400 µs wait cost about 20% at p99 at half the saturation rate), so there
//! is none. Only a writer whose ticket is covered is woken, and a writer
//! wakes the flusher only when it sleeps: at high rates neither side makes
//! a system call per write.
//!
//! A failed flush closes the store for good: its waiters, and every later
//! write, get [`StoreError::Closed`], so nothing that might not be durable is
//! ever acknowledged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{Result, StoreError};

/// Name of the flusher thread, as seen in `top -H` and debuggers.
pub(crate) const FLUSH_THREAD_NAME: &str = "lanyard-store-flush";

/// The flusher waits [`COMMIT_DELAY`] before a flush when at least this many
/// writers hold a [`WriteIntent`] and have not yet taken their ticket.
pub(crate) const SIBLINGS: u64 = 8;

/// How long the flusher lets a group grow when [`SIBLINGS`] are on their way.
pub(crate) const COMMIT_DELAY: Duration = Duration::from_micros(200);

/// Writers waiting for their tickets, and what has been made durable.
#[derive(Debug, Default)]
struct Waiters {
    /// Every ticket up to this one is durable.
    flushed: u64,
    /// No ticket after `flushed` will ever be flushed.
    closed: bool,
    /// Each waiting writer's ticket and wake-up (`true`: durable).
    waiting: Vec<(u64, oneshot::Sender<bool>)>,
}

/// The shared state between writers and the flusher thread.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    /// The newest ticket handed out.
    requested: AtomicU64,
    /// Whether the flusher sleeps (or is about to) until a ticket is taken.
    idle: AtomicBool,
    /// Guards the flusher's sleep; `true` once shutdown is asked.
    shutdown: Mutex<bool>,
    wake: Condvar,
    waiters: Mutex<Waiters>,
    /// Set with `Waiters::closed`, read without the lock by every write.
    closed: AtomicBool,
    /// Writers holding a [`WriteIntent`]: on their way to a ticket, or
    /// waiting on one.
    intents: AtomicU64,
    /// How long a group may grow while siblings are on their way.
    delay: Duration,
    flushes: AtomicU64,
    /// How long each flush (log fsync and tree flush) took.
    pub(crate) latency: lanyard_core::metrics::Histogram,
}

/// Owns the flusher thread; dropping it flushes what is pending and joins the thread.
#[derive(Debug)]
pub(crate) struct Flusher {
    commit: Arc<GroupCommit>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the flusher thread, which calls `flush` to make every write
    /// applied before the call durable.
    pub(crate) fn start<F>(flush: F) -> Result<(Arc<Self>, Flusher)>
    where
        F: FnMut() -> Result<()> + Send + 'static,
    {
        Self::start_with_delay(flush, COMMIT_DELAY)
    }

    /// [`start`](Self::start) with another wait than [`COMMIT_DELAY`].
    fn start_with_delay<F>(flush: F, delay: Duration) -> Result<(Arc<Self>, Flusher)>
    where
        F: FnMut() -> Result<()> + Send + 'static,
    {
        let commit = Arc::new(Self {
            requested: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            shutdown: Mutex::new(false),
            wake: Condvar::new(),
            waiters: Mutex::new(Waiters::default()),
            closed: AtomicBool::new(false),
            intents: AtomicU64::new(0),
            delay,
            flushes: AtomicU64::new(0),
            latency: lanyard_core::metrics::Histogram::default(),
        });
        let runner = Arc::clone(&commit);
        let thread = std::thread::Builder::new().name(FLUSH_THREAD_NAME.to_owned()).spawn(move || runner.run(flush))?;
        let flusher = Flusher { commit: Arc::clone(&commit), thread: Some(thread) };
        Ok((commit, flusher))
    }

    /// Asks for a flush covering every write applied so far; returns the
    /// ticket to [`wait`](Self::wait) on.
    ///
    /// INVARIANT: call only after the write to be covered is applied.
    pub(crate) fn ticket(&self) -> u64 {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        // The flusher sets `idle` before it last reads `requested` (both
        // SeqCst): either it sees this ticket, or this sees it idle and
        // wakes it. Taking the lock orders the wake-up after its wait began.
        if self.idle.load(Ordering::SeqCst) {
            drop(self.lock_shutdown());
            self.wake.notify_one();
        }
        ticket
    }

    /// Resolves once `ticket` is durable, or fails with
    /// [`StoreError::Closed`] if it never will be.
    pub(crate) async fn wait(&self, ticket: u64) -> Result<()> {
        let woken = {
            let mut waiters = self.lock_waiters();
            if waiters.flushed >= ticket {
                return Ok(());
            }
            if waiters.closed {
                return Err(StoreError::Closed);
            }
            let (tx, rx) = oneshot::channel();
            waiters.waiting.push((ticket, tx));
            rx
        };
        match woken.await {
            Ok(true) => Ok(()),
            // Woken as not durable, or the flusher is gone.
            Ok(false) | Err(_) => Err(StoreError::Closed),
        }
    }

    /// Marks the store unusable: every waiter and every later call fails.
    /// For a write that got half-way (its record logged, its change not
    /// applied): nothing more may be answered until a restart recovers.
    pub(crate) fn close(&self) {
        let waiting = {
            let mut waiters = self.lock_waiters();
            waiters.closed = true;
            self.closed.store(true, Ordering::SeqCst);
            std::mem::take(&mut waiters.waiting)
        };
        for (_, tx) in waiting {
            let _ = tx.send(false);
        }
    }

    /// Whether a flush has failed (or the store shut down).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Fails with [`StoreError::Closed`] once the store is closed.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.is_closed() { Err(StoreError::Closed) } else { Ok(()) }
    }

    /// Announces a writer on its way to a write, until the intent is dropped.
    pub(crate) fn intent(self: &Arc<Self>) -> WriteIntent {
        self.intents.fetch_add(1, Ordering::Relaxed);
        WriteIntent { commit: Some(Arc::clone(self)) }
    }

    /// Whether at least [`SIBLINGS`] writers are on their way to a ticket
    /// newer than `target`: holders of an intent, less those that may be
    /// among the tickets from `flushed` up to `target`.
    ///
    /// Most of those counted are writers the last flush woke and that have
    /// not yet been answered (a mint runs from its intent to its ticket in
    /// one poll, so few are caught mid-way): they show how large the last
    /// group was and how much work is queued behind the flush. An intent
    /// dropped at the write instead counted only the mints running at that
    /// instant, at most one per worker, and the wait never began (4 tokens a
    /// sync in process, as with no wait).
    fn siblings_on_their_way(&self, flushed: u64, target: u64) -> bool {
        let intents = self.intents.load(Ordering::Relaxed);
        intents.saturating_sub(target - flushed) >= SIBLINGS
    }

    /// How many flushes the flusher thread has started.
    pub(crate) fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    fn lock_shutdown(&self) -> MutexGuard<'_, bool> {
        // The guarded flag is valid whatever a panicking holder did.
        self.shutdown.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_waiters(&self) -> MutexGuard<'_, Waiters> {
        // Each field is valid whatever a panicking holder did.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self, mut flush: impl FnMut() -> Result<()>) {
        let mut flushed = 0;
        while let Some(mut target) = self.next_target(flushed) {
            if self.siblings_on_their_way(flushed, target) {
                std::thread::sleep(self.delay);
                // Every ticket up to the newer target was taken after its
                // write was applied, so the flush still covers them all.
                target = self.requested.load(Ordering::SeqCst);
            }
            self.flushes.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let result = flush();
            self.latency.observe(started.elapsed());
            if let Err(error) = result {
                tracing::error!(%error, "store flush failed; closing the store");
                break;
            }
            flushed = target;
            self.publish(target);
        }
        self.close();
    }

    /// Records that every ticket up to `target` is durable and wakes their writers.
    fn publish(&self, target: u64) {
        let durable = {
            let mut waiters = self.lock_waiters();
            waiters.flushed = target;
            waiters.waiting.extract_if(.., |(ticket, _)| *ticket <= target).collect::<Vec<_>>()
        };
        for (_, tx) in durable {
            // A writer that stopped waiting (its request was dropped) is gone.
            let _ = tx.send(true);
        }
    }

    /// Sleeps until a ticket after `flushed` is taken; `None` at shutdown
    /// once nothing is pending.
    fn next_target(&self, flushed: u64) -> Option<u64> {
        let mut shutdown = self.lock_shutdown();
        loop {
            self.idle.store(true, Ordering::SeqCst);
            let requested = self.requested.load(Ordering::SeqCst);
            if requested > flushed {
                self.idle.store(false, Ordering::SeqCst);
                return Some(requested);
            }
            if *shutdown {
                self.idle.store(false, Ordering::SeqCst);
                return None;
            }
            shutdown = self.wake.wait(shutdown).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A write on its way: taken where a request starts the work that ends in
/// a durable write (a mint's checks and signing), dropped once it is
/// answered. While enough are held, the flusher lets groups grow (see the
/// module docs). Holding one is never required for correctness.
#[derive(Debug, Default)]
#[must_use = "an intent counts only while it is held"]
pub struct WriteIntent {
    commit: Option<Arc<GroupCommit>>,
}

impl Drop for WriteIntent {
    fn drop(&mut self) {
        if let Some(commit) = &self.commit {
            commit.intents.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        *self.commit.lock_shutdown() = true;
        self.commit.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // Blocks for at most one final flush; a panicked flusher has
            // already closed nothing more, so there is nothing to report.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow_flush(ok: bool) -> impl FnMut() -> Result<()> + Send + 'static {
        move || {
            std::thread::sleep(Duration::from_millis(5));
            if ok { Ok(()) } else { Err(StoreError::Io(std::io::Error::other("disk on fire"))) }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_flushes() {
        let (commit, _flusher) = GroupCommit::start(slow_flush(true)).unwrap();
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let commit = Arc::clone(&commit);
                tokio::spawn(async move { commit.wait(commit.ticket()).await })
            })
            .collect();
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        let flushes = commit.flush_count();
        assert!((1..50).contains(&flushes), "{flushes} flushes for 100 writes");
        assert!(!commit.is_closed());
    }

    /// A flush that waits for the test's go-ahead, and reports each start.
    fn gated_flush()
    -> (impl FnMut() -> Result<()> + Send + 'static, std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
        let (started_tx, started) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let flush = move || {
            started_tx.send(()).unwrap();
            // Bounded, so a failed test cannot leave the flusher (and its join) waiting.
            go_rx.recv_timeout(Duration::from_secs(5)).map_err(|_| StoreError::Io(std::io::Error::other("test over")))
        };
        (flush, started, go)
    }

    #[tokio::test]
    async fn a_ticket_taken_during_a_flush_waits_for_the_next_one() {
        let (flush, started, go) = gated_flush();
        let (commit, _flusher) = GroupCommit::start(flush).unwrap();
        let first = commit.ticket();
        started.recv().unwrap(); // the flush covering `first` has begun
        let second = commit.ticket();
        let (c1, c2) = (Arc::clone(&commit), Arc::clone(&commit));
        let mut first_done = tokio::spawn(async move { c1.wait(first).await });
        let mut second_done = tokio::spawn(async move { c2.wait(second).await });
        go.send(()).unwrap();
        (&mut first_done).await.unwrap().unwrap();
        // Not durable yet: the flush that just ended began before `second`.
        started.recv().unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut second_done).await.is_err());
        go.send(()).unwrap();
        second_done.await.unwrap().unwrap();
        assert_eq!(commit.flush_count(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_writer_is_left_waiting_when_flushes_are_instant() {
        // Instant flushes leave the flusher asleep between tickets as often
        // as possible: every ticket must still wake it.
        let (commit, _flusher) = GroupCommit::start(|| Ok(())).unwrap();
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let commit = Arc::clone(&commit);
                tokio::spawn(async move {
                    for _ in 0..2_000 {
                        commit.wait(commit.ticket()).await.unwrap();
                    }
                })
            })
            .collect();
        let all = async {
            for w in writers {
                w.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all).await.expect("a writer was never woken");
    }

    #[test]
    fn siblings_are_intents_not_yet_among_the_pending_tickets() {
        let (commit, _flusher) = GroupCommit::start(|| Ok(())).unwrap();
        let intents: Vec<_> = (0..SIBLINGS + 2).map(|_| commit.intent()).collect();
        // Two of the writers may be the two pending tickets: SIBLINGS remain.
        assert!(commit.siblings_on_their_way(10, 12));
        assert!(!commit.siblings_on_their_way(10, 13));
        drop(intents);
        assert!(!commit.siblings_on_their_way(10, 11), "dropped intents no longer count");
        assert_eq!(commit.intents.load(Ordering::Relaxed), 0);
        // An inert intent (a store without group commit) counts nothing.
        drop(WriteIntent::default());
        assert_eq!(commit.intents.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn while_siblings_are_on_their_way_a_group_waits_to_grow() {
        // A long wait, so that the second ticket surely comes within it.
        let (commit, _flusher) = GroupCommit::start_with_delay(|| Ok(()), Duration::from_millis(500)).unwrap();
        let intents: Vec<_> = (0..SIBLINGS + 1).map(|_| commit.intent()).collect();
        let first = commit.ticket();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = commit.ticket();
        let (c1, c2) = (Arc::clone(&commit), Arc::clone(&commit));
        let (a, b) = tokio::join!(c1.wait(first), c2.wait(second));
        a.unwrap();
        b.unwrap();
        assert_eq!(commit.flush_count(), 1, "both tickets in one group");
        drop(intents);
        // Without siblings there is no wait: a lone ticket is flushed at once.
        let started = std::time::Instant::now();
        commit.wait(commit.ticket()).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(400), "took {:?}", started.elapsed());
        assert_eq!(commit.flush_count(), 2);
    }

    #[tokio::test]
    async fn failed_flush_fails_waiters_and_closes() {
        let (commit, _flusher) = GroupCommit::start(slow_flush(false)).unwrap();
        let ticket = commit.ticket();
        assert!(matches!(commit.wait(ticket).await, Err(StoreError::Closed)));
        assert!(commit.is_closed());
        assert!(matches!(commit.check_open(), Err(StoreError::Closed)));
        // A later ticket is never acknowledged either.
        let later = commit.ticket();
        assert!(matches!(commit.wait(later).await, Err(StoreError::Closed)));
    }

    #[tokio::test]
    async fn shutdown_flushes_pending_tickets_then_closes() {
        let (commit, flusher) = GroupCommit::start(slow_flush(true)).unwrap();
        let ticket = commit.ticket();
        drop(flusher);
        commit.wait(ticket).await.unwrap();
        assert!(commit.is_closed());
    }
}
