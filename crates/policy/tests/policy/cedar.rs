//! The policy engine: loading, ids, the context policies see, fail-closed evaluation.

use std::fs;

use lanyard_core::{Action, Classification, TaskId};
use lanyard_policy::{Ceilings, DEFAULT_PERMIT_ID, Deny, PolicyEngine, PolicyError, PolicyInput, RiskLevel, decide};

use crate::support::*;

/// Evaluates `engine` for github reading `github.search` as alice at NOW, after `tweak`.
fn eval_with(engine: &PolicyEngine, tweak: impl FnOnce(&mut Owned)) -> lanyard_policy::Decision {
    let mut o = Owned::new();
    tweak(&mut o);
    engine.evaluate(&o.input())
}

pub(crate) struct Owned {
    pub(crate) connector: lanyard_core::SpiffeId,
    pub(crate) tool: lanyard_core::Tool,
    pub(crate) action: Action,
    pub(crate) user: lanyard_core::User,
    pub(crate) audience: lanyard_core::Audience,
    pub(crate) classification: Classification,
    pub(crate) session: lanyard_core::SessionId,
    pub(crate) agent: lanyard_core::SpiffeId,
    pub(crate) task: TaskId,
    pub(crate) chain_depth: usize,
    pub(crate) risk: Option<RiskLevel>,
    pub(crate) now: u64,
}

impl Owned {
    pub(crate) fn new() -> Self {
        Self {
            connector: id(GITHUB),
            tool: tool("github.search"),
            action: Action::Read,
            user: user("alice"),
            audience: aud("api.github.com"),
            classification: Classification::Internal,
            session: "s1".parse().unwrap(),
            agent: id(AGENT),
            task: TaskId::from_bytes([0xab; 16]),
            chain_depth: 0,
            risk: None,
            now: NOW,
        }
    }

    pub(crate) fn input(&self) -> PolicyInput<'_> {
        PolicyInput {
            connector: &self.connector,
            tool: &self.tool,
            action: self.action,
            user: &self.user,
            audience: &self.audience,
            classification: self.classification,
            session: &self.session,
            task: self.task,
            agent: &self.agent,
            chain_depth: self.chain_depth,
            risk: self.risk,
            now_unix: self.now,
        }
    }
}

#[test]
fn engine_is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<PolicyEngine>();
}

#[test]
fn permit_all_allows_and_names_itself() {
    let engine = PolicyEngine::permit_all();
    assert_eq!(engine.policy_ids(), [DEFAULT_PERMIT_ID]);
    assert_eq!((engine.len(), engine.is_empty()), (1, false));
    for action in Action::ALL {
        let d = eval_with(&engine, |o| {
            o.action = action;
            o.classification = Classification::Restricted;
            o.now = u64::MAX;
        });
        assert!(d.allowed, "{action}");
        assert_eq!(d.policies, [DEFAULT_PERMIT_ID]);
    }
}

/// A policy that permits exactly one value of every context field, and the
/// inputs that have them.
fn all_fields() -> (PolicyEngine, impl Fn(&mut Owned)) {
    let src = format!(
        r#"
        @id("all-fields")
        permit (
          principal == Lanyard::Connector::"{GITHUB}",
          action == Lanyard::Action::"execute",
          resource == Lanyard::Tool::"github.search"
        ) when {{
          context.user.sub == "alice" && context.user.iss == "https://idp.example" &&
          context.audience == "api.github.com" &&
          context.classification == "confidential" && context.classification_level == 2 &&
          context.session == "s1" &&
          context.task == "abababababababababababababababab" &&
          context.agent == "{AGENT}" &&
          context.chain_depth == 3 &&
          context.risk == "medium" && context.risk_level == 2 &&
          context.time.unix == 1704108645 && context.time.hour == 11 &&
          context.time.minute == 30 && context.time.weekday == 0
        }};
        "#
    );
    let engine = PolicyEngine::from_source("fields", &src).unwrap();
    let set = |o: &mut Owned| {
        o.action = Action::Execute;
        o.classification = Classification::Confidential;
        o.chain_depth = 3;
        o.risk = Some(RiskLevel::Medium);
        o.now = 1_704_108_645; // Monday 2024-01-01 11:30:45 UTC
    };
    (engine, set)
}

