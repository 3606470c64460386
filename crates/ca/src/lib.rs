//! lanyard-ca
