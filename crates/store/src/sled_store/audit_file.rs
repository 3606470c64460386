//! The audit log file: `audit.log` beside the sled trees, append-only, one
//! JSON line per record, made durable by the group commit's `fdatasync`.
//!
//! Why a file and not a tree: minting appends one record per credential, and
//! a sled flush costs far more than an append plus one shared `fdatasync`
//! (sled writes each record through its I/O threads). The log is also the
//! write-ahead log of every audited state change: a line carries, besides
//! the record, the tree writes of its change (`redo`), so a change whose
//! record is durable is redone at open if sled lost it.
//!
//! A line is `{"record": <AuditRecord>, "redo": [...]}`; `redo` is absent
//! for records that change no state. A torn last line (a crash mid-append,
//! before its fsync, so never acknowledged) is cut off at open.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::layout::{Batch, TreeId};
use crate::audit::AuditRecord;
use crate::error::{Result, StoreError};

/// The file's name in the data directory.
pub(super) const AUDIT_FILE: &str = "audit.log";

/// One tree write of an audited change, as the log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RedoOp {
    tree: String,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

#[derive(Serialize)]
struct LineOut<'a> {
    record: &'a AuditRecord,
    #[serde(skip_serializing_if = "<[RedoOp]>::is_empty")]
    redo: &'a [RedoOp],
}

#[derive(Deserialize)]
struct LineIn {
    record: Value,
    #[serde(default)]
    redo: Vec<RedoOp>,
}

/// A record read back: its JSON as written, and its redo writes.
pub(super) struct Stored {
    pub(super) record: Value,
    pub(super) redo: Vec<RedoOp>,
}

impl Stored {
    /// The record, decoded.
    pub(super) fn decode(&self, seq: u64) -> Result<AuditRecord> {
        serde_json::from_value(self.record.clone())
            .map_err(|e| StoreError::Corrupt(format!("audit log record {seq} does not decode: {e}")))
    }
}

/// The open log: an append handle and the offset of every record.
#[derive(Debug)]
pub(super) struct AuditFile {
    path: PathBuf,
    file: File,
    /// `offsets[seq - 1]` is where record `seq` starts; the last element is
    /// where the next one will.
    offsets: RwLock<Vec<u64>>,
}

impl RedoOp {
    /// The writes of `batch`, except to trees whose values must not appear in
    /// the log (private keys).
    pub(super) fn from_batch(batch: &Batch) -> Vec<Self> {
        batch
            .ops()
            .iter()
            .filter(|(tree, _, _)| *tree != TreeId::Keys)
            .map(|(tree, key, value)| RedoOp {
                tree: tree.name().to_owned(),
                key: STANDARD.encode(key),
                value: value.as_ref().map(|v| STANDARD.encode(v)),
            })
            .collect()
    }

    /// The batch these writes make.
    pub(super) fn to_batch(ops: &[RedoOp], seq: u64) -> Result<Batch> {
        let bad = |why: &str| StoreError::Corrupt(format!("audit log record {seq}: redo {why}"));
        let mut batch = Batch::default();
        for op in ops {
            let tree = TreeId::from_name(&op.tree).ok_or_else(|| bad("names an unknown tree"))?;
            let key = STANDARD.decode(&op.key).map_err(|_| bad("key is not base64"))?;
            match &op.value {
                Some(v) => batch.put_raw(tree, &key, &STANDARD.decode(v).map_err(|_| bad("value is not base64"))?),
                None => batch.remove(tree, &key),
            }
        }
        Ok(batch)
    }
}

impl AuditFile {
    /// Opens (creating) the log in `dir`, indexing every record and cutting
    /// off a torn last line. Records must be numbered 1, 2, 3…; anything
    /// else is for [`crate::Store::verify_audit_chain`] to report, so the
    /// index simply stops at the first line that is not the next record.
    pub(super) fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(AUDIT_FILE);
        let file = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        let mut offsets = vec![0u64];
        let mut reader = BufReader::new(file.try_clone()?);
        let mut line = Vec::new();
        let mut at = 0u64;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                // Torn: written but never synced, so never acknowledged.
                tracing::warn!(path = %path.display(), offset = at, "cutting off a torn audit log line");
                file.set_len(at)?;
                file.sync_data()?;
                break;
            }
            at += n as u64;
            offsets.push(at);
        }
        Ok(Self { path, file, offsets: RwLock::new(offsets) })
    }

    /// Records in the file.
    /// The log file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn len(&self) -> u64 {
        self.offsets.read().map_or(0, |o| o.len() as u64 - 1)
    }

    /// Appends `record` with the redo writes of its change. The caller holds
    /// the chain lock, so records go in seq order.
    pub(super) fn append(&self, record: &AuditRecord, redo: &[RedoOp]) -> Result<()> {
        let mut bytes = serde_json::to_vec(&LineOut { record, redo })
            .map_err(|e| StoreError::Corrupt(format!("audit record {} does not encode: {e}", record.seq)))?;
        bytes.push(b'\n');
        (&self.file).write_all(&bytes)?;
        if let Ok(mut offsets) = self.offsets.write() {
            let end = offsets.last().copied().unwrap_or(0) + bytes.len() as u64;
            offsets.push(end);
        }
        Ok(())
    }

    /// Makes every appended line durable.
    pub(super) fn sync(&self) -> Result<()> {
        self.file.sync_data()?;
        Ok(())
    }

    /// Record `seq`, as stored.
    pub(super) fn read(&self, seq: u64) -> Result<Option<Stored>> {
        let Some((start, end)) = self.span(seq) else { return Ok(None) };
        let mut bytes = vec![0u8; usize::try_from(end - start).unwrap_or(0)];
        self.file.read_exact_at(&mut bytes, start)?;
        Self::parse(seq, &bytes).map(Some)
    }

    fn span(&self, seq: u64) -> Option<(u64, u64)> {
        let offsets = self.offsets.read().ok()?;
        let i = usize::try_from(seq).ok()?.checked_sub(1)?;
        Some((*offsets.get(i)?, *offsets.get(i + 1)?))
    }

    fn parse(seq: u64, bytes: &[u8]) -> Result<Stored> {
        let line: LineIn = serde_json::from_slice(bytes)
            .map_err(|e| StoreError::ChainBroken { seq, reason: format!("log line does not decode: {e}") })?;
        Ok(Stored { record: line.record, redo: line.redo })
    }

    /// Records `from..=upto` in order, as stored, read in one pass.
    pub(super) fn scan(&self, from: u64, upto: u64, mut each: impl FnMut(u64, Stored) -> Result<bool>) -> Result<()> {
        let (Some((start, _)), Some((_, end))) = (self.span(from.max(1)), self.span(upto)) else {
            return Ok(());
        };
        let mut reader = BufReader::new(File::open(&self.path)?);
        std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(start))?;
        let mut line = Vec::new();
        let (mut seq, mut at) = (from.max(1), start);
        while at < end {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            at += n as u64;
            if !each(seq, Self::parse(seq, &line)?)? {
                break;
            }
            seq += 1;
        }
        Ok(())
    }
}
