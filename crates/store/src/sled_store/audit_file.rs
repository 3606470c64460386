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
//!
//! Appends go to a buffer in memory, which reaches the file in one `write`
//! when the group commit syncs (or when a reader needs what is in it): one
//! system call per flush instead of one per record, most of them made under
//! the chain lock. Nothing is acknowledged before its sync, so nothing
//! acknowledged is ever only in the buffer.
//!
//! Records are written over zeros. An `fdatasync` after an append must also
//! make the file's new size durable (on ext4 a journal commit, another trip
//! to the disk); after an overwrite of blocks that already hold zeros it
//! writes the records alone. So the write that takes records to the file
//! carries zeros past them, from time to time, [`ZEROS_TOP`] bytes' worth,
//! and the writes in between go over those. On the 2-vCPU VM of
//! docs/benchmarks.md, 1,600 bytes written and synced took 106–124 µs at
//! p50 that way against 189–206 µs appended, and 226–231 µs at p99 against
//! 366–373; one write in about 280 carried zeros, and took 680–730 µs.
//! The zeros are written, not `fallocate`d: an allocated but unwritten
//! extent is converted at its first write, a metadata change again.
//!
//! So a crash leaves zeros past the last record (and, past the last synced
//! one, whatever part of later writes reached the disk): opening the log
//! ends it at the first line holding a NUL byte, which JSON text never
//! does, and cuts the file there. A clean close cuts the zeros off too.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

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

/// Writes the line of `record` (whose event's canonical JSON is
/// `event_json`) and its redo writes: what serde would write for
/// `{"record": record, "redo": redo}`, `redo` left out when empty.
fn write_line(out: &mut Vec<u8>, record: &AuditRecord, event_json: &str, redo: &[RedoOp]) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"record\":{\"seq\":");
    out.extend_from_slice(record.seq.to_string().as_bytes());
    out.extend_from_slice(b",\"event\":");
    out.extend_from_slice(event_json.as_bytes());
    for (name, hash) in [(&b",\"prev_hash\":\""[..], &record.prev_hash), (&b"\",\"hash\":\""[..], &record.hash)] {
        out.extend_from_slice(name);
        out.extend_from_slice(lanyard_core::hex::encode(hash).as_bytes());
    }
    out.extend_from_slice(b"\"}");
    if !redo.is_empty() {
        out.extend_from_slice(b",\"redo\":");
        serde_json::to_writer(&mut *out, redo)?;
    }
    out.extend_from_slice(b"}\n");
    Ok(())
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

/// A write of records carries zeros when fewer than this many follow them…
const ZEROS_LOW: u64 = 64 * 1024;
/// …enough that this many do.
const ZEROS_TOP: u64 = 512 * 1024;

/// Records per entry of the sparse offset index: memory is one `u64` per
/// this many records (32 KiB per million), a read walks at most this many
/// lines.
const INDEX_STRIDE: u64 = 256;

/// The open log: an append handle, lines appended but not yet written,
/// and a sparse index of where the written records start.
#[derive(Debug)]
pub(super) struct AuditFile {
    path: PathBuf,
    file: File,
    index: RwLock<Index>,
    /// Lines appended since the last write to the file, in seq order.
    pending: Mutex<Pending>,
    /// Set once a write to the file failed: the file may end in part of
    /// the buffer, so nothing may be written, read or synced after it (the
    /// store closes; reopening cuts the torn line and redoes what it must).
    broken: AtomicBool,
}

/// Lines waiting to be written: their bytes and each one's length.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: Vec<u64>,
}

/// Where records start, for every [`INDEX_STRIDE`]th record, and where the
/// log ends.
#[derive(Debug, Default)]
struct Index {
    /// `sparse[k]` is where record `k * INDEX_STRIDE + 1` starts.
    sparse: Vec<u64>,
    /// Records in the file.
    len: u64,
    /// Where the next record will start.
    end: u64,
    /// Where the zeros written past the records end.
    zeroed: u64,
}

impl Index {
    /// Notes a record of `bytes` bytes appended at the end.
    fn push(&mut self, bytes: u64) {
        if self.len.is_multiple_of(INDEX_STRIDE) {
            self.sparse.push(self.end);
        }
        self.len += 1;
        self.end += bytes;
    }

