use super::*;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lanyard_ca::X509Authority;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};

use crate::error::Revoked;
use crate::feed::HEARTBEAT_TYP;
use crate::revocation::{EventKind, Heartbeat, RevocationEvent, Snapshot};
use crate::testkit::{self, AUDIENCE, CONNECTOR, Fixture, ISSUER, TASK, TOOL};

/// What the connector's `github.search` call asks of a task token.
fn search() -> Expect<'static> {
    Expect::audience(AUDIENCE).tool(TOOL).action("read")
}

/// [`View::task_token`] on the fixture's view at its `now`, for [`search`].
fn check(f: &Fixture, token: &str) -> Result<TaskTokenClaims, VerifyError> {
    f.view().task_token(token, &search(), f.now)
}

/// The fixture's task claims edited by `edit`, signed by the real task key.
fn resigned(f: &Fixture, edit: impl FnOnce(&mut Value)) -> String {
    let mut claims = f.task_claims();
    edit(&mut claims);
    f.sign_task_claims(&claims)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS assembled by hand: `sign` gets the signing input.
fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// ES256 (`r || s`) over `input` with the P-256 key `pkcs8`.
fn es256(pkcs8: &[u8], input: &[u8]) -> Vec<u8> {
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng).unwrap();
    key.sign(&rng, input).unwrap().as_ref().to_vec()
}

/// The fixture's revocation state, heard from (caught up) at `t`.
fn state_at(f: &Fixture, t: SystemTime) -> RevocationState {
    let mut state = f.revocations.clone();
    assert!(state.observe(Heartbeat { at: unix_secs(t), head: state.seq() }));
    state
}

/// The fixture's bundle fetched at `fetched` with `state` as the revocations.
fn view_with<'a>(f: &'a Fixture, state: &'a RevocationState, fetched: SystemTime) -> View<'a> {
    View { config: &f.config, bundle: &f.bundle, bundle_fetched_at: fetched, revocations: Some(state) }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---- task tokens: what passes ----

#[test]
fn a_genuine_task_token_passes_and_returns_its_claims() {
    let f = Fixture::new();
    let claims = check(&f, &f.task_token()).unwrap();
    assert_eq!(claims.sub, CONNECTOR);
    assert_eq!(claims.aud, AUDIENCE);
    assert_eq!(claims.iss.as_deref(), Some(ISSUER));
    assert_eq!(claims.txn, TASK);
    assert_eq!((claims.iat, claims.exp), (f.now_secs(), f.now_secs() + 300));
    assert_eq!((claims.user.sub.as_str(), claims.sid.as_str()), ("alice", "s1"));
    assert_eq!(claims.scope, "tool:github.search tool:github.read_file");
    assert_eq!(claims.cnf.x5t_s256, x5t_s256(&f.svid));
    // Only the audience asked: no tool, action or certificate check.
    let bare = f.view().task_token(&f.task_token(), &Expect::audience(AUDIENCE), f.now).unwrap();
    assert_eq!(bare.txn, TASK);
}

#[test]
fn a_hand_assembled_es256_token_with_the_real_key_passes() {
    // The control for the forgeries below: the hand-built JWS is well formed.
    let f = Fixture::new();
    let header = json!({"alg": "ES256", "kid": f.task_key.kid(), "typ": "JWT"});
    let token = jws(&header, &f.task_claims(), |input| es256(f.task_key.pkcs8_der(), input));
    assert_eq!(check(&f, &token).unwrap().jti, "jti-1");
}

// ---- task tokens: forged headers and signatures ----

#[test]
fn alg_none_is_refused() {
    let f = Fixture::new();
    let header = json!({"alg": "none", "typ": "JWT", "kid": f.task_key.kid()});
    // RFC 7515 unsecured JWS: an empty signature segment. The token shape
    // is refused before the header is read.
    let unsecured = jws(&header, &f.task_claims(), |_| Vec::new());
    assert!(unsecured.ends_with('.'));
    assert!(matches!(check(&f, &unsecured), Err(VerifyError::Malformed(_))), "{:?}", check(&f, &unsecured));
    // With a signature segment present, the alg itself is what is refused.
    let signed = jws(&header, &f.task_claims(), |input| es256(f.task_key.pkcs8_der(), input));
    assert_eq!(check(&f, &signed), Err(VerifyError::UnsupportedAlg("none".into())));
}

#[test]
fn hs256_keyed_with_the_public_key_is_refused() {
    let f = Fixture::new();
    let public = f.task_key.verifying_key();
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": public.kid()});
    for key_bytes in [public.spki_der(), serde_json::to_vec(&f.bundle.jwt_jwks()).unwrap()] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes);
        let token = jws(&header, &f.task_claims(), |input| ring::hmac::sign(&key, input).as_ref().to_vec());
        assert_eq!(check(&f, &token), Err(VerifyError::UnsupportedAlg("HS256".into())));
    }
}

