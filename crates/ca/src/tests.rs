//! Tests that exercise the CA end to end: every X509-SVID rule checked on
//! minted certificates, chain validation, JWT-SVIDs, bundles.

use std::time::{Duration, SystemTime};

use lanyard_core::{DnsName, SpiffeId, TrustDomain};
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::svid::{Usage, inspect_leaf, verify_chain};
use crate::*;

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn now() -> SystemTime {
    lanyard_core::from_unix_secs(1_800_000_000)
}

fn template(ttl: Duration) -> (Vec<u8>, X509SvidTemplate) {
    let (key, request) = csr::new_key_and_csr().unwrap();
    let t = X509SvidTemplate {
        spiffe_id: SpiffeId::parse("spiffe://example.org/connector/github").unwrap(),
        dns_names: vec![DnsName::parse("github.internal").unwrap()],
        ttl,
        public_key: csr::parse_csr(&request).unwrap(),
    };
    (key, t)
}

#[test]
fn minted_svid_follows_every_x509_svid_rule() {
    let ca = X509Authority::generate(&td(), now(), Duration::from_secs(86_400)).unwrap();
    let (_, t) = template(Duration::from_secs(3600));
    let signed = ca.sign_svid(&t, now()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&signed.der).unwrap();

    // Exactly one URI SAN, the SPIFFE ID; the DNS name as well.
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    let uris: Vec<_> = san.general_names.iter().filter(|n| matches!(n, GeneralName::URI(_))).collect();
    assert_eq!(uris, [&GeneralName::URI("spiffe://example.org/connector/github")]);
    assert!(san.general_names.contains(&GeneralName::DNSName("github.internal")));

    // cA=false, present.
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca);

    // keyUsage: critical, digitalSignature only.
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert_eq!(ku.value.flags, 1, "only digitalSignature");

    // EKU serverAuth + clientAuth.
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);

    // Random positive serial of 16 bytes.
    assert_eq!(cert.raw_serial().len(), 16);
    assert!(cert.raw_serial()[0] & 0x80 == 0);
    let other = ca.sign_svid(&t, now()).unwrap();
    assert_ne!(signed.serial, other.serial);

    // notBefore backdated by at most 10 s; notAfter = now + ttl.
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    let now_s = lanyard_core::unix_secs(now()) as i64;
    assert!(now_s - nb <= 10 && now_s - nb >= 0);
    assert_eq!(na, now_s + 3600);

    // Issued by the CA, with an authority key identifier.
    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    assert_eq!(cert.issuer(), ca_cert.subject());
    assert!(
        cert.extensions().iter().any(|e| matches!(e.parsed_extension(), ParsedExtension::AuthorityKeyIdentifier(_)))
    );

    // The key certified is the CSR's key.
    assert_eq!(cert.public_key().raw, t.public_key.spki_der());

    // Our own inspector agrees.
    let info = inspect_leaf(&signed.der).unwrap();
    assert_eq!(info.spiffe_id, t.spiffe_id);
    assert_eq!(info.serial, signed.serial);
}

#[test]
fn ca_certificate_is_a_ca_with_the_trust_domain_id() {
    let ca = X509Authority::generate(&td(), now(), Duration::from_secs(86_400)).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    assert!(cert.basic_constraints().unwrap().unwrap().value.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names, vec![GeneralName::URI("spiffe://example.org")]);
    assert!(inspect_leaf(ca.cert_der()).is_err(), "a CA is not a leaf SVID");
}

#[test]
fn svid_never_outlives_its_ca() {
    let ca = X509Authority::generate(&td(), now(), Duration::from_secs(600)).unwrap();
    let (_, t) = template(Duration::from_secs(3600));
    let signed = ca.sign_svid(&t, now()).unwrap();
    assert_eq!(signed.not_after, ca.not_after());
}

