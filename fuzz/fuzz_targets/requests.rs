//! Every protobuf request the issuer converts, decoded from fuzz bytes (the
//! first byte picks the message): entries, task specifications, risk
//! subjects, and the bundle and entries agents parse from the server. Never
//! panics; a refusal is InvalidArgument with a message; an accepted message
//! converts back unchanged, and the agent reads exactly the entry the server
//! accepted.
#![no_main]

use lanyard_proto::{admin, common};
use lanyard_server::fuzzing;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    match kind % 4 {
        0 => {
            let Ok(p) = common::Entry::decode(bytes) else { return };
            let accepted = fuzzing::entry(p).unwrap_or_else(|broken| panic!("{broken}"));
            if let Some((entry, message)) = accepted {
                let agent = lanyard_agent::fuzzing::entry_from_proto(&message)
                    .unwrap_or_else(|e| panic!("the agent refuses what the server accepted: {e}"));
                assert_eq!(agent, entry, "the agent reads another entry");
            }
        }
        1 => {
            let Ok(p) = common::TaskSpec::decode(bytes) else { return };
            fuzzing::task_spec(&p).unwrap_or_else(|broken| panic!("{broken}"));
        }
        2 => {
            let Ok(p) = admin::RiskSubject::decode(bytes) else { return };
            fuzzing::risk_subject(Some(&p)).unwrap_or_else(|broken| panic!("{broken}"));
        }
        _ => {
            let Ok(p) = common::Bundle::decode(bytes) else { return };
            let Ok(bundle) = lanyard_agent::bundle_from_proto(&p) else { return };
            let again = lanyard_agent::bundle_from_proto(&fuzzing::bundle_message(&bundle))
                .unwrap_or_else(|e| panic!("the agent refuses the server's own bundle message: {e}"));
            assert_eq!(again, bundle, "the bundle changed on the way back");
        }
    }
});