#[test]
fn other_algorithms_are_refused_by_name() {
    let f = Fixture::new();
    for alg in ["ES384", "RS256", "EdDSA", "es256"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": f.task_key.kid()});
        let token = jws(&header, &f.task_claims(), |input| es256(f.task_key.pkcs8_der(), input));
        assert_eq!(check(&f, &token), Err(VerifyError::UnsupportedAlg(alg.into())), "{alg}");
    }
}

#[test]
fn a_token_from_a_key_outside_the_bundle_has_an_unknown_kid() {
    let f = Fixture::new();
    let stranger = lanyard_jose::SigningKey::generate().unwrap();
    let token = stranger.sign_claims("JWT", &f.task_claims()).unwrap();
    assert_eq!(check(&f, &token), Err(VerifyError::UnknownKid(stranger.kid().into())));
}

#[test]
fn a_foreign_key_signing_under_the_real_kid_has_a_bad_signature() {
    let f = Fixture::new();
    let foreign = lanyard_jose::SigningKey::generate().unwrap();
    let header = json!({"alg": "ES256", "kid": f.task_key.kid(), "typ": "JWT"});
    let token = jws(&header, &f.task_claims(), |input| es256(foreign.pkcs8_der(), input));
    assert_eq!(check(&f, &token), Err(VerifyError::BadSignature));
    // The JWT-SVID key's kid does not help either: that key signs no task token.
    let header = json!({"alg": "ES256", "kid": f.jwt_svid.kid(), "typ": "JWT"});
    let token = jws(&header, &f.task_claims(), |input| es256(foreign.pkcs8_der(), input));
    assert_eq!(check(&f, &token), Err(VerifyError::NotTaskTokenKey(f.jwt_svid.kid().into())));
}

#[test]
fn a_tampered_payload_or_a_swapped_signature_is_refused() {
    let f = Fixture::new();
    let token = f.task_token();
    let [header, payload, signature]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["scope"] = json!("tool:github.search tool:github.delete_repo");
    let tampered = format!("{header}.{}.{signature}", b64(claims.to_string().as_bytes()));
    assert_eq!(check(&f, &tampered), Err(VerifyError::BadSignature));
    // A genuine signature of another genuine token does not transfer.
    let other = f.task_token();
    let other_signature = other.rsplit('.').next().unwrap();
    assert_eq!(check(&f, &format!("{header}.{payload}.{other_signature}")), Err(VerifyError::BadSignature));
}

#[test]
fn shapes_other_than_a_compact_jws_are_malformed() {
    let f = Fixture::new();
    let token = f.task_token();
    let cases = ["", "a.b", "a.b.c.d", &format!("{token}."), &format!("{token}=")];
    for case in cases {
        assert!(matches!(check(&f, case), Err(VerifyError::Malformed(_))), "{case:?}: {:?}", check(&f, case));
    }
    // Claims that are not a task token's: a JWT-SVID's claims under the task key.
    let not_task = f.task_key.sign_claims_as("JWT", &json!({"sub": CONNECTOR, "aud": AUDIENCE, "exp": 1})).unwrap();
    assert!(matches!(check(&f, &not_task), Err(VerifyError::Malformed(_))));
}

#[test]
fn another_typ_under_the_task_key_is_refused() {
    let f = Fixture::new();
    for typ in ["secevent+jwt", "JOSE", HEARTBEAT_TYP] {
        let token = f.task_key.sign_claims_as(typ, &f.task_claims()).unwrap();
        assert_eq!(check(&f, &token), Err(VerifyError::WrongTyp(Some(typ.into()))), "{typ}");
    }
}

#[test]
fn a_plain_jwt_svid_is_not_a_task_token() {
    let f = Fixture::new();
    let kid = f.jwt_svid.kid().to_owned();
    let svid = f.jwt_svid_token(&[AUDIENCE]);
    assert_eq!(check(&f, &svid), Err(VerifyError::NotTaskTokenKey(kid.clone())));
    // Not even with task-token claims: it is the key that decides.
    let claims = f.jwt_svid.sign_claims_as("JWT", &f.task_claims()).unwrap();
    assert_eq!(check(&f, &claims), Err(VerifyError::NotTaskTokenKey(kid)));
}

// ---- task tokens: time ----

