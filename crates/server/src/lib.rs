//! lanyard-server
