//! Test fixtures: a CA, a JWT-SVID key and a task-token key made with
//! lanyard-ca, their trust bundle, and signers for tokens and feed documents.

use std::time::{Duration, SystemTime};

use lanyard_ca::{
    JwtAuthority, JwtAuthorityKey, JwtKeyPurpose, JwtSvidTemplate, TaskTokenTemplate, TrustBundle, X509Authority,
    X509SvidTemplate, csr,
};
use lanyard_core::{TrustDomain, unix_secs};
use serde_json::{Value, json};

use crate::feed::{EVENT_URI_PREFIX, HEARTBEAT_TYP, SET_TYP, SNAPSHOT_TYP};
use crate::revocation::RevocationState;
use crate::{FetchedBundle, Verifier, VerifierConfig, View};

pub(crate) const ISSUER: &str = "https://lanyard.example";
pub(crate) const CONNECTOR: &str = "spiffe://example.org/connector/github";
pub(crate) const AUDIENCE: &str = "api.github.com";
pub(crate) const TOOL: &str = "github.search";
pub(crate) const TASK: &str = "aa46899732aef3c24295cf6f76c2182f";

/// Keys, a bundle, a connector SVID and a fixed `now`.
pub(crate) struct Fixture {
    pub(crate) now: SystemTime,
    pub(crate) ca: X509Authority,
    pub(crate) jwt_svid: JwtAuthority,
    pub(crate) task_key: JwtAuthority,
    pub(crate) bundle: TrustBundle,
    /// The connector's X.509-SVID (DER), the one task tokens are bound to.
    pub(crate) svid: Vec<u8>,
    pub(crate) config: VerifierConfig,
    /// Current as of `now`, nothing revoked.
    pub(crate) revocations: RevocationState,
}

impl Fixture {
    /// Made at a fixed `now` (Unix 1_800_000_000), for checks that take `now`.
    pub(crate) fn new() -> Self {
        Self::at(lanyard_core::from_unix_secs(1_800_000_000))
    }

    /// Made at `now`: at the real clock for [`crate::Verifier`], which reads it.
    pub(crate) fn at(now: SystemTime) -> Self {
        let td = TrustDomain::new("example.org").unwrap();
        let day = Duration::from_secs(86_400);
        let ca = X509Authority::generate(&td, now, day).unwrap();
        let jwt_svid = JwtAuthority::generate(now, day).unwrap();
        let task_key = JwtAuthority::generate(now, day).unwrap();
        let key = |k: &JwtAuthority, purpose| JwtAuthorityKey {
            key: k.verifying_key(),
            expires_at: unix_secs(k.not_after()),
            purpose,
        };
        let bundle = TrustBundle {
            trust_domain: td,
            x509_authorities: vec![ca.cert_der().to_vec()],
            jwt_authorities: vec![key(&jwt_svid, JwtKeyPurpose::JwtSvid), key(&task_key, JwtKeyPurpose::TaskToken)],
            sequence: 7,
            refresh_hint: Duration::from_secs(300),
        };
        let svid = sign_svid(&ca, CONNECTOR, now);
        let mut revocations = RevocationState::default();
        revocations.observe(crate::revocation::Heartbeat { at: unix_secs(now), head: 0 });
        let config = VerifierConfig::default().issuer(ISSUER);
        Self { now, ca, jwt_svid, task_key, bundle, svid, config, revocations }
    }

    /// Another X.509-SVID for `spiffe_id` (a fresh key) from this fixture's CA.
    pub(crate) fn sign_svid(&self, spiffe_id: &str) -> Vec<u8> {
        sign_svid(&self.ca, spiffe_id, self.now)
    }

    /// A verifier over this fixture's bundle, revocations and configuration.
    pub(crate) fn verifier(&self) -> Verifier {
        Verifier::fixed(self.fetched(), Some(self.revocations.clone()), self.config.clone())
    }

    pub(crate) fn now_secs(&self) -> u64 {
        unix_secs(self.now)
    }

    pub(crate) fn fetched(&self) -> FetchedBundle {
        FetchedBundle::new(self.bundle.clone(), self.now)
    }

