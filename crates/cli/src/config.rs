//! Configuration files for `server run|check-config` and `agent
//! run|check-config` (`--config FILE`): TOML whose keys are the long flag
//! names (`data-dir = "/var/lib/lanyard"`, `server = ["a:8081", "b:8081"]`).
//!
//! The file becomes flags placed before the command line's own, and a key
//! whose flag (or environment variable) is given is skipped: flags win, then
//! the environment, then the file, then the defaults. A key that is not a
//! flag of that command, a value of the wrong shape, or a value its flag
//! refuses is an error naming the file and the key.

use std::collections::BTreeSet;
use std::ffi::OsString;

use clap::CommandFactory as _;
use clap::error::{ContextKind, ContextValue};

use crate::cli::Cli;

/// The commands that read a configuration file.
const CONFIGURABLE: [(&str, &[&str]); 2] = [("server", &["run", "check-config"]), ("agent", &["run", "check-config"])];

/// Keys that are not flags of `run`.
const NOT_KEYS: [&str; 3] = ["config", "help", "version"];

/// What the file added to the command line: the expanded arguments and,
/// for error messages, the file and the keys it set.
#[derive(Debug, Default)]
pub(crate) struct Expanded {
    /// The whole argument list, file flags first.
    pub(crate) args: Vec<OsString>,
    /// The file, when there was one.
    pub(crate) file: Option<String>,
    /// The keys taken from the file.
    pub(crate) keys: BTreeSet<String>,
}

/// Expands `--config FILE` of a configurable command into flags; any other
/// command line is returned as is. The error is one line.
pub(crate) fn expand(args: Vec<OsString>) -> Result<Expanded, String> {
    let words: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let (Some(group), Some(command)) = (words.get(1), words.get(2)) else {
        return Ok(Expanded { args, ..Expanded::default() });
    };
    if !CONFIGURABLE.iter().any(|(g, cs)| g == group && cs.contains(&command.as_str())) {
        return Ok(Expanded { args, ..Expanded::default() });
    }
    let Some(path) = config_path(&words[3..])? else {
        return Ok(Expanded { args, ..Expanded::default() });
    };
    let shown = path.clone();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("config {shown}: {e}"))?;
    let flags = flags_of(group)?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| text[..s.start].lines().count().max(1));
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        format!("config {shown}{at}: {}", e.message().trim())
    })?;
    let given: BTreeSet<&str> = words[3..]
        .iter()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.split_once('=').map_or(w, |(name, _)| name))
        .collect();
    let mut file_args = Vec::new();
    let mut keys = BTreeSet::new();
    for (key, value) in &table {
        let Some(flag) = flags.iter().find(|f| f.long == *key) else {
            let line = line_of(&text, key).map(|l| format!(" (line {l})")).unwrap_or_default();
            return Err(format!("config {shown}{line}: unknown key `{key}`"));
        };
        let from_env = flag.env.as_deref().is_some_and(|var| std::env::var_os(var).is_some());
        if given.contains(key.as_str()) || from_env {
            continue;
        }
        let bad = |what: &str| format!("config {shown}: key `{key}`: {what}");
        let values: Vec<String> = match value {
            toml::Value::String(s) => vec![s.clone()],
            toml::Value::Integer(i) => vec![i.to_string()],
            toml::Value::Boolean(b) if !flag.takes_value => {
                if *b {
                    file_args.push(OsString::from(format!("--{key}")));
                    keys.insert(key.clone());
                }
                continue;
            }
            toml::Value::Array(items) if flag.repeatable => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    toml::Value::Integer(i) => Ok(i.to_string()),
                    _ => Err(bad("expected a list of strings")),
                })
                .collect::<Result<_, _>>()?,
            toml::Value::Array(_) => return Err(bad("takes one value, not a list")),
            toml::Value::Boolean(_) => return Err(bad("expected a string, not true/false")),
            _ => return Err(bad("expected a string or a number")),
        };
        for v in values {
            file_args.push(OsString::from(format!("--{key}")));
            file_args.push(OsString::from(v));
        }
        keys.insert(key.clone());
    }
    let mut expanded: Vec<OsString> = args[..3].to_vec();
    expanded.extend(file_args);
    expanded.extend(args[3..].iter().cloned());
    Ok(Expanded { args: expanded, file: Some(shown), keys })
}

/// The value of `--config` among `args`, if any.
fn config_path(args: &[String]) -> Result<Option<String>, String> {
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--config" {
            return rest.next().cloned().map(Some).ok_or_else(|| "--config needs a file".to_owned());
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Ok(Some(path.to_owned()));
        }
    }
    Ok(None)
}

