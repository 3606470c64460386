//! Every refusal of the three ceiling checks, each asserting the exact reason.

use std::time::Duration;

use lanyard_core::{Action, Classification, DelegatePattern};
use lanyard_policy::{Ceilings, Deny, OpenRisks, RiskLevel, RiskSubjectKind};

use crate::support::*;

type Mutation<C> = Box<dyn Fn(&mut C)>;

fn risk(level: RiskLevel) -> Option<RiskLevel> {
    Some(level)
}

#[test]
fn token_refusals() {
    let cases: Vec<(&str, Mutation<TokenCase>, Deny)> = vec![
        ("task ended", Box::new(|c| c.task.ended_at = Some(NOW - 1)), Deny::TaskEnded),
        ("task expired", Box::new(|c| c.now = c.task.expires_at), Deny::TaskExpired),
        (
            "ended wins over expired",
            Box::new(|c| {
                c.task.ended_at = Some(NOW - 1);
                c.now = c.task.expires_at + 1;
            }),
            Deny::TaskEnded,
        ),
        (
            "root ancestor ended",
            Box::new(|c| {
                let (t, mut ancestors) = chain(GITHUB, 2);
                ancestors[1].ended_at = Some(NOW - 1);
                c.task = t;
                c.ancestors = ancestors;
            }),
            Deny::AncestorEnded(chain(GITHUB, 2).1[1].id),
        ),
        (
            "parent expired",
            Box::new(|c| {
                let (t, mut ancestors) = chain(GITHUB, 2);
                ancestors[0].expires_at = NOW;
                c.task = t;
                c.ancestors = ancestors;
            }),
            Deny::AncestorEnded(chain(GITHUB, 2).1[0].id),
        ),
        (
            "ancestor of another user",
            Box::new(|c| {
                let (t, mut ancestors) = chain(GITHUB, 1);
                ancestors[0].user = user("mallory");
                c.task = t;
                c.ancestors = ancestors;
            }),
            Deny::UserMismatch,
        ),
        (
            "task bound to another connector",
            Box::new(|c| c.entry = entry(JIRA)),
            Deny::WrongConnector { task: id(GITHUB), caller: id(JIRA) },
        ),
        (
            "wrong connector before session",
            Box::new(|c| {
                c.entry = entry(JIRA);
                c.session_revoked = true;
            }),
            Deny::WrongConnector { task: id(GITHUB), caller: id(JIRA) },
        ),
        ("session revoked", Box::new(|c| c.session_revoked = true), Deny::SessionRevoked),
        (
            "risk on the user",
            Box::new(|c| c.risks.user = risk(RiskLevel::Low)),
            Deny::OpenRisk { subject: RiskSubjectKind::User, level: RiskLevel::Low },
        ),
        (
            "risk on the connector",
            Box::new(|c| c.risks.connector = risk(RiskLevel::High)),
            Deny::OpenRisk { subject: RiskSubjectKind::Connector, level: RiskLevel::High },
        ),
        (
            "risk on the agent",
            Box::new(|c| c.risks.agent = risk(RiskLevel::Medium)),
            Deny::OpenRisk { subject: RiskSubjectKind::Agent, level: RiskLevel::Medium },
        ),
        (
            "risk on the session",
            Box::new(|c| c.risks.session = risk(RiskLevel::Low)),
            Deny::OpenRisk { subject: RiskSubjectKind::Session, level: RiskLevel::Low },
        ),
        (
            "user risk reported before session risk",
            Box::new(|c| {
                c.risks.session = risk(RiskLevel::High);
                c.risks.user = risk(RiskLevel::Low);
            }),
            Deny::OpenRisk { subject: RiskSubjectKind::User, level: RiskLevel::Low },
        ),
        ("no tools", Box::new(|c| c.tools.clear()), Deny::NoTools),
        (
            "tool outside the task",
            Box::new(move |c| {
                c.task.tools = tools(&["github.search"]);
                c.tools = tools(&["github.search", "github.create_issue"]);
            }),
            Deny::ToolOutsideTask(tool("github.create_issue")),
        ),
        (
            "tool outside the entry (entry narrowed after begin)",
            Box::new(|c| c.entry.tools = tools(&["github.create_issue"])),
            Deny::ToolOutsideEntry(tool("github.search")),
        ),
        (
            "tool outside both: the task is named",
            Box::new(|c| c.tools = tools(&["shell.exec"])),
            Deny::ToolOutsideTask(tool("shell.exec")),
        ),
        (
            "task with no tools admits none",
            Box::new(|c| c.task.tools.clear()),
            Deny::ToolOutsideTask(tool("github.search")),
        ),
        (
            "audience outside the task",
            Box::new(|c| {
                c.entry.audiences.push(aud("api.jira.com"));
                c.audience = aud("api.jira.com");
            }),
            Deny::AudienceNotInTask(aud("api.jira.com")),
        ),
        (
            "audience outside the entry",
            Box::new(|c| c.entry.audiences = vec![aud("api.jira.com")]),
            Deny::AudienceNotInEntry(aud("api.github.com")),
        ),
        (
            "action other than the task's",
            Box::new(|c| c.action = Action::Write),
            Deny::ActionNotInTask { requested: Action::Write, task: Action::Read },
        ),
        (
            "classification above the entry",
            Box::new(|c| c.task.classification = Classification::Restricted),
            Deny::ClassificationAboveCeiling {
                requested: Classification::Restricted,
                ceiling: Classification::Confidential,
            },
        ),
        (
            "entry lowered after begin",
            Box::new(|c| c.entry.max_classification = Classification::Public),
            Deny::ClassificationAboveCeiling { requested: Classification::Internal, ceiling: Classification::Public },
        ),
    ];
    let ceilings = Ceilings::default();
    assert_eq!(ceilings.check_token(&TokenCase::new().request()), Ok(()));
    for (name, mutate, want) in cases {
        let mut case = TokenCase::new();
        mutate(&mut case);
        assert_eq!(ceilings.check_token(&case.request()), Err(want), "{name}");
    }
}

