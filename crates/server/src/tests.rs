//! The server in-process, driven over its real admin socket: every refusal
//! of the admin API answers with the right code and a message.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use lanyard_proto::admin::admin_client::AdminClient;
use lanyard_proto::admin::{
    BanAgentRequest, CreateEntryRequest, CreateJoinTokenRequest, GetBundleRequest, GetEntryRequest, ListEntriesRequest,
    UpdateEntryRequest,
};
use lanyard_proto::common::Entry;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::{Server, ServerConfig};

struct Running {
    dir: tempfile::TempDir,
    admin: AdminClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), crate::StartError>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(
        "example.org".parse().unwrap(),
        dir.path().join("data"),
        dir.path().join("admin.sock"),
        "127.0.0.1:0".parse().unwrap(),
    );
    let server = Server::bind(config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let admin = AdminClient::new(uds(dir.path().join("admin.sock")).await);
    Running { dir, admin, stop: Some(stop), task }
}

async fn uds(path: std::path::PathBuf) -> Channel {
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap()
}

fn entry(spiffe_id: &str, selector: &str) -> Entry {
    Entry {
        spiffe_id: spiffe_id.into(),
        parent_id: "spiffe://example.org/agent/node1".into(),
        selectors: vec![selector.into()],
        ..Entry::default()
    }
}

fn code_and_message<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let s = r.unwrap_err();
    (s.code(), s.message().to_owned())
}

