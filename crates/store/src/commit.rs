//! Group commit: many writers, one fsync.
//!
//! A writer applies its change to sled (in memory, in the log buffers) and
//! only then takes a ticket. One dedicated thread waits until some ticket is
//! not yet flushed, reads the newest ticket as its target, flushes, and
//! publishes "flushed up to target" on a watch channel. Since every ticket up
//! to the target was taken after its write was applied, and the flush starts
//! after the target was read, the flush covers all those writes: concurrent
//! writers share one fsync, and a writer awaits the channel instead of
//! blocking.
//!
//! A failed flush closes the store for good: its waiters, and every later
//! write, get [`StoreError::Closed`], so nothing that might not be durable is
//! ever acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::watch;

use crate::error::{Result, StoreError};

/// Name of the flusher thread, as seen in `top -H` and debuggers.
/// Longest a flush waits for more writers to join it.
pub(crate) const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(400);

pub(crate) const FLUSH_THREAD_NAME: &str = "lanyard-store-flush";

/// What the flusher has made durable.
#[derive(Clone, Copy, Debug, Default)]
struct Flushed {
    /// Every ticket up to this one is durable.
    upto: u64,
    /// No ticket after `upto` will ever be flushed.
    closed: bool,
}

/// The shared state between writers and the flusher thread.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    /// The newest ticket handed out.
    requested: AtomicU64,
    /// Guards the flusher's sleep; `true` once shutdown is asked.
    shutdown: Mutex<bool>,
    wake: Condvar,
    flushed: watch::Sender<Flushed>,
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
            shutdown: Mutex::new(false),
            wake: Condvar::new(),
            flushed: watch::Sender::new(Flushed::default()),
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
        // Taking the lock orders this increment against the flusher's
        // check-then-sleep, so the wake-up cannot be lost.
        drop(self.lock_shutdown());
        self.wake.notify_one();
        ticket
    }

    /// Resolves once `ticket` is durable, or fails with
    /// [`StoreError::Closed`] if it never will be.
    pub(crate) async fn wait(&self, ticket: u64) -> Result<()> {
        let mut rx = self.flushed.subscribe();
        let state = *rx.wait_for(|s| s.upto >= ticket || s.closed).await.map_err(|_| StoreError::Closed)?;
        if state.upto >= ticket { Ok(()) } else { Err(StoreError::Closed) }
    }

    /// Whether a flush has failed (or the store shut down).
    /// Marks the store unusable: every waiter and every later call fails.
    /// For a write that got half-way (its record logged, its change not
    /// applied): nothing more may be answered until a restart recovers.
    pub(crate) fn close(&self) {
        self.flushed.send_modify(|s| s.closed = true);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.flushed.borrow().closed
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
        // The guarded bool is valid whatever a panicking holder did.
        self.shutdown.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self, mut flush: impl FnMut() -> Result<()>) {
        let mut flushed = 0;
        while let Some(first) = self.next_target(flushed) {
            // Let concurrent writers join this flush: wait while more keep
            // arriving, up to COMMIT_DELAY (the commit_delay of databases).
            let mut target = first;
            let deadline = std::time::Instant::now() + COMMIT_DELAY;
            while std::time::Instant::now() < deadline {
                std::thread::sleep(COMMIT_DELAY / 4);
                let now = self.requested.load(Ordering::SeqCst);
                if now == target {
                    break;
                }
                target = now;
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
            self.flushed.send_modify(|s| s.upto = target);
        }
        self.flushed.send_modify(|s| s.closed = true);
    }

    /// Sleeps until a ticket after `flushed` is taken; `None` at shutdown
    /// once nothing is pending.
    fn next_target(&self, flushed: u64) -> Option<u64> {
        let mut shutdown = self.lock_shutdown();
        loop {
            let requested = self.requested.load(Ordering::SeqCst);
            if requested > flushed {
                return Some(requested);
            }
            if *shutdown {
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
