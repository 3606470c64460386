//! The task-token mint path in process (reads, ceilings, Cedar, SVID check,
//! signing, durable audit record), next to raw ring ES256 signing in the
//! same run.
//!
//! `cargo bench -p lanyard-server --bench mint_path`
#![allow(clippy::expect_used, clippy::panic, missing_docs, reason = "a benchmark: failures stop it loudly")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lanyard_server::bench::MintRig;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

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
    group.bench_function("task token, 64 in flight (group commit)", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                let mut workers = Vec::new();
                for w in 0..IN_FLIGHT {
                    let rig = Arc::clone(&rig);
                    let share = iters / IN_FLIGHT + u64::from(w < iters % IN_FLIGHT);
                    workers.push(tokio::spawn(async move {
                        for _ in 0..share {
                            rig.mint().await.expect("mint");
                        }
                    }));
                }
                for w in workers {
                    w.await.expect("worker");
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
