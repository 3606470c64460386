//! Configuration files (`--config FILE`): never panics; a refusal is one
//! line naming the file; what it accepts clap takes as the command's own
//! flags, a flag on the command line or its environment variable drops the
//! key, and the flags written back as a canonical file expand the same.
#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use clap::{Arg, ArgAction, Command};
use lanyard_config::{Flag, expand_text, flags_of_command};
use libfuzzer_sys::fuzz_target;

/// A `run` command with each kind of flag a lanyard command has.
fn run() -> &'static (Command, Vec<Flag>) {
    static RUN: OnceLock<(Command, Vec<Flag>)> = OnceLock::new();
    RUN.get_or_init(|| {
        let command = Command::new("run")
            .arg(Arg::new("config").long("config"))
            .arg(Arg::new("listen").long("listen"))
            .arg(Arg::new("data-dir").long("data-dir"))
            .arg(Arg::new("server").long("server").action(ArgAction::Append))
            .arg(Arg::new("insecure").long("insecure").action(ArgAction::SetTrue))
            .arg(Arg::new("kek-file").long("kek-file").env("FUZZ_KEK"))
            .arg(Arg::new("checkpoint-every").long("checkpoint-every"));
        let flags = flags_of_command(&command);
        (command, flags)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (command, flags) = run();
    let env_set = |var: &str| var == "FUZZ_KEK" && text.contains("# env");
    let out = match expand_text("f.toml", text, flags, &BTreeSet::new(), env_set) {
        Ok(out) => out,
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "one line: {message:?}");
            assert!(message.starts_with("config f.toml"), "names the file: {message:?}");
            return;
        }
    };
    // Only the command's own flags, and clap takes them as they are.
    let mut words = vec!["run".to_owned()];
    words.extend(out.args.iter().cloned());
    let matches = command.clone().try_get_matches_from(&words).expect("clap takes the expanded flags");
    for key in &out.keys {
        assert!(flags.iter().any(|f| &f.long == key), "{key} is not a flag");
        assert!(matches.contains_id(key), "{key} did not reach clap");
    }
    if env_set("FUZZ_KEK") {
        assert!(!out.keys.contains("kek-file"), "the environment wins");
    }
    // A flag on the command line wins over its key.
    for key in &out.keys {
        let given = BTreeSet::from([key.as_str()]);
        let without = expand_text("f.toml", text, flags, &given, env_set).expect("still valid");
        assert!(!without.keys.contains(key) && !without.args.iter().any(|a| flag_name(a) == key));
    }
    // The same flags written back as a canonical file expand the same.
    let mut table = toml::Table::new();
    for arg in &out.args {
        let name = flag_name(arg).to_owned();
        match arg.split_once('=') {
            None => {
                table.insert(name, toml::Value::Boolean(true));
            }
            Some((_, value)) => {
                let value = toml::Value::String(value.to_owned());
                let repeatable = flags.iter().any(|f| f.long == name && f.repeatable);
                match table.entry(name) {
                    toml::map::Entry::Vacant(slot) if repeatable => {
                        slot.insert(toml::Value::Array(vec![value]));
                    }
                    toml::map::Entry::Vacant(slot) => {
                        slot.insert(value);
                    }
                    toml::map::Entry::Occupied(mut slot) => match slot.get_mut() {
                        toml::Value::Array(items) => items.push(value),
                        other => panic!("{other:?} given twice"),
                    },
                }
            }
        }
    }
    let canonical = table.to_string();
    let again = expand_text("f.toml", &canonical, flags, &BTreeSet::new(), |_| false).expect("canonical file");
    assert_eq!(again, out, "canonical file: {canonical}");
});

fn flag_name(arg: &str) -> &str {
    let arg = arg.trim_start_matches("--");
    arg.split_once('=').map_or(arg, |(name, _)| name)
}
