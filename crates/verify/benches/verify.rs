//! Verification cost in a relying service: the raw ES256 signature check of
//! a task token next to everything `lanyard-verify` does around it (claims,
//! grant, revocation lookups against ~1,000 ended tasks), through the pure
//! [`View`] and through the shared, locked [`Verifier`], in the same run so
//! the ratios hold on any machine.
//!
//! `cargo bench -p lanyard-verify --bench verify`
#![allow(
    clippy::expect_used,
    missing_docs,
    reason = "a benchmark: failures stop it loudly; criterion macros generate undocumented items"
)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lanyard_ca::{
    JwtAuthority, JwtAuthorityKey, JwtKeyPurpose, JwtSvidTemplate, TaskTokenTemplate, TrustBundle, X509Authority,
    X509SvidTemplate, csr, task_token,
};
use lanyard_core::{TrustDomain, unix_secs};
use lanyard_verify::{Expect, FetchedBundle, RevocationState, Snapshot, Verifier, VerifierConfig, View};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

const ISSUER: &str = "https://lanyard.example";
const CONNECTOR: &str = "spiffe://example.org/connector/github";
const AUDIENCE: &str = "api.github.com";
const TOOL: &str = "github.search";
/// Tasks ended before this one, held in the revocation state.
const ENDED_TASKS: usize = 1_000;

/// Keys, a bundle, a revocation state and one token of each kind, made at
/// the real clock (the [`Verifier`] reads it).
struct Setup {
    now: SystemTime,
    bundle: TrustBundle,
    config: VerifierConfig,
    revocations: RevocationState,
    task_key: JwtAuthority,
    task_token: String,
    jwt_svid: String,
}

fn setup() -> Setup {
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let td = TrustDomain::new("example.org").expect("trust domain");
    let ca = X509Authority::generate(&td, now, day).expect("ca");
    let jwt_key = JwtAuthority::generate(now, day).expect("jwt-svid key");
    let task_key = JwtAuthority::generate(now, day).expect("task-token key");
    let authority = |k: &JwtAuthority, purpose| JwtAuthorityKey {
        key: k.verifying_key(),
        expires_at: unix_secs(k.not_after()),
        purpose,
    };
    let bundle = TrustBundle {
        trust_domain: td,
        x509_authorities: vec![ca.cert_der().to_vec()],
        jwt_authorities: vec![
            authority(&jwt_key, JwtKeyPurpose::JwtSvid),
            authority(&task_key, JwtKeyPurpose::TaskToken),
        ],
        sequence: 1,
        refresh_hint: Duration::from_secs(300),
    };
    let (_, request) = csr::new_key_and_csr().expect("csr");
    let svid = X509SvidTemplate {
        spiffe_id: CONNECTOR.parse().expect("id"),
        dns_names: vec![],
        ttl: Duration::from_secs(3600),
        public_key: csr::parse_csr(&request).expect("parse csr"),
    };
    let svid = ca.sign_svid(&svid, now).expect("svid").der;
    let template = TaskTokenTemplate {
        issuer: Some(ISSUER.into()),
        connector: CONNECTOR.parse().expect("id"),
        audience: AUDIENCE.parse().expect("audience"),
        task: "aa46899732aef3c24295cf6f76c2182f".parse().expect("task"),
        tools: vec![TOOL.parse().expect("tool"), "github.read_file".parse().expect("tool")],
        action: "read".parse().expect("action"),
        classification: "internal".parse().expect("classification"),
        user: lanyard_core::User {
            iss: "https://idp.example".parse().expect("idp"),
            sub: "alice".parse().expect("user"),
        },
        session: "s1".parse().expect("session"),
        chain: vec![],
        cnf_x5t_s256: task_token::x5t_s256(&svid),
        expires_at: now + Duration::from_secs(300),
    };
    let task_token = task_key.sign_task_token(&template, now).expect("task token").token;
    let jwt_template = JwtSvidTemplate {
        spiffe_id: CONNECTOR.parse().expect("id"),
        audiences: vec![AUDIENCE.into()],
        ttl: Duration::from_secs(300),
        issuer: Some(ISSUER.into()),
    };
    let jwt_svid = jwt_key.sign_svid(&jwt_template, now).expect("jwt-svid").0;
    let revocations = RevocationState::from_snapshot(Snapshot {
        at: unix_secs(now),
        as_of: ENDED_TASKS as u64,
        ended_tasks: (0..ENDED_TASKS).map(|i| format!("{i:032x}")).collect(),
        ..Snapshot::default()
    });
    // The run takes longer than the default 30 s feed bound, and nobody
    // refreshes this verifier's view.
    let config = VerifierConfig::default().issuer(ISSUER).max_feed_age(Duration::from_secs(600));
    Setup { now, bundle, config, revocations, task_key, task_token, jwt_svid }
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let expect = Expect::audience(AUDIENCE).tool(TOOL).action("read");
    let view =
        View { config: &s.config, bundle: &s.bundle, bundle_fetched_at: s.now, revocations: Some(&s.revocations) };
    let verifier =
        Verifier::fixed(FetchedBundle::new(s.bundle.clone(), s.now), Some(s.revocations.clone()), s.config.clone());
    // Every path below must accept the token, or it measures a refusal.
    view.task_token(&s.task_token, &expect, s.now).expect("view accepts the task token");
    verifier.task_token(&s.task_token, &expect).expect("verifier accepts the task token");
    view.jwt_svid(&s.jwt_svid, AUDIENCE, s.now).expect("view accepts the jwt-svid");

    let (signing_input, signature) = s.task_token.rsplit_once('.').expect("compact jws");
    let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url signature");
    let rng = SystemRandom::new();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, s.task_key.pkcs8_der(), &rng).expect("task key");
    let public = ring::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref().to_vec());
    public.verify(signing_input.as_bytes(), &signature).expect("raw verify");

    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    group.bench_function("raw ring ES256 verify (task token)", |b| {
        b.iter(|| public.verify(black_box(signing_input.as_bytes()), black_box(&signature)).expect("verify"))
    });
    group.bench_function("View::task_token (1,000 ended tasks)", |b| {
        b.iter(|| view.task_token(black_box(&s.task_token), &expect, s.now).expect("task token"))
    });
    group.bench_function("Verifier::task_token (locked, shared)", |b| {
        b.iter(|| verifier.task_token(black_box(&s.task_token), &expect).expect("task token"))
    });
    group.bench_function("View::jwt_svid", |b| {
        b.iter(|| view.jwt_svid(black_box(&s.jwt_svid), AUDIENCE, s.now).expect("jwt-svid"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
