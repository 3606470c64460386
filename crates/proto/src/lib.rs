//! Generated protobuf messages and gRPC stubs for Lanyard.
//!
//! - [`workload`]: the SPIFFE Workload API (no protobuf package, so the RPC
//!   paths are `/SpiffeWorkloadAPI/<Method>` as every SPIFFE client expects);
//! - [`common`], [`node`], [`admin`]: Lanyard's own `lanyard.*.v1` services.
//!
//! The code is produced at build time from `proto/` by `protox` and
//! `tonic-prost-build`; the one hand-written piece is [`status`], the
//! status mapping every Lanyard server applies.

pub mod status;

/// The SPIFFE Workload API (`SpiffeWorkloadAPI` service).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod workload {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// Lanyard's own packages, nested as protobuf packages are (`lanyard.node.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod lanyard {
    /// `lanyard.common.*`
    pub mod common {
        /// `lanyard.common.v1`
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/lanyard.common.v1.rs"));
        }
    }
    /// `lanyard.agent.*`
    pub mod agent {
        /// `lanyard.agent.v1`
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/lanyard.agent.v1.rs"));
        }
    }
    /// `lanyard.node.*`
    pub mod node {
        /// `lanyard.node.v1`
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/lanyard.node.v1.rs"));
        }
    }
    /// `lanyard.admin.*`
    pub mod admin {
        /// `lanyard.admin.v1`
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/lanyard.admin.v1.rs"));
        }
    }
}

/// The admin API on the server's Unix socket (`lanyard.admin.v1`).
pub use lanyard::admin::v1 as admin;
/// The Tasks API the agent serves to workloads (`lanyard.agent.v1`).
pub use lanyard::agent::v1 as agent;
/// Records shared by the node and admin APIs (`lanyard.common.v1`).
pub use lanyard::common::v1 as common;
/// The node API agents call over mTLS (`lanyard.node.v1`).
pub use lanyard::node::v1 as node;

/// The `workload.spiffe.io` metadata key every Workload API call must carry.
pub const WORKLOAD_API_HEADER: &str = "workload.spiffe.io";