#[test]
fn every_context_field_reaches_cedar() {
    let (engine, set) = all_fields();
    let d = eval_with(&engine, set);
    assert_eq!((d.allowed, d.policies, d.errors), (true, vec!["all-fields".to_owned()], vec![]));
    // And no risk reads as "none" / 0.
    let none = PolicyEngine::from_source(
        "none",
        r#"permit (principal, action, resource) when { context.risk == "none" && context.risk_level == 0 };"#,
    )
    .unwrap();
    assert!(eval_with(&none, |_| {}).allowed);
    assert!(!eval_with(&none, |o| o.risk = Some(RiskLevel::Low)).allowed);
}

/// Contexts are reused for the same inputs within a second: each request
/// below comes right after an allowed one, in the same second, and differs
/// in one field only; every one must be decided on its own context.
#[test]
fn a_context_is_reused_only_for_exactly_the_same_inputs() {
    let (engine, set) = all_fields();
    type Change = (&'static str, fn(&mut Owned));
    let changes: [Change; 10] = [
        ("user sub", |o| o.user = user("mallory")),
        ("user iss", |o| o.user.iss = "https://other.example".parse().unwrap()),
        ("audience", |o| o.audience = aud("api.slack.com")),
        ("classification", |o| o.classification = Classification::Restricted),
        ("session", |o| o.session = "s2".parse().unwrap()),
        ("task", |o| o.task = TaskId::from_bytes([0xcd; 16])),
        ("agent", |o| o.agent = id("spiffe://example.org/agent/other")),
        ("chain depth", |o| o.chain_depth = 2),
        ("risk", |o| o.risk = Some(RiskLevel::High)),
        ("time", |o| o.now += 60),
    ];
    for (what, change) in changes {
        assert!(eval_with(&engine, &set).allowed);
        let d = eval_with(&engine, |o| {
            set(o);
            change(o);
        });
        assert!(!d.allowed, "a changed {what} was decided on the earlier context");
        assert!(eval_with(&engine, &set).allowed, "{what}");
    }
}

#[test]
fn generated_ids_follow_file_order_and_at_id_wins() {
    let src = r#"
        permit (principal, action == Lanyard::Action::"read", resource);
        @id("named")
        forbid (principal, action == Lanyard::Action::"delete", resource);
        permit (principal, action == Lanyard::Action::"write", resource);
    "#;
    let engine = PolicyEngine::from_source("mixed", src).unwrap();
    assert_eq!(engine.policy_ids(), ["mixed.0", "named", "mixed.2"]);
    assert_eq!(eval_with(&engine, |_| {}).policies, ["mixed.0"]);
    assert_eq!(eval_with(&engine, |o| o.action = Action::Write).policies, ["mixed.2"]);
    assert_eq!(eval_with(&engine, |o| o.action = Action::Delete).policies, ["named"]);
}

#[test]
fn default_deny_without_a_permit() {
    let engine = PolicyEngine::from_source(
        "forbids-only",
        r#"forbid (principal, action, resource) when { context.user.sub == "mallory" };"#,
    )
    .unwrap();
    let d = eval_with(&engine, |_| {});
    assert_eq!((d.allowed, d.policies.len(), d.errors.len()), (false, 0, 0));
    let case = TokenCase::new();
    assert_eq!(decide(&Ceilings::default(), &engine, &case.request()), Err(Deny::PolicyForbids { policies: vec![] }));
}

#[test]
fn an_evaluation_error_denies() {
    // Passes strict validation, overflows at run time for any unix time ≥ 2. Cedar alone would skip the
    // erroring forbid and allow on the permit; Lanyard must not.
    let engine = PolicyEngine::from_source(
        "overflow",
        r#"
        @id("base") permit (principal, action, resource);
        @id("overflow")
        forbid (principal, action, resource) when { context.time.unix * 9223372036854775807 > 0 };
        "#,
    )
    .unwrap();
    let d = eval_with(&engine, |_| {});
    assert!(!d.allowed);
    assert_eq!(d.policies, ["overflow"]);
    assert_eq!(d.errors.len(), 1);
    assert!(d.errors[0].contains("overflow"), "{:?}", d.errors);
    let case = TokenCase::new();
    match decide(&Ceilings::default(), &engine, &case.request()) {
        Err(Deny::PolicyError(reason)) => assert!(reason.contains("`overflow`"), "{reason}"),
        other => panic!("expected a policy error, got {other:?}"),
    }
    // At unix 1 the product fits and the forbid applies; at 0 it does not, and the permit stands.
    assert_eq!(eval_with(&engine, |o| o.now = 1).policies, ["overflow"]);
    assert!(eval_with(&engine, |o| o.now = 0).allowed);
}

#[test]
fn decide_reports_determining_policies_for_every_tool() {
    let engine = PolicyEngine::from_source(
        "per-tool",
        r#"
        @id("search") permit (principal, action, resource == Lanyard::Tool::"github.search");
        @id("issues") permit (principal, action, resource == Lanyard::Tool::"github.create_issue");
        @id("any") permit (principal, action, resource);
        "#,
    )
    .unwrap();
    let mut case = TokenCase::new();
    case.tools = tools(&["github.search", "github.create_issue"]);
    let d = decide(&Ceilings::default(), &engine, &case.request()).unwrap();
    assert!(d.allowed && d.errors.is_empty());
    assert_eq!(d.policies, ["any", "search", "issues"]);

    // One forbidden tool refuses the whole request.
    let engine = PolicyEngine::from_source(
        "one-forbidden",
        r#"
        permit (principal, action, resource);
        @id("no-issues") forbid (principal, action, resource == Lanyard::Tool::"github.create_issue");
        "#,
    )
    .unwrap();
    assert_eq!(
        decide(&Ceilings::default(), &engine, &case.request()),
        Err(Deny::PolicyForbids { policies: vec!["no-issues".into()] })
    );
}

#[test]
fn ceilings_run_before_cedar() {
    let mut case = TokenCase::new();
    case.tools = tools(&["shell.exec"]);
    let d = decide(&Ceilings::default(), &PolicyEngine::permit_all(), &case.request());
    assert_eq!(d, Err(Deny::ToolOutsideTask(tool("shell.exec"))));
}

#[test]
fn load_dir_refuses_an_empty_dir_and_one_without_cedar_files() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(PolicyEngine::load_dir(dir.path()).unwrap_err(), PolicyError::NoPolicies(dir.path().to_owned()));
    fs::write(dir.path().join("README.md"), "permit (principal, action, resource);").unwrap();
    fs::write(dir.path().join("comments.cedar"), "// nothing here yet\n").unwrap();
    assert_eq!(PolicyEngine::load_dir(dir.path()).unwrap_err(), PolicyError::NoPolicies(dir.path().to_owned()));
    let missing = dir.path().join("missing");
    assert!(matches!(PolicyEngine::load_dir(&missing), Err(PolicyError::Io { path, .. }) if path == missing));
}