#[test]
fn expiry_allows_the_leeway_and_no_more() {
    let f = Fixture::new();
    let token = f.task_token();
    // exp = now + 300; valid while t < exp + 30.
    for (after, expected) in [(329, Ok(())), (330, Err(VerifyError::Expired)), (3000, Err(VerifyError::Expired))] {
        let t = f.now + secs(after);
        let state = state_at(&f, t);
        let result = view_with(&f, &state, t).task_token(&token, &search(), t).map(|_| ());
        assert_eq!(result, expected, "{after}s after issue");
    }
    // The same through the claims, at the fixture's own now.
    let at = |exp: u64| resigned(&f, |c| c["exp"] = json!(exp));
    assert_eq!(check(&f, &at(f.now_secs() - 30)), Err(VerifyError::Expired));
    assert!(check(&f, &at(f.now_secs() - 29)).is_ok());
}

#[test]
fn nbf_or_iat_in_the_future_beyond_the_leeway_is_refused() {
    let f = Fixture::new();
    let now = f.now_secs();
    let nbf = |nbf: u64| resigned(&f, |c| c["nbf"] = json!(nbf));
    assert_eq!(check(&f, &nbf(now + 31)), Err(VerifyError::NotYetValid));
    assert!(check(&f, &nbf(now + 30)).is_ok());
    let iat = |iat: u64| resigned(&f, |c| c["iat"] = json!(iat));
    assert_eq!(check(&f, &iat(now + 31)), Err(VerifyError::IssuedInFuture));
    assert!(check(&f, &iat(now + 30)).is_ok());
    // Times are integers: a float or a string is not a task token.
    for bad in [json!(1.5e9), json!("1800000000")] {
        let token = resigned(&f, |c| c["iat"] = bad.clone());
        assert!(matches!(check(&f, &token), Err(VerifyError::Malformed(_))), "{bad}");
    }
}

#[test]
fn a_configured_leeway_is_capped_at_five_minutes() {
    let f = Fixture::new();
    let config = f.config.clone().leeway(secs(3600));
    let view = View { config: &config, ..f.view() };
    let token = resigned(&f, |c| c["exp"] = json!(f.now_secs() - 300));
    assert_eq!(view.task_token(&token, &search(), f.now), Err(VerifyError::Expired));
    let token = resigned(&f, |c| c["exp"] = json!(f.now_secs() - 299));
    assert!(view.task_token(&token, &search(), f.now).is_ok());
}

// ---- task tokens: issuer, audience, subject ----

#[test]
fn a_wrong_or_missing_issuer_is_refused() {
    let f = Fixture::new();
    let evil = resigned(&f, |c| c["iss"] = json!("https://evil.example"));
    let expected = VerifyError::WrongIssuer { expected: ISSUER.into(), found: Some("https://evil.example".into()) };
    assert_eq!(check(&f, &evil), Err(expected));
    let missing = resigned(&f, |c| drop(c.as_object_mut().unwrap().remove("iss")));
    assert_eq!(check(&f, &missing), Err(VerifyError::WrongIssuer { expected: ISSUER.into(), found: None }));
    // A trailing `/` in the configured issuer is ignored.
    let config = f.config.clone().issuer(format!("{ISSUER}/"));
    assert_eq!(config.expected_issuer(), Some(ISSUER));
    let view = View { config: &config, ..f.view() };
    assert!(view.task_token(&f.task_token(), &search(), f.now).is_ok());
    // Without a configured issuer, `iss` is not checked.
    let config = VerifierConfig::default();
    let view = View { config: &config, ..f.view() };
    assert!(view.task_token(&evil, &search(), f.now).is_ok());
}

#[test]
fn aud_as_an_array_is_the_wrong_audience() {
    let f = Fixture::new();
    for aud in [json!([AUDIENCE, "api.other.example"]), json!([AUDIENCE])] {
        let token = resigned(&f, |c| c["aud"] = aud.clone());
        assert!(matches!(check(&f, &token), Err(VerifyError::WrongAudience(_))), "{aud}: {:?}", check(&f, &token));
    }
}

#[test]
fn a_token_for_another_audience_is_refused() {
    let f = Fixture::new();
    let token = f.task_token();
    for audience in ["api.other.example", "api.github.com.", "API.GITHUB.COM", ""] {
        let result = f.view().task_token(&token, &Expect::audience(audience).tool(TOOL), f.now);
        assert!(matches!(result, Err(VerifyError::WrongAudience(_))), "{audience:?}: {result:?}");
    }
}