/// A flag a configuration key may set.
struct Flag {
    long: String,
    env: Option<String>,
    takes_value: bool,
    repeatable: bool,
}

/// The flags of `<group> run` (the same as `<group> check-config`).
fn flags_of(group: &str) -> Result<Vec<Flag>, String> {
    let command = Cli::command();
    let run = command
        .find_subcommand(group)
        .and_then(|g| g.find_subcommand("run"))
        .ok_or_else(|| format!("no `{group} run` command"))?;
    Ok(run
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            if NOT_KEYS.contains(&long) {
                return None;
            }
            Some(Flag {
                long: long.to_owned(),
                env: a.get_env().map(|e| e.to_string_lossy().into_owned()),
                takes_value: a.get_action().takes_values(),
                repeatable: matches!(a.get_action(), clap::ArgAction::Append),
            })
        })
        .collect())
}

/// The line of `text` where `key` is set, for messages.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('=')))
        .map(|i| i + 1)
}

/// clap's one-line message, saying so when the value came from the file.
pub(crate) fn explain(expanded: &Expanded, error: &clap::Error, line: String) -> String {
    let (Some(file), Some(ContextValue::String(arg))) = (&expanded.file, error.get(ContextKind::InvalidArg)) else {
        return line;
    };
    let name = arg.trim_start_matches("--").split([' ', '=']).next().unwrap_or_default();
    match expanded.keys.contains(name) {
        true => format!("config {file}: key `{name}`: {line}"),
        false => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn with_file(text: &str, words: &[&str]) -> Result<Expanded, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard-server.toml");
        std::fs::write(&path, text).unwrap();
        let mut all = vec!["lanyard"];
        all.extend_from_slice(&words[..2]);
        let path = path.to_str().unwrap().to_owned();
        all.extend(["--config", path.as_str()]);
        all.extend_from_slice(&words[2..]);
        expand(args(&all))
    }

    fn strings(e: &Expanded) -> Vec<String> {
        e.args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn keys_become_flags_before_the_command_lines_own_which_win() {
        let text = "trust-domain = \"example.org\"\nlisten = \"127.0.0.1:9000\"\ncheckpoint-every = 10\n";
        let e = with_file(text, &["server", "run", "--listen", "127.0.0.1:7000"]).unwrap();
        let got = strings(&e);
        assert_eq!(&got[3..7], ["--checkpoint-every", "10", "--trust-domain", "example.org"]);
        assert!(!got.contains(&"127.0.0.1:9000".to_owned()), "the flag wins over the file: {got:?}");
        assert_eq!(e.keys.iter().map(String::as_str).collect::<Vec<_>>(), ["checkpoint-every", "trust-domain"]);
    }

    #[test]
    fn lists_fill_repeatable_flags() {
        let e = with_file("server = [\"a:1\", \"b:2\"]\n", &["agent", "run"]).unwrap();
        let got = strings(&e);
        assert_eq!(&got[3..7], ["--server", "a:1", "--server", "b:2"]);
    }

    #[test]
    fn unknown_keys_and_bad_shapes_name_the_file_and_the_key() {
        let e = with_file("trust-domain = \"x\"\nlisten-on = \"y\"\n", &["server", "run"]).unwrap_err();
        assert!(e.contains("lanyard-server.toml (line 2): unknown key `listen-on`"), "{e}");
        let e = with_file("listen = [\"a\", \"b\"]\n", &["server", "run"]).unwrap_err();
        assert!(e.contains("key `listen`: takes one value"), "{e}");
        let e = with_file("[table]\nx = 1\n", &["server", "run"]).unwrap_err();
        assert!(e.contains("key `table`"), "{e}");
        let e = with_file("listen = \n", &["server", "run"]).unwrap_err();
        assert!(e.contains("lanyard-server.toml (line 1):"), "{e}");
        // A key of the agent is not one of the server.
        let e = with_file("join-token = \"t\"\n", &["server", "run"]).unwrap_err();
        assert!(e.contains("unknown key `join-token`"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn other_commands_and_no_config_pass_through() {
        for words in [&["lanyard", "entry", "list"][..], &["lanyard", "server", "run", "--listen", "x"][..]] {
            let e = expand(args(words)).unwrap();
            assert_eq!(e.args, args(words));
            assert!(e.file.is_none());
        }
        assert!(expand(args(&["lanyard", "server", "run", "--config"])).is_err());
    }
}