#[test]
fn load_dir_names_the_file_and_line_of_a_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("00-ok.cedar"), "permit (principal, action, resource);\n").unwrap();
    fs::write(
        dir.path().join("10-bad.cedar"),
        "// a comment\n\npermit (principal, action, resource)\nwhen { context. };\n",
    )
    .unwrap();
    let err = PolicyEngine::load_dir(dir.path()).unwrap_err();
    let PolicyError::Parse { file, reason } = &err else { panic!("{err:?}") };
    assert!(file.ends_with("10-bad.cedar"), "{file}");
    assert!(reason.starts_with("line 4,"), "{reason}");
    assert!(err.to_string().contains("10-bad.cedar"), "{err}");
}

#[test]
fn load_dir_names_the_policy_that_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("00-ok.cedar"), "permit (principal, action, resource);\n").unwrap();
    fs::write(
        dir.path().join("10-typo.cedar"),
        "permit (principal, action, resource);\n@id(\"department-check\")\nforbid (principal, action, resource) \
         when { context.user.department == \"sales\" };\n",
    )
    .unwrap();
    let err = PolicyEngine::load_dir(dir.path()).unwrap_err();
    let PolicyError::Validation { reasons } = &err else { panic!("{err:?}") };
    assert_eq!(reasons.len(), 1, "one line, not one per action: {reasons:?}");
    assert!(reasons[0].contains("policy `department-check`"), "{}", reasons[0]);
    assert!(reasons[0].contains("user.department"), "{}", reasons[0]);
    assert!(err.to_string().contains("department-check"), "{err}");

    // Unnamed policies are named <stem>.<n>; an unknown entity type and action are refused too.
    for (src, want) in [
        ("permit (principal == Lanyard::User::\"alice\", action, resource);", "10-typo.0"),
        ("permit (principal, action == Lanyard::Action::\"admin\", resource);", "10-typo.0"),
        ("permit (principal, action, resource) when { context.chain_depth == \"1\" };", "10-typo.0"),
    ] {
        fs::write(dir.path().join("10-typo.cedar"), src).unwrap();
        let err = PolicyEngine::load_dir(dir.path()).unwrap_err();
        let PolicyError::Validation { reasons } = &err else { panic!("{src}: {err:?}") };
        assert!(reasons[0].contains(&format!("policy `{want}`")), "{src}: {reasons:?}");
    }
}