#[test]
fn a_subject_outside_the_trust_domain_or_not_a_spiffe_id_is_refused() {
    let f = Fixture::new();
    for sub in ["spiffe://other.org/connector/github", "spiffe://example.org.evil/connector/github", "alice", ""] {
        let token = resigned(&f, |c| c["sub"] = json!(sub));
        assert!(matches!(check(&f, &token), Err(VerifyError::BadSubject(_))), "{sub:?}: {:?}", check(&f, &token));
    }
}

// ---- task tokens: grants and binding ----

#[test]
fn a_tool_not_in_the_token_is_not_granted() {
    let f = Fixture::new();
    let token = f.task_token();
    for tool in ["github.delete_repo", "github", "search", "tool:github.search", ""] {
        let result = f.view().task_token(&token, &Expect::audience(AUDIENCE).tool(tool), f.now);
        assert_eq!(result, Err(VerifyError::ToolNotGranted(tool.into())), "{tool:?}");
    }
    // The other tool of the task is granted.
    assert!(f.view().task_token(&token, &Expect::audience(AUDIENCE).tool("github.read_file"), f.now).is_ok());
}

#[test]
fn a_tool_needs_both_its_scope_and_its_authorization_detail() {
    let f = Fixture::new();
    let only_details = resigned(&f, |c| c["scope"] = json!("tool:github.read_file"));
    let only_scope = resigned(&f, |c| {
        c["authorization_details"].as_array_mut().unwrap().retain(|d| d["identifier"] != TOOL);
    });
    let other_type = resigned(&f, |c| c["authorization_details"][0]["type"] = json!("openid_credential"));
    for token in [only_details, only_scope, other_type] {
        assert_eq!(check(&f, &token), Err(VerifyError::ToolNotGranted(TOOL.into())));
    }
}

#[test]
fn an_action_outside_the_grant_is_not_allowed() {
    let f = Fixture::new();
    let token = f.task_token();
    let with = |action| f.view().task_token(&token, &Expect::audience(AUDIENCE).tool(TOOL).action(action), f.now);
    assert_eq!(with("write"), Err(VerifyError::ActionNotAllowed("write".into())));
    assert_eq!(with("Read"), Err(VerifyError::ActionNotAllowed("Read".into())));
    assert!(with("read").is_ok());
    // Without a tool, some grant must allow the action.
    let any_tool = |action| f.view().task_token(&token, &Expect::audience(AUDIENCE).action(action), f.now);
    assert_eq!(any_tool("write"), Err(VerifyError::ActionNotAllowed("write".into())));
    assert!(any_tool("read").is_ok());
}

#[test]
fn cnf_must_match_the_client_certificate_when_one_is_given() {
    let f = Fixture::new();
    let token = f.task_token();
    let bound = f.view().task_token(&token, &search().peer_cert(&f.svid), f.now).unwrap();
    assert_eq!(bound.cnf.x5t_s256, x5t_s256(&f.svid));
    // Same SPIFFE ID, same CA, another certificate: a stolen token.
    let other = f.sign_svid(CONNECTOR);
    assert_eq!(f.view().task_token(&token, &search().peer_cert(&other), f.now), Err(VerifyError::CnfMismatch));
    assert_eq!(f.view().task_token(&token, &search().peer_cert(b""), f.now), Err(VerifyError::CnfMismatch));
}

// ---- task tokens: revocation ----

/// A state holding `snapshot`'s lists, signed at the fixture's `now` as of event 1.
fn revoked(f: &Fixture, snapshot: Snapshot) -> RevocationState {
    RevocationState::from_snapshot(Snapshot { at: f.now_secs(), as_of: 1, ..snapshot })
}

