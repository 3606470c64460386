//! The Cedar half of a decision: a policy set validated against [`SCHEMA`],
//! asked once per requested tool.
//!
//! Cedar skips a policy that errors and decides on the rest, so a forbid that
//! fails to evaluate would quietly stop forbidding. Lanyard fails closed
//! instead: any evaluation error is a deny.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Entities, EntityId, EntityTypeName, EntityUid, ParseErrors, Policy,
    PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use lanyard_core::{Action, Audience, Classification, SessionId, SpiffeId, TaskId, Tool, User};
use serde::{Deserialize, Serialize};

use crate::context_memo::ContextMemo;
use crate::error::PolicyError;
use crate::risk::RiskLevel;
use crate::time::UtcTime;

/// The Cedar schema (cedarschema syntax) every policy set is validated against.
pub const SCHEMA: &str = include_str!("schema.cedarschema");

/// Id of the one policy in [`PolicyEngine::permit_all`].
pub const DEFAULT_PERMIT_ID: &str = "lanyard-default-permit";

/// Inputs Cedar sees for one tool.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInput<'a> {
    /// The principal: the connector's SPIFFE ID.
    pub connector: &'a SpiffeId,
    /// The resource: one requested tool.
    pub tool: &'a Tool,
    /// The action: the task's action.
    pub action: Action,
    /// The end user.
    pub user: &'a User,
    /// The token's audience.
    pub audience: &'a Audience,
    /// The task's classification.
    pub classification: Classification,
    /// The user's session.
    pub session: &'a SessionId,
    /// The task.
    pub task: TaskId,
    /// The node agent that attested the connector.
    pub agent: &'a SpiffeId,
    /// How many delegations led to the task (0 for a root task).
    pub chain_depth: usize,
    /// The highest open risk on any subject (below the ceilings' threshold, or the ceilings refuse first).
    pub risk: Option<RiskLevel>,
    /// Unix seconds now; policies see it as `context.time`.
    pub now_unix: u64,
}

/// What Cedar decided for one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the request is permitted (never true when `errors` is non-empty).
    pub allowed: bool,
    /// Determining policy ids, sorted: the permits that allowed, or the forbids that denied (empty for a
    /// default deny). When evaluation failed, the policies that failed.
    pub policies: Vec<String>,
    /// Evaluation errors, each naming its policy.
    pub errors: Vec<String>,
}

/// A validated policy set. Send + Sync.
#[derive(Clone)]
pub struct PolicyEngine {
    policies: PolicySet,
    /// Policy ids in load order: files sorted by name, policies in file order.
    ids: Vec<String>,
    model: &'static Model,
    authorizer: Authorizer,
    /// Contexts built this second; shared by clones.
    contexts: Arc<ContextMemo<Context>>,
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine").field("policies", &self.ids).finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// One policy that permits everything, id [`DEFAULT_PERMIT_ID`]: used when no `--policy` dir is
    /// configured, so the ceilings alone decide.
    pub fn permit_all() -> Self {
        let src = format!("@id(\"{DEFAULT_PERMIT_ID}\")\npermit (principal, action, resource);\n");
        #[expect(clippy::expect_used, reason = "a constant policy over the built-in schema; tests build it")]
        Self::from_source("lanyard-default", &src).expect("the default permit policy is valid")
    }

    /// A policy set from one source text, as if it were the file `<name>.cedar`: ids are `<name>.<n>`
    /// (0-based position in the text) unless a policy carries `@id("…")`.
    pub fn from_source(name: &str, src: &str) -> Result<Self, PolicyError> {
        let mut builder = Builder::new()?;
        builder.add_file(name, name, src)?;
        builder.finish(Path::new(name))
    }

    /// Loads every `*.cedar` file in `dir` (not recursive), in file-name order. Ids are
    /// `<file stem>.<n>` (0-based position in the file) unless a policy carries `@id("…")`. Refuses a
    /// directory without policies, a file that does not parse (naming file and line), a set that does
    /// not validate in strict mode (naming the policy and the reason), and duplicate ids.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let io = |path: &Path, e: std::io::Error| PolicyError::Io { path: path.to_owned(), reason: e.to_string() };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let path = entry.map_err(|e| io(dir, e))?.path();
            if path.extension().is_some_and(|ext| ext == "cedar") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut builder = Builder::new()?;
        for path in &files {
            let src = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            builder.add_file(&path.display().to_string(), &stem, &src)?;
        }
        builder.finish(dir)
    }

    /// Asks Cedar about one tool. Never panics: a request that cannot be built, or any policy that
    /// fails to evaluate, gives `allowed = false` with `errors` filled.
    pub fn evaluate(&self, input: &PolicyInput<'_>) -> Decision {
        let request = match self.model.request(input, &self.contexts, None) {
            Ok(request) => request,
            Err(reason) => {
                return Decision { allowed: false, policies: Vec::new(), errors: vec![reason] };
            }
        };
        let response = self.authorizer.is_authorized(&request, &self.policies, &self.model.entities);
        let diagnostics = response.diagnostics();
        let mut failed = Vec::new();
        let mut errors = Vec::new();
        for error in diagnostics.errors() {
            match error {
                AuthorizationError::PolicyEvaluationError(e) => failed.push(e.policy_id().to_string()),
            }
            errors.push(error.to_string());
        }
        if !errors.is_empty() {
            failed.sort();
            failed.dedup();
            errors.sort();
            return Decision { allowed: false, policies: failed, errors };
        }
        let mut policies: Vec<String> = diagnostics.reason().map(ToString::to_string).collect();
        policies.sort();
        Decision { allowed: response.decision() == cedar_policy::Decision::Allow, policies, errors }
    }

    /// Policy ids in load order.
    pub fn policy_ids(&self) -> Vec<String> {
        self.ids.clone()
    }

    /// How many policies the set holds.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the set holds no policy (never true for a loaded engine).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The schema and what is derived from it once per process.
