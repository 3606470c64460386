//! Named limits for every API the server exposes.

/// Largest gRPC message the node API decodes.
pub(crate) const NODE_MAX_MESSAGE: usize = 1024 * 1024;
/// Largest gRPC message the admin API decodes.
pub(crate) const ADMIN_MAX_MESSAGE: usize = 1024 * 1024;
/// Most CSRs in one MintX509Svids call.
pub(crate) const MAX_X509_BATCH: usize = 500;
/// Most requests in one batch of a MintTaskTokens stream.
pub(crate) const MAX_TASK_TOKEN_BATCH: usize = 256;
/// Most batches of one MintTaskTokens stream being minted at once; beyond
/// it the server stops reading the stream, and HTTP/2 flow control holds
/// the agent back.
pub(crate) const MAX_STREAM_BATCHES: usize = 64;
/// Most entries in one SyncEntries message (keeps each far below 4 MiB).
pub(crate) const SYNC_CHUNK: usize = 500;
/// Default and largest page of ListEntries.
pub(crate) const LIST_PAGE_DEFAULT: usize = 100;
/// Largest page of ListEntries.
pub(crate) const LIST_PAGE_MAX: usize = 1000;
/// Longest a TLS handshake on the node API may take.
pub(crate) const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long an agent's previous SVID is still accepted after it renews:
/// the agent reconnects with the new one at once, and calls it had out on
/// the old connection must not be refused meanwhile.
pub(crate) const AGENT_RENEWAL_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest join-token lifetime.
pub(crate) const MAX_JOIN_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);
/// Most identities one workload may be attested to in a Tasks API call.
pub(crate) const MAX_CALLER_IDENTITIES: usize = 64;
/// Most tasks one ListTasks answers.
pub(crate) const LIST_TASKS_MAX: usize = 1000;
/// Most audit records one QueryAudit answers.
pub(crate) const AUDIT_QUERY_MAX: usize = 1000;