#[test]
fn anything_revoked_refuses_the_task_token() {
    let f = Fixture::new();
    // jti "jti-1": the claims of `task_claims`.
    let token = f.sign_task_claims(&f.task_claims());
    let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let cases = [
        (Snapshot { ended_tasks: list(&[TASK]), ..Snapshot::default() }, Revoked::Task(TASK.into())),
        (Snapshot { revoked_sessions: list(&["s1"]), ..Snapshot::default() }, Revoked::Session("s1".into())),
        (Snapshot { revoked_jtis: list(&["jti-1"]), ..Snapshot::default() }, Revoked::Token("jti-1".into())),
        (
            Snapshot { deleted_entries: list(&[CONNECTOR]), ..Snapshot::default() },
            Revoked::EntryDeleted(CONNECTOR.into()),
        ),
        (Snapshot { banned_agents: list(&[CONNECTOR]), ..Snapshot::default() }, Revoked::AgentBanned(CONNECTOR.into())),
        (Snapshot { blocking_risks: list(&["user:alice"]), ..Snapshot::default() }, Revoked::Risk("user:alice".into())),
        (
            Snapshot { blocking_risks: list(&["user:alice@https://idp.example"]), ..Snapshot::default() },
            Revoked::Risk("user:alice@https://idp.example".into()),
        ),
        (Snapshot { blocking_risks: list(&["session:s1"]), ..Snapshot::default() }, Revoked::Risk("session:s1".into())),
        (
            Snapshot { blocking_risks: list(&[&format!("connector:{CONNECTOR}")]), ..Snapshot::default() },
            Revoked::Risk(format!("connector:{CONNECTOR}")),
        ),
    ];
    for (snapshot, expected) in cases {
        let state = revoked(&f, snapshot);
        let result = view_with(&f, &state, f.now).task_token(&token, &search(), f.now);
        assert_eq!(result, Err(VerifyError::Revoked(expected.clone())), "{expected:?}");
    }
}

#[test]
fn revocations_of_others_leave_the_token_alone() {
    let f = Fixture::new();
    let other = |s: &str| vec![s.to_owned()];
    let state = revoked(
        &f,
        Snapshot {
            ended_tasks: other("bb46899732aef3c24295cf6f76c2182f"),
            revoked_sessions: other("s2"),
            revoked_jtis: other("jti-2"),
            deleted_entries: other("spiffe://example.org/connector/jira"),
            banned_agents: other("spiffe://example.org/agent/node-1"),
            blocking_risks: other("user:bob"),
            ..Snapshot::default()
        },
    );
    let token = f.sign_task_claims(&f.task_claims());
    assert_eq!(view_with(&f, &state, f.now).task_token(&token, &search(), f.now).unwrap().jti, "jti-1");
}

#[test]
fn revocations_applied_from_the_feed_refuse_the_task_token() {
    let f = Fixture::new();
    let event = |seq, kind, subject: &str, at| RevocationEvent {
        seq,
        at,
        kind,
        subject: subject.into(),
        tasks: vec![],
        blocking: true,
    };
    let mut state = state_at(&f, f.now);
    // An entry deleted before the token was issued: the token is from a new entry.
    assert!(state.apply(&event(1, EventKind::EntryDeleted, CONNECTOR, f.now_secs() - 1)).unwrap());
    let token = f.task_token();
    assert!(view_with(&f, &state, f.now).task_token(&token, &search(), f.now).is_ok());
    // A parent task ended, listing this one among its descendants.
    let mut parent = event(2, EventKind::TaskEnded, "bb46899732aef3c24295cf6f76c2182f", f.now_secs());
    parent.tasks = vec![TASK.into()];
    assert!(state.apply(&parent).unwrap());
    let result = view_with(&f, &state, f.now).task_token(&token, &search(), f.now);
    assert_eq!(result, Err(VerifyError::Revoked(Revoked::Task(TASK.into()))));
    // Then its session revoked: named as the cause.
    assert!(state.apply(&event(3, EventKind::SessionRevoked, "s1", f.now_secs())).unwrap());
    let result = view_with(&f, &state, f.now).task_token(&token, &search(), f.now);
    assert_eq!(result, Err(VerifyError::Revoked(Revoked::Session("s1".into()))));
}

// ---- freshness ----

#[test]
fn a_stale_bundle_refuses_everything() {
    let f = Fixture::new();
    let at_limit = f.view();
    let at_limit = View { bundle_fetched_at: f.now - DEFAULT_MAX_BUNDLE_AGE, ..at_limit };
    assert_eq!(at_limit.check_fresh(f.now), Ok(()));
    let stale = View { bundle_fetched_at: f.now - DEFAULT_MAX_BUNDLE_AGE - secs(1), ..f.view() };
    let expected = VerifyError::StaleBundle { age_secs: 3601, limit_secs: 3600 };
    assert_eq!(stale.check_fresh(f.now), Err(expected.clone()));
    assert_eq!(stale.task_token(&f.task_token(), &search(), f.now), Err(expected.clone()));
    assert_eq!(stale.jwt_svid(&f.jwt_svid_token(&[AUDIENCE]), AUDIENCE, f.now), Err(expected.clone()));
    assert_eq!(stale.x509_svid(std::slice::from_ref(&f.svid), f.now), Err(expected));
    // A configured bound.
    let config = f.config.clone().max_bundle_age(secs(60));
    let view = View { config: &config, bundle_fetched_at: f.now - secs(61), ..f.view() };
    assert_eq!(view.check_fresh(f.now), Err(VerifyError::StaleBundle { age_secs: 61, limit_secs: 60 }));
}

