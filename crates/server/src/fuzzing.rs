//! The request conversions, with the properties the fuzz targets check
//! (`fuzz/fuzz_targets/requests.rs`). Built only with the `fuzzing` feature;
//! not an API.
//!
//! Each check takes a decoded request and returns `Ok` when the conversion
//! either refused it properly or accepted it consistently, and `Err` naming
//! the broken property otherwise.

use lanyard_ca::TrustBundle;
use lanyard_core::{Entry, EntryId, Ttl};
use lanyard_proto::{admin, common};

use crate::convert::{TtlDefaults, bundle_to_proto, entry_from_proto, entry_to_proto};
use crate::tasks::TaskSpec;

/// An entry request: an accepted entry comes back unchanged from the
/// message the server would store and send, and a refusal is
/// InvalidArgument. Returns the accepted entry and that message, for the
/// agent's parser to be compared against.
pub fn entry(p: common::Entry) -> Result<Option<(Entry, common::Entry)>, String> {
    let defaults = TtlDefaults { x509: Ttl::ONE_HOUR, jwt: Ttl::FIVE_MINUTES };
    let id = EntryId::parse("fuzz").map_err(|e| e.to_string())?;
    let entry = match entry_from_proto(p, id.clone(), defaults) {
        Ok(entry) => entry,
        Err(e) => return invalid_argument(e).map(|()| None),
    };
    let message = entry_to_proto(&entry);
    let again = entry_from_proto(message.clone(), id, defaults).map_err(|e| format!("re-parse: {e:?}"))?;
    if again != entry {
        return Err(format!("round trip changed the entry: {entry:?} -> {again:?}"));
    }
    Ok(Some((entry, message)))
}

/// A task specification: an accepted one re-parses to the same task from
/// its fields written back.
pub fn task_spec(p: &common::TaskSpec) -> Result<(), String> {
    let default_ttl = std::time::Duration::from_secs(600);
    let spec = match TaskSpec::parse(p, default_ttl) {
        Ok(spec) => spec,
        Err(e) => return invalid_argument(e),
    };
    let back = common::TaskSpec {
        connector: spec.connector.to_string(),
        user_sub: spec.user.sub.to_string(),
        user_iss: spec.user.iss.to_string(),
        session: spec.session.to_string(),
        tools: spec.tools.iter().map(ToString::to_string).collect(),
        audiences: spec.audiences.iter().map(ToString::to_string).collect(),
        classification: spec.classification.to_string(),
        action: spec.action.to_string(),
        ttl_seconds: u32::try_from(spec.ttl.as_secs()).map_err(|e| e.to_string())?,
    };
    let again = TaskSpec::parse(&back, default_ttl).map_err(|e| format!("re-parse: {e:?}"))?;
    let same = again.connector == spec.connector
        && again.user == spec.user
        && again.session == spec.session
        && again.tools == spec.tools
        && again.audiences == spec.audiences
        && again.classification == spec.classification
        && again.action == spec.action
        && again.ttl == spec.ttl;
    if !same {
        return Err(format!("round trip changed the task spec: {p:?} -> {back:?}"));
    }
    Ok(())
}

/// A risk report's subject: exactly one subject named, or refused.
pub fn risk_subject(p: Option<&admin::RiskSubject>) -> Result<(), String> {
    match crate::admin::risk_subject(p) {
        Ok(_) => {
            let s = p.ok_or("accepted a missing subject")?;
            let named = [&s.user_sub, &s.connector, &s.agent, &s.session].iter().filter(|v| !v.is_empty()).count();
            if named != 1 {
                return Err(format!("accepted a subject naming {named} things"));
            }
            Ok(())
        }
        Err(e) => invalid_argument(e),
    }
}

/// The message the server sends for `bundle`.
pub fn bundle_message(bundle: &TrustBundle) -> common::Bundle {
    bundle_to_proto(bundle)
}

fn invalid_argument(e: crate::status::ApiError) -> Result<(), String> {
    let status = tonic::Status::from(e);
    if status.code() != tonic::Code::InvalidArgument || status.message().is_empty() {
        return Err(format!("a refusal must be InvalidArgument with a message: {status:?}"));
    }
    Ok(())
}
