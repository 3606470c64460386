//! Cedar contexts reused within the second they describe.
//!
//! Turning a request's inputs into a Cedar context (every field evaluated
//! into a Cedar value) costs more than Cedar's decision itself, and a
//! connector asking for many tokens for one task asks with the same inputs
//! again and again. A context is a pure function of those inputs and the
//! second, so reusing one for the same inputs in the same second changes no
//! decision: the policies are still evaluated on every request.
//!
//! Bounded: entries are dropped when a later second arrives, and past
//! [`MAX_ENTRIES`] a new context is built but not kept.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

use lanyard_core::{Audience, Classification, SessionId, SpiffeId, TaskId, User};

use crate::cedar::PolicyInput;
use crate::risk::RiskLevel;

/// Most contexts kept for one second.
pub(crate) const MAX_ENTRIES: usize = 1024;

/// Everything a context is built from except the time, borrowed from a
/// [`PolicyInput`]. The principal, action and resource are not in the context.
#[derive(Clone, Copy, Hash, PartialEq, Eq)]
struct Inputs<'a> {
    user: &'a User,
    audience: &'a Audience,
    classification: Classification,
    session: &'a SessionId,
    task: TaskId,
    agent: &'a SpiffeId,
    chain_depth: usize,
    risk: Option<RiskLevel>,
}

impl<'a> Inputs<'a> {
    fn of(i: &PolicyInput<'a>) -> Self {
        Self {
            user: i.user,
            audience: i.audience,
            classification: i.classification,
            session: i.session,
            task: i.task,
            agent: i.agent,
            chain_depth: i.chain_depth,
            risk: i.risk,
        }
    }
}

/// [`Inputs`], owned, as kept with a context.
struct Key {
    user: User,
    audience: Audience,
    classification: Classification,
    session: SessionId,
    task: TaskId,
    agent: SpiffeId,
    chain_depth: usize,
    risk: Option<RiskLevel>,
}

impl Key {
    fn new(i: Inputs<'_>) -> Self {
        Self {
            user: i.user.clone(),
            audience: i.audience.clone(),
            classification: i.classification,
            session: i.session.clone(),
            task: i.task,
            agent: i.agent.clone(),
            chain_depth: i.chain_depth,
            risk: i.risk,
        }
    }

    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            user: &self.user,
            audience: &self.audience,
            classification: self.classification,
            session: &self.session,
            task: self.task,
            agent: &self.agent,
            chain_depth: self.chain_depth,
            risk: self.risk,
        }
    }
}

/// The contexts of one second, by the hash of their [`Inputs`]; a bucket
/// holds every context whose inputs share that hash, compared in full.
struct Second<C> {
    unix: u64,
    len: usize,
    buckets: HashMap<u64, Vec<(Key, C)>>,
}

/// Contexts (`C`, cheap to clone) built in the current second, by their inputs.
pub(crate) struct ContextMemo<C> {
    hasher: RandomState,
    second: Mutex<Second<C>>,
}

impl<C: Clone> ContextMemo<C> {
    /// An empty memo.
    pub(crate) fn new() -> Self {
        Self { hasher: RandomState::new(), second: Mutex::new(Second { unix: 0, len: 0, buckets: HashMap::new() }) }
    }

    /// The context for `i`: the one kept for the same inputs in the same
    /// second, or what `build` makes (kept for the rest of the second).
    pub(crate) fn get_or_build<E>(&self, i: &PolicyInput<'_>, build: impl FnOnce() -> Result<C, E>) -> Result<C, E> {
        let inputs = Inputs::of(i);
        let hash = self.hasher.hash_one(inputs);
        if let Some(context) = self.lock().find(i.now_unix, hash, inputs) {
            return Ok(context);
        }
        // Built outside the lock: a miss costs no other request anything.
        let context = build()?;
        self.lock().keep(i.now_unix, hash, inputs, context.clone());
        Ok(context)
    }

