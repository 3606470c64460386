//! A real server in-process and clients for it, for the agent crate's tests:
//! admin over its Unix socket, node API over real mutual TLS.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hyper_util::rt::TokioIo;
use lanyard_ca::{Clock, csr};
use lanyard_core::TrustDomain;
use lanyard_proto::admin::admin_client::AdminClient;
use lanyard_proto::admin::{CreateEntryRequest, CreateJoinTokenRequest, GetBundleRequest};
use lanyard_proto::common::Entry;
use lanyard_proto::node::AttestRequest;
use lanyard_proto::node::node_client::NodeClient;
use lanyard_server::{Server, ServerConfig};
use tonic::transport::{Channel, Endpoint};

use crate::node_client::{ClientIdentity, connect};

/// A clock the test moves forward.
#[derive(Clone)]
pub(crate) struct TestClock(pub(crate) Arc<Mutex<SystemTime>>);

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) admin: AdminClient<Channel>,
    pub(crate) addr: String,
    pub(crate) td: TrustDomain,
    pub(crate) roots: Vec<Vec<u8>>,
    pub(crate) clock: TestClock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

pub(crate) async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

/// A fixture whose server config `tweak` adjusts first.
pub(crate) async fn fixture_with(tweak: impl FnOnce(&mut ServerConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock(Arc::new(Mutex::new(SystemTime::now())));
    let mut config = ServerConfig::new(
        "example.org".parse().unwrap(),
        dir.path().join("data"),
        dir.path().join("admin.sock"),
        "127.0.0.1:0".parse().unwrap(),
    );
    tweak(&mut config);
    let server = Server::bind_with_clock(config, Arc::new(clock.clone())).await.unwrap();
    let addr = server.node_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let path = dir.path().join("admin.sock");
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap();
    let mut admin = AdminClient::new(channel);
    let bundle = admin.get_bundle(GetBundleRequest {}).await.unwrap().into_inner();
    Fixture {
        _dir: dir,
        admin,
        addr,
        td: "example.org".parse().unwrap(),
        roots: bundle.x509_authorities,
        clock,
        stop: Some(stop),
    }
}

impl Fixture {
    /// Asks the server to shut down gracefully.
    pub(crate) fn stop_server(&mut self) {
        self.stop.take();
    }

    pub(crate) async fn token(&mut self, name: &str, ttl: u32) -> String {
        let req = CreateJoinTokenRequest { name: name.into(), ttl_seconds: ttl };
        self.admin.create_join_token(req).await.unwrap().into_inner().token
    }

    pub(crate) async fn anonymous(&self) -> NodeClient<Channel> {
        connect(&self.addr, &self.td, &self.roots, None).await.unwrap()
    }

    /// Attests as `name`; returns a client presenting the new agent SVID.
    pub(crate) async fn agent(&mut self, name: &str) -> (NodeClient<Channel>, ClientIdentity) {
        let token = self.token(name, 600).await;
        let (key, request) = csr::new_key_and_csr().unwrap();
        let reply = self
            .anonymous()
            .await
            .attest(AttestRequest { join_token: token, csr: request })
            .await
            .unwrap()
            .into_inner();
        let me = ClientIdentity { chain: reply.svid_chain, key };
        (connect(&self.addr, &self.td, &self.roots, Some(&me)).await.unwrap(), me)
    }

    pub(crate) async fn entry(&mut self, spiffe_id: &str, parent: &str) -> String {
        let entry = Entry {
            spiffe_id: spiffe_id.into(),
            parent_id: parent.into(),
            selectors: vec!["unix:uid:1000".into()],
            ..Entry::default()
        };
        self.create_entry(entry).await.id
    }

    /// Registers `entry` as given.
    pub(crate) async fn create_entry(&mut self, entry: Entry) -> Entry {
        self.admin.create_entry(CreateEntryRequest { entry: Some(entry) }).await.unwrap().into_inner()
    }
}

/// A scratch directory next to the fixture's, e.g. for policies.
pub(crate) fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}
