//! lanyard-store
