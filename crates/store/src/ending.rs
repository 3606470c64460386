//! Ending tasks with their descendants: which tasks one write ends, and
//! why, whichever store walks the tree.

use std::collections::HashSet;

use lanyard_core::{EndReason, Task, TaskId};

/// Tasks ended by one write, in the order they were ended.
#[derive(Debug)]
pub(crate) struct Ending {
    /// When they ended (Unix seconds).
    pub(crate) at: u64,
    /// Every task visited, ended now or before: each is visited once.
    seen: HashSet<TaskId>,
    /// The tasks this write ends, with `ended_at` and `end_reason` set.
    pub(crate) ended: Vec<Task>,
}

impl Ending {
    pub(crate) fn new(at: u64) -> Self {
        Self { at, seen: HashSet::new(), ended: Vec::new() }
    }

    /// Ends `task` for `reason` unless it has ended already; false if it
    /// was visited before (so no cycle, even in a corrupted store, loops).
    pub(crate) fn visit(&mut self, mut task: Task, reason: EndReason) -> bool {
        if !self.seen.insert(task.id) {
            return false;
        }
        if task.ended_at.is_none() {
            task.ended_at = Some(self.at);
            task.end_reason = Some(reason);
            self.ended.push(task);
        }
        true
    }
}
