//! Lanyard's certificate authority: the X.509 CA that signs X.509-SVIDs from
//! agents' CSRs, the keys that sign JWT-SVIDs, and the trust bundle that
//! publishes both.
//!
//! Authorization happens elsewhere and ends in a template
//! ([`X509SvidTemplate`], [`JwtSvidTemplate`]) with every constraint applied;
//! this crate signs exactly what it is handed. Time is always a parameter.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use lanyard_ca::{X509Authority, X509SvidTemplate, csr};
//!
//! let td = "example.org".parse()?;
//! let now = SystemTime::now();
//! let ca = X509Authority::generate(&td, now, Duration::from_secs(86_400))?;
//! let (_key, request) = csr::new_key_and_csr()?;
//! let template = X509SvidTemplate {
//!     spiffe_id: "spiffe://example.org/connector/github".parse()?,
//!     dns_names: vec![],
//!     ttl: Duration::from_secs(3600),
//!     public_key: csr::parse_csr(&request)?,
//! };
//! let svid = ca.sign_svid(&template, now)?;
//! let info = lanyard_ca::svid::inspect_leaf(&svid.der)?;
//! assert_eq!(info.spiffe_id.as_str(), "spiffe://example.org/connector/github");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bundle;
pub mod csr;
mod error;
pub mod jwt;
pub mod rand;
pub mod svid;
pub mod task_token;
mod x509;

#[cfg(test)]
mod tests;

pub use bundle::{JwtAuthorityKey, JwtKeyPurpose, TrustBundle};
pub use error::CaError;
pub use jwt::{JwtAuthority, JwtSvidClaims, JwtSvidTemplate};
pub use task_token::{SignedTaskToken, TaskTokenClaims, TaskTokenTemplate};
pub use x509::{SignedCert, UpstreamCa, X509Authority, X509SvidTemplate};

use std::time::SystemTime;

/// Where the current time comes from; tests substitute a fixed clock.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