#[test]
fn token_allows() {
    let ceilings = Ceilings::default();
    let cases: Vec<(&str, Mutation<TokenCase>)> = vec![
        ("both tools", Box::new(|c| c.tools = tools(&["github.search", "github.create_issue"]))),
        ("last second of the task", Box::new(|c| c.now = c.task.expires_at - 1)),
        (
            "delegated task with active ancestors",
            Box::new(|c| {
                let (t, ancestors) = chain(GITHUB, 4);
                c.task = t;
                c.ancestors = ancestors;
            }),
        ),
        ("classification at the ceiling", Box::new(|c| c.task.classification = Classification::Confidential)),
    ];
    for (name, mutate) in cases {
        let mut case = TokenCase::new();
        mutate(&mut case);
        assert_eq!(ceilings.check_token(&case.request()), Ok(()), "{name}");
    }
}

#[test]
fn risk_threshold() {
    let mut case = TokenCase::new();
    let medium = Ceilings { risk_threshold: RiskLevel::Medium };
    case.risks = OpenRisks { user: Some(RiskLevel::Low), agent: Some(RiskLevel::Low), ..OpenRisks::NONE };
    assert_eq!(medium.check_token(&case.request()), Ok(()), "low is below a medium threshold");
    case.risks.agent = Some(RiskLevel::Medium);
    assert_eq!(
        medium.check_token(&case.request()),
        Err(Deny::OpenRisk { subject: RiskSubjectKind::Agent, level: RiskLevel::Medium })
    );
    let high = Ceilings { risk_threshold: RiskLevel::High };
    assert_eq!(high.check_token(&case.request()), Ok(()));
    assert_eq!(Ceilings::default().risk_threshold, RiskLevel::Low);
}

#[test]
fn begin_refusals() {
    let cases: Vec<(&str, Mutation<BeginCase>, Deny)> = vec![
        (
            "orchestrator without task authority",
            Box::new(|c| c.orchestrator.as_mut().unwrap().task_authority = false),
            Deny::NotTaskAuthority,
        ),
        ("session revoked", Box::new(|c| c.session_revoked = true), Deny::SessionRevoked),
        (
            "open risk on the user",
            Box::new(|c| c.risks.user = risk(RiskLevel::Medium)),
            Deny::OpenRisk { subject: RiskSubjectKind::User, level: RiskLevel::Medium },
        ),
        ("ttl above 24h", Box::new(|c| c.ttl = Duration::from_secs(DAY) + Duration::from_millis(1)), Deny::TtlTooLong),
        ("no tools", Box::new(|c| c.tools.clear()), Deny::NoTools),
        (
            "tool outside the entry",
            Box::new(|c| c.tools = tools(&["github.search", "shell.exec"])),
            Deny::ToolOutsideEntry(tool("shell.exec")),
        ),
        ("no audiences", Box::new(|c| c.audiences.clear()), Deny::NoAudiences),
        (
            "audience outside the entry",
            Box::new(|c| c.audiences.push(aud("api.jira.com"))),
            Deny::AudienceNotInEntry(aud("api.jira.com")),
        ),
        (
            "classification above the entry",
            Box::new(|c| c.classification = Classification::Restricted),
            Deny::ClassificationAboveCeiling {
                requested: Classification::Restricted,
                ceiling: Classification::Confidential,
            },
        ),
    ];
    let ceilings = Ceilings::default();
    assert_eq!(ceilings.check_begin(&BeginCase::new().request()), Ok(()));
    for (name, mutate, want) in cases {
        let mut case = BeginCase::new();
        mutate(&mut case);
        assert_eq!(ceilings.check_begin(&case.request()), Err(want), "{name}");
    }
}

