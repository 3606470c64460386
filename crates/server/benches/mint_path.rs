//! The task-token mint path in process (reads, ceilings, Cedar, SVID check,
//! signing, durable audit record), next to raw ring ES256 signing in the
//! same run.
//!
//! `cargo bench -p lanyard-server --bench mint_path`
#![allow(clippy::expect_used, clippy::panic, missing_docs, reason = "a benchmark: failures stop it loudly")]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use lanyard_server::bench::MintRig;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

/// The allocator of the `lanyard` binary, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrent mints in flight: enough for group commit to share fsyncs.
const IN_FLIGHT: u64 = 64;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let rig = Arc::new(runtime.block_on(MintRig::new(dir.path())).expect("rig"));

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let raw = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("key");
    let message = [7u8; 600];

    let mut group = c.benchmark_group("mint");
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw ring ES256 sign", |b| b.iter(|| raw.sign(&rng, black_box(&message)).expect("sign")));
    group.bench_function("task token, one at a time (includes the fsync)", |b| {
        b.to_async(&runtime).iter(|| async { rig.mint().await.expect("mint") })
    });
    // Steady state: 64 workers mint without pause for the whole of this
    // function; a sample is the time the pool takes to complete `iters`
    // more. (Spawning the pool per sample measured its ramp-up and its
    // last, half-empty group commit instead.)
    let pool = Pool::start(&runtime, &rig);
    let flushes_before = rig.flushes();
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("task token, 64 in flight (group commit)", |b| b.iter_custom(|iters| pool.time(iters)));
    let minted = pool.stop(&runtime);
    let flushes = rig.flushes() - flushes_before;
    eprintln!(
        "64 in flight: {minted} tokens, {flushes} group commits, {:.1} tokens a commit",
        minted as f64 / flushes.max(1) as f64
    );
    group.finish();
}

/// Workers minting without pause until stopped, counting what they mint.
struct Pool {
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Pool {
    fn start(runtime: &tokio::runtime::Runtime, rig: &Arc<MintRig>) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..IN_FLIGHT)
            .map(|_| {
                let (rig, done, stop) = (Arc::clone(rig), Arc::clone(&done), Arc::clone(&stop));
                runtime.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        rig.mint().await.expect("mint");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Self { done, stop, workers }
    }

    /// How long the pool takes to mint `iters` more tokens (to within the
    /// 100 µs this thread sleeps between looks; a sample is ~50 ms).
    fn time(&self, iters: u64) -> Duration {
        let target = self.done.load(Ordering::Relaxed) + iters;
        let started = Instant::now();
        while self.done.load(Ordering::Relaxed) < target {
            std::thread::sleep(Duration::from_micros(100));
        }
        started.elapsed()
    }

    /// Stops the workers; answers how many tokens they minted.
    fn stop(self, runtime: &tokio::runtime::Runtime) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            runtime.block_on(worker).expect("worker");
        }
        self.done.load(Ordering::Relaxed)
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
