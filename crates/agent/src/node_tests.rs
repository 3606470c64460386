//! The node API as a hostile agent sees it: a real server in-process, real
//! mutual TLS, and requests the real agent would never make. Every rule the
//! server enforces on agents is shown refusing.

use std::time::{Duration, SystemTime};

use lanyard_ca::csr;
use lanyard_proto::admin::{BanAgentRequest, CreateJoinTokenRequest};
use lanyard_proto::node::node_client::NodeClient;
use lanyard_proto::node::{
    AttestRequest, MintJwtSvidRequest, MintX509SvidsRequest, RenewAgentRequest, SyncRequest, X509SvidRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::node_client::{ClientIdentity, connect};
use crate::testkit::{fixture, fixture_with};

fn mint_request(entry_id: &str) -> MintX509SvidsRequest {
    let (_, request) = csr::new_key_and_csr().unwrap();
    MintX509SvidsRequest { requests: vec![X509SvidRequest { entry_id: entry_id.into(), csr: request }] }
}

#[tokio::test]
async fn join_tokens_are_single_use_and_expire() {
    let mut f = fixture().await;
    let (_, request) = csr::new_key_and_csr().unwrap();
    let token = f.token("node1", 60).await;
    let attest = |t: &str| AttestRequest { join_token: t.into(), csr: request.clone() };
    f.anonymous().await.attest(attest(&token)).await.unwrap();
    let again = f.anonymous().await.attest(attest(&token)).await.unwrap_err();
    assert_eq!(again.code(), Code::PermissionDenied);
    assert!(again.message().contains("unknown or already used"), "{}", again.message());

    let unknown = f.anonymous().await.attest(attest("made-up")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::PermissionDenied);

    let expiring = f.token("node2", 30).await;
    *f.clock.0.lock().unwrap() += Duration::from_secs(31);
    let expired = f.anonymous().await.attest(attest(&expiring)).await.unwrap_err();
    assert_eq!(expired.code(), Code::PermissionDenied);
    assert!(expired.message().contains("expired"), "{}", expired.message());

    let garbage = f.anonymous().await.attest(AttestRequest { join_token: token, csr: b"nope".to_vec() }).await;
    assert_eq!(garbage.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn calls_without_an_agent_svid_are_refused() {
    let mut f = fixture().await;
    let mut anonymous = f.anonymous().await;
    let sync = anonymous.sync_entries(SyncRequest { since_revision: 0 }).await.unwrap_err();
    assert_eq!(sync.code(), Code::Unauthenticated);
    let mint = anonymous.mint_x509_svids(mint_request("e")).await.unwrap_err();
    assert_eq!(mint.code(), Code::Unauthenticated);

    // A workload SVID chains to the same CA but is not an agent.
    let (mut agent, _) = f.agent("node1").await;
    let entry = f.entry("spiffe://example.org/workload", "spiffe://example.org/agent/node1").await;
    let (key, request) = csr::new_key_and_csr().unwrap();
    let minted = agent
        .mint_x509_svids(MintX509SvidsRequest { requests: vec![X509SvidRequest { entry_id: entry, csr: request }] })
        .await
        .unwrap()
        .into_inner();
    let workload = ClientIdentity { chain: minted.results[0].svid_chain.clone(), key };
    let mut impostor = connect(&f.addr, &f.td, &f.roots, Some(&workload)).await.unwrap();
    let refused = impostor.sync_entries(SyncRequest { since_revision: 0 }).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("not an agent"), "{}", refused.message());
}

#[tokio::test]
async fn an_agent_gets_only_entries_it_is_parent_of() {
    let mut f = fixture().await;
    let (mut node1, _) = f.agent("node1").await;
    let mine = f.entry("spiffe://example.org/mine", "spiffe://example.org/agent/node1").await;
    let theirs = f.entry("spiffe://example.org/theirs", "spiffe://example.org/agent/node2").await;

    let reply = node1.mint_x509_svids(mint_request(&mine)).await.unwrap().into_inner();
    assert!(reply.results[0].error.is_empty());
    assert_eq!(reply.results[0].svid_chain.len(), 1);

    let reply = node1.mint_x509_svids(mint_request(&theirs)).await.unwrap().into_inner();
    assert!(reply.results[0].svid_chain.is_empty());
    assert!(reply.results[0].error.contains("not served by this agent"), "{}", reply.results[0].error);

    let jwt = node1.mint_jwt_svid(MintJwtSvidRequest { entry_id: theirs.clone(), audience: vec!["a".into()] }).await;
    assert_eq!(jwt.unwrap_err().code(), Code::PermissionDenied);
    let jwt = node1.mint_jwt_svid(MintJwtSvidRequest { entry_id: mine.clone(), audience: vec![] }).await;
    assert_eq!(jwt.unwrap_err().code(), Code::InvalidArgument);
    let many = (0..33).map(|i| format!("aud{i}")).collect();
    let jwt = node1.mint_jwt_svid(MintJwtSvidRequest { entry_id: mine, audience: many }).await;
    assert_eq!(jwt.unwrap_err().code(), Code::InvalidArgument);

    // The sync stream carries only this agent's entries.
    let mut stream = node1.sync_entries(SyncRequest { since_revision: 0 }).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.snapshot);
    let ids: Vec<_> = first.upserted.iter().map(|e| e.spiffe_id.as_str()).collect();
    assert_eq!(ids, ["spiffe://example.org/mine"]);
    assert!(first.bundle.is_some());

    let batch = MintX509SvidsRequest { requests: vec![] };
    assert_eq!(node1.mint_x509_svids(batch).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_banned_agent_gets_nothing_not_even_renewal() {
    let mut f = fixture().await;
    let (mut node1, _) = f.agent("node1").await;
    let mine = f.entry("spiffe://example.org/mine", "spiffe://example.org/agent/node1").await;
    let mut stream = node1.sync_entries(SyncRequest { since_revision: 0 }).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap();
    // A join token for the same name, made before the ban.
    let earlier = f.token("node1", 60).await;

    f.admin.ban_agent(BanAgentRequest { spiffe_id: "spiffe://example.org/agent/node1".into() }).await.unwrap();

    // The open stream ends with PermissionDenied.
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap();
    assert_eq!(ended.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(node1.mint_x509_svids(mint_request(&mine)).await.unwrap_err().code(), Code::PermissionDenied);
    let (_, request) = csr::new_key_and_csr().unwrap();
    let renew = node1.renew_agent(RenewAgentRequest { csr: request }).await.unwrap_err();
    assert_eq!(renew.code(), Code::PermissionDenied);
    // Nor can it come back under the same name: no new join token is made
    // for it, and one made before the ban is refused at attestation.
    let req = CreateJoinTokenRequest { name: "node1".into(), ttl_seconds: 60 };
    assert_eq!(f.admin.create_join_token(req).await.unwrap_err().code(), Code::PermissionDenied);
    let (_, request) = csr::new_key_and_csr().unwrap();
    let back = f.anonymous().await.attest(AttestRequest { join_token: earlier, csr: request }).await.unwrap_err();
    assert_eq!(back.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_renewed_agent_svid_supersedes_the_old_one_after_a_short_grace() {
    let mut f = fixture().await;
    let (mut node1, first) = f.agent("node1").await;
    let renew = |node: &mut NodeClient<Channel>| {
        let mut node = node.clone();
        async move {
            let (key, request) = csr::new_key_and_csr().unwrap();
            let renewed = node.renew_agent(RenewAgentRequest { csr: request }).await.unwrap().into_inner();
            ClientIdentity { chain: renewed.svid_chain, key }
        }
    };
    let sync = |identity: ClientIdentity| {
        let (addr, td, roots) = (f.addr.clone(), f.td.clone(), f.roots.clone());
        async move {
            let mut node = connect(&addr, &td, &roots, Some(&identity)).await.unwrap();
            node.sync_entries(SyncRequest { since_revision: 0 }).await.map(|_| ())
        }
    };
    let superseded = |result: Result<(), Status>| {
        let refused = result.expect_err("refused");
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert!(refused.message().contains("superseded"), "{}", refused.message());
    };

    // Right after a renewal the old SVID still works: the agent's calls
    // already out on its old connection must not fail.
    let second = renew(&mut node1).await;
    sync(first.clone()).await.unwrap();
    // After a second renewal the first is refused at once, grace or not.
    let mut with_second = connect(&f.addr, &f.td, &f.roots, Some(&second)).await.unwrap();
    let third = renew(&mut with_second).await;
    superseded(sync(first).await);
    sync(second.clone()).await.unwrap();
    // And the one before the newest only for the grace.
    *f.clock.0.lock().unwrap() += Duration::from_secs(11);
    superseded(sync(second).await);
    sync(third).await.unwrap();
}

#[tokio::test]
async fn the_agent_refuses_a_server_outside_the_trust_bundle() {
    let f = fixture().await;
    let stranger = lanyard_ca::X509Authority::generate(&f.td, SystemTime::now(), Duration::from_secs(3600)).unwrap();
    let result = connect(&f.addr, &f.td, &[stranger.cert_der().to_vec()], None).await;
    let Err(e) = result else { panic!("connected to a server the bundle does not vouch for") };
    assert!(e.to_string().contains("cannot connect"), "{e}");
}

#[tokio::test]
async fn the_node_api_answers_grpc_health_checks_without_a_client_certificate() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let f = fixture().await;
    let channel = crate::node_client::connect_channel(&f.addr, &f.td, &f.roots, None).await.unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "lanyard.node.v1.Node"] {
        let answer = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn an_agent_over_the_servers_rate_gets_resource_exhausted_and_others_do_not() {
    let mut f = fixture_with(|config| config.agent_rate = 2).await;
    let (mut node1, _) = f.agent("node1").await;
    let (mut node2, _) = f.agent("node2").await;
    let mine = f.entry("spiffe://example.org/mine", "spiffe://example.org/agent/node1").await;
    // A burst of four (two seconds' worth), then refusals.
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(node1.mint_x509_svids(mint_request(&mine)).await.err().map(|e| e.code()));
    }
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 4, "{codes:?}");
    assert!(codes[4..].iter().all(|c| *c == Some(Code::ResourceExhausted)), "{codes:?}");
    // Another agent has its own budget.
    let (_, request) = csr::new_key_and_csr().unwrap();
    node2.renew_agent(RenewAgentRequest { csr: request }).await.expect("node2 is not limited by node1");
}
