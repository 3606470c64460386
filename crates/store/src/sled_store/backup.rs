//! Backups of a running store, consistent to one point, and restoring one
//! into a new directory.
//!
//! A backup is a directory of three files:
//! - `records.jsonl`: every key and value of every tree, one JSON line each
//!   (`{"tree", "key", "value"}`, key and value base64), exactly as stored;
//! - `audit.log`: the audit log up to the same point;
//! - `manifest.json`: the format, schema version, record counts, the audit
//!   head, and the SHA-256 of the two files, checked before a restore.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::audit_file::AUDIT_FILE;
use super::layout::TreeId;
use super::{Inner, SledStore, lock};
use crate::error::{Result, StoreError};

/// The format this build writes and reads.
const FORMAT: &str = "lanyard-backup-v1";
const RECORDS: &str = "records.jsonl";
const MANIFEST: &str = "manifest.json";

/// What a backup holds, as its manifest says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// Always `lanyard-backup-v1`.
    pub format: String,
    /// The store layout version it was taken from.
    pub schema_version: u32,
    /// Lines of `records.jsonl`.
    pub records: u64,
    /// Records of the audit log.
    pub audit_records: u64,
    /// SHA-256 of `records.jsonl`, hex.
    pub records_sha256: String,
    /// SHA-256 of `audit.log`, hex.
    pub audit_sha256: String,
}

#[derive(Serialize, Deserialize)]
struct Line {
    tree: String,
    key: String,
    value: String,
}

impl Inner {
    /// Writes a backup into `to` (created, 0700; it must not exist or be
    /// empty) while holding the locks every write takes, so the trees and
    /// the audit log are copied at one point.
    pub(super) fn backup(&self, to: &Path) -> Result<BackupManifest> {
        create_private_dir(to)?;
        // Entry writers, then audited writers (the documented lock order).
        let _entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _log = lock(&self.chain);
        // Everything applied so far is in the log file (appended under the
        // lock just taken); make it durable so the copy is of synced bytes.
        self.audit_file.sync()?;
        let mut records = 0u64;
        {
            let mut out = BufWriter::new(create_private_file(&to.join(RECORDS))?);
            for tree in TreeId::ALL {
                for item in self.trees.get(tree).iter() {
                    let (key, value) = item?;
                    let line = Line {
                        tree: tree.name().to_owned(),
                        key: STANDARD.encode(&key),
                        value: STANDARD.encode(&value),
                    };
                    serde_json::to_writer(&mut out, &line).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    out.write_all(b"\n")?;
                    records += 1;
                }
            }
            out.into_inner().map_err(|e| StoreError::Io(e.into_error()))?.sync_all()?;
        }
        let mut audit_out = create_private_file(&to.join(AUDIT_FILE))?;
        // The records, not the zeros written ahead of them.
        let mut records_only = File::open(self.audit_file.path())?.take(self.audit_file.written_len());
        std::io::copy(&mut records_only, &mut audit_out)?;
        audit_out.sync_all()?;
        let manifest = BackupManifest {
            format: FORMAT.to_owned(),
            schema_version: SledStore::SCHEMA_VERSION,
            records,
            audit_records: self.audit_file.len(),
            records_sha256: sha256_file(&to.join(RECORDS))?,
            audit_sha256: sha256_file(&to.join(AUDIT_FILE))?,
        };
        let mut file = create_private_file(&to.join(MANIFEST))?;
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        file.write_all(&json)?;
        file.sync_all()?;
        File::open(to)?.sync_all()?;
        Ok(manifest)
    }
}

impl SledStore {
    /// Restores the backup in `from` into `to`, a new store directory (it
    /// must not exist or be empty), after checking the manifest and both
    /// checksums; then opens it, which checks the audit log against the
    /// trees, and verifies the whole audit chain.
    pub fn restore(from: &Path, to: &Path) -> Result<BackupManifest> {
        let manifest: BackupManifest = serde_json::from_slice(&fs::read(from.join(MANIFEST))?)
            .map_err(|e| StoreError::Corrupt(format!("{MANIFEST}: {e}")))?;
        if manifest.format != FORMAT {
            return Err(StoreError::Corrupt(format!("{MANIFEST}: format {:?} is not {FORMAT}", manifest.format)));
        }
        if manifest.schema_version > Self::SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { found: manifest.schema_version, supported: Self::SCHEMA_VERSION });
        }
        for (file, expected) in [(RECORDS, &manifest.records_sha256), (AUDIT_FILE, &manifest.audit_sha256)] {
            if sha256_file(&from.join(file))? != *expected {
                return Err(StoreError::Corrupt(format!("{file} does not match the manifest's checksum")));
            }
        }
        create_private_dir(to)?;
        {
            let db = sled::Config::new().path(to).open()?;
            let reader = BufReader::new(File::open(from.join(RECORDS))?);
            let mut count = 0u64;
            for (n, line) in reader.lines().enumerate() {
                let bad = |what: String| StoreError::Corrupt(format!("{RECORDS} line {}: {what}", n + 1));
                let line: Line = serde_json::from_str(&line?).map_err(|e| bad(e.to_string()))?;
                let tree = TreeId::ALL
                    .into_iter()
                    .find(|t| t.name() == line.tree)
                    .ok_or_else(|| bad(format!("unknown tree {:?}", line.tree)))?;
                let key = STANDARD.decode(&line.key).map_err(|e| bad(e.to_string()))?;
                let value = STANDARD.decode(&line.value).map_err(|e| bad(e.to_string()))?;
                db.open_tree(tree.name())?.insert(key, value)?;
                count += 1;
            }
            if count != manifest.records {
                return Err(StoreError::Corrupt(format!(
                    "{RECORDS} has {count} records, the manifest {}",
                    manifest.records
                )));
            }
            let mut audit = create_private_file(&to.join(AUDIT_FILE))?;
            std::io::copy(&mut File::open(from.join(AUDIT_FILE))?, &mut audit)?;
            audit.sync_all()?;
            db.flush()?;
        }
        let store = Self::open(to)?;
        let records = store.inner.audit_file.len();
        if records != manifest.audit_records {
            return Err(StoreError::Corrupt(format!(
                "the restored audit log has {records} records, the manifest {}",
                manifest.audit_records
            )));
        }
        store.inner.verify_chain()?;
        Ok(manifest)
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if fs::read_dir(dir)?.next().is_some() {
            return Err(StoreError::Corrupt(format!("{} exists and is not empty", dir.display())));
        }
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    Ok(())
}

fn create_private_file(path: &Path) -> Result<File> {
    Ok(OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(lanyard_core::hex::encode(context.finish().as_ref()))
}