#[test]
fn a_feed_never_heard_from_is_stale() {
    let f = Fixture::new();
    let none = VerifyError::StaleFeed { age_secs: None, limit_secs: 30 };
    let without = View { revocations: None, ..f.view() };
    assert_eq!(without.check_fresh(f.now), Err(none.clone()));
    assert_eq!(without.task_token(&f.task_token(), &search(), f.now), Err(none.clone()));
    let silent = RevocationState::default();
    assert_eq!(view_with(&f, &silent, f.now).check_fresh(f.now), Err(none.clone()));
    // A heartbeat that finds us behind the feed does not make us current.
    let mut behind = RevocationState::default();
    assert!(!behind.observe(Heartbeat { at: f.now_secs(), head: 3 }));
    assert_eq!(view_with(&f, &behind, f.now).check_fresh(f.now), Err(none));
}

#[test]
fn a_heartbeat_older_than_the_bound_is_stale() {
    let f = Fixture::new();
    let state = f.revocations.clone();
    let view = view_with(&f, &state, f.now);
    assert_eq!(view.check_fresh(f.now + secs(30)), Ok(()));
    let stale = VerifyError::StaleFeed { age_secs: Some(31), limit_secs: 30 };
    assert_eq!(view.check_fresh(f.now + secs(31)), Err(stale.clone()));
    // Checked before anything about the token: garbage is refused as stale too.
    assert_eq!(view.task_token("garbage", &search(), f.now + secs(31)), Err(stale.clone()));
    assert_eq!(view.jwt_svid("garbage", AUDIENCE, f.now + secs(31)), Err(stale));
    let config = f.config.clone().max_feed_age(secs(5));
    let view = View { config: &config, ..view };
    assert_eq!(view.check_fresh(f.now + secs(6)), Err(VerifyError::StaleFeed { age_secs: Some(6), limit_secs: 5 }));
}

#[test]
fn danger_without_revocations_skips_the_feed_check_only() {
    let f = Fixture::new();
    let config = f.config.clone().danger_without_revocations();
    assert!(config.is_without_revocations());
    let view = View { config: &config, revocations: None, ..f.view() };
    assert_eq!(view.check_fresh(f.now + secs(600)), Ok(()));
    assert_eq!(view.task_token(&f.task_token(), &search(), f.now).unwrap().txn, TASK);
    // The bundle's age still counts.
    let old = View { bundle_fetched_at: f.now - secs(3601), ..view };
    assert!(matches!(old.check_fresh(f.now), Err(VerifyError::StaleBundle { .. })));
}

// ---- JWT-SVIDs ----

#[test]
fn a_genuine_jwt_svid_passes_for_each_of_its_audiences() {
    let f = Fixture::new();
    let token = f.jwt_svid_token(&[AUDIENCE, "api.other.example"]);
    for audience in [AUDIENCE, "api.other.example"] {
        let verified = f.view().jwt_svid(&token, audience, f.now).unwrap();
        assert_eq!(verified.spiffe_id.as_str(), CONNECTOR);
        assert_eq!(verified.claims["aud"], json!([AUDIENCE, "api.other.example"]));
        assert_eq!(verified.claims["iss"], json!(ISSUER));
    }
}

#[test]
fn a_jwt_svid_for_another_audience_is_refused() {
    let f = Fixture::new();
    let token = f.jwt_svid_token(&[AUDIENCE]);
    for audience in ["api.other.example", ""] {
        let result = f.view().jwt_svid(&token, audience, f.now);
        assert!(matches!(result, Err(VerifyError::WrongAudience(_))), "{audience:?}: {result:?}");
    }
}

#[test]
fn a_revoked_jti_or_deleted_entry_refuses_the_jwt_svid() {
    let f = Fixture::new();
    let token = f.jwt_svid_token(&[AUDIENCE]);
    let jti = f.view().jwt_svid(&token, AUDIENCE, f.now).unwrap().claims["jti"].as_str().unwrap().to_owned();
    let state = revoked(&f, Snapshot { revoked_jtis: vec![jti.clone()], ..Snapshot::default() });
    let result = view_with(&f, &state, f.now).jwt_svid(&token, AUDIENCE, f.now);
    assert_eq!(result, Err(VerifyError::Revoked(Revoked::Token(jti))));
    let state = revoked(&f, Snapshot { deleted_entries: vec![CONNECTOR.into()], ..Snapshot::default() });
    let result = view_with(&f, &state, f.now).jwt_svid(&token, AUDIENCE, f.now);
    assert_eq!(result, Err(VerifyError::Revoked(Revoked::EntryDeleted(CONNECTOR.into()))));
}

