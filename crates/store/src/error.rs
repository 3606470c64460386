//! The one error type of the store.

use std::path::PathBuf;

/// The result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled reported an error: a failing disk, a full file system, or on-disk corruption.
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// An operating-system I/O error, or a store worker that died.
    #[error("store i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Another process (or another handle in this one) has the store open.
    #[error("store at {} is in use by another process", .0.display())]
    Locked(PathBuf),
    /// A record that does not decode: the tree and key are named in the message.
    #[error("corrupt store record: {0}")]
    Corrupt(String),
    /// The store was written by a newer lanyard; opening it could lose data.
    #[error("store schema version {found} is newer than this lanyard supports ({supported}); upgrade lanyard")]
    NewerSchema {
        /// The version recorded in the store.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },
    /// The named object does not exist (or was already deleted).
    #[error("{0} not found")]
    NotFound(String),
    /// Someone changed the object since the caller read it.
    #[error("revision conflict: expected revision {expected}, found {actual}")]
    Conflict {
        /// The revision the caller based its change on.
        expected: u64,
        /// The revision currently stored.
        actual: u64,
    },
    /// An object with this id or key is already stored.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The write depends on something already ended or revoked: a child
    /// task whose parent has ended, a task in a revoked session, an
    /// unbanned record written over a banned agent.
    #[error("{0}")]
    Revoked(String),
    /// The audit hash chain does not verify: a record was altered, removed or reordered.
    #[error("audit chain broken at record {seq}: {reason}")]
    ChainBroken {
        /// The sequence number of the first bad record.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// PostgreSQL refused a statement or could not be reached; the
    /// message has its SQLSTATE when it gave one.
    #[error("database error: {0}")]
    Postgres(String),
    /// The backend cannot do this; the message says what to use instead.
    #[error("not supported by this store: {0}")]
    Unsupported(String),
    /// A flush failed earlier (or the store shut down): nothing more can be made durable.
    #[error("store is closed: an earlier flush failed or the store shut down; restart the server")]
    Closed,
}