struct Model {
    schema: Schema,
    /// The action entities; policies see no other entity data.
    entities: Entities,
    connector: EntityTypeName,
    tool: EntityTypeName,
    /// Each action's entity.
    actions: Vec<(Action, EntityUid)>,
}

impl Model {
    fn get() -> Result<&'static Self, PolicyError> {
        static MODEL: OnceLock<Result<Model, String>> = OnceLock::new();
        MODEL.get_or_init(Self::build).as_ref().map_err(|e| PolicyError::Schema(e.clone()))
    }

    fn build() -> Result<Self, String> {
        let (schema, _warnings) = Schema::from_cedarschema_str(SCHEMA).map_err(|e| e.to_string())?;
        let entities = schema.action_entities().map_err(|e| e.to_string())?;
        let name = |s: &str| EntityTypeName::from_str(s).map_err(|e| e.to_string());
        let action_type = name("Lanyard::Action")?;
        let actions = Action::ALL
            .iter()
            .map(|a| (*a, EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(a.as_str()))))
            .collect();
        Ok(Self { connector: name("Lanyard::Connector")?, tool: name("Lanyard::Tool")?, schema, entities, actions })
    }

    /// The Cedar request for `i`, its context from `contexts` when one was
    /// built for the same inputs this second. Production passes no schema:
    /// checking the context against it would double the cost of a decision,
    /// and a test checks every shape of request this builds against [`SCHEMA`].
    fn request(
        &self,
        i: &PolicyInput<'_>,
        contexts: &ContextMemo<Context>,
        schema: Option<&Schema>,
    ) -> Result<Request, String> {
        let principal = EntityUid::from_type_name_and_id(self.connector.clone(), EntityId::new(i.connector.as_str()));
        let resource = EntityUid::from_type_name_and_id(self.tool.clone(), EntityId::new(i.tool.as_str()));
        let action = self.actions.iter().find(|(a, _)| *a == i.action).map(|(_, uid)| uid.clone());
        let action = action.ok_or_else(|| format!("action {} is not in the schema", i.action))?;
        let context = contexts.get_or_build(i, || Context::from_pairs(context_pairs(i)?).map_err(|e| e.to_string()))?;
        Request::new(principal, action, resource, context, schema).map_err(|e| e.to_string())
    }
}