    /// A view of this fixture's bundle and revocations, fetched at `now`.
    pub(crate) fn view(&self) -> View<'_> {
        View {
            config: &self.config,
            bundle: &self.bundle,
            bundle_fetched_at: self.now,
            revocations: Some(&self.revocations),
        }
    }

    /// alice's task: github.search, read, internal, at api.github.com, bound to `svid`.
    pub(crate) fn template(&self) -> TaskTokenTemplate {
        TaskTokenTemplate {
            issuer: Some(ISSUER.into()),
            connector: CONNECTOR.parse().unwrap(),
            audience: AUDIENCE.parse().unwrap(),
            task: TASK.parse().unwrap(),
            tools: vec![TOOL.parse().unwrap(), "github.read_file".parse().unwrap()],
            action: "read".parse().unwrap(),
            classification: "internal".parse().unwrap(),
            user: lanyard_core::User { iss: "https://idp.example".parse().unwrap(), sub: "alice".parse().unwrap() },
            session: "s1".parse().unwrap(),
            chain: vec![],
            cnf_x5t_s256: lanyard_ca::task_token::x5t_s256(&self.svid),
            expires_at: self.now + Duration::from_secs(300),
        }
    }

    /// A genuine task token, as the issuer mints it.
    pub(crate) fn task_token(&self) -> String {
        self.task_key.sign_task_token(&self.template(), self.now).unwrap().token
    }

    /// The claims of [`Fixture::task_token`] as JSON, to edit and re-sign.
    pub(crate) fn task_claims(&self) -> Value {
        let claims = lanyard_ca::TaskTokenClaims::new(&self.template(), self.now, "jti-1".into());
        serde_json::to_value(claims).unwrap()
    }

    /// `claims` signed with the real task-token key.
    pub(crate) fn sign_task_claims(&self, claims: &Value) -> String {
        self.task_key.sign_claims_as("JWT", claims).unwrap()
    }

    /// A genuine JWT-SVID for the connector.
    pub(crate) fn jwt_svid_token(&self, audiences: &[&str]) -> String {
        let template = JwtSvidTemplate {
            spiffe_id: CONNECTOR.parse().unwrap(),
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            ttl: Duration::from_secs(300),
            issuer: Some(ISSUER.into()),
        };
        self.jwt_svid.sign_svid(&template, self.now).unwrap().0
    }

    /// A revocation event SET, as the issuer's feed signs it.
    pub(crate) fn set(&self, seq: u64, kind: &str, payload: Value) -> String {
        let mut events = serde_json::Map::new();
        events.insert(format!("{EVENT_URI_PREFIX}{kind}"), payload);
        let claims = json!({
            "iss": ISSUER, "iat": self.now_secs(), "jti": format!("example.org:revocation:{seq}"),
            "seq": seq, "events": events,
        });
        self.jwt_svid.sign_claims_as(SET_TYP, &claims).unwrap()
    }

    /// A heartbeat at `now` with this head.
    pub(crate) fn heartbeat(&self, head: u64) -> String {
        self.heartbeat_at(head, self.now_secs())
    }

    /// A heartbeat with this head signed as of `iat` (Unix seconds): a fake
    /// feed serving the real clock signs each one as it answers.
    pub(crate) fn heartbeat_at(&self, head: u64, iat: u64) -> String {
        let claims = json!({"iss": ISSUER, "iat": iat, "head": head});
        self.jwt_svid.sign_claims_as(HEARTBEAT_TYP, &claims).unwrap()
    }

    /// A snapshot at `now` with these claims added to `iss`, `iat`.
    pub(crate) fn snapshot(&self, claims: Value) -> String {
        let mut all = json!({"iss": ISSUER, "iat": self.now_secs()});
        all.as_object_mut().unwrap().extend(claims.as_object().unwrap().clone());
        self.jwt_svid.sign_claims_as(SNAPSHOT_TYP, &all).unwrap()
    }
}

/// An X.509-SVID for `spiffe_id`, with a fresh key, signed by `ca` at `now`.
pub(crate) fn sign_svid(ca: &X509Authority, spiffe_id: &str, now: SystemTime) -> Vec<u8> {
    let (_, request) = csr::new_key_and_csr().unwrap();
    let template = X509SvidTemplate {
        spiffe_id: spiffe_id.parse().unwrap(),
        dns_names: vec![],
        ttl: Duration::from_secs(3600),
        public_key: csr::parse_csr(&request).unwrap(),
    };
    ca.sign_svid(&template, now).unwrap().der
}
