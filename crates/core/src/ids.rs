//! The SPIFFE IDs Lanyard gives its own components.

use crate::spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};

/// Path segment under which agents live: `spiffe://<td>/agent/<name>`.
pub const AGENT_SEGMENT: &str = "agent";
/// Path segment reserved for the server: `spiffe://<td>/lanyard/server`.
pub const LANYARD_SEGMENT: &str = "lanyard";

/// The ID of the agent called `name`; `name` is one SPIFFE path segment.
pub fn agent_id(td: &TrustDomain, name: &str) -> Result<SpiffeId, SpiffeIdError> {
    SpiffeId::from_segments(td, &[AGENT_SEGMENT, name])
}

/// The agent name of `id`, when `id` is an agent ID of `td`.
pub fn agent_name<'a>(td: &TrustDomain, id: &'a SpiffeId) -> Option<&'a str> {
    if !id.is_member_of(td) {
        return None;
    }
    let mut segments = id.segments();
    match (segments.next(), segments.next(), segments.next()) {
        (Some(AGENT_SEGMENT), Some(name), None) => Some(name),
        _ => None,
    }
}

/// The ID the server presents on its node API.
pub fn server_id(td: &TrustDomain) -> SpiffeId {
    // INVARIANT: both segments are constants made of valid path characters.
    match SpiffeId::from_segments(td, &[LANYARD_SEGMENT, "server"]) {
        Ok(id) => id,
        Err(_) => td.id(),
    }
}

/// Whether `id` lies in a namespace only Lanyard itself may hand out.
pub fn is_reserved(id: &SpiffeId) -> bool {
    matches!(id.segments().next(), Some(AGENT_SEGMENT | LANYARD_SEGMENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids() {
        let td = TrustDomain::new("example.org").unwrap();
        let id = agent_id(&td, "node1").unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/agent/node1");
        assert_eq!(agent_name(&td, &id), Some("node1"));
        assert!(agent_id(&td, "a/b").is_err());
        assert!(agent_id(&td, "..").is_err());
        let nested = SpiffeId::parse("spiffe://example.org/agent/a/b").unwrap();
        assert_eq!(agent_name(&td, &nested), None);
        let other = SpiffeId::parse("spiffe://other.org/agent/a").unwrap();
        assert_eq!(agent_name(&td, &other), None);
        assert!(is_reserved(&server_id(&td)));
        assert!(!is_reserved(&SpiffeId::parse("spiffe://example.org/agents/x").unwrap()));
    }
}
