//! Signing throughput: raw ring ECDSA P-256 signatures next to what the CA
//! does with one (an X.509-SVID from a CSR, a JWT-SVID), in the same run so
//! the ratio holds on any machine.
//!
//! `cargo bench -p lanyard-ca --bench mint`
#![allow(
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "a benchmark: failures stop it loudly; criterion macros generate undocumented items"
)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lanyard_ca::{JwtAuthority, JwtSvidTemplate, X509Authority, X509SvidTemplate, csr};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

fn bench(c: &mut Criterion) {
    let now = SystemTime::now();
    let td = "example.org".parse().expect("trust domain");
    let ca = X509Authority::generate(&td, now, Duration::from_secs(86_400)).expect("ca");
    let jwt = JwtAuthority::generate(now, Duration::from_secs(86_400)).expect("jwt key");
    let (_, request) = csr::new_key_and_csr().expect("csr");
    let x509 = X509SvidTemplate {
        spiffe_id: "spiffe://example.org/connector/github".parse().expect("id"),
        dns_names: vec![],
        ttl: Duration::from_secs(3600),
        public_key: csr::parse_csr(&request).expect("parse csr"),
    };
    let jwt_template = JwtSvidTemplate {
        spiffe_id: "spiffe://example.org/connector/github".parse().expect("id"),
        audiences: vec!["api.example".into()],
        ttl: Duration::from_secs(300),
        issuer: Some("https://lanyard.example".into()),
    };
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let raw = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("key");
    let message = [7u8; 300];

    let mut group = c.benchmark_group("sign");
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw ring ES256 sign", |b| b.iter(|| raw.sign(&rng, black_box(&message)).expect("sign")));
    let signature = raw.sign(&rng, &message).expect("sign");
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        ring::signature::KeyPair::public_key(&raw).as_ref().to_vec(),
    );
    group.bench_function("raw ring ES256 verify", |b| {
        b.iter(|| public.verify(black_box(&message), signature.as_ref()).expect("verify"))
    });
    group.bench_function("X.509-SVID from CSR (parse CSR + sign)", |b| {
        b.iter(|| {
            let template =
                X509SvidTemplate { public_key: csr::parse_csr(black_box(&request)).expect("parse"), ..x509.clone() };
            ca.sign_svid(&template, now).expect("mint")
        })
    });
    group.bench_function("X.509-SVID sign (template ready)", |b| {
        b.iter(|| ca.sign_svid(black_box(&x509), now).expect("mint"))
    });
    group.bench_function("JWT-SVID sign", |b| b.iter(|| jwt.sign_svid(black_box(&jwt_template), now).expect("sign")));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
