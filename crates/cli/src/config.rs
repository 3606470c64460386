//! `--config FILE` for `server run|check-config` and `agent run|check-config`:
//! the file's keys are the flags of `<group> run` (see lanyard-config).

use std::ffi::OsString;

use clap::CommandFactory as _;
pub(crate) use lanyard_config::{Expanded, explain};

use crate::cli::Cli;

/// The commands that read a configuration file.
const CONFIGURABLE: [(&str, &[&str]); 2] = [("server", &["run", "check-config"]), ("agent", &["run", "check-config"])];

/// Expands `--config FILE` of a configurable command into flags; any other
/// command line is returned as is. The error is one line.
pub(crate) fn expand(args: Vec<OsString>) -> Result<Expanded, lanyard_config::ConfigError> {
    lanyard_config::expand(args, &Cli::command(), &CONFIGURABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_of_server_and_agent_run_is_a_key() {
        let command = Cli::command();
        for group in ["server", "agent"] {
            let flags = lanyard_config::flags_of(&command, group).unwrap();
            assert!(flags.iter().any(|f| f.long == "log-format"), "{group}: {flags:?}");
            assert!(!flags.iter().any(|f| f.long == "config"), "--config is not a key");
        }
        let server = lanyard_config::flags_of(&command, "server").unwrap();
        assert!(server.iter().any(|f| f.long == "data-dir" && f.takes_value));
        let agent = lanyard_config::flags_of(&command, "agent").unwrap();
        assert!(agent.iter().any(|f| f.long == "server" && f.repeatable));
    }
}
