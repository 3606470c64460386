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
//! with the load. The flusher does not wait for more writers before it
//! flushes (a database's `commit_delay`): with the task-token path on two
//! cores a 100 or 400 µs wait bought about 5% more tokens a second at
//! saturation and cost about 20% at p99 at half that rate
//! (docs/benchmarks.md). Only a writer whose ticket is covered is woken,
//! and a writer wakes the flusher only when it sleeps: at high rates neither
//! side makes a system call per write.
//!
//! A failed flush closes the store for good: its waiters, and every later
//! write, get [`StoreError::Closed`], so nothing that might not be durable is
//! ever acknowledged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::error::{Result, StoreError};

/// Name of the flusher thread, as seen in `top -H` and debuggers.
pub(crate) const FLUSH_THREAD_NAME: &str = "lanyard-store-flush";

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
        let commit = Arc::new(Self {
            requested: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            shutdown: Mutex::new(false),
            wake: Condvar::new(),
            waiters: Mutex::new(Waiters::default()),
            closed: AtomicBool::new(false),
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
        while let Some(target) = self.next_target(flushed) {
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
    use std::time::Duration;

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