/// `context` exactly as SCHEMA's `Lanyard::Context` describes it.
fn context_pairs(i: &PolicyInput<'_>) -> Result<Vec<(String, RestrictedExpression)>, String> {
    let string = |s: &str| RestrictedExpression::new_string(s.to_owned());
    let long = RestrictedExpression::new_long;
    let record = |fields: Vec<(&str, RestrictedExpression)>| {
        RestrictedExpression::new_record(fields.into_iter().map(|(k, v)| (k.to_owned(), v))).map_err(|e| e.to_string())
    };
    let t = UtcTime::from_unix(i.now_unix);
    let pairs = vec![
        ("user", record(vec![("sub", string(i.user.sub.as_str())), ("iss", string(i.user.iss.as_str()))])?),
        ("audience", string(i.audience.as_str())),
        ("classification", string(i.classification.as_str())),
        ("classification_level", long(i.classification.level())),
        ("session", string(i.session.as_str())),
        ("task", string(&i.task.to_string())),
        ("agent", string(i.agent.as_str())),
        ("chain_depth", long(i64::try_from(i.chain_depth).unwrap_or(i64::MAX))),
        ("risk", string(i.risk.map_or("none", RiskLevel::as_str))),
        ("risk_level", long(i.risk.map_or(0, RiskLevel::level))),
        (
            "time",
            record(vec![
                ("unix", long(t.unix)),
                ("hour", long(t.hour)),
                ("minute", long(t.minute)),
                ("weekday", long(t.weekday)),
            ])?,
        ),
    ];
    Ok(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// Collects policies file by file, naming them, then validates the whole set.
struct Builder {
    set: PolicySet,
    ids: Vec<String>,
    seen: HashSet<String>,
    model: &'static Model,
}

impl Builder {
    fn new() -> Result<Self, PolicyError> {
        Ok(Self { set: PolicySet::new(), ids: Vec::new(), seen: HashSet::new(), model: Model::get()? })
    }

    fn add_file(&mut self, file: &str, stem: &str, src: &str) -> Result<(), PolicyError> {
        let parse = |reason: String| PolicyError::Parse { file: file.to_owned(), reason };
        let parsed = PolicySet::from_str(src).map_err(|e| parse(describe_parse_errors(src, &e)))?;
        if parsed.templates().next().is_some() {
            return Err(parse("templates (policies with ?principal or ?resource slots) are not supported".into()));
        }
        let mut policies: Vec<&Policy> = parsed.policies().collect();
        // INVARIANT: Cedar names the policies of one text policy0, policy1, … in source order.
        policies.sort_by_key(|p| p.id().to_string().strip_prefix("policy").and_then(|n| n.parse::<usize>().ok()));
        for (n, policy) in policies.into_iter().enumerate() {
            let id = match policy.annotation("id") {
                Some("") => return Err(parse(format!("policy {stem}.{n} has an empty @id"))),
                Some(id) => id.to_owned(),
                None => format!("{stem}.{n}"),
            };
            if !self.seen.insert(id.clone()) {
                return Err(PolicyError::Duplicate(id));
            }
            self.set.add(policy.new_id(PolicyId::new(&id))).map_err(|_| PolicyError::Duplicate(id.clone()))?;
            self.ids.push(id);
        }
        Ok(())
    }

    fn finish(self, origin: &Path) -> Result<PolicyEngine, PolicyError> {
        if self.ids.is_empty() {
            return Err(PolicyError::NoPolicies(origin.to_owned()));
        }
        let result = Validator::new(self.model.schema.clone()).validate(&self.set, ValidationMode::Strict);
        if !result.validation_passed() {
            let mut seen = HashSet::new();
            let reasons =
                result.validation_errors().map(describe_validation_error).filter(|r| seen.insert(r.clone())).collect();
            return Err(PolicyError::Validation { reasons });
        }
        Ok(PolicyEngine {
            policies: self.set,
            ids: self.ids,
            model: self.model,
            authorizer: Authorizer::new(),
            contexts: Arc::new(ContextMemo::new()),
        })
    }
}

/// Every parse error with its line and column (1-based) in `src`.
fn describe_parse_errors(src: &str, errors: &ParseErrors) -> String {
    use miette::Diagnostic;
    let describe = |e: &cedar_policy::ParseError| {
        let offset = e.labels().and_then(|mut labels| labels.next()).map(|label| label.offset());
        match offset {
            Some(offset) => {
                let before = src.get(..offset).unwrap_or(src);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: {e}")
            }
            None => e.to_string(),
        }
    };
    errors.iter().map(describe).collect::<Vec<_>>().join("; ")
}

/// One line naming the policy. Every action shares one context type, so an
/// error repeats once per action; the action is cut out so the lines dedup.
fn describe_validation_error(e: &cedar_policy::ValidationError) -> String {
    let mut text = e.to_string();
    for action in Action::ALL {
        text = text.replace(&format!(" for Lanyard::Action::\"{action}\""), "");
    }
    let id = e.policy_id().to_string();
    if text.contains(&format!("`{id}`")) { text } else { format!("for policy `{id}`: {text}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanyard_core::UserField;

    #[test]
    fn schema_parses_and_every_request_conforms_to_it() {
        let model = Model::get().unwrap();
        let connector = SpiffeId::parse("spiffe://example.org/connector/github").unwrap();
        let agent = SpiffeId::parse("spiffe://example.org/agent/node1").unwrap();
        let user =
            User { iss: UserField::parse("https://idp.example").unwrap(), sub: UserField::parse("alice").unwrap() };
        let tool = Tool::parse("mcp:server/tool-1").unwrap();
        let audience = Audience::parse("https://api.example/v1").unwrap();
        let session = SessionId::parse("s1").unwrap();
        let risks = [None, Some(RiskLevel::Low), Some(RiskLevel::Medium), Some(RiskLevel::High)];
        for (n, action) in Action::ALL.into_iter().enumerate() {
            for classification in Classification::ALL {
                let input = PolicyInput {
                    connector: &connector,
                    tool: &tool,
                    action,
                    user: &user,
                    audience: &audience,
                    classification,
                    session: &session,
                    task: TaskId::from_bytes([n as u8; 16]),
                    agent: &agent,
                    chain_depth: [0, 4, usize::MAX][n % 3],
                    risk: risks[n],
                    now_unix: [0, 1_704_117_600, u64::MAX][n % 3],
                };
                let checked = model.request(&input, &ContextMemo::new(), Some(&model.schema));
                assert!(checked.is_ok(), "{action} {classification}: {checked:?}");
            }
        }
    }
}
