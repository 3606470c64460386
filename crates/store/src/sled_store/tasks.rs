//! Tasks: creation under the checks that must be atomic with it, listings,
//! and ending a task, or a session's tasks, with every descendant.
//!
//! Every task write holds the chain lock from its first read to its
//! transaction, so a check (parent still running, session not revoked) and
//! the write it decides cannot interleave with an end or a revocation.

use std::collections::VecDeque;

use lanyard_core::{EndReason, SessionId, Task, TaskId};

use super::layout::{
    Batch, TreeId, child_key, children_prefix, decode, range_after, session_key, session_prefix, show_key,
    trailing_task_id,
};
use super::log::LogState;
use super::{Inner, lock};
use crate::audit::AuditEvent;
use crate::ending::Ending;
use crate::error::{Result, StoreError};
use crate::records::TaskFilter;
use crate::revocation::{Revocation, RevocationKind};

/// Writes every task `ending` ended into `batch`; their ids, in order.
fn ended_into_batch(ending: Ending, batch: &mut Batch) -> Result<Vec<TaskId>> {
    let mut ids = Vec::with_capacity(ending.ended.len());
    for task in ending.ended {
        batch.put(TreeId::Tasks, task.id.as_bytes(), &task)?;
        ids.push(task.id);
    }
    Ok(ids)
}

fn not_found(what: &str, id: &TaskId) -> StoreError {
    StoreError::NotFound(format!("{what} {id}"))
}

impl Inner {
    pub(super) fn load_task(&self, id: &TaskId) -> Result<Option<Task>> {
        self.trees.read(TreeId::Tasks, id.as_bytes())
    }

    /// The task an index record names; its absence is corruption.
    fn indexed_task(&self, index: TreeId, key: &[u8]) -> Result<Task> {
        let id = trailing_task_id(index, key)?;
        self.load_task(&id)?.ok_or_else(|| {
            StoreError::Corrupt(format!("{index} record {} names task {id}, which is missing", show_key(index, key)))
        })
    }

    pub(super) fn create_task(&self, task: Task, event: AuditEvent) -> Result<Task> {
        let mut log = lock(&self.chain);
        if self.trees.get(TreeId::Tasks).contains_key(task.id.as_bytes())? {
            return Err(StoreError::AlreadyExists(format!("task {}", task.id)));
        }
        if self.trees.get(TreeId::RevokedSessions).contains_key(task.session.as_str())? {
            return Err(StoreError::Revoked(format!("session {} is revoked", task.session)));
        }
        let mut batch = Batch::default();
        if let Some(parent_id) = &task.parent {
            let parent = self.load_task(parent_id)?.ok_or_else(|| not_found("parent task", parent_id))?;
            if parent.ended_at.is_some() {
                return Err(StoreError::Revoked(format!("parent task {parent_id} has ended")));
            }
            batch.put_raw(TreeId::TaskChildren, child_key(parent_id, &task.id), b"");
        }
        batch.put(TreeId::Tasks, task.id.as_bytes(), &task)?;
        batch.put_raw(TreeId::TasksBySession, session_key(&task.session, &task.id), b"");
        self.apply_audited(&mut log, batch, event)?;
        Ok(task)
    }

    pub(super) fn list_tasks(&self, filter: &TaskFilter, limit: usize) -> Result<Vec<Task>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut keep = |task: Task| {
            if filter.matches(&task) {
                out.push(task);
            }
            out.len() < limit
        };
        match &filter.session {
            Some(session) => {
                let prefix = session_prefix(session);
                for item in self.trees.get(TreeId::TasksBySession).range(range_after(&prefix, None)) {
                    let (key, _) = item?;
                    if !keep(self.indexed_task(TreeId::TasksBySession, &key)?) {
                        break;
                    }
                }
            }
            None => {
                for item in self.trees.get(TreeId::Tasks).iter() {
                    let (key, bytes) = item?;
                    if !keep(decode(TreeId::Tasks, &key, &bytes)?) {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Ends every not-yet-ended task below `roots`, at any depth, breadth first.
    fn end_descendants(&self, ending: &mut Ending, roots: Vec<TaskId>) -> Result<()> {
        let mut queue = VecDeque::from(roots);
        let index = self.trees.get(TreeId::TaskChildren);
        while let Some(parent) = queue.pop_front() {
            for item in index.scan_prefix(children_prefix(&parent)) {
                let (key, _) = item?;
                let child = self.indexed_task(TreeId::TaskChildren, &key)?;
                let id = child.id;
                // A task seen before is not walked again: no cycle, even in
                // a corrupted index, can loop.
                if ending.visit(child, EndReason::ParentEnded) {
                    queue.push_back(id);
                }
            }
        }
        Ok(())
    }

    pub(super) fn end_task(&self, id: &TaskId, at: u64, event: AuditEvent) -> Result<Revocation> {
        let mut log = lock(&self.chain);
        let task = self.load_task(id)?.ok_or_else(|| not_found("task", id))?;
        let mut ending = Ending::new(at);
        ending.visit(task, EndReason::Ended);
        self.end_descendants(&mut ending, vec![*id])?;
        self.commit_ending(&mut log, Batch::default(), ending, (RevocationKind::TaskEnded, id.to_string()), event)
    }

    pub(super) fn revoke_session(&self, session: &SessionId, at: u64, event: AuditEvent) -> Result<Revocation> {
        let mut log = lock(&self.chain);
        let mut ending = Ending::new(at);
        let mut roots = Vec::new();
        let prefix = session_prefix(session);
        for item in self.trees.get(TreeId::TasksBySession).range(range_after(&prefix, None)) {
            let (key, _) = item?;
            let task = self.indexed_task(TreeId::TasksBySession, &key)?;
            roots.push(task.id);
            ending.visit(task, EndReason::SessionRevoked);
        }
        self.end_descendants(&mut ending, roots)?;
        let mut batch = Batch::default();
        // The first revocation's seq stays: it says since when.
        if !self.trees.get(TreeId::RevokedSessions).contains_key(session.as_str())? {
            batch.put(TreeId::RevokedSessions, session.as_str(), &(log.revocation + 1))?;
        }
        let what = (RevocationKind::SessionRevoked, session.to_string());
        self.commit_ending(&mut log, batch, ending, what, event)
    }

    /// Writes `batch`, the ended tasks and one event of `kind` about
    /// `subject` listing them.
    fn commit_ending(
        &self,
        log: &mut LogState,
        mut batch: Batch,
        ending: Ending,
        (kind, subject): (RevocationKind, String),
        event: AuditEvent,
    ) -> Result<Revocation> {
        let at = ending.at;
        let tasks = ended_into_batch(ending, &mut batch)?;
        self.apply_revocation(log, batch, Revocation::draft(kind, at, subject, tasks), event)
    }

    pub(super) fn is_session_revoked(&self, session: &SessionId) -> Result<bool> {
        Ok(self.trees.get(TreeId::RevokedSessions).contains_key(session.as_str())?)
    }
}
