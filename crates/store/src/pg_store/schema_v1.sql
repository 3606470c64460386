-- Lanyard store, schema version 1. Every audited write locks the one row of
-- lanyard_head first: that row lock is the chain lock of every replica.
CREATE TABLE lanyard_head (
    id              integer PRIMARY KEY CHECK (id = 1),
    audit_seq       bigint  NOT NULL,
    audit_hash      bytea   NOT NULL,
    revocation_seq  bigint  NOT NULL,
    revision        bigint  NOT NULL,
    tombstone_floor bigint  NOT NULL
);
INSERT INTO lanyard_head VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000', 0, 0, 0);

-- One row per record, the record's JSON exactly as hashed and verified.
CREATE TABLE lanyard_audit (
    seq    bigint PRIMARY KEY,
    record text   NOT NULL
);

CREATE TABLE lanyard_entries (
    id        text   PRIMARY KEY,
    parent_id text   NOT NULL,
    revision  bigint NOT NULL UNIQUE,
    doc       text   NOT NULL
);
CREATE INDEX lanyard_entries_by_parent ON lanyard_entries (parent_id, id);

-- Deletions and re-parentings, for incremental syncs.
CREATE TABLE lanyard_entry_tombstones (
    revision  bigint PRIMARY KEY,
    id        text   NOT NULL,
    parent_id text   NOT NULL
);

CREATE TABLE lanyard_join_tokens (
    hash bytea PRIMARY KEY,
    doc  text  NOT NULL
);

CREATE TABLE lanyard_agents (
    id  text PRIMARY KEY,
    doc text NOT NULL
);

CREATE TABLE lanyard_keys (
    id  text PRIMARY KEY,
    doc text NOT NULL
);

CREATE TABLE lanyard_tasks (
    id      bytea PRIMARY KEY,
    session text  NOT NULL,
    parent  bytea,
    doc     text  NOT NULL
);
CREATE INDEX lanyard_tasks_by_session ON lanyard_tasks (session, id);
CREATE INDEX lanyard_tasks_by_parent ON lanyard_tasks (parent, id);

CREATE TABLE lanyard_revoked_sessions (
    session text   PRIMARY KEY,
    seq     bigint NOT NULL
);

-- key: the same bytes as the embedded store's risk keys, so that both list
-- risks in one order; user_sub finds a user's reports at every issuer.
CREATE TABLE lanyard_risks (
    key      bytea PRIMARY KEY,
    user_sub text,
    doc      text  NOT NULL
);
CREATE INDEX lanyard_risks_by_user ON lanyard_risks (user_sub, key);

CREATE TABLE lanyard_revocations (
    seq bigint PRIMARY KEY,
    doc text   NOT NULL
);
