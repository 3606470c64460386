//! The shipped policies in examples/policies behave as their README says.

use lanyard_core::{Action, Classification};
use lanyard_policy::{Ceilings, Deny, PolicyEngine, decide};

use crate::cedar::Owned;
use crate::support::*;

const MONDAY_0300: u64 = 1_704_078_000;
const MONDAY_0800: u64 = 1_704_096_000;
const TUESDAY_1000: u64 = 1_704_189_600;
const FRIDAY_1759_59: u64 = 1_704_477_599;
const FRIDAY_1800: u64 = 1_704_477_600;
const SATURDAY_1200: u64 = 1_704_542_400;

fn examples() -> PolicyEngine {
    PolicyEngine::load_dir(&examples_dir()).unwrap()
}

#[test]
fn examples_load_with_their_ids() {
    assert_eq!(examples().policy_ids(), ["base-permit", "restricted-business-hours", "write-named-users"]);
}

#[test]
fn examples_decide_as_documented() {
    let engine = examples();
    type Tweak = fn(&mut Owned);
    // (name, tweak, allowed, determining policies)
    let cases: Vec<(&str, Tweak, bool, &[&str])> = vec![
        ("a normal read", |_| {}, true, &["base-permit"]),
        (
            "restricted at 03:00 on a Monday",
            |o| {
                o.classification = Classification::Restricted;
                o.now = MONDAY_0300;
            },
            false,
            &["restricted-business-hours"],
        ),
        (
            "restricted at noon on a Saturday",
            |o| {
                o.classification = Classification::Restricted;
                o.now = SATURDAY_1200;
            },
            false,
            &["restricted-business-hours"],
        ),
        (
            "restricted at 10:00 on a Tuesday",
            |o| {
                o.classification = Classification::Restricted;
                o.now = TUESDAY_1000;
            },
            true,
            &["base-permit"],
        ),
        (
            "restricted at 08:00 Monday (first allowed second)",
            |o| {
                o.classification = Classification::Restricted;
                o.now = MONDAY_0800;
            },
            true,
            &["base-permit"],
        ),
        (
            "restricted at 17:59:59 Friday",
            |o| {
                o.classification = Classification::Restricted;
                o.now = FRIDAY_1759_59;
            },
            true,
            &["base-permit"],
        ),
        (
            "restricted at 18:00 Friday",
            |o| {
                o.classification = Classification::Restricted;
                o.now = FRIDAY_1800;
            },
            false,
            &["restricted-business-hours"],
        ),
        (
            "confidential at night is fine",
            |o| {
                o.classification = Classification::Confidential;
                o.now = MONDAY_0300;
            },
            true,
            &["base-permit"],
        ),
        (
            "write for mallory",
            |o| {
                o.action = Action::Write;
                o.user = user("mallory");
            },
            false,
            &["write-named-users"],
        ),
        ("write for alice", |o| o.action = Action::Write, true, &["base-permit"]),
        (
            "delete for mallory",
            |o| {
                o.action = Action::Delete;
                o.user = user("mallory");
            },
            false,
            &["write-named-users"],
        ),
        (
            "write for alice of another issuer",
            |o| {
                o.action = Action::Write;
                o.user.iss = "https://evil.example".parse().unwrap();
            },
            false,
            &["write-named-users"],
        ),
        (
            "execute for mallory is not a write",
            |o| {
                o.action = Action::Execute;
                o.user = user("mallory");
            },
            true,
            &["base-permit"],
        ),
        (
            "restricted write for mallory at night: both forbids",
            |o| {
                o.action = Action::Write;
                o.user = user("mallory");
                o.classification = Classification::Restricted;
                o.now = MONDAY_0300;
            },
            false,
            &["restricted-business-hours", "write-named-users"],
        ),
    ];
    for (name, tweak, allowed, policies) in cases {
        let mut o = Owned::new();
        tweak(&mut o);
        let d = engine.evaluate(&o.input());
        assert_eq!(
            (d.allowed, d.policies.as_slice(), d.errors.len()),
            (allowed, policies.iter().map(|p| p.to_string()).collect::<Vec<_>>().as_slice(), 0),
            "{name}"
        );
    }
}

#[test]
fn examples_through_decide() {
    let engine = examples();
    let mut case = TokenCase::new();
    case.task.action = Action::Write;
    case.action = Action::Write;
    assert_eq!(decide(&Ceilings::default(), &engine, &case.request()).unwrap().policies, ["base-permit"]);
    case.task.user = user("mallory");
    assert_eq!(
        decide(&Ceilings::default(), &engine, &case.request()),
        Err(Deny::PolicyForbids { policies: vec!["write-named-users".into()] })
    );
}

#[test]
fn readme_snippets_validate() {
    let readme = std::fs::read_to_string(examples_dir().join("README.md")).unwrap();
    let snippets: Vec<&str> =
        readme.split("```cedar\n").skip(1).map(|rest| rest.split("```").next().unwrap()).collect();
    assert!(!snippets.is_empty());
    for (n, src) in snippets.into_iter().enumerate() {
        let engine = PolicyEngine::from_source(&format!("readme-{n}"), src);
        assert!(engine.is_ok(), "{src}: {engine:?}");
    }
}
