//! Interop: the unmodified crates.io `spiffe` client (0.19) against our agent.
//!
//! Existing SPIFFE workloads use clients like this one unchanged; if it can
//! fetch, parse and validate what the agent serves, so can they.

use std::time::SystemTime;

use spiffe::{JwtSvid, TrustDomain, WorkloadApiClient};

use crate::harness::{
    SVID_TIMEOUT, TD, TestAgent, TestServer, eventually_async, key_certified_by, own_selector, spiffe_id,
};

/// Flips one character in the middle of the token's signature.
fn tamper(token: &str) -> String {
    let sig_start = token.rfind('.').unwrap() + 1;
    let i = sig_start + (token.len() - sig_start) / 2;
    let mut bytes = token.as_bytes().to_vec();
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

/// Segment `i` (0 header, 1 claims) of a compact JWS, as a JSON object.
fn jose_segment(token: &str, i: usize) -> serde_json::Map<String, serde_json::Value> {
    use base64::Engine;
    let segment = token.split('.').nth(i).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_crate_fetches_x509_context_and_jwt_svids_and_validates_them() {
    let server = TestServer::start();
    let agent = TestAgent::start(&server, "interop");
    let id = spiffe_id("connector/interop");
    server.create_entry(&id, &agent.spiffe_id(), &[&own_selector()], &[]);

    let client = eventually_async(SVID_TIMEOUT, "the spiffe client to connect", async || {
        WorkloadApiClient::connect_to(agent.endpoint()).await
    })
    .await;

    // X.509: the context (SVIDs + bundles), as the crate parses it.
    let ctx = eventually_async(SVID_TIMEOUT, "an X.509 context", async || client.fetch_x509_context().await).await;
    assert_eq!(ctx.svids().len(), 1, "exactly our one identity");
    let svid = ctx.default_svid().unwrap();
    assert_eq!(svid.spiffe_id().to_string(), id);
    let leaf = lanyard_ca::svid::inspect_leaf(svid.leaf().as_bytes()).unwrap();
    let now = SystemTime::now();
    assert!(leaf.not_before <= now && now < leaf.not_after, "leaf is valid now: {leaf:?}");
    assert_eq!(leaf.spiffe_id.as_str(), id);
    assert!(key_certified_by(&leaf, svid.private_key().as_ref()), "the private key is the one the leaf certifies");

    let td = TrustDomain::new(TD).unwrap();
    let bundle = ctx.bundle_set().get(&td).expect("a bundle for spiffe://example.org");
    assert!(!bundle.authorities().is_empty(), "bundle is not empty");
    let served_roots: Vec<Vec<u8>> = bundle.authorities().iter().map(|c| c.as_bytes().to_vec()).collect();
    let server_roots = lanyard_ca::bundle::parse_pem(&server.bundle_pem(), "CERTIFICATE").unwrap();
    assert_eq!(served_roots, server_roots, "agent serves the server's bundle");
    let chain: Vec<Vec<u8>> = svid.cert_chain().iter().map(|c| c.as_bytes().to_vec()).collect();
    lanyard_ca::svid::verify_chain(&chain, &served_roots, now, lanyard_ca::svid::Usage::Client)
        .expect("the SVID chains to the served bundle");

    // The single-SVID call agrees with the context.
    let single = client.fetch_x509_svid().await.unwrap();
    assert_eq!(single.spiffe_id(), svid.spiffe_id());

    // JWT: fetch for an audience, validate offline against the JWT bundle
    // fetched through the same client, with the crate's own validator.
    let jwt = client.fetch_jwt_svid(["interop-tool"], None).await.unwrap();
    assert_eq!(jwt.spiffe_id().to_string(), id);
    assert_eq!(jwt.audience(), ["interop-tool".to_owned()]);
    let jwt_bundles = client.fetch_jwt_bundles().await.unwrap();
    assert!(jwt_bundles.get(&td).is_some(), "a JWT bundle for {td}");
    let offline = JwtSvid::parse_and_validate(jwt.token(), &jwt_bundles, &["interop-tool"])
        .expect("offline validation with the spiffe crate");
    assert_eq!(offline.spiffe_id().to_string(), id);
    assert!(
        JwtSvid::parse_and_validate(jwt.token(), &jwt_bundles, &["another-tool"]).is_err(),
        "offline validation refuses the wrong audience"
    );
    assert!(
        JwtSvid::parse_and_validate(&tamper(jwt.token()), &jwt_bundles, &["interop-tool"]).is_err(),
        "offline validation refuses a bad signature"
    );

    // The wire contract: header exactly alg/kid/typ, the SPIFFE claims with integer times.
    let header = jose_segment(jwt.token(), 0);
    let mut header_keys: Vec<_> = header.keys().map(String::as_str).collect();
    header_keys.sort_unstable();
    assert_eq!(header_keys, ["alg", "kid", "typ"], "{header:?}");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"].as_str(), Some(jwt.key_id()));
    let claims = jose_segment(jwt.token(), 1);
    assert_eq!(claims["sub"], id.as_str());
    assert!(claims["aud"] == "interop-tool" || claims["aud"] == serde_json::json!(["interop-tool"]), "{claims:?}");
    assert!(claims["exp"].is_u64() && claims["iat"].is_u64(), "integer exp and iat: {claims:?}");
    assert!(claims["exp"].as_u64() > claims["iat"].as_u64());
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()), "{claims:?}");

    // And through the agent (ValidateJWTSVID).
    let online =
        client.validate_jwt_token("interop-tool", jwt.token()).await.expect("ValidateJWTSVID accepts the token");
    assert_eq!(online.spiffe_id().to_string(), id);
    assert!(
        client.validate_jwt_token("another-tool", jwt.token()).await.is_err(),
        "ValidateJWTSVID refuses the wrong audience"
    );
    assert!(
        client.validate_jwt_token("interop-tool", &tamper(jwt.token())).await.is_err(),
        "ValidateJWTSVID refuses a bad signature"
    );
}