#[test]
fn jwt_svid_typ_may_be_jwt_jose_or_absent_but_not_a_feed_document() {
    let f = Fixture::new();
    let claims = json!({"iss": ISSUER, "sub": CONNECTOR, "aud": [AUDIENCE], "exp": f.now_secs() + 60,
                        "iat": f.now_secs(), "jti": "j"});
    let jose = f.jwt_svid.sign_claims_as("JOSE", &claims).unwrap();
    assert!(f.view().jwt_svid(&jose, AUDIENCE, f.now).is_ok());
    let header = json!({"alg": "ES256", "kid": f.jwt_svid.kid()});
    let untyped = jws(&header, &claims, |input| es256(f.jwt_svid.pkcs8_der(), input));
    assert!(f.view().jwt_svid(&untyped, AUDIENCE, f.now).is_ok());
    let beat = f.heartbeat(0);
    assert_eq!(f.view().jwt_svid(&beat, AUDIENCE, f.now), Err(VerifyError::WrongTyp(Some(HEARTBEAT_TYP.into()))));
}

#[test]
fn a_task_token_is_also_a_jwt_svid_for_its_audience() {
    let f = Fixture::new();
    let verified = f.view().jwt_svid(&f.task_token(), AUDIENCE, f.now).unwrap();
    assert_eq!(verified.spiffe_id.as_str(), CONNECTOR);
    assert_eq!(verified.claims["txn"], json!(TASK));
}

#[test]
fn jwt_svid_signature_and_time_are_checked() {
    let f = Fixture::new();
    let stranger = lanyard_jose::SigningKey::generate().unwrap();
    let claims = json!({"sub": CONNECTOR, "aud": [AUDIENCE], "exp": f.now_secs() + 60, "iss": ISSUER});
    let token = stranger.sign_claims("JWT", &claims).unwrap();
    assert_eq!(f.view().jwt_svid(&token, AUDIENCE, f.now), Err(VerifyError::UnknownKid(stranger.kid().into())));
    let token = f.jwt_svid_token(&[AUDIENCE]);
    let later = f.now + secs(330);
    let state = state_at(&f, later);
    assert_eq!(view_with(&f, &state, later).jwt_svid(&token, AUDIENCE, later), Err(VerifyError::Expired));
    let claims = json!({"sub": CONNECTOR, "aud": [AUDIENCE], "exp": f.now_secs() + 60, "iss": "https://evil.example"});
    let evil = f.jwt_svid.sign_claims_as("JWT", &claims).unwrap();
    let expected = VerifyError::WrongIssuer { expected: ISSUER.into(), found: Some("https://evil.example".into()) };
    assert_eq!(f.view().jwt_svid(&evil, AUDIENCE, f.now), Err(expected));
}

// ---- X.509-SVIDs ----

#[test]
fn the_fixture_svid_verifies_as_a_client() {
    let f = Fixture::new();
    let id = f.view().x509_svid(std::slice::from_ref(&f.svid), f.now).unwrap();
    assert_eq!(id.as_str(), CONNECTOR);
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let f = Fixture::new();
    let other_ca = X509Authority::generate(&f.bundle.trust_domain, f.now, secs(86_400)).unwrap();
    let stranger = testkit::sign_svid(&other_ca, CONNECTOR, f.now);
    let result = f.view().x509_svid(&[stranger], f.now);
    assert!(matches!(result, Err(VerifyError::BadChain(_))), "{result:?}");
    // Not even with the foreign CA sent along as an intermediate.
    let chain = [testkit::sign_svid(&other_ca, CONNECTOR, f.now), other_ca.cert_der().to_vec()];
    assert!(matches!(f.view().x509_svid(&chain, f.now), Err(VerifyError::BadChain(_))));
}

#[test]
fn empty_expired_and_ca_chains_are_refused() {
    let f = Fixture::new();
    assert!(matches!(f.view().x509_svid(&[], f.now), Err(VerifyError::BadChain(_))));
    assert!(matches!(f.view().x509_svid(&[f.ca.cert_der().to_vec()], f.now), Err(VerifyError::BadChain(_))));
    // The SVID lives an hour.
    let later = f.now + secs(3601);
    let state = state_at(&f, later);
    let result = view_with(&f, &state, later).x509_svid(std::slice::from_ref(&f.svid), later);
    assert!(matches!(result, Err(VerifyError::BadChain(_))), "{result:?}");
}