#[test]
fn begin_allows() {
    let ceilings = Ceilings::default();
    let cases: Vec<(&str, Mutation<BeginCase>)> = vec![
        ("admin, no orchestrator entry", Box::new(|c| c.orchestrator = None)),
        ("exactly 24h", Box::new(|c| c.ttl = Duration::from_secs(DAY))),
        ("every tool of the entry", Box::new(|c| c.tools = c.connector.tools.clone())),
        ("classification at the ceiling", Box::new(|c| c.classification = Classification::Confidential)),
    ];
    for (name, mutate) in cases {
        let mut case = BeginCase::new();
        mutate(&mut case);
        assert_eq!(ceilings.check_begin(&case.request()), Ok(()), "{name}");
    }
}

#[test]
fn delegate_refusals() {
    let cases: Vec<(&str, Mutation<DelegateCase>, Deny)> = vec![
        ("parent ended", Box::new(|c| c.parent.ended_at = Some(NOW - 5)), Deny::TaskEnded),
        ("parent expired", Box::new(|c| c.now = c.parent.expires_at + 1), Deny::TaskExpired),
        (
            "an ancestor of the parent ended",
            Box::new(|c| {
                let (parent, mut ancestors) = chain(GITHUB, 1);
                ancestors[0].ended_at = Some(NOW - 1);
                c.parent = parent;
                c.ancestors = ancestors;
            }),
            Deny::AncestorEnded(chain(GITHUB, 1).1[0].id),
        ),
        (
            "caller does not hold the parent",
            Box::new(|c| {
                let mut from = entry("spiffe://example.org/connector/slack");
                from.delegate_to = c.from.delegate_to.clone();
                c.from = from;
            }),
            Deny::WrongConnector { task: id(GITHUB), caller: id("spiffe://example.org/connector/slack") },
        ),
        ("session revoked", Box::new(|c| c.session_revoked = true), Deny::SessionRevoked),
        (
            "open risk on the connector",
            Box::new(|c| c.risks.connector = risk(RiskLevel::Low)),
            Deny::OpenRisk { subject: RiskSubjectKind::Connector, level: RiskLevel::Low },
        ),
        ("empty delegate_to", Box::new(|c| c.from.delegate_to.clear()), Deny::DelegateNotAllowed(id(JIRA))),
        (
            "delegate_to names someone else",
            Box::new(|c| {
                c.from.delegate_to = vec![DelegatePattern::parse("spiffe://example.org/connector/slack").unwrap()]
            }),
            Deny::DelegateNotAllowed(id(JIRA)),
        ),
        (
            "prefix does not match a longer segment",
            Box::new(|c| {
                c.from.delegate_to = vec![DelegatePattern::parse("spiffe://example.org/connector/*").unwrap()];
                c.to = entry("spiffe://example.org/connectors-evil/x");
            }),
            Deny::DelegateNotAllowed(id("spiffe://example.org/connectors-evil/x")),
        ),
        (
            "prefix does not match a name that merely starts with it",
            Box::new(|c| {
                c.from.delegate_to = vec![DelegatePattern::parse("spiffe://example.org/connector/ji/*").unwrap()];
            }),
            Deny::DelegateNotAllowed(id(JIRA)),
        ),
        (
            "prefix does not match the prefix itself",
            Box::new(|c| {
                c.from.delegate_to = vec![DelegatePattern::parse("spiffe://example.org/connector/jira/*").unwrap()];
            }),
            Deny::DelegateNotAllowed(id(JIRA)),
        ),
        (
            "depth 5 (parent at depth 4)",
            Box::new(|c| {
                let (parent, ancestors) = chain(GITHUB, 4);
                c.parent = parent;
                c.ancestors = ancestors;
            }),
            Deny::DepthExceeded { depth: 5 },
        ),
        ("no tools", Box::new(|c| c.tools.clear()), Deny::NoTools),
        (
            "child tool outside the parent's",
            Box::new(|c| {
                c.parent.tools = tools(&["github.search"]);
                c.tools = tools(&["github.search", "github.create_issue"]);
            }),
            Deny::ToolOutsideTask(tool("github.create_issue")),
        ),
        (
            "child tool outside the delegate's entry",
            Box::new(|c| c.to.tools = tools(&["jira.search"])),
            Deny::ToolOutsideEntry(tool("github.search")),
        ),
        ("no audiences", Box::new(|c| c.audiences.clear()), Deny::NoAudiences),
        (
            "audience outside the parent's",
            Box::new(|c| {
                c.to.audiences.push(aud("api.jira.com"));
                c.audiences = vec![aud("api.jira.com")];
            }),
            Deny::AudienceNotInTask(aud("api.jira.com")),
        ),
        (
            "audience outside the delegate's entry",
            Box::new(|c| c.to.audiences = vec![aud("api.jira.com")]),
            Deny::AudienceNotInEntry(aud("api.github.com")),
        ),
        (
            "parent's classification above the delegate's ceiling",
            Box::new(|c| c.to.max_classification = Classification::Public),
            Deny::ClassificationAboveCeiling { requested: Classification::Internal, ceiling: Classification::Public },
        ),
        (
            "child outlives the parent",
            Box::new(|c| c.ttl = Duration::from_secs(c.parent.expires_at - NOW + 1)),
            Deny::TtlTooLong,
        ),
        (
            "a sub-second past the parent rounds up",
            Box::new(|c| c.ttl = Duration::from_secs(c.parent.expires_at - NOW) + Duration::from_millis(1)),
            Deny::TtlTooLong,
        ),
        (
            "ttl above 24h even under a long parent",
            Box::new(|c| {
                c.parent.expires_at = NOW + 2 * DAY;
                c.ttl = Duration::from_secs(DAY + 1);
            }),
            Deny::TtlTooLong,
        ),
    ];
    let ceilings = Ceilings::default();
    assert_eq!(ceilings.check_delegate(&DelegateCase::new().request()), Ok(()));
    for (name, mutate, want) in cases {
        let mut case = DelegateCase::new();
        mutate(&mut case);
        assert_eq!(ceilings.check_delegate(&case.request()), Err(want), "{name}");
    }
}