    /// How many contexts are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len
    }

    fn lock(&self) -> MutexGuard<'_, Second<C>> {
        // Every state of the map is valid, whatever a panicking holder did.
        self.second.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<C: Clone> Second<C> {
    fn find(&self, unix: u64, hash: u64, inputs: Inputs<'_>) -> Option<C> {
        if unix != self.unix {
            return None;
        }
        let bucket = self.buckets.get(&hash)?;
        bucket.iter().find(|(key, _)| key.inputs() == inputs).map(|(_, context)| context.clone())
    }

    fn keep(&mut self, unix: u64, hash: u64, inputs: Inputs<'_>, context: C) {
        if unix > self.unix {
            self.unix = unix;
            self.len = 0;
            self.buckets.clear();
        }
        if unix < self.unix || self.len >= MAX_ENTRIES {
            return;
        }
        let bucket = self.buckets.entry(hash).or_default();
        if bucket.iter().all(|(key, _)| key.inputs() != inputs) {
            bucket.push((Key::new(inputs), context));
            self.len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use lanyard_core::{Action, Tool, UserField};

    use super::*;

    struct Owned {
        connector: SpiffeId,
        tool: Tool,
        user: User,
        audience: Audience,
        session: SessionId,
        agent: SpiffeId,
    }

    impl Owned {
        fn new() -> Self {
            let id = |s: &str| SpiffeId::parse(s).unwrap();
            Self {
                connector: id("spiffe://example.org/connector/github"),
                tool: Tool::parse("github.search").unwrap(),
                user: User {
                    iss: UserField::parse("https://idp.example").unwrap(),
                    sub: UserField::parse("alice").unwrap(),
                },
                audience: Audience::parse("api.github.com").unwrap(),
                session: SessionId::parse("s1").unwrap(),
                agent: id("spiffe://example.org/agent/node1"),
            }
        }

        fn input(&self, now_unix: u64) -> PolicyInput<'_> {
            PolicyInput {
                connector: &self.connector,
                tool: &self.tool,
                action: Action::Read,
                user: &self.user,
                audience: &self.audience,
                classification: Classification::Internal,
                session: &self.session,
                task: TaskId::from_bytes([1; 16]),
                agent: &self.agent,
                chain_depth: 0,
                risk: None,
                now_unix,
            }
        }
    }

    /// Gets the context for `i`, counting the builds; the context is the build number.
    fn get(memo: &ContextMemo<u32>, builds: &Cell<u32>, i: &PolicyInput<'_>) -> u32 {
        memo.get_or_build(i, || {
            builds.set(builds.get() + 1);
            Ok::<_, ()>(builds.get())
        })
        .unwrap()
    }

    #[test]
    fn the_same_inputs_in_the_same_second_reuse_the_context() {
        let (memo, builds, o) = (ContextMemo::new(), Cell::new(0), Owned::new());
        assert_eq!(get(&memo, &builds, &o.input(100)), 1);
        assert_eq!(get(&memo, &builds, &o.input(100)), 1);
        // Neither the principal, the action nor the resource is in a context.
        let other_tool = Tool::parse("github.create_issue").unwrap();
        let mut write = o.input(100);
        write.action = Action::Write;
        write.tool = &other_tool;
        assert_eq!(get(&memo, &builds, &write), 1);
        assert_eq!((builds.get(), memo.len()), (1, 1));
    }

    #[test]
    fn any_changed_context_input_or_a_new_second_builds_anew() {
        let (memo, builds, o) = (ContextMemo::new(), Cell::new(0), Owned::new());
        let bob = User { sub: UserField::parse("bob").unwrap(), ..o.user.clone() };
        let other_iss = User { iss: UserField::parse("https://other.example").unwrap(), ..o.user.clone() };
        let audience = Audience::parse("api.slack.com").unwrap();
        let session = SessionId::parse("s2").unwrap();
        let agent = SpiffeId::parse("spiffe://example.org/agent/node2").unwrap();
        let base = o.input(100);
        let changed = [
            ("user sub", PolicyInput { user: &bob, ..base }),
            ("user iss", PolicyInput { user: &other_iss, ..base }),
            ("audience", PolicyInput { audience: &audience, ..base }),
            ("classification", PolicyInput { classification: Classification::Restricted, ..base }),
            ("session", PolicyInput { session: &session, ..base }),
            ("task", PolicyInput { task: TaskId::from_bytes([2; 16]), ..base }),
            ("agent", PolicyInput { agent: &agent, ..base }),
            ("chain depth", PolicyInput { chain_depth: 1, ..base }),
            ("risk", PolicyInput { risk: Some(RiskLevel::Low), ..base }),
            ("second", PolicyInput { now_unix: 101, ..base }),
        ];
        let first = get(&memo, &builds, &base);
        for (what, input) in &changed {
            let context = get(&memo, &builds, input);
            assert_ne!(context, first, "a changed {what} reused the context");
            assert_eq!(get(&memo, &builds, input), context, "{what}: not kept");
        }
    }

    #[test]
    fn a_later_second_drops_the_old_ones_and_an_earlier_one_is_not_kept() {
        let (memo, builds, o) = (ContextMemo::new(), Cell::new(0), Owned::new());
        get(&memo, &builds, &o.input(100));
        let mut other = o.input(100);
        other.chain_depth = 2;
        get(&memo, &builds, &other);
        assert_eq!(memo.len(), 2);
        get(&memo, &builds, &o.input(101));
        assert_eq!(memo.len(), 1);
        // A request still stamped with the second before is answered, not kept.
        let late = get(&memo, &builds, &o.input(100));
        assert_eq!(get(&memo, &builds, &o.input(100)), late + 1);
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn a_full_second_builds_without_keeping() {
        let (memo, builds, o) = (ContextMemo::new(), Cell::new(0), Owned::new());
        for depth in 0..MAX_ENTRIES {
            let mut input = o.input(100);
            input.chain_depth = depth;
            get(&memo, &builds, &input);
        }
        assert_eq!(memo.len(), MAX_ENTRIES);
        let mut input = o.input(100);
        input.chain_depth = MAX_ENTRIES;
        let first = get(&memo, &builds, &input);
        assert_eq!(get(&memo, &builds, &input), first + 1, "kept past the bound");
        assert_eq!(memo.len(), MAX_ENTRIES);
    }

    #[test]
    fn a_failed_build_keeps_nothing() {
        let (memo, o) = (ContextMemo::<u32>::new(), Owned::new());
        assert_eq!(memo.get_or_build(&o.input(100), || Err("no")), Err("no"));
        assert_eq!(memo.len(), 0);
    }
}
