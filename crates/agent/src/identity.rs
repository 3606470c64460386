//! The agent's own SVID and the trust bundle, kept in its data directory so
//! that a restart needs no new join token.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lanyard_ca::svid;
use lanyard_core::{SpiffeId, rotation};
use lanyard_proto::common;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::AgentError;

const IDENTITY_FILE: &str = "agent-svid.json";
const BUNDLE_FILE: &str = "bundle.pb";

/// The agent's SVID and key.
#[derive(Clone)]
pub(crate) struct AgentIdentity {
    /// `spiffe://<td>/agent/<name>`.
    pub(crate) spiffe_id: SpiffeId,
    /// DER chain, leaf first.
    pub(crate) chain: Vec<Vec<u8>>,
    /// PKCS#8 DER private key; never leaves the node.
    pub(crate) key: Vec<u8>,
    /// notBefore of the leaf.
    pub(crate) issued_at: SystemTime,
    /// notAfter of the leaf.
    pub(crate) not_after: SystemTime,
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("spiffe_id", &self.spiffe_id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    chain: Vec<String>,
    key: String,
}

impl AgentIdentity {
    /// Builds an identity from a chain the server returned and our key.
    pub(crate) fn new(chain: Vec<Vec<u8>>, key: Vec<u8>) -> Result<Self, AgentError> {
        let leaf = chain.first().ok_or_else(|| AgentError::Protocol("empty agent SVID chain".into()))?;
        let info = svid::inspect_leaf(leaf).map_err(|e| AgentError::Protocol(format!("agent SVID: {e}")))?;
        Ok(Self {
            spiffe_id: info.spiffe_id,
            chain,
            key,
            issued_at: rotation::issued_at(info.not_before, info.not_after),
            not_after: info.not_after,
        })
    }

    /// Loads the identity saved in `dir`, if any.
    pub(crate) fn load(dir: &Path) -> Result<Option<Self>, AgentError> {
        let path = dir.join(IDENTITY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AgentError::DataDir(path, e.to_string())),
        };
        let corrupt = |e: &dyn std::fmt::Display| AgentError::DataDir(path.clone(), e.to_string());
        let stored: Stored = serde_json::from_str(&text).map_err(|e| corrupt(&e))?;
        let chain =
            stored.chain.iter().map(|c| STANDARD.decode(c)).collect::<Result<_, _>>().map_err(|e| corrupt(&e))?;
        let key = STANDARD.decode(&stored.key).map_err(|e| corrupt(&e))?;
        Self::new(chain, key).map(Some)
    }

    /// Saves the identity to `dir` (0600, atomically).
    pub(crate) fn save(&self, dir: &Path) -> Result<(), AgentError> {
        let stored =
            Stored { chain: self.chain.iter().map(|c| STANDARD.encode(c)).collect(), key: STANDARD.encode(&self.key) };
        let json =
            serde_json::to_vec(&stored).map_err(|e| AgentError::DataDir(dir.join(IDENTITY_FILE), e.to_string()))?;
        write_private(&dir.join(IDENTITY_FILE), &json)
    }
}

/// Loads the last bundle the server sent, if saved.
pub(crate) fn load_bundle(dir: &Path) -> Result<Option<common::Bundle>, AgentError> {
    let path = dir.join(BUNDLE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            common::Bundle::decode(bytes.as_slice()).map(Some).map_err(|e| AgentError::DataDir(path, e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::DataDir(path, e.to_string())),
    }
}

/// Saves the bundle so the next start trusts what the server last said.
pub(crate) fn save_bundle(dir: &Path, bundle: &common::Bundle) -> Result<(), AgentError> {
    write_private(&dir.join(BUNDLE_FILE), &bundle.encode_to_vec())
}

/// Writes `bytes` to `path` with mode 0600: temp file, fsync, rename.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let fail = |e: std::io::Error| AgentError::DataDir(path.to_path_buf(), e.to_string());
    let tmp: PathBuf = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    Ok(())
}
