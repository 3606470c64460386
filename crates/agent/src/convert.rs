//! Messages from the server, parsed into domain types before use: an entry
//! or bundle that does not parse is refused whole, never half-applied.

use std::time::Duration;

use lanyard_ca::{JwtAuthorityKey, JwtKeyPurpose, TrustBundle};
use lanyard_core::{Classification, DnsName, Entry, EntryId, Selector, SpiffeId, TrustDomain, Ttl};
use lanyard_jose::VerifyingKey;
use lanyard_proto::common;

use crate::AgentError;

fn bad(what: &str, e: impl std::fmt::Display) -> AgentError {
    AgentError::Protocol(format!("{what}: {e}"))
}

/// Parses an entry sent by the server.
pub(crate) fn entry_from_proto(p: &common::Entry) -> Result<Entry, AgentError> {
    Ok(Entry {
        id: EntryId::parse(&p.id).map_err(|e| bad("entry id", e))?,
        spiffe_id: SpiffeId::parse(&p.spiffe_id).map_err(|e| bad("entry spiffe_id", e))?,
        parent_id: SpiffeId::parse(&p.parent_id).map_err(|e| bad("entry parent_id", e))?,
        selectors: p
            .selectors
            .iter()
            .map(|s| Selector::parse(s))
            .collect::<Result<_, _>>()
            .map_err(|e| bad("entry selector", e))?,
        x509_ttl: Ttl::from_secs(u64::from(p.x509_ttl_seconds)).map_err(|e| bad("x509 ttl", e))?,
        jwt_ttl: Ttl::from_secs(u64::from(p.jwt_ttl_seconds)).map_err(|e| bad("jwt ttl", e))?,
        dns_names: p
            .dns_names
            .iter()
            .map(|d| DnsName::parse(d))
            .collect::<Result<_, _>>()
            .map_err(|e| bad("entry dns name", e))?,
        expires_at: u64::try_from(p.expires_at).ok().filter(|t| *t > 0),
        hint: p.hint.clone(),
        revision: p.revision,
        tools: parse_all("entry tool", &p.tools)?,
        audiences: parse_all("entry audience", &p.audiences)?,
        max_classification: match p.max_classification.as_str() {
            "" => Classification::Public,
            s => s.parse().map_err(|e| bad("entry max_classification", e))?,
        },
        delegate_to: parse_all("entry delegate_to", &p.delegate_to)?,
        task_authority: p.task_authority,
    })
}

fn parse_all<T>(what: &str, values: &[String]) -> Result<Vec<T>, AgentError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    values.iter().map(|v| v.parse().map_err(|e| bad(what, e))).collect()
}

/// Parses a trust bundle sent by the server; it must have a CA.
pub fn bundle_from_proto(p: &common::Bundle) -> Result<TrustBundle, AgentError> {
    if p.x509_authorities.is_empty() {
        return Err(bad("bundle", "no X.509 authorities"));
    }
    let jwt_authorities = p
        .jwt_authorities
        .iter()
        .map(|k| {
            let key = VerifyingKey::from_spki_der(&k.public_key).map_err(|e| bad("bundle JWT key", e))?;
            let purpose = JwtKeyPurpose::parse(&k.purpose)
                .ok_or_else(|| bad("bundle JWT key purpose", format!("{:?}", k.purpose)))?;
            Ok(JwtAuthorityKey {
                key: key.with_kid(k.kid.clone()),
                expires_at: u64::try_from(k.expires_at).unwrap_or(0),
                purpose,
            })
        })
        .collect::<Result<_, AgentError>>()?;
    Ok(TrustBundle {
        trust_domain: TrustDomain::new(&p.trust_domain).map_err(|e| bad("bundle trust domain", e))?,
        x509_authorities: p.x509_authorities.clone(),
        jwt_authorities,
        sequence: p.sequence,
        refresh_hint: Duration::from_secs(u64::from(p.refresh_hint_seconds)),
    })
}