#[test]
fn chain_verifies_against_its_ca_only_while_valid() {
    let ca = X509Authority::generate(&td(), now(), Duration::from_secs(86_400)).unwrap();
    let other = X509Authority::generate(&td(), now(), Duration::from_secs(86_400)).unwrap();
    let (_, t) = template(Duration::from_secs(3600));
    let signed = ca.sign_svid(&t, now()).unwrap();
    let chain = vec![signed.der.clone()];
    let roots = vec![ca.cert_der().to_vec()];
    let info = verify_chain(&chain, &roots, now(), Usage::Client).unwrap();
    assert_eq!(info.spiffe_id, t.spiffe_id);
    assert!(verify_chain(&chain, &roots, now(), Usage::Server).is_ok());
    // Another CA of the same trust domain does not vouch for it.
    assert!(matches!(
        verify_chain(&chain, &[other.cert_der().to_vec()], now(), Usage::Client),
        Err(CaError::ChainInvalid(_))
    ));
    // Expired.
    let later = now() + Duration::from_secs(3601);
    assert!(matches!(verify_chain(&chain, &roots, later, Usage::Client), Err(CaError::ChainInvalid(_))));
    // Not yet valid.
    let earlier = now() - Duration::from_secs(60);
    assert!(matches!(verify_chain(&chain, &roots, earlier, Usage::Client), Err(CaError::ChainInvalid(_))));
    assert!(verify_chain(&[], &roots, now(), Usage::Client).is_err());
}

#[test]
fn authority_round_trips_through_storage_and_refuses_mismatched_key() {
    let ca = X509Authority::generate(&td(), now(), Duration::from_secs(86_400)).unwrap();
    let again = X509Authority::from_parts(ca.cert_der().to_vec(), &ca.pkcs8_der()).unwrap();
    assert_eq!(again.not_after(), ca.not_after());
    let (_, t) = template(Duration::from_secs(60));
    let signed = again.sign_svid(&t, now()).unwrap();
    assert!(verify_chain(&[signed.der], &[ca.cert_der().to_vec()], now(), Usage::Client).is_ok());

    let other = X509Authority::generate(&td(), now(), Duration::from_secs(86_400)).unwrap();
    assert!(matches!(X509Authority::from_parts(ca.cert_der().to_vec(), &other.pkcs8_der()), Err(CaError::BadKey(_))));
}

#[test]
fn jwt_svid_signs_and_validates() {
    let auth = JwtAuthority::generate(now(), Duration::from_secs(86_400)).unwrap();
    let t = JwtSvidTemplate {
        spiffe_id: SpiffeId::parse("spiffe://example.org/connector/github").unwrap(),
        audiences: vec!["api.example".into(), "other".into()],
        ttl: Duration::from_secs(300),
        issuer: Some("https://lanyard.example".into()),
    };
    let (token, exp) = auth.sign_svid(&t, now()).unwrap();
    assert_eq!(exp, now() + Duration::from_secs(300));
    let header = lanyard_jose::decode_header(&token).unwrap();
    assert_eq!(header.alg, "ES256");
    assert_eq!(header.kid, auth.kid());
    assert_eq!(header.typ.as_deref(), Some("JWT"));

    let keys = [auth.verifying_key()];
    let (sub, claims) = jwt::validate_jwt_svid(&token, "api.example", &td(), &keys, now()).unwrap();
    assert_eq!(sub, t.spiffe_id);
    assert_eq!(claims["aud"], serde_json::json!(["api.example", "other"]));
    assert!(claims["exp"].is_u64() && claims["iat"].is_u64() && claims["jti"].is_string());

    // Wrong audience, expired, unknown key, other trust domain.
    assert!(jwt::validate_jwt_svid(&token, "nope", &td(), &keys, now()).is_err());
    let late = now() + Duration::from_secs(300 + 31);
    assert!(jwt::validate_jwt_svid(&token, "api.example", &td(), &keys, late).is_err());
    let stranger = JwtAuthority::generate(now(), Duration::from_secs(60)).unwrap();
    assert!(jwt::validate_jwt_svid(&token, "api.example", &td(), &[stranger.verifying_key()], now()).is_err());
    let other_td = TrustDomain::new("other.org").unwrap();
    assert!(jwt::validate_jwt_svid(&token, "api.example", &other_td, &keys, now()).is_err());
}

#[test]
fn jwt_audience_limits() {
    let auth = JwtAuthority::generate(now(), Duration::from_secs(60)).unwrap();
    let mut t = JwtSvidTemplate {
        spiffe_id: SpiffeId::parse("spiffe://example.org/a").unwrap(),
        audiences: vec![],
        ttl: Duration::from_secs(300),
        issuer: None,
    };
    assert!(matches!(auth.sign_svid(&t, now()), Err(CaError::BadAudience(_))));
    t.audiences = (0..33).map(|i| format!("a{i}")).collect();
    assert!(matches!(auth.sign_svid(&t, now()), Err(CaError::BadAudience(_))));
    t.audiences = vec![String::new()];
    assert!(matches!(auth.sign_svid(&t, now()), Err(CaError::BadAudience(_))));
    // Capped by the key's end.
    t.audiences = vec!["a".into()];
    let (_, exp) = auth.sign_svid(&t, now()).unwrap();
    assert_eq!(exp, now() + Duration::from_secs(60));
}

