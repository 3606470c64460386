//! Lanyard's domain types and the pure rules around them.
//!
//! Nothing in this crate does IO, runs async code or reads a clock: callers
//! pass `now` in. Identity types are valid by construction — the only way to
//! get a [`SpiffeId`] is to parse one — so code further up never re-checks.
//!
//! ```
//! use lanyard_core::{SpiffeId, Selector, parse_duration};
//!
//! let id: SpiffeId = "spiffe://example.org/connector/github".parse()?;
//! assert_eq!(id.trust_domain_name(), "example.org");
//! assert_eq!("unix:uid:1000".parse::<Selector>()?, Selector::Uid(1000));
//! assert_eq!(parse_duration("15m")?.as_secs(), 900);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod duration;
pub mod entry;
pub mod hex;
pub mod ids;
pub mod metrics;
pub mod rate;
pub mod rotation;
pub mod selector;
pub mod spiffe_id;
pub mod task;

pub use duration::{DurationError, Ttl, format_duration, parse_duration};
pub use entry::{DnsName, Entry, EntryError, EntryId};
pub use rotation::{Jitter, should_rotate};
pub use selector::{Selector, SelectorError};
pub use spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};
pub use task::{
    Action, Audience, Classification, DelegatePattern, EndReason, SessionId, Task, TaskFieldError, TaskId, Tool, User,
    UserField,
};

/// Seconds since the Unix epoch for `t`, 0 for times before it.
pub fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The instant `secs` seconds after the Unix epoch.
pub fn from_unix_secs(secs: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}
