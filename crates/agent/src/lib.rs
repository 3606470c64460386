//! lanyard-agent