#[test]
fn bundle_formats() {
    let ca = X509Authority::generate(&td(), now(), Duration::from_secs(86_400)).unwrap();
    let jwt = JwtAuthority::generate(now(), Duration::from_secs(86_400)).unwrap();
    let bundle = TrustBundle {
        trust_domain: td(),
        x509_authorities: vec![ca.cert_der().to_vec()],
        jwt_authorities: vec![JwtAuthorityKey {
            key: jwt.verifying_key(),
            expires_at: 1,
            purpose: JwtKeyPurpose::JwtSvid,
        }],
        sequence: 7,
        refresh_hint: Duration::from_secs(300),
    };
    let pem = bundle.x509_pem();
    assert_eq!(bundle::parse_pem(&pem, "CERTIFICATE").unwrap(), bundle.x509_authorities);
    assert_eq!(bundle.x509_der_concat(), ca.cert_der());

    let doc: serde_json::Value = serde_json::from_str(&bundle.spiffe_json().unwrap()).unwrap();
    assert_eq!(doc["spiffe_sequence"], 7);
    assert_eq!(doc["spiffe_refresh_hint"], 300);
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["use"], "x509-svid");
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["x5c"].as_array().unwrap().len(), 1);
    assert_eq!(keys[1]["use"], "jwt-svid");
    assert_eq!(keys[1]["kid"], jwt.kid());

    let jwks = serde_json::to_value(bundle.jwt_jwks()).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], jwt.kid());
    assert!(jwks["keys"][0].get("use").is_none());
}

fn task_template(expires_in: u64) -> TaskTokenTemplate {
    TaskTokenTemplate {
        issuer: Some("https://lanyard.example".into()),
        connector: SpiffeId::parse("spiffe://example.org/connector/github").unwrap(),
        audience: "api.github.com".parse().unwrap(),
        task: lanyard_core::TaskId::from_bytes([7; 16]),
        tools: vec!["github.search".parse().unwrap(), "github.create_issue".parse().unwrap()],
        action: lanyard_core::Action::Write,
        classification: lanyard_core::Classification::Internal,
        user: lanyard_core::User { iss: "https://idp.example".parse().unwrap(), sub: "alice".parse().unwrap() },
        session: "s-1".parse().unwrap(),
        chain: vec![SpiffeId::parse("spiffe://example.org/orchestrator").unwrap()],
        cnf_x5t_s256: task_token::x5t_s256(b"certificate"),
        expires_at: now() + Duration::from_secs(expires_in),
    }
}

#[test]
fn task_token_carries_every_claim_and_passes_as_a_jwt_svid() {
    let key = JwtAuthority::generate(now(), Duration::from_secs(86_400)).unwrap();
    let signed = key.sign_task_token(&task_template(300), now()).unwrap();
    let header = lanyard_jose::decode_header(&signed.token).unwrap();
    assert_eq!((header.alg.as_str(), header.kid.as_str(), header.typ.as_deref()), ("ES256", key.kid(), Some("JWT")));

    // Any JWT-SVID validator accepts it as the connector's identity for the audience.
    let (sub, claims) =
        jwt::validate_jwt_svid(&signed.token, "api.github.com", &td(), &[key.verifying_key()], now()).unwrap();
    assert_eq!(sub.as_str(), "spiffe://example.org/connector/github");
    assert_eq!(claims["aud"], "api.github.com", "a single audience, as a string");
    assert_eq!(claims["txn"], "07070707070707070707070707070707");
    assert_eq!(claims["scope"], "tool:github.search tool:github.create_issue");
    assert_eq!(claims["user"], serde_json::json!({"iss": "https://idp.example", "sub": "alice"}));
    assert_eq!(claims["sid"], "s-1");
    assert_eq!(claims["chain"], serde_json::json!(["spiffe://example.org/orchestrator"]));
    assert_eq!(claims["cnf"]["x5t#S256"], task_token::x5t_s256(b"certificate"));
    assert_eq!(claims["jti"], signed.jti.as_str());
    assert_eq!(claims["exp"], lanyard_core::unix_secs(now()) + 300);
    assert_eq!(
        claims["authorization_details"][1],
        serde_json::json!({
            "type": "lanyard_tool",
            "identifier": "github.create_issue",
            "actions": ["write"],
            "locations": ["api.github.com"],
            "datatypes": ["internal"],
        })
    );
    let parsed: TaskTokenClaims = serde_json::from_value(serde_json::Value::Object(claims)).unwrap();
    assert_eq!(parsed.authorization_details.len(), 2);
}