#[test]
fn load_dir_refuses_duplicate_ids() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.cedar"), "@id(\"same\")\npermit (principal, action, resource);\n").unwrap();
    fs::write(dir.path().join("b.cedar"), "@id(\"same\")\nforbid (principal, action, resource);\n").unwrap();
    assert_eq!(PolicyEngine::load_dir(dir.path()).unwrap_err(), PolicyError::Duplicate("same".into()));
    // A chosen id may not take a generated one either.
    fs::write(dir.path().join("b.cedar"), "@id(\"a.0\")\nforbid (principal, action, resource);\n").unwrap();
    fs::write(dir.path().join("a.cedar"), "permit (principal, action, resource);\n").unwrap();
    assert_eq!(PolicyEngine::load_dir(dir.path()).unwrap_err(), PolicyError::Duplicate("a.0".into()));
}

#[test]
fn templates_and_empty_ids_are_refused() {
    let err = PolicyEngine::from_source("t", "permit (principal == ?principal, action, resource);").unwrap_err();
    assert!(matches!(err, PolicyError::Parse { ref reason, .. } if reason.contains("templates")), "{err:?}");
    let err = PolicyEngine::from_source("t", "@id(\"\") permit (principal, action, resource);").unwrap_err();
    assert!(matches!(err, PolicyError::Parse { ref reason, .. } if reason.contains("empty @id")), "{err:?}");
}

#[test]
fn load_dir_reads_only_cedar_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("20-b.cedar"), "forbid (principal, action, resource) when { false };\n").unwrap();
    fs::write(dir.path().join("10-a.cedar"), "permit (principal, action, resource);\n").unwrap();
    fs::write(dir.path().join("notes.txt"), "not cedar").unwrap();
    fs::create_dir(dir.path().join("sub.cedar")).unwrap();
    let engine = PolicyEngine::load_dir(dir.path()).unwrap();
    assert_eq!(engine.policy_ids(), ["10-a.0", "20-b.0"]);
}

#[test]
#[ignore = "timing; run with --release -- --ignored --nocapture"]
fn evaluate_cost() {
    let engine = PolicyEngine::load_dir(&examples_dir()).unwrap();
    let owned = Owned::new();
    let input = owned.input();
    for _ in 0..1_000 {
        assert!(engine.evaluate(&input).allowed);
    }
    let n = 10_000u32;
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(engine.evaluate(std::hint::black_box(&input)));
    }
    let elapsed = start.elapsed();
    println!("evaluate (examples/policies, 3 policies): {n} calls in {elapsed:?}, {:?} per call", elapsed / n);
    // Every call for another task: a context is built each time (an engine
    // of its own, so the others' contexts are not crowded out).
    let fresh = PolicyEngine::load_dir(&examples_dir()).unwrap();
    let mut o = Owned::new();
    let start = std::time::Instant::now();
    for k in 0..n {
        o.task = TaskId::from_bytes(u128::from(k).to_be_bytes());
        std::hint::black_box(fresh.evaluate(std::hint::black_box(&o.input())));
    }
    let elapsed = start.elapsed();
    println!(
        "evaluate (examples/policies), a new task each call: {n} calls in {elapsed:?}, {:?} per call",
        elapsed / n
    );
    let permit_all = PolicyEngine::permit_all();
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(permit_all.evaluate(std::hint::black_box(&input)));
    }
    let elapsed = start.elapsed();
    println!("evaluate (permit_all, 1 policy): {n} calls in {elapsed:?}, {:?} per call", elapsed / n);
    let case = TokenCase::new();
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(decide(&Ceilings::default(), &engine, std::hint::black_box(&case.request())).unwrap());
    }
    let elapsed = start.elapsed();
    println!("decide, one tool: {n} calls in {elapsed:?}, {:?} per call", elapsed / n);
}