    /// The indexed record at or before `seq` (from 1): its seq and offset.
    fn before(&self, seq: u64) -> Option<(u64, u64)> {
        if seq == 0 || seq > self.len {
            return None;
        }
        let k = (seq - 1) / INDEX_STRIDE;
        let offset = *self.sparse.get(usize::try_from(k).ok()?)?;
        Some((k * INDEX_STRIDE + 1, offset))
    }
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
    /// off what follows the last whole one: zeros written ahead, or a torn
    /// line. Records must be numbered 1, 2, 3…; anything else is for
    /// [`crate::Store::verify_audit_chain`] to report, so the index simply
    /// stops at the first line that is not the next record.
    pub(super) fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(AUDIT_FILE);
        let file = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(&path)?;
        let mut index = Index::default();
        let mut reader = BufReader::new(file.try_clone()?);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') || line.contains(&0) {
                break;
            }
            index.push(n as u64);
        }
        let len = file.metadata()?.len();
        if len > index.end {
            set_aside(&file, dir, index.end, len)?;
            file.set_len(index.end)?;
            file.sync_data()?;
        }
        index.zeroed = index.end;
        Ok(Self { path, file, index: RwLock::new(index), pending: Mutex::default(), broken: AtomicBool::new(false) })
    }

    /// The log file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Records appended so far (written to the file or not).
    pub(super) fn len(&self) -> u64 {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        self.index.read().map_or(0, |i| i.len) + pending.lines.len() as u64
    }

    /// Appends `record` with the redo writes of its change. The caller holds
    /// the chain lock, so records go in seq order.
    pub(super) fn append(&self, record: &AuditRecord, redo: &[RedoOp]) -> Result<()> {
        self.append_canonical(record, &crate::audit::canonical_event(&record.event), redo)
    }

    /// [`append`](Self::append) given the canonical JSON of the record's
    /// event, which goes into the line as it is: it is JSON text of the
    /// event (keys sorted), so the line decodes as if serde had written it,
    /// and the event is encoded once for its hash and its line.
    pub(super) fn append_canonical(&self, record: &AuditRecord, event_json: &str, redo: &[RedoOp]) -> Result<()> {
        self.check()?;
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let start = pending.bytes.len();
        if let Err(e) = write_line(&mut pending.bytes, record, event_json, redo) {
            pending.bytes.truncate(start);
            return Err(StoreError::Corrupt(format!("audit record {} does not encode: {e}", record.seq)));
        }
        let line = (pending.bytes.len() - start) as u64;
        pending.lines.push(line);
        Ok(())
    }

    /// Writes the appended lines to the file (not yet durable).
    fn write_pending(&self) -> Result<()> {
        self.check()?;
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.lines.is_empty() {
            return Ok(());
        }
        // Only this function moves the end, under the `pending` lock.
        let (end, zeroed) = {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            (index.end, index.zeroed)
        };
        let upto = end + pending.bytes.len() as u64;
        let carry_zeros = zeroed < upto + ZEROS_LOW;
        if carry_zeros {
            // In the same write: the zeros go over no record.
            let records = pending.bytes.len();
            pending.bytes.resize(records + ZEROS_TOP as usize, 0);
        }
        let written = self.file.write_all_at(&pending.bytes, end);
        pending.bytes.clear();
        if let Err(e) = written {
            self.broken.store(true, Ordering::SeqCst);
            return Err(e.into());
        }
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        for line in pending.lines.drain(..) {
            index.push(line);
        }
        if carry_zeros {
            index.zeroed = upto + ZEROS_TOP;
        }
        Ok(())
    }

    /// Fails with [`StoreError::Closed`] once a write to the file failed.
    fn check(&self) -> Result<()> {
        if self.broken.load(Ordering::SeqCst) { Err(StoreError::Closed) } else { Ok(()) }
    }

    /// Makes every appended line durable.
    pub(super) fn sync(&self) -> Result<()> {
        self.write_pending()?;
        self.file.sync_data()?;
        Ok(())
    }

    /// Bytes of whole records in the file (the zeros past them are not the log's).
    pub(super) fn written_len(&self) -> u64 {
        self.index.read().unwrap_or_else(PoisonError::into_inner).end
    }

    /// Record `seq`, as stored.
    pub(super) fn read(&self, seq: u64) -> Result<Option<Stored>> {
        let mut found = None;
        self.scan(seq, seq, |_, stored| {
            found = Some(stored);
            Ok(false)
        })?;
        Ok(found)
    }

    fn parse(seq: u64, bytes: &[u8]) -> Result<Stored> {
        let line: LineIn = serde_json::from_slice(bytes)
            .map_err(|e| StoreError::ChainBroken { seq, reason: format!("log line does not decode: {e}") })?;
        Ok(Stored { record: line.record, redo: line.redo })
    }

    /// Records `from..=upto` in order, as stored, read in one pass from the
    /// indexed record at or before `from`.
    pub(super) fn scan(&self, from: u64, upto: u64, mut each: impl FnMut(u64, Stored) -> Result<bool>) -> Result<()> {
        // Readers see every record appended, as when each went straight to the file.
        self.write_pending()?;
        let from = from.max(1);
        let (upto, start) = {
            let Ok(index) = self.index.read() else { return Ok(()) };
            // Only records whole in the file when asked: appends go on meanwhile.
            let upto = upto.min(index.len);
            match index.before(from) {
                Some(start) if from <= upto => (upto, start),
                _ => return Ok(()),
            }
        };
        let (mut seq, offset) = start;
        let mut reader = BufReader::new(File::open(&self.path)?);
        std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(offset))?;
        let mut line = Vec::new();
        while seq <= upto {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if seq >= from && !each(seq, Self::parse(seq, &line)?)? {
                break;
            }
            seq += 1;
        }
        Ok(())
    }
}