#[tokio::test]
async fn admin_socket_is_private() {
    let server = start().await;
    let mode = std::fs::metadata(server.dir.path().join("admin.sock")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // No staging directory is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(server.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".lanyard-admin"))
        .collect();
    assert!(leftovers.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn create_entry_refuses_bad_input_with_invalid_argument() {
    let mut server = start().await;
    let cases = [
        (entry("not-a-spiffe-id", "unix:uid:1000"), "spiffe_id"),
        (entry("spiffe://example.org/agent/evil", "unix:uid:1000"), "reserved"),
        (entry("spiffe://example.org/lanyard/server", "unix:uid:1000"), "reserved"),
        (entry("spiffe://other.org/x", "unix:uid:1000"), "not in trust domain"),
        (entry("spiffe://example.org/x", "unix:uid:abc"), "selector"),
        (entry("spiffe://example.org/x", "k8s:ns:default"), "selector"),
        (Entry { selectors: vec![], ..entry("spiffe://example.org/x", "unix:uid:1") }, "at least one selector"),
        (Entry { x509_ttl_seconds: 5, ..entry("spiffe://example.org/x", "unix:uid:1") }, "x509_ttl"),
        (Entry { dns_names: vec!["bad_name".into()], ..entry("spiffe://example.org/x", "unix:uid:1") }, "dns_name"),
        (Entry { parent_id: "".into(), ..entry("spiffe://example.org/x", "unix:uid:1") }, "parent_id"),
    ];
    for (e, want) in cases {
        let (code, message) = code_and_message(server.admin.create_entry(CreateEntryRequest { entry: Some(e) }).await);
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(message.contains(want), "{message:?} should mention {want:?}");
    }
    let (code, _) = code_and_message(server.admin.create_entry(CreateEntryRequest { entry: None }).await);
    assert_eq!(code, Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn entries_crud_duplicates_conflicts_and_pages() {
    let mut server = start().await;
    let created = server
        .admin
        .create_entry(CreateEntryRequest { entry: Some(entry("spiffe://example.org/a", "unix:uid:1")) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.x509_ttl_seconds, 3600, "server default");
    assert_eq!(created.jwt_ttl_seconds, 300, "server default");
    assert!(created.revision > 0);

    let (code, message) = code_and_message(
        server
            .admin
            .create_entry(CreateEntryRequest { entry: Some(entry("spiffe://example.org/a", "unix:uid:1")) })
            .await,
    );
    assert_eq!(code, Code::AlreadyExists);
    assert!(message.contains(&created.id));

    let mut changed = created.clone();
    changed.selectors = vec!["unix:uid:2".into()];
    let updated = server
        .admin
        .update_entry(UpdateEntryRequest { entry: Some(changed.clone()), expected_revision: created.revision })
        .await
        .unwrap()
        .into_inner();
    assert!(updated.revision > created.revision);
    // A second writer with the old revision is refused.
    let (code, _) = code_and_message(
        server
            .admin
            .update_entry(UpdateEntryRequest { entry: Some(changed), expected_revision: created.revision })
            .await,
    );
    assert_eq!(code, Code::Aborted);

    let (code, _) = code_and_message(server.admin.get_entry(GetEntryRequest { id: "nope".into() }).await);
    assert_eq!(code, Code::NotFound);
    let (code, _) = code_and_message(server.admin.get_entry(GetEntryRequest { id: "../x".into() }).await);
    assert_eq!(code, Code::InvalidArgument);

    for i in 0..4 {
        let e = entry(&format!("spiffe://example.org/p{i}"), "unix:uid:7");
        server.admin.create_entry(CreateEntryRequest { entry: Some(e) }).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = server
            .admin
            .list_entries(ListEntriesRequest { page_size: 2, page_token: token, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(page.entries.into_iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    let filtered = server
        .admin
        .list_entries(ListEntriesRequest { spiffe_id: "spiffe://example.org/p2".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.entries.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn join_tokens_and_bans_refuse_bad_input() {
    let mut server = start().await;
    for (name, ttl) in [("a/b", 60), ("..", 60), ("", 60), ("node", 0), ("node", 8 * 86_400)] {
        let (code, _) = code_and_message(
            server.admin.create_join_token(CreateJoinTokenRequest { name: name.into(), ttl_seconds: ttl }).await,
        );
        assert_eq!(code, Code::InvalidArgument, "{name:?} {ttl}");
    }
    let token = server
        .admin
        .create_join_token(CreateJoinTokenRequest { name: "node1".into(), ttl_seconds: 60 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(token.spiffe_id, "spiffe://example.org/agent/node1");
    assert!(token.token.len() >= 43, "256 bits of secret");
    // The token itself is never stored, only its hash.
    let dir = server.dir.path().join("data");
    assert!(!contains_bytes(&dir, token.token.as_bytes()), "join token found in the store");

    let (code, _) = code_and_message(
        server.admin.ban_agent(BanAgentRequest { spiffe_id: "spiffe://example.org/agent/ghost".into() }).await,
    );
    assert_eq!(code, Code::NotFound);
    let bundle = server.admin.get_bundle(GetBundleRequest {}).await.unwrap().into_inner();
    assert_eq!(bundle.trust_domain, "example.org");
    assert_eq!(bundle.x509_authorities.len(), 1);
    let purposes: Vec<_> = bundle.jwt_authorities.iter().map(|k| k.purpose.as_str()).collect();
    assert_eq!(purposes, ["jwt-svid", "task-token"]);
    server.stop().await;
}

fn contains_bytes(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).any(|e| {
        let path = e.path();
        if path.is_dir() {
            contains_bytes(&path, needle)
        } else {
            std::fs::read(&path).map(|b| b.windows(needle.len()).any(|w| w == needle)).unwrap_or(false)
        }
    })
}

#[tokio::test]
async fn keys_survive_a_restart_and_a_second_server_cannot_share_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = |sock: &str| {
        ServerConfig::new(
            "example.org".parse().unwrap(),
            dir.path().join("data"),
            dir.path().join(sock),
            "127.0.0.1:0".parse().unwrap(),
        )
    };
    let first = Server::bind(config("a.sock")).await.unwrap();
    let pem = first.bundle_pem();
    let second = Server::bind(config("b.sock")).await;
    assert!(matches!(second, Err(crate::StartError::Store(_))), "store must be locked");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(first.serve(async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let again = Server::bind(config("a.sock")).await.unwrap();
    assert_eq!(again.bundle_pem(), pem, "the CA is loaded, not regenerated");
    drop(again);
}

/// One HTTP/1.1 GET over a plain socket; the status line and body.
async fn http_get(addr: std::net::SocketAddr, path: &str, extra: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: lanyard\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn bundle_endpoint_serves_spiffe_bundle_jwks_and_discovery() {
    let endpoint = BundleEndpoint::start(|c| {
        c.public_url = Some("https://lanyard.example".into());
    })
    .await;
    let addr = endpoint.addr;

    let (head, body) = http_get(addr, "/bundle", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let uses: Vec<_> = doc["keys"].as_array().unwrap().iter().map(|k| k["use"].as_str().unwrap()).collect();
    assert_eq!(uses, ["x509-svid", "jwt-svid", "jwt-svid"], "the CA, the JWT-SVID key, the task-token key");
    assert!(doc["spiffe_sequence"].is_u64());
    let etag = head.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap().to_owned();
    let (head, _) = http_get(addr, "/bundle", &format!("If-None-Match: {etag}\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");

    let (_, body) = http_get(addr, "/keys", "").await;
    let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["use"].as_str(), key["alg"].as_str(), key["kty"].as_str()),
        (Some("sig"), Some("ES256"), Some("EC"))
    );
    assert!(key["kid"].is_string());

    let (_, body) = http_get(addr, "/.well-known/openid-configuration", "").await;
    let discovery: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(discovery["issuer"], "https://lanyard.example");
    assert_eq!(discovery["jwks_uri"], "https://lanyard.example/keys");

    assert!(http_get(addr, "/healthz", "").await.0.starts_with("HTTP/1.1 200"));
    assert!(http_get(addr, "/readyz", "").await.0.starts_with("HTTP/1.1 200"));
    assert!(http_get(addr, "/nope", "").await.0.starts_with("HTTP/1.1 404"));
    endpoint.stop().await;
}

/// A message whose field 1 is a varint: sent where a string is expected it
/// does not decode.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(uint64, tag = "1")]
    field: u64,
}

#[tokio::test]
async fn undecodable_and_oversized_requests_are_invalid_argument() {
    let server = start().await;
    let channel = uds(server.dir.path().join("admin.sock")).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/lanyard.admin.v1.Admin/GetEntry");
    let garbage: Result<tonic::Response<lanyard_proto::common::Entry>, _> = grpc
        .unary(
            tonic::Request::new(WrongWireType { field: 7 }),
            path.clone(),
            tonic_prost::ProstCodec::<WrongWireType, lanyard_proto::common::Entry>::default(),
        )
        .await;
    let status = garbage.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let huge = GetEntryRequest { id: "x".repeat(2 * 1024 * 1024) };
    let mut admin = server.admin.clone();
    let status = admin.get_entry(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    server.stop().await;
}

/// The payload of a compact JWS, decoded (signature not checked here).
fn jws_claims(jws: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn revocation_feed_serves_signed_events_long_polls_and_snapshots() {
    let endpoint = BundleEndpoint::start(|_| {}).await;
    let (addr, dir) = (endpoint.addr, endpoint.dir.path().to_owned());
    let mut admin = AdminClient::new(uds(dir.join("admin.sock")).await);
    let bundle = admin.get_bundle(GetBundleRequest {}).await.unwrap().into_inner();
    let jwt_key = bundle.jwt_authorities.iter().find(|k| k.purpose == "jwt-svid").unwrap();
    let key = lanyard_jose::VerifyingKey::from_spki_der(&jwt_key.public_key).unwrap().with_kid(jwt_key.kid.clone());

    // Empty feed: no events, a signed heartbeat with head 0.
    let (head, body) = http_get(addr, "/v1/revocations?after=0", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["events"], serde_json::json!([]));
    let beat = lanyard_jose::verify(page["heartbeat"].as_str().unwrap(), Some(&["lanyard-feed+jwt"]), |kid| {
        (kid == key.kid()).then_some(&key)
    })
    .unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&beat.claims).unwrap()["head"], 0);

    // A long-poll returns as soon as an event exists.
    let poll = tokio::spawn(http_get(addr, "/v1/revocations?after=0&wait=30", ""));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    admin.revoke_session(lanyard_proto::admin::RevokeSessionRequest { session: "s1".into() }).await.unwrap();
    let (_, body) = poll.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "the long-poll waited for its timeout");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["next"], 1);
    let set = page["events"][0].as_str().unwrap();
    let verified =
        lanyard_jose::verify(set, Some(&["secevent+jwt"]), |kid| (kid == key.kid()).then_some(&key)).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&verified.claims).unwrap();
    assert_eq!(claims["seq"], 1);
    assert_eq!(claims["events"]["urn:lanyard:revocation:session_revoked"]["subject"], "s1");
    // A SET is not a JWT-SVID: its typ is refused where one is expected.
    assert!(lanyard_jose::verify(set, Some(&["JWT", "JOSE"]), |kid| (kid == key.kid()).then_some(&key)).is_err());

    // A risk event says whether it blocks.
    let risk = lanyard_proto::admin::ReportRiskRequest {
        subject: Some(lanyard_proto::admin::RiskSubject { user_sub: "alice".into(), ..Default::default() }),
        level: "low".into(),
        reason: "private reason".into(),
    };
    admin.report_risk(risk).await.unwrap();
    let (_, body) = http_get(addr, "/v1/revocations?after=1", "").await;
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let claims = jws_claims(page["events"][0].as_str().unwrap());
    let event = &claims["events"]["urn:lanyard:revocation:risk_raised"];
    assert_eq!((event["subject"].as_str(), event["blocking"].as_bool()), (Some("user:alice"), Some(true)));
    assert!(!body.contains("private reason"), "the feed is public: no reasons");

    // Resuming from any position; the snapshot folds everything.
    let (_, body) = http_get(addr, "/v1/revocations?after=0", "").await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["events"].as_array().unwrap().len(), 2);
    let (_, body) = http_get(addr, "/v1/revocations/snapshot", "").await;
    let snapshot = jws_claims(serde_json::from_str::<serde_json::Value>(&body).unwrap()["snapshot"].as_str().unwrap());
    assert_eq!(snapshot["as_of"], 2);
    assert_eq!(snapshot["revoked_sessions"], serde_json::json!(["s1"]));
    assert_eq!(snapshot["risks"][0]["subject"], "user:alice");

    // Bad input.
    for bad in ["/v1/revocations?after=x", "/v1/revocations?wait=61", "/v1/revocations?after=-1"] {
        assert!(http_get(addr, bad, "").await.0.starts_with("HTTP/1.1 400"), "{bad}");
    }
    let (_, metrics) = http_get(addr, "/metrics", "").await;
    assert!(metrics.contains("lanyard_revocation_sequence 2"), "{metrics}");
    endpoint.stop().await;
}

#[tokio::test]
async fn a_thousand_idle_long_polls_are_held_and_all_see_the_next_event() {
    let endpoint = BundleEndpoint::start(|_| {}).await;
    let (addr, dir) = (endpoint.addr, endpoint.dir.path().to_owned());
    let polls: Vec<_> =
        (0..1000).map(|_| tokio::spawn(http_get(addr, "/v1/revocations?after=0&wait=30", ""))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The endpoint still answers while they wait.
    let started = std::time::Instant::now();
    assert!(http_get(addr, "/healthz", "").await.0.starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut admin = AdminClient::new(uds(dir.join("admin.sock")).await);
    admin.revoke_session(lanyard_proto::admin::RevokeSessionRequest { session: "s1".into() }).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for poll in polls {
        let (head, body) = tokio::time::timeout_at(deadline.into(), poll).await.unwrap().unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.contains("\"next\":1"), "{body}");
    }
    endpoint.stop().await;
}

#[tokio::test]
async fn the_bundle_endpoint_refuses_oversized_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let endpoint = BundleEndpoint::start(|_| {}).await;
    let addr = endpoint.addr;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let huge = "a".repeat(1024 * 1024);
    let request = format!("GET /bundle HTTP/1.1\r\nHost: lanyard\r\nX-Big: {huge}\r\nConnection: close\r\n\r\n");
    // The server may close before reading it all; either way no 200.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    assert!(!response.starts_with("HTTP/1.1 200"), "{}", &response[..response.len().min(200)]);
    // And it goes on serving others.
    let (head, _) = http_get(addr, "/bundle", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "the endpoint still serves");
    endpoint.stop().await;
}

#[tokio::test]
async fn the_bundle_endpoint_serves_https_when_given_a_certificate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let mut config = ServerConfig::new(
        "example.org".parse().unwrap(),
        dir.path().join("data"),
        dir.path().join("admin.sock"),
        "127.0.0.1:0".parse().unwrap(),
    );
    config.bundle_listen = Some("127.0.0.1:0".parse().unwrap());
    config.bundle_tls = Some((dir.path().join("cert.pem"), dir.path().join("key.pem")));
    let server = Server::bind(config).await.unwrap();
    let addr = server.bundle_addr().unwrap().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(&format!("\"issuer\":\"https://{addr}\"")), "{response}");
    // Plain HTTP to the HTTPS port gets nothing useful.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = plain.write_all(b"GET /bundle HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"));

    // A key that does not parse is refused at start, naming the file.
    std::fs::write(dir.path().join("bad.pem"), "not a key").unwrap();
    let mut bad = ServerConfig::new(
        "example.org".parse().unwrap(),
        dir.path().join("data2"),
        dir.path().join("admin2.sock"),
        "127.0.0.1:0".parse().unwrap(),
    );
    bad.bundle_listen = Some("127.0.0.1:0".parse().unwrap());
    bad.bundle_tls = Some((dir.path().join("cert.pem"), dir.path().join("bad.pem")));
    let Err(e) = Server::bind(bad).await else { panic!("started with a bad key") };
    assert!(e.to_string().contains("bad.pem"), "{e}");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// Every stored private key: whether it is sealed, and its PKCS#8 (opened).
async fn private_keys(data: &Path, kek: Option<&crate::kek::Kek>) -> Vec<(bool, Vec<u8>)> {
    use lanyard_store::Store as _;
    let store = lanyard_store::SledStore::open(data).unwrap();
    let records = store.list_keys().await.unwrap();
    assert_eq!(records.len(), 3, "an X.509 CA, a JWT-SVID key and a task-token key");
    records
        .iter()
        .map(|r| (crate::kek::is_sealed(&r.pkcs8), crate::kek::unseal(kek, &r.id, &r.pkcs8).unwrap()))
        .collect()
}

/// Whether `key` is in some file under `dir`, raw or in the base64 the
/// store's JSON records use.
fn in_the_clear(dir: &Path, key: &[u8]) -> bool {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(key);
    contains_bytes(dir, key) || contains_bytes(dir, encoded.as_bytes())
}

#[tokio::test]
async fn with_a_kek_no_private_key_is_stored_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let write_kek = |name: &str, byte: u8| {
        let path = dir.path().join(name);
        std::fs::write(&path, lanyard_core::hex::encode(&[byte; 32])).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let config = |data: &str, kek: Option<std::path::PathBuf>| {
        let mut config = ServerConfig::new(
            "example.org".parse().unwrap(),
            dir.path().join(data),
            dir.path().join(format!("{data}.sock")),
            "127.0.0.1:0".parse().unwrap(),
        );
        config.kek_file = kek;
        config
    };
    // Control: without a KEK, the scan finds the private keys in the files.
    drop(Server::bind(config("plain", None)).await.unwrap());
    for (sealed, pkcs8) in private_keys(&dir.path().join("plain"), None).await {
        assert!(!sealed);
        assert!(in_the_clear(&dir.path().join("plain"), &pkcs8), "the control finds keys in the clear");
    }

    // With one: every private key is sealed, none is found in any file.
    let kek_path = write_kek("kek", 7);
    let kek = crate::kek::Kek::from_file(&kek_path).unwrap();
    drop(Server::bind(config("sealed", Some(kek_path.clone()))).await.unwrap());
    for (sealed, pkcs8) in private_keys(&dir.path().join("sealed"), Some(&kek)).await {
        assert!(sealed);
        assert!(!in_the_clear(&dir.path().join("sealed"), &pkcs8), "a private key in the clear");
    }
    // It starts again with its KEK, not without one, nor with another.
    let again = Server::bind(config("sealed", Some(kek_path.clone()))).await.unwrap();
    let pem = again.bundle_pem();
    drop(again);
    let Err(e) = Server::bind(config("sealed", None)).await else { panic!("started without the KEK") };
    assert!(e.to_string().contains("--kek-file"), "{e}");
    let Err(e) = Server::bind(config("sealed", Some(write_kek("other", 8)))).await else { panic!("another KEK") };
    assert!(e.to_string().contains("cannot unseal"), "{e}");
    // A KEK file others can read is refused.
    std::fs::set_permissions(&kek_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let Err(e) = Server::bind(config("sealed", Some(kek_path.clone()))).await else { panic!("a readable KEK") };
    assert!(e.to_string().contains("readable by group or others"), "{e}");
    std::fs::set_permissions(&kek_path, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A store from before the KEK is sealed when it is first given one,
    // keeping its keys.
    let plain_pem = {
        let server = Server::bind(config("plain", None)).await.unwrap();
        server.bundle_pem()
    };
    let migrated = Server::bind(config("plain", Some(kek_path))).await.unwrap();
    assert_eq!(migrated.bundle_pem(), plain_pem, "the same CA, now sealed");
    drop(migrated);
    assert!(private_keys(&dir.path().join("plain"), Some(&kek)).await.iter().all(|(sealed, _)| *sealed));
    assert_ne!(pem, plain_pem);
}

#[test]
fn sync_messages_stay_far_below_the_grpc_limit_whatever_the_entries_hold() {
    use prost::Message as _;
    let entry = |i: usize, selectors: usize| Entry {
        id: format!("{i:032x}"),
        spiffe_id: format!("spiffe://example.org/connector/{i}"),
        parent_id: "spiffe://example.org/agent/a".into(),
        selectors: (0..selectors).map(|s| format!("unix:path:/opt/app/{s:0>200}")).collect(),
        ..Entry::default()
    };
    // Small entries: 500 a message. Large ones: by size. Many removals: split too.
    for (entries, selectors, removed) in [(1_200, 1, 0), (300, 100, 0), (10, 1, 100_000), (0, 0, 0)] {
        let upserted: Vec<Entry> = (0..entries).map(|i| entry(i, selectors)).collect();
        let removals: Vec<String> = (0..removed).map(|i| format!("{i:032x}")).collect();
        let messages = crate::node::chunk_sync(upserted.clone(), removals.clone());
        assert!(!messages.is_empty());
        for m in &messages {
            assert!(m.encoded_len() <= crate::node::SYNC_MESSAGE_BUDGET, "{} bytes", m.encoded_len());
            assert!(m.upserted.len() <= crate::limits::SYNC_CHUNK);
        }
        let all: Vec<Entry> = messages.iter().flat_map(|m| m.upserted.clone()).collect();
        let gone: Vec<String> = messages.iter().flat_map(|m| m.removed.clone()).collect();
        assert_eq!((all, gone), (upserted, removals), "everything, in order, once");
    }
}

/// A server with its bundle endpoint on (configured by `tweak`), serving.
struct BundleEndpoint {
    dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), crate::StartError>>,
}

impl BundleEndpoint {
    async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(
            "example.org".parse().unwrap(),
            dir.path().join("data"),
            dir.path().join("admin.sock"),
            "127.0.0.1:0".parse().unwrap(),
        );
        config.bundle_listen = Some("127.0.0.1:0".parse().unwrap());
        tweak(&mut config);
        let server = Server::bind(config).await.unwrap();
        let addr = server.bundle_addr().unwrap().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Self { dir, addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_past_the_cap_are_told_to_retry_and_short_polls_still_answer() {
    let endpoint = BundleEndpoint::start(|c| c.max_long_polls = 3).await;
    let (addr, dir) = (endpoint.addr, endpoint.dir.path().to_owned());
    let held: Vec<_> = (0..3).map(|_| tokio::spawn(http_get(addr, "/v1/revocations?after=0&wait=30", ""))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (head, _) = http_get(addr, "/v1/revocations?after=0&wait=30", "").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    // A poll that does not wait is answered; so are the held ones, at the next event.
    let (head, _) = http_get(addr, "/v1/revocations?after=0&wait=0", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut admin = AdminClient::new(uds(dir.join("admin.sock")).await);
    admin.revoke_session(lanyard_proto::admin::RevokeSessionRequest { session: "s1".into() }).await.unwrap();
    for poll in held {
        let (head, _) = tokio::time::timeout(Duration::from_secs(10), poll).await.unwrap().unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    endpoint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_cut_off_while_long_polls_wait_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let endpoint = BundleEndpoint::start(|c| c.header_read_timeout = Duration::from_secs(1)).await;
    let addr = endpoint.addr;
    // Half a request, then silence: the server hangs up once the headers are late.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was still open after 5 s");
    assert!(started.elapsed() >= Duration::from_millis(900), "cut off before the timeout");
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"), "a trickled request was served");
    // A long-poll that sent its headers in time waits longer than that.
    let (head, _) = http_get(addr, "/v1/revocations?after=0&wait=2", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(http_get(addr, "/healthz", "").await.0.starts_with("HTTP/1.1 200"));
    endpoint.stop().await;
}
