//! Protobuf messages to domain types and back: requests are parsed here,
//! at the edge, before any logic sees them.

use lanyard_ca::TrustBundle;
use lanyard_core::{Classification, DnsName, Entry, EntryId, Selector, SpiffeId, Ttl};
use lanyard_proto::{admin, common};
use lanyard_store::AgentRecord;

use crate::status::ApiError;

/// Lifetimes applied when a new entry leaves them at 0.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TtlDefaults {
    pub(crate) x509: Ttl,
    pub(crate) jwt: Ttl,
}

pub(crate) fn parse_spiffe_id(field: &str, s: &str) -> Result<SpiffeId, ApiError> {
    SpiffeId::parse(s).map_err(|e| ApiError::invalid(field, e))
}

pub(crate) fn parse_entry_id(s: &str) -> Result<EntryId, ApiError> {
    EntryId::parse(s).map_err(|e| ApiError::invalid("id", e))
}

fn parse_ttl(field: &str, secs: u32, default: Ttl) -> Result<Ttl, ApiError> {
    if secs == 0 {
        return Ok(default);
    }
    Ttl::from_secs(u64::from(secs)).map_err(|e| ApiError::invalid(field, e))
}

/// Builds an entry from a request; `id` and `revision` are the server's.
pub(crate) fn entry_from_proto(p: common::Entry, id: EntryId, defaults: TtlDefaults) -> Result<Entry, ApiError> {
    let selectors = p
        .selectors
        .iter()
        .map(|s| Selector::parse(s).map_err(|e| ApiError::invalid("selector", format!("{s:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let dns_names = p
        .dns_names
        .iter()
        .map(|d| DnsName::parse(d).map_err(|e| ApiError::invalid("dns_name", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let expires_at = match p.expires_at {
        0 => None,
        t if t < 0 => return Err(ApiError::invalid("expires_at", "must not be negative")),
        t => Some(t.unsigned_abs()),
    };
    Ok(Entry {
        id,
        spiffe_id: parse_spiffe_id("spiffe_id", &p.spiffe_id)?,
        parent_id: parse_spiffe_id("parent_id", &p.parent_id)?,
        selectors,
        x509_ttl: parse_ttl("x509_ttl", p.x509_ttl_seconds, defaults.x509)?,
        jwt_ttl: parse_ttl("jwt_ttl", p.jwt_ttl_seconds, defaults.jwt)?,
        dns_names,
        expires_at,
        hint: p.hint,
        revision: 0,
        tools: parse_all("tool", &p.tools)?,
        audiences: parse_all("audience", &p.audiences)?,
        max_classification: match p.max_classification.as_str() {
            "" => Classification::Public,
            s => s.parse().map_err(|e| ApiError::invalid("max_classification", e))?,
        },
        delegate_to: parse_all("delegate_to", &p.delegate_to)?,
        task_authority: p.task_authority,
    })
}

pub(crate) fn entry_to_proto(e: &Entry) -> common::Entry {
    common::Entry {
        id: e.id.to_string(),
        spiffe_id: e.spiffe_id.to_string(),
        parent_id: e.parent_id.to_string(),
        selectors: e.selectors.iter().map(ToString::to_string).collect(),
        x509_ttl_seconds: e.x509_ttl.as_secs(),
        jwt_ttl_seconds: e.jwt_ttl.as_secs(),
        dns_names: e.dns_names.iter().map(ToString::to_string).collect(),
        expires_at: e.expires_at.map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)),
        revision: e.revision,
        hint: e.hint.clone(),
        tools: e.tools.iter().map(ToString::to_string).collect(),
        audiences: e.audiences.iter().map(ToString::to_string).collect(),
        max_classification: e.max_classification.to_string(),
        delegate_to: e.delegate_to.iter().map(ToString::to_string).collect(),
        task_authority: e.task_authority,
    }
}

/// Parses every string of a repeated field; the error names the field and value.
pub(crate) fn parse_all<T>(field: &str, values: &[String]) -> Result<Vec<T>, ApiError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    values.iter().map(|v| v.parse().map_err(|e| ApiError::invalid(field, e))).collect()
}

pub(crate) fn bundle_to_proto(b: &TrustBundle) -> common::Bundle {
    common::Bundle {
        trust_domain: b.trust_domain.to_string(),
        x509_authorities: b.x509_authorities.clone(),
        jwt_authorities: b
            .jwt_authorities
            .iter()
            .map(|k| common::JwtKey {
                kid: k.key.kid().to_owned(),
                public_key: k.key.spki_der(),
                expires_at: secs_i64(k.expires_at),
                purpose: k.purpose.as_str().to_owned(),
            })
            .collect(),
        sequence: b.sequence,
        refresh_hint_seconds: u32::try_from(b.refresh_hint.as_secs()).unwrap_or(u32::MAX),
    }
}

pub(crate) fn agent_to_proto(a: &AgentRecord) -> admin::Agent {
    admin::Agent {
        spiffe_id: a.spiffe_id.to_string(),
        name: a.name.clone(),
        attested_at: secs_i64(a.attested_at),
        svid_expires_at: secs_i64(a.svid_expires_at),
        banned: a.banned,
        last_seen: secs_i64(a.last_seen),
    }
}

pub(crate) fn secs_i64(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

pub(crate) fn revocation_to_proto(r: &lanyard_store::Revocation) -> admin::Revocation {
    admin::Revocation {
        seq: r.seq,
        at: secs_i64(r.at),
        kind: serde_json::to_value(r.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
        subject: r.subject.clone(),
        tasks: r.tasks.iter().map(ToString::to_string).collect(),
    }
}

pub(crate) fn task_to_proto(t: &lanyard_core::Task) -> common::Task {
    common::Task {
        id: t.id.to_string(),
        spec: Some(common::TaskSpec {
            connector: t.connector.to_string(),
            user_sub: t.user.sub.to_string(),
            user_iss: t.user.iss.to_string(),
            session: t.session.to_string(),
            tools: t.tools.iter().map(ToString::to_string).collect(),
            audiences: t.audiences.iter().map(ToString::to_string).collect(),
            classification: t.classification.to_string(),
            action: t.action.to_string(),
            ttl_seconds: u32::try_from(t.expires_at.saturating_sub(t.created_at)).unwrap_or(u32::MAX),
        }),
        created_at: secs_i64(t.created_at),
        expires_at: secs_i64(t.expires_at),
        ended_at: t.ended_at.map_or(0, secs_i64),
        end_reason: t
            .end_reason
            .and_then(|r| serde_json::to_value(r).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        parent: t.parent.map(|p| p.to_string()).unwrap_or_default(),
        chain: t.chain.iter().map(ToString::to_string).collect(),
        begun_by: t.begun_by.clone(),
    }
}
