//! Signing key rotation with real processes and short key lifetimes: every
//! new CA reaches workloads before anything is signed by it, nothing fails
//! to validate across rotations, and `ca rotate` / `ca revoke` act at once.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use lanyard_ca::svid::{Usage, verify_chain};
use lanyard_verify::{Endpoint, Expect, Verifier, VerifierConfig};
use serde_json::Value;
use spiffe::WorkloadApiClient;
use tokio_stream::StreamExt as _;

use crate::harness::{GITHUB, SEARCH, SVID_TIMEOUT, TaskRig, TaskSpec, eventually_async, spiffe_id, wait_served};

/// Key lifetimes short enough for two rotations in a test.
const LIFETIME: &str = "12s";

fn keys(rig: &TaskRig) -> Vec<Value> {
    let listed: Value = serde_json::from_str(&rig.server.admin_ok(&["ca", "show", "--output", "json"])).unwrap();
    listed["keys"].as_array().unwrap().clone()
}

/// The CA certificate (of `roots`) that signed `chain`'s leaf.
fn signer(chain: &[Vec<u8>], roots: &[Vec<u8>]) -> Vec<u8> {
    let now = SystemTime::now();
    let mut found = roots.iter().filter(|r| verify_chain(chain, std::slice::from_ref(r), now, Usage::Client).is_ok());
    found.next().expect("one of the roots signed the leaf").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotations_without_a_failed_validation() {
    let rig = TaskRig::start_with_bundle(&["--ca-ttl", LIFETIME, "--jwt-key-ttl", LIFETIME], &[]);
    // This test process is a workload watching its X.509 context stream.
    let me = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    let id = spiffe_id("rotation/watcher");
    rig.server.create_entry(&id, &rig.agent.spiffe_id(), &[&format!("unix:path:{}", me.display())], &[]);
    wait_served(&rig.agent, &id, SVID_TIMEOUT).await;
    let client = eventually_async(SVID_TIMEOUT, "the spiffe client to connect", async || {
        WorkloadApiClient::connect_to(rig.agent.endpoint()).await
    })
    .await;
    let mut contexts = client.stream_x509_contexts().await.unwrap();
    let url = rig.server.bundle_url();
    let verifier =
        Verifier::start(Endpoint::new(&url, &[]).unwrap(), VerifierConfig::default().issuer(&url)).await.unwrap();
    let task = rig.begin(&TaskSpec::default());

    // Every CA seen in a bundle so far, and every CA that signed an SVID.
    let mut announced: HashSet<Vec<u8>> = HashSet::new();
    let mut signers: Vec<Vec<u8>> = Vec::new();
    let mut previous: Option<(Vec<Vec<u8>>, SystemTime)> = None;
    let mut task_token_kids = HashSet::new();
    let (mut updates, mut tokens) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(27);
    let mut next_token = Instant::now();
    while Instant::now() < deadline {
        let update = tokio::time::timeout(Duration::from_millis(250), contexts.next()).await;
        if let Ok(update) = update {
            let context = update.expect("the stream stays open").expect("a valid X.509 context");
            updates += 1;
            let td = spiffe::TrustDomain::new(crate::harness::TD).unwrap();
            let roots: Vec<Vec<u8>> =
                context.bundle_set().get(&td).unwrap().authorities().iter().map(|c| c.as_bytes().to_vec()).collect();
            let svid = context.default_svid().unwrap();
            let chain: Vec<Vec<u8>> = svid.cert_chain().iter().map(|c| c.as_bytes().to_vec()).collect();
            let now = SystemTime::now();
            verify_chain(&chain, &roots, now, Usage::Client)
                .expect("each SVID verifies against the bundle it came with");
            let by = signer(&chain, &roots);
            if !signers.contains(&by) {
                assert!(
                    signers.is_empty() || announced.contains(&by),
                    "an SVID signed by a CA no earlier update had published"
                );
                signers.push(by);
            }
            // The SVID held until now still verifies against the new bundle.
            if let Some((old, not_after)) = &previous
                && now < *not_after
            {
                verify_chain(old, &roots, now, Usage::Client).expect("the previous SVID against the new bundle");
            }
            let leaf = lanyard_ca::svid::inspect_leaf(&chain[0]).unwrap();
            previous = Some((chain, leaf.not_after));
            announced.extend(roots);
        }
        // About every second, a task token through the agent, checked by a
        // verifier that knows keys only from the bundle endpoint.
        if Instant::now() >= next_token {
            next_token = Instant::now() + Duration::from_secs(1);
            let token = rig.token(&task, GITHUB, &[SEARCH], "read");
            task_token_kids.insert(crate::harness::jws_part(&token, 0)["kid"].as_str().unwrap().to_owned());
            verifier
                .task_token(&token, &Expect::audience(GITHUB).tool(SEARCH))
                .unwrap_or_else(|e| panic!("a fresh task token refused during rotation: {e}"));
            tokens += 1;
        }
    }
    assert!(signers.len() >= 3, "two CA rotations in {updates} updates: {} signers", signers.len());
    assert!(task_token_kids.len() >= 3, "two task-token key rotations in {tokens} tokens: {task_token_kids:?}");
    // The server says the same: three or more of each kind, one active each.
    let listed = keys(&rig);
    for kind in ["x509-ca", "jwt-svid", "task-token"] {
        let of_kind: Vec<&Value> = listed.iter().filter(|k| k["kind"] == kind).collect();
        assert!(of_kind.len() >= 3, "{kind}: {of_kind:?}");
        assert_eq!(of_kind.iter().filter(|k| k["phase"] == "active").count(), 1, "{kind}: {of_kind:?}");
    }
    // The agent was never cut off: it still answers with a current SVID.
    let served = wait_served(&rig.agent, &id, SVID_TIMEOUT).await;
    assert!(served.leaf.not_after > SystemTime::now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_rotate_and_revoke_take_effect_at_once() {
    let rig = TaskRig::start_with_bundle(&[], &[]);
    let url = rig.server.bundle_url();
    let verifier =
        Verifier::start(Endpoint::new(&url, &[]).unwrap(), VerifierConfig::default().issuer(&url)).await.unwrap();
    let task = rig.begin(&TaskSpec::default());
    let before = rig.token(&task, GITHUB, &[SEARCH], "read");
    let old_kid = crate::harness::jws_part(&before, 0)["kid"].as_str().unwrap().to_owned();

    // Forced rotation of the task-token key: the next token has a new kid,
    // the old key stays published (retired) so the earlier token still verifies.
    let out = rig.server.admin_ok(&["ca", "rotate", "--kind", "task-token", "--output", "json"]);
    let rotated: Value = serde_json::from_str(&out).unwrap();
    let phase_of = |list: &Value, id: &str| {
        list["keys"].as_array().unwrap().iter().find(|k| k["id"] == id).map(|k| k["phase"].clone())
    };
    assert_eq!(phase_of(&rotated, &old_kid), Some("retired".into()), "{rotated}");
    let after = rig.token(&task, GITHUB, &[SEARCH], "read");
    let new_kid = crate::harness::jws_part(&after, 0)["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    let expect = Expect::audience(GITHUB).tool(SEARCH);
    // The verifier learns the new key on first sight of its kid (an early refresh).
    eventually_async(Duration::from_secs(5), "the verifier to accept the new key", async || {
        verifier.task_token(&after, &expect)
    })
    .await;
    verifier.task_token(&before, &expect).expect("a token of the retired key");

    // Revoking the old key: the feed tells verifiers at once (the key is
    // still in the bundle they hold), then it leaves their bundle too.
    let seq = verifier.revocation_seq();
    let out = rig.server.admin_ok(&["ca", "revoke", &old_kid, "--output", "json"]);
    let revoked: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(phase_of(&revoked, &old_kid), Some("revoked".into()), "{revoked}");
    tokio::time::timeout(Duration::from_secs(1), verifier.wait_for_seq(seq + 1)).await.unwrap();
    assert_eq!(
        verifier.task_token(&before, &expect).unwrap_err(),
        lanyard_verify::VerifyError::Revoked(lanyard_verify::Revoked::Key(old_kid.clone()))
    );
    eventually_async(Duration::from_secs(5), "the revoked key to leave the verifier's bundle", async || {
        let bundle = verifier.bundle();
        match bundle.bundle.jwt_authorities.iter().any(|k| k.key.kid() == old_kid) {
            false => Ok(()),
            true => Err("still there"),
        }
    })
    .await;
    verifier.task_token(&after, &expect).expect("tokens of the active key still pass");

    // Revoking the active key activates a new one at once.
    let out = rig.server.admin_ok(&["ca", "revoke", &new_kid, "--output", "json"]);
    let listed: Value = serde_json::from_str(&out).unwrap();
    let active: Vec<&Value> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kind"] == "task-token" && k["phase"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "{listed}");
    assert_ne!(active[0]["id"], new_kid.as_str());
    let third = rig.token(&task, GITHUB, &[SEARCH], "read");
    assert_eq!(crate::harness::jws_part(&third, 0)["kid"], active[0]["id"]);

    // Bad input: one readable line, non-zero exit.
    for (args, why) in [
        (&["ca", "revoke", "no-such-key"][..], "no key with id"),
        (&["ca", "revoke", &old_kid][..], "already revoked"),
        (&["ca", "rotate", "--kind", "rsa"][..], "expected x509-ca, jwt-svid or task-token"),
    ] {
        let out = rig.server.admin(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_ca_re_mints_every_svid_it_signed_at_once() {
    let rig = TaskRig::start(&[], &[]);
    let me = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    let id = spiffe_id("rotation/revoked-ca");
    rig.server.create_entry(&id, &rig.agent.spiffe_id(), &[&format!("unix:path:{}", me.display())], &[]);
    let before = wait_served(&rig.agent, &id, SVID_TIMEOUT).await;
    let old_ca = keys(&rig).into_iter().find(|k| k["kind"] == "x509-ca" && k["phase"] == "active").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    rig.server.admin_ok(&["ca", "revoke", &old_ca]);
    let roots = lanyard_ca::bundle::parse_pem(&rig.server.bundle_pem(), "CERTIFICATE").unwrap();
    assert_eq!(roots.len(), 1, "only the new CA is published");
    // The SVID the old CA signed (its lifetime is an hour) is replaced within
    // one sync, by one the new bundle vouches for.
    let started = Instant::now();
    let socket = rig.agent.socket();
    let leaf_der = eventually_async(Duration::from_secs(10), "an SVID from the new CA", async || {
        let response = crate::harness::fetch_x509(&socket).await.map_err(|e| e.to_string())?;
        let ours = response.svids.iter().find(|s| s.spiffe_id == id).ok_or("not served")?;
        let parsed = spiffe::X509Svid::parse_from_der(&ours.x509_svid, &ours.x509_svid_key).unwrap();
        let leaf = parsed.leaf().as_bytes().to_vec();
        match lanyard_ca::svid::inspect_leaf(&leaf).unwrap().serial != before.leaf.serial {
            true => Ok(leaf),
            false => Err("still the old SVID".to_owned()),
        }
    })
    .await;
    eprintln!("re-minted {:?} after the revocation", started.elapsed());
    verify_chain(&[leaf_der], &roots, SystemTime::now(), Usage::Client).expect("the new SVID chains to the new bundle");
    // The agent itself renewed and reconnected: workloads still get new credentials.
    let task = rig.begin(&TaskSpec::default());
    rig.token(&task, GITHUB, &[SEARCH], "read");
    let agent_log = std::fs::read_to_string(rig.agent.log()).unwrap();
    assert!(agent_log.contains("agent SVID renewed"), "the agent renewed its own SVID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_upstream_ca_svids_chain_through_an_intermediate_to_the_operators_root() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Corp Root CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let root = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("root.pem"), dir.path().join("root.key"));
    std::fs::write(&cert_path, root.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let upstream = ["--upstream-ca-cert", cert_path.to_str().unwrap(), "--upstream-ca-key", key_path.to_str().unwrap()];
    let rig = TaskRig::start(&upstream, &[]);

    // The bundle: the operator's root, then Lanyard's intermediate.
    let roots = lanyard_ca::bundle::parse_pem(&rig.server.bundle_pem(), "CERTIFICATE").unwrap();
    assert_eq!(roots.len(), 2, "root and intermediate");
    assert_eq!(roots[0], root.der().to_vec());
    // A workload's SVID, through the crates.io spiffe client: leaf and
    // intermediate; the operator's root alone anchors it.
    let me = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    let id = spiffe_id("upstream/watcher");
    rig.server.create_entry(&id, &rig.agent.spiffe_id(), &[&format!("unix:path:{}", me.display())], &[]);
    wait_served(&rig.agent, &id, SVID_TIMEOUT).await;
    let client = WorkloadApiClient::connect_to(rig.agent.endpoint()).await.unwrap();
    let context = client.fetch_x509_context().await.unwrap();
    let svid = context.default_svid().unwrap();
    let chain: Vec<Vec<u8>> = svid.cert_chain().iter().map(|c| c.as_bytes().to_vec()).collect();
    assert_eq!(chain.len(), 2, "leaf and intermediate");
    assert_eq!(chain[1], roots[1]);
    verify_chain(&chain, &roots[..1], SystemTime::now(), Usage::Client).expect("chains to the operator's root alone");
    // The agent itself runs on an intermediate-issued SVID, and task tokens work.
    let task = rig.begin(&TaskSpec::default());
    rig.token(&task, GITHUB, &[SEARCH], "read");

    // A rotated CA is another intermediate under the same root.
    rig.server.admin_ok(&["ca", "rotate", "--kind", "x509-ca"]);
    let roots = lanyard_ca::bundle::parse_pem(&rig.server.bundle_pem(), "CERTIFICATE").unwrap();
    assert_eq!(roots.len(), 3, "root, old and new intermediates");
    for intermediate in &roots[1..] {
        verify_chain(std::slice::from_ref(intermediate), &roots[..1], SystemTime::now(), Usage::Client)
            .expect_err("an intermediate is a CA, not a client SVID");
        // The issuer name is the root's (its DER holds the name as text).
        assert!(intermediate.windows(12).any(|w| w == b"Corp Root CA"), "issued by the operator's root");
    }
}