#[test]
fn delegate_allows() {
    let ceilings = Ceilings::default();
    let cases: Vec<(&str, Mutation<DelegateCase>)> = vec![
        (
            "prefix pattern, one segment below",
            Box::new(|c| {
                c.from.delegate_to = vec![DelegatePattern::parse("spiffe://example.org/connector/*").unwrap()]
            }),
        ),
        (
            "prefix pattern, several segments below",
            Box::new(|c| {
                c.from.delegate_to = vec![DelegatePattern::parse("spiffe://example.org/connector/*").unwrap()];
                c.to = entry("spiffe://example.org/connector/jira/eu");
            }),
        ),
        (
            "depth 4 (parent at depth 3)",
            Box::new(|c| {
                let (parent, ancestors) = chain(GITHUB, 3);
                c.parent = parent;
                c.ancestors = ancestors;
            }),
        ),
        ("child ends with the parent", Box::new(|c| c.ttl = Duration::from_secs(c.parent.expires_at - NOW))),
        ("classification at the delegate's ceiling", Box::new(|c| c.to.max_classification = Classification::Internal)),
    ];
    for (name, mutate) in cases {
        let mut case = DelegateCase::new();
        mutate(&mut case);
        assert_eq!(ceilings.check_delegate(&case.request()), Ok(()), "{name}");
    }
}

#[test]
fn every_reason_reads_as_one_lower_case_line() {
    let reasons = [
        Deny::ToolOutsideTask(tool("github.search")),
        Deny::NoTools,
        Deny::WrongConnector { task: id(GITHUB), caller: id(JIRA) },
        Deny::OpenRisk { subject: RiskSubjectKind::Session, level: RiskLevel::High },
        Deny::DepthExceeded { depth: 5 },
        Deny::PolicyForbids { policies: vec![] },
        Deny::PolicyForbids { policies: vec!["a".into(), "b".into()] },
        Deny::PolicyError("boom".into()),
    ];
    for r in &reasons {
        let text = r.to_string();
        assert!(!text.contains('\n') && !text.ends_with('.'), "{text}");
        assert!(text.chars().next().unwrap().is_lowercase() || text.starts_with("spiffe"), "{text}");
    }
    assert_eq!(reasons[3].to_string(), "open high risk on the session");
    assert_eq!(reasons[4].to_string(), "delegation depth 5 exceeds the limit of 4");
    assert_eq!(reasons[5].to_string(), "no policy permits the request (default deny)");
    assert_eq!(reasons[6].to_string(), "forbidden by policy a, b");
}
