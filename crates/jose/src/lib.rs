//! lanyard-jose
