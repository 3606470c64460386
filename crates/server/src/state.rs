//! What every API handler shares.

use std::sync::Arc;
use std::time::SystemTime;

use lanyard_ca::Clock;
use lanyard_core::{TrustDomain, unix_secs};
use lanyard_policy::{Ceilings, PolicyEngine};
use lanyard_store::{AuditEvent, Store};
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::convert::TtlDefaults;
use crate::keys::{KeyWatch, Keys};

/// Shared server state: store, keys, clock, configuration.
pub(crate) struct State {
    pub(crate) td: TrustDomain,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keys: KeyWatch,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: ServerConfig,
    /// Bumped whenever an agent record changes in a way live streams must
    /// notice (a ban).
    pub(crate) agent_events: watch::Sender<u64>,
    /// Turns true when the server starts shutting down; long-lived streams end.
    pub(crate) shutdown: watch::Sender<bool>,
    /// The Cedar policies in force; swapped whole on reload.
    pub(crate) policy: std::sync::RwLock<Arc<PolicyEngine>>,
    /// The rules applied before Cedar.
    pub(crate) ceilings: Ceilings,
    /// Connector SVIDs already verified.
    pub(crate) svid_cache: crate::svid_cache::SvidCache,
    /// Agent TLS client certificates already parsed.
    pub(crate) agent_leaves: crate::svid_cache::LeafCache,
    /// Held across a change to the signing keys (rotation tick, forced
    /// rotation, revocation), so two never interleave.
    pub(crate) key_ops: tokio::sync::Mutex<()>,
    /// Seals private keys in the store, when configured.
    pub(crate) kek: Option<crate::kek::Kek>,
    /// What `/metrics` reports.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Issues Lanyard's CAs as intermediates, when configured.
    pub(crate) upstream: Option<lanyard_ca::UpstreamCa>,
    /// Node API requests per agent, when limited.
    pub(crate) agent_limiter: Option<lanyard_core::rate::RateLimiter<lanyard_core::SpiffeId>>,
}

impl State {
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    pub(crate) fn policy(&self) -> Arc<PolicyEngine> {
        match self.policy.read() {
            Ok(p) => Arc::clone(&p),
            // A panic while swapping cannot leave a half-written Arc behind.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// What making and loading signing keys needs.
    pub(crate) fn key_context(&self) -> crate::keys::KeyContext<'_> {
        crate::keys::KeyContext {
            td: &self.td,
            lifetimes: self.config.lifetimes(),
            kek: self.kek.as_ref(),
            upstream: self.upstream.as_ref(),
        }
    }

    pub(crate) fn keys(&self) -> Arc<Keys> {
        Arc::clone(&self.keys.borrow())
    }

    pub(crate) fn ttl_defaults(&self) -> TtlDefaults {
        TtlDefaults { x509: self.config.default_x509_ttl, jwt: self.config.default_jwt_ttl }
    }

    /// An audit event stamped with the current time.
    pub(crate) fn audit(&self, kind: &str, actor: &str, subject: &str, detail: serde_json::Value) -> AuditEvent {
        AuditEvent {
            at: unix_secs(self.now()),
            kind: kind.to_owned(),
            actor: actor.to_owned(),
            subject: subject.to_owned(),
            detail,
            ..AuditEvent::default()
        }
    }
}
