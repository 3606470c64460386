//! The agent's parsers of server messages, for the fuzz targets
//! (`fuzz/fuzz_targets/requests.rs`). Built only with the `fuzzing` feature.

use lanyard_core::Entry;
use lanyard_proto::common;

/// An entry as the agent parses it from the server, or why it refuses it.
pub fn entry_from_proto(p: &common::Entry) -> Result<Entry, String> {
    crate::convert::entry_from_proto(p).map_err(|e| e.to_string())
}