#[test]
fn task_token_never_outlives_its_key_and_refuses_empty_or_past() {
    let key = JwtAuthority::generate(now(), Duration::from_secs(60)).unwrap();
    let signed = key.sign_task_token(&task_template(300), now()).unwrap();
    assert_eq!(signed.expires_at, now() + Duration::from_secs(60));
    let root = TaskTokenTemplate { chain: vec![], ..task_template(300) };
    let token = key.sign_task_token(&root, now()).unwrap().token;
    let (_, claims) = jwt::validate_jwt_svid(&token, "api.github.com", &td(), &[key.verifying_key()], now()).unwrap();
    assert!(claims.get("chain").is_none(), "no chain on a root task's token");
    assert!(key.sign_task_token(&TaskTokenTemplate { tools: vec![], ..task_template(300) }, now()).is_err());
    assert!(key.sign_task_token(&task_template(0), now()).is_err());
    assert_eq!(task_token::jti_hash("abc").len(), 64);
}

/// An operator's root CA (P-256, self-signed, valid a day), as PEM.
fn upstream_pem(ca: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Corp Root CA");
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    }
    params.not_before = (now() - Duration::from_secs(60)).into();
    params.not_after = (now() + Duration::from_secs(86_400)).into();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn an_intermediate_under_an_upstream_root_signs_svids_that_chain_to_the_root() {
    let (cert_pem, key_pem) = upstream_pem(true);
    let upstream = UpstreamCa::from_pem(&cert_pem, &key_pem).unwrap();
    // Asked for a week, the intermediate ends with its root (a day).
    let ca = X509Authority::generate_under(&td(), now(), Duration::from_secs(7 * 86_400), &upstream).unwrap();
    assert!(ca.is_intermediate());
    assert!(ca.not_after() <= now() + Duration::from_secs(86_400));
    let (_, t) = template(Duration::from_secs(3600));
    let signed = ca.sign_svid(&t, now()).unwrap();
    let chain = ca.chain(signed.der.clone());
    assert_eq!(chain, [signed.der.clone(), ca.cert_der().to_vec()]);
    // The upstream root alone anchors it; the leaf alone does not chain.
    let root = vec![upstream.cert_der().to_vec()];
    let info = verify_chain(&chain, &root, now(), Usage::Client).unwrap();
    assert_eq!(info.spiffe_id, t.spiffe_id);
    assert!(verify_chain(&chain[..1], &root, now(), Usage::Client).is_err());
    // The intermediate still carries the trust domain, and survives storage.
    assert_eq!(crate::svid::ca_trust_domain(ca.cert_der()), Some(td()));
    let again = X509Authority::from_parts(ca.cert_der().to_vec(), &ca.pkcs8_der()).unwrap();
    assert!(again.is_intermediate());
    // A self-signed root presents the leaf alone.
    let root_ca = X509Authority::generate(&td(), now(), Duration::from_secs(3600)).unwrap();
    assert!(!root_ca.is_intermediate());
    assert_eq!(root_ca.chain(vec![1]).len(), 1);
}

#[test]
fn an_upstream_that_is_not_a_ca_or_whose_key_does_not_match_is_refused() {
    let (cert_pem, key_pem) = upstream_pem(false);
    let e = UpstreamCa::from_pem(&cert_pem, &key_pem).unwrap_err();
    assert!(e.to_string().contains("not a CA"), "{e}");
    let (cert_pem, _) = upstream_pem(true);
    let (_, other_key) = upstream_pem(true);
    let e = UpstreamCa::from_pem(&cert_pem, &other_key).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    let e = UpstreamCa::from_pem("", &other_key).unwrap_err();
    assert!(e.to_string().contains("one certificate"), "{e}");
}
