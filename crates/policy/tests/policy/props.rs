//! Properties: `decide` agrees with a set-logic oracle of the ceilings, never
//! allows what a ceiling refuses, and never panics.

use lanyard_core::{Action, Classification, SpiffeId, Tool};
use lanyard_policy::{Ceilings, Deny, OpenRisks, PolicyEngine, RiskLevel, decide};
use proptest::prelude::*;

use crate::support::*;

const TOOLS: [&str; 5] = ["t.a", "t.b", "t.c", "t.d", "t.e"];
const AUDS: [&str; 3] = ["aud-1", "aud-2", "aud-3"];

fn pick<T: Clone>(all: &[T], mask: u8) -> Vec<T> {
    all.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, t)| t.clone()).collect()
}

fn level(n: u8) -> Option<RiskLevel> {
    [None, Some(RiskLevel::Low), Some(RiskLevel::Medium), Some(RiskLevel::High)][usize::from(n % 4)]
}

#[derive(Debug, Clone)]
struct Scenario {
    entry_tools: u8,
    task_tools: u8,
    requested: u8,
    entry_auds: u8,
    task_auds: u8,
    audience: usize,
    entry_max: usize,
    task_class: usize,
    task_action: usize,
    action: usize,
    other_connector: bool,
    ended: bool,
    expires_in: i64,
    ancestor_expires_in: Option<i64>,
    session_revoked: bool,
    risks: [u8; 4],
    threshold: usize,
    now: u64,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), 0..3usize),
        (0..4usize, 0..4usize, 0..4usize, 0..4usize),
        (prop::bool::weighted(0.1), prop::bool::weighted(0.1), -5..600i64, prop::option::of(-5..600i64)),
        (
            prop::bool::weighted(0.1),
            prop::array::uniform4(prop::sample::select(vec![0u8, 0, 0, 0, 1, 2, 3])),
            0..3usize,
        ),
        prop_oneof![Just(NOW), 0..u64::MAX / 2, Just(u64::MAX / 2)],
    )
        .prop_map(|(a, b, c, d, now)| Scenario {
            entry_tools: a.0,
            task_tools: a.1,
            requested: a.2,
            entry_auds: a.3,
            task_auds: a.4,
            audience: a.5,
            entry_max: b.0,
            task_class: b.1,
            task_action: b.2,
            action: b.3,
            other_connector: c.0,
            ended: c.1,
            expires_in: c.2,
            ancestor_expires_in: c.3,
            session_revoked: d.0,
            risks: d.1,
            threshold: d.2,
            now,
        })
}

impl Scenario {
    fn case(&self) -> (TokenCase, Ceilings) {
        let all_tools: Vec<Tool> = tools(&TOOLS);
        let all_auds: Vec<_> = AUDS.iter().map(|a| aud(a)).collect();
        let mut c = TokenCase::new();
        c.now = self.now;
        c.entry.tools = pick(&all_tools, self.entry_tools);
        c.entry.audiences = pick(&all_auds, self.entry_auds);
        c.entry.max_classification = Classification::ALL[self.entry_max];
        if self.other_connector {
            c.entry.spiffe_id = id(JIRA);
        }
        c.task.tools = pick(&all_tools, self.task_tools);
        c.task.audiences = pick(&all_auds, self.task_auds);
        c.task.classification = Classification::ALL[self.task_class];
        c.task.action = Action::ALL[self.task_action];
        c.task.ended_at = self.ended.then_some(0);
        c.task.expires_at = self.now.saturating_add_signed(self.expires_in);
        if let Some(e) = self.ancestor_expires_in {
            let mut parent = task(GITHUB, 2);
            parent.expires_at = self.now.saturating_add_signed(e);
            c.task.parent = Some(parent.id);
            c.task.chain = vec![id("spiffe://example.org/connector/root")];
            c.ancestors = vec![parent];
        }
        c.tools = pick(&all_tools, self.requested);
        c.audience = all_auds[self.audience].clone();
        c.action = Action::ALL[self.action];
        c.session_revoked = self.session_revoked;
        c.risks = OpenRisks {
            user: level(self.risks[0]),
            connector: level(self.risks[1]),
            agent: level(self.risks[2]),
            session: level(self.risks[3]),
        };
        (c, Ceilings { risk_threshold: RiskLevel::ALL[self.threshold] })
    }

    /// The rules of issue 4 part 3, as set logic.
    fn oracle(&self, c: &TokenCase, ceilings: &Ceilings) -> bool {
        let active = |expires_at: u64| c.now < expires_at;
        let caller: &SpiffeId = &c.entry.spiffe_id;
        !self.ended
            && active(c.task.expires_at)
            && c.ancestors.iter().all(|a| active(a.expires_at))
            && *caller == c.task.connector
            && !c.session_revoked
            && c.risks.highest().is_none_or(|l| l < ceilings.risk_threshold)
            && !c.tools.is_empty()
            && c.tools.iter().all(|t| c.task.tools.contains(t) && c.entry.tools.contains(t))
            && c.task.audiences.contains(&c.audience)
            && c.entry.audiences.contains(&c.audience)
            && c.action == c.task.action
            && c.task.classification <= c.entry.max_classification
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn decide_matches_the_ceiling_oracle(s in scenario()) {
        let (case, ceilings) = s.case();
        let want = s.oracle(&case, &ceilings);
        let permit_all = PolicyEngine::permit_all();
        let got = decide(&ceilings, &permit_all, &case.request());
        prop_assert_eq!(got.is_ok(), want, "{:?}", got);
        prop_assert_eq!(ceilings.check_token(&case.request()).is_ok(), want);
        if let Err(deny) = &got {
            let from_cedar = matches!(deny, Deny::PolicyForbids { .. } | Deny::PolicyError(_));
            prop_assert!(!from_cedar, "permit_all refused: {}", deny);
        }
        // A stricter policy set can only take allows away.
        let examples = PolicyEngine::load_dir(&examples_dir()).unwrap();
        let got = decide(&ceilings, &examples, &case.request());
        if !want {
            prop_assert!(got.is_err());
        }
        if let Ok(d) = got {
            prop_assert!(d.allowed && d.errors.is_empty() && !d.policies.is_empty());
        }
    }

    #[test]
    fn delegation_never_widens(
        parent_tools in any::<u8>(), to_tools in any::<u8>(), child_tools in any::<u8>(),
        depth in 0..6usize, ttl in 0..1_000u64, to_max in 0..4usize,
    ) {
        let all_tools = tools(&TOOLS);
        let mut c = DelegateCase::new();
        let (parent, ancestors) = chain(GITHUB, depth);
        c.parent = parent;
        c.ancestors = ancestors;
        c.parent.tools = pick(&all_tools, parent_tools);
        c.to.tools = pick(&all_tools, to_tools);
        c.to.max_classification = Classification::ALL[to_max];
        c.tools = pick(&all_tools, child_tools);
        c.ttl = std::time::Duration::from_secs(ttl);
        if Ceilings::default().check_delegate(&c.request()).is_ok() {
            prop_assert!(!c.tools.is_empty());
            prop_assert!(c.tools.iter().all(|t| c.parent.tools.contains(t) && c.to.tools.contains(t)));
            prop_assert!(c.parent.depth() < lanyard_core::task::MAX_DELEGATION_DEPTH);
            prop_assert!(c.now + ttl <= c.parent.expires_at);
            prop_assert!(c.parent.classification <= c.to.max_classification);
        }
    }
}