#[test]
fn an_svid_of_another_trust_domain_or_a_deleted_entry_is_refused() {
    let f = Fixture::new();
    let foreign_id = f.sign_svid("spiffe://other.org/connector/github");
    assert!(matches!(f.view().x509_svid(&[foreign_id], f.now), Err(VerifyError::BadSubject(_))));
    let state = revoked(&f, Snapshot { deleted_entries: vec![CONNECTOR.into()], ..Snapshot::default() });
    let result = view_with(&f, &state, f.now).x509_svid(std::slice::from_ref(&f.svid), f.now);
    assert_eq!(result, Err(VerifyError::Revoked(Revoked::EntryDeleted(CONNECTOR.into()))));
}

#[test]
fn a_task_token_presented_as_a_jwt_svid_is_still_refused_when_its_task_or_session_is_revoked() {
    let f = Fixture::new();
    for snapshot in [
        Snapshot { ended_tasks: vec![TASK.into()], ..Snapshot::default() },
        Snapshot { revoked_sessions: vec!["s1".into()], ..Snapshot::default() },
        Snapshot { blocking_risks: vec!["user:alice".into()], ..Snapshot::default() },
    ] {
        let state = revoked(&f, snapshot);
        let error = view_with(&f, &state, f.now).jwt_svid(&f.task_token(), AUDIENCE, f.now).unwrap_err();
        assert!(matches!(error, VerifyError::Revoked(_)), "{error}");
    }
}

#[test]
fn a_jwt_svid_without_iat_is_revoked_by_any_deletion_of_its_entry() {
    let f = Fixture::new();
    let claims = json!({"iss": ISSUER, "sub": CONNECTOR, "aud": [AUDIENCE], "exp": f.now_secs() + 60});
    let token = f.jwt_svid.sign_claims_as("JWT", &claims).unwrap();
    let mut state = f.revocations.clone();
    let at = f.now_secs() - 100;
    let deleted = RevocationEvent {
        seq: 1,
        at,
        kind: EventKind::EntryDeleted,
        subject: CONNECTOR.into(),
        tasks: vec![],
        blocking: false,
    };
    state.apply(&deleted).unwrap();
    let error = view_with(&f, &state, f.now).jwt_svid(&token, AUDIENCE, f.now).unwrap_err();
    assert_eq!(error, VerifyError::Revoked(Revoked::EntryDeleted(CONNECTOR.into())));
}

#[test]
fn an_svid_issued_after_its_entry_was_deleted_is_not_refused_for_the_backdate() {
    // notBefore is 10 s before issue; a deletion 5 s before issue revokes
    // only what was issued before it.
    let f = Fixture::new();
    let mut state = f.revocations.clone();
    let deleted = RevocationEvent {
        seq: 1,
        at: f.now_secs() - 5,
        kind: EventKind::EntryDeleted,
        subject: CONNECTOR.into(),
        tasks: vec![],
        blocking: false,
    };
    state.apply(&deleted).unwrap();
    assert_eq!(
        view_with(&f, &state, f.now).x509_svid(std::slice::from_ref(&f.svid), f.now).unwrap(),
        CONNECTOR.parse().unwrap()
    );
    let after = RevocationEvent { seq: 2, at: f.now_secs() + 1, ..deleted };
    state.apply(&after).unwrap();
    let error = view_with(&f, &state, f.now).x509_svid(std::slice::from_ref(&f.svid), f.now).unwrap_err();
    assert_eq!(error, VerifyError::Revoked(Revoked::EntryDeleted(CONNECTOR.into())));
}

#[test]
fn a_token_signed_by_a_revoked_key_is_refused_while_the_key_is_still_in_the_bundle() {
    let f = Fixture::new();
    let task_kid = f.task_key.kid().to_owned();
    let svid_kid = f.jwt_svid.kid().to_owned();
    for kid in [&task_kid, &svid_kid] {
        let state = revoked(&f, Snapshot { revoked_keys: vec![kid.clone()], ..Snapshot::default() });
        let view = view_with(&f, &state, f.now);
        let expected: Result<(), _> = Err(VerifyError::Revoked(Revoked::Key(kid.clone())));
        if *kid == task_kid {
            assert_eq!(view.task_token(&f.task_token(), &search(), f.now).map(|_| ()), expected);
        } else {
            assert_eq!(view.jwt_svid(&f.jwt_svid_token(&[AUDIENCE]), AUDIENCE, f.now).map(|_| ()), expected);
            // Another key's tokens are unaffected.
            view.task_token(&f.task_token(), &search(), f.now).unwrap();
        }
    }
}