/// Keeps what is cut off the log at `offset` (up to `len`), bar the zeros
/// it ends with, in `audit.log.cut-<offset>` beside it.
///
/// After a crash that is part of a write never synced, so never
/// acknowledged. But the log ends at the first line holding a NUL byte
/// wherever it is, and a NUL in an older record (a bad block, an edited
/// file) would cut acknowledged records off too: those bytes are evidence,
/// and are kept rather than destroyed.
fn set_aside(file: &File, dir: &Path, offset: u64, len: u64) -> Result<()> {
    const BLOCK: u64 = 64 * 1024;
    let mut block = vec![0u8; BLOCK as usize];
    // Where the zeros at the end begin, read backwards a block at a time.
    let mut end = len;
    while end > offset {
        let start = end.saturating_sub(BLOCK).max(offset);
        let chunk = &mut block[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        match chunk.iter().rposition(|&b| b != 0) {
            Some(last) => {
                end = start + last as u64 + 1;
                break;
            }
            None => end = start,
        }
    }
    if end == offset {
        return Ok(()); // zeros written ahead, and nothing else
    }
    let aside = dir.join(format!("{AUDIT_FILE}.cut-{offset}"));
    let mut out = OpenOptions::new().create(true).write(true).truncate(true).open(&aside)?;
    let mut at = offset;
    while at < end {
        let chunk = &mut block[..(end - at).min(BLOCK) as usize];
        file.read_exact_at(chunk, at)?;
        out.write_all(chunk)?;
        at += chunk.len() as u64;
    }
    out.sync_all()?;
    // Its name durable too, before the log is cut.
    File::open(dir)?.sync_all()?;
    tracing::warn!(
        path = %aside.display(),
        offset,
        bytes = end - offset,
        "the audit log's end after its last whole record was cut off and kept here"
    );
    Ok(())
}

impl Drop for AuditFile {
    /// Cuts the zeros off, so a stopped store's log is exactly its records.
    fn drop(&mut self) {
        if self.check().is_ok()
            && let Err(error) = self.file.set_len(self.written_len())
        {
            tracing::warn!(%error, path = %self.path.display(), "cannot cut the zeros off the audit log's end");
        }
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;
    use crate::audit::{AuditContext, AuditEvent, ChainHead};

    #[test]
    fn a_line_holds_what_serde_would_write_for_the_record_and_its_redo() {
        let awkward = "quote \" backslash \\ controls \u{0}\u{8}\u{c}\n\r\t\u{1f} del \u{7f} é 🔑 </script>";
        let context = AuditContext {
            decision: Some("deny".into()),
            reason: Some(awkward.into()),
            policies: vec!["p1".into(), "policy \"2\"".into()],
            connector: Some("spiffe://example.org/c".parse().unwrap()),
            ..AuditContext::default()
        };
        let detail = serde_json::json!({"z": [1, -2.5, null, true], "a": {"y": awkward, "b": {}}, "é": 1e300});
        let event =
            AuditEvent { at: 7, kind: "k".into(), actor: awkward.into(), subject: String::new(), detail, context };
        let record = ChainHead::GENESIS.next(event);
        let redo = [
            RedoOp { tree: "tasks".into(), key: "AAE=".into(), value: Some("e30=".into()) },
            RedoOp { tree: "meta".into(), key: "YQ==".into(), value: None },
        ];
        for redo in [&redo[..], &[]] {
            let mut line = Vec::new();
            write_line(&mut line, &record, &crate::audit::canonical_event(&record.event), redo).unwrap();
            assert_eq!(line.pop(), Some(b'\n'));
            let written: Value = serde_json::from_slice(&line).unwrap();
            let mut want = serde_json::json!({ "record": record });
            if !redo.is_empty() {
                want["redo"] = serde_json::to_value(redo).unwrap();
            }
            assert_eq!(written, want);
            let parsed: LineIn = serde_json::from_slice(&line).unwrap();
            assert_eq!(Stored { record: parsed.record, redo: parsed.redo }.decode(1).unwrap(), record);
        }
    }

    fn records(n: u64) -> Vec<AuditRecord> {
        let mut head = ChainHead::GENESIS;
        (0..n)
            .map(|i| {
                let event = AuditEvent {
                    at: i,
                    kind: "test".into(),
                    actor: "a".into(),
                    subject: "s".into(),
                    detail: Value::Null,
                    context: Default::default(),
                };
                let record = head.next(event);
                head = ChainHead::after(&record);
                record
            })
            .collect()
    }

    #[test]
    fn appends_wait_in_memory_for_a_sync_but_every_reader_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = AuditFile::open(dir.path()).unwrap();
        let all = records(300);
        for record in &all[..200] {
            file.append(record, &[]).unwrap();
        }
        assert_eq!(record_bytes(file.path()), 0, "nothing written before a sync or a read");
        assert_eq!(file.len(), 200);
        // A read writes the buffer out first (no sync), so it sees them all.
        assert_eq!(file.read(200).unwrap().map(|s| s.decode(200).unwrap()), Some(all[199].clone()));
        let written = record_bytes(file.path());
        assert!(written > 0);
        for record in &all[200..] {
            file.append(record, &[]).unwrap();
        }
        file.sync().unwrap();
        assert!(record_bytes(file.path()) > written);
        drop(file);
        let reopened = AuditFile::open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 300);
        let mut seen = Vec::new();
        reopened
            .scan(1, 300, |seq, stored| {
                seen.push(stored.decode(seq)?);
                Ok(true)
            })
            .unwrap();
        assert_eq!(seen, all);
    }

    /// Bytes before the first NUL: what the file holds of records.
    fn record_bytes(path: &Path) -> u64 {
        let bytes = std::fs::read(path).unwrap();
        bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()) as u64
    }

    fn file_len(file: &AuditFile) -> u64 {
        std::fs::metadata(file.path()).unwrap().len()
    }

    fn append_synced(file: &AuditFile, records: &[AuditRecord]) {
        for record in records {
            file.append(record, &[]).unwrap();
        }
        file.sync().unwrap();
    }

    fn scan_all(file: &AuditFile) -> Vec<AuditRecord> {
        let mut seen = Vec::new();
        file.scan(1, file.len(), |seq, stored| {
            seen.push(stored.decode(seq)?);
            Ok(true)
        })
        .unwrap();
        seen
    }

    #[test]
    fn records_go_over_zeros_written_ahead_and_a_clean_close_cuts_them_off() {
        let dir = tempfile::tempdir().unwrap();
        let all = records(30);
        let file = AuditFile::open(dir.path()).unwrap();
        append_synced(&file, &all[..10]);
        let len = file_len(&file);
        assert_eq!(len, file.written_len() + ZEROS_TOP, "the records' write carried zeros");
        let before = file.written_len();
        append_synced(&file, &all[10..]);
        assert!(file.written_len() > before);
        assert_eq!(file_len(&file), len, "written over the zeros, not appended");
        assert_eq!(record_bytes(file.path()), file.written_len());
        let written = file.written_len();
        drop(file);
        let bytes = std::fs::read(dir.path().join(AUDIT_FILE)).unwrap();
        assert_eq!(bytes.len() as u64, written, "no zeros left once closed");
        assert!(bytes.ends_with(b"\n"));
        assert_eq!(scan_all(&AuditFile::open(dir.path()).unwrap()), all);
    }

    #[test]
    fn what_a_crash_leaves_past_the_last_record_is_cut_off_at_open() {
        let live = tempfile::tempdir().unwrap();
        let all = records(52);
        let file = AuditFile::open(live.path()).unwrap();
        append_synced(&file, &all[..50]);
        let end = file.written_len() as usize;
        // The file as a crash would leave it: the records, then zeros.
        let image = std::fs::read(file.path()).unwrap();
        let torn: &[u8] = b"{\"record\":{\"seq\":51,\"at\":";
        let mut torn_into_zeros = image.clone();
        torn_into_zeros[end..end + torn.len()].copy_from_slice(torn);
        // Part of a later write reached the disk, the page before it did not.
        let mut later_page_only = image.clone();
        let tail: &[u8] = b"\"detail\":null}}\n";
        later_page_only[end + 4096..end + 4096 + tail.len()].copy_from_slice(tail);
        for (case, bytes) in [("zeros", image), ("a torn line", torn_into_zeros), ("a later page", later_page_only)] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(AUDIT_FILE), &bytes).unwrap();
            let reopened = AuditFile::open(dir.path()).unwrap();
            assert_eq!((reopened.len(), reopened.written_len() as usize), (50, end), "{case}");
            assert_eq!(std::fs::metadata(reopened.path()).unwrap().len() as usize, end, "{case}: cut at the end");
            // The log goes on after the cut, and every record reads back.
            append_synced(&reopened, &all[50..]);
            drop(reopened);
            assert_eq!(scan_all(&AuditFile::open(dir.path()).unwrap()), all, "{case}");
        }
    }

    #[test]
    fn what_is_cut_off_at_open_is_kept_beside_the_log_unless_it_is_zeros() {
        let live = tempfile::tempdir().unwrap();
        let all = records(20);
        let file = AuditFile::open(live.path()).unwrap();
        append_synced(&file, &all);
        let records_end = file.written_len() as usize;
        let image = std::fs::read(file.path()).unwrap();
        drop(file);
        let lines: Vec<&[u8]> = image[..records_end].split_inclusive(|&b| b == b'\n').collect();
        let tenth = lines[..9].iter().map(|l| l.len()).sum::<usize>();
        // A NUL inside record 10 (a bad block, an edited file): the log ends
        // before it, and records 10-20, acknowledged once, are kept aside.
        let mut damaged = image[..records_end].to_vec();
        damaged[tenth + 5] = 0;
        let dir = tempfile::tempdir().unwrap();
        let mut on_disk = damaged.clone();
        on_disk.resize(damaged.len() + 200_000, 0); // zeros ahead, several blocks of them
        std::fs::write(dir.path().join(AUDIT_FILE), &on_disk).unwrap();
        assert_eq!(AuditFile::open(dir.path()).unwrap().len(), 9);
        let aside = std::fs::read(dir.path().join(format!("{AUDIT_FILE}.cut-{tenth}"))).unwrap();
        assert_eq!(aside, damaged[tenth..]);
        // Zeros alone (a crash right after a write that carried them) are not kept.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(AUDIT_FILE), &image).unwrap();
        assert_eq!(AuditFile::open(dir.path()).unwrap().len(), 20);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [AUDIT_FILE]);
    }

    #[test]
    fn writes_longer_than_the_zeros_ahead_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        // 2 KiB records, 1,500 to a sync: each write runs far past the zeros.
        let mut head = ChainHead::GENESIS;
        let all: Vec<_> = (0..6_000)
            .map(|i| {
                let detail = Value::String("x".repeat(2048));
                let event = AuditEvent { at: i, kind: "big".into(), detail, ..AuditEvent::default() };
                let record = head.next(event);
                head = ChainHead::after(&record);
                record
            })
            .collect();
        let file = AuditFile::open(dir.path()).unwrap();
        for batch in all.chunks(1_500) {
            append_synced(&file, batch);
            assert_eq!(file_len(&file), file.written_len() + ZEROS_TOP);
        }
        assert_eq!(scan_all(&file), all);
        drop(file);
        assert_eq!(scan_all(&AuditFile::open(dir.path()).unwrap()), all);
    }

    #[test]
    fn the_sparse_index_finds_the_record_at_or_before() {
        let mut index = Index::default();
        for n in 0..600u64 {
            index.push(10 + n % 3);
        }
        assert_eq!((index.len, index.sparse.len()), (600, 3));
        assert_eq!(index.before(1), Some((1, 0)));
        assert_eq!(index.before(256), Some((1, 0)));
        let second = index.before(257).unwrap();
        assert_eq!(second.0, 257);
        assert_eq!(second.1, (0..256u64).map(|n| 10 + n % 3).sum::<u64>());
        assert_eq!(index.before(600).map(|b| b.0), Some(513));
        assert_eq!((index.before(0), index.before(601)), (None, None));
    }
}
