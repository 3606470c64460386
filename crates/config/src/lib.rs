//! Configuration files for lanyard commands (`--config FILE`): TOML whose
//! keys are the long flag names of the command (`data-dir =
//! "/var/lib/lanyard"`, `server = ["a:8081", "b:8081"]`).
//!
//! The file becomes flags placed before the command line's own, and a key
//! whose flag (or environment variable) is given is skipped: flags win, then
//! the environment, then the file, then the defaults. A key that is not a
//! flag of that command, or a value of the wrong shape, is an error naming
//! the file and the key; a value its flag refuses is clap's error, which
//! [`explain`] attributes to the file.
//!
//! [`expand_text`] is the pure part (text in, flags out); [`expand`] finds
//! `--config` on a command line and reads the file.

use std::collections::BTreeSet;
use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue};

/// Keys that are never configuration keys, whatever the command.
const NOT_KEYS: [&str; 3] = ["config", "help", "version"];

/// Why a configuration file could not be used. Every message is one line
/// and names the file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `--config` was the last word, without a file.
    #[error("--config needs a file")]
    MissingPath,
    /// The file could not be read.
    #[error("config {file}: {reason}")]
    Read {
        /// The file as given.
        file: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The file is not TOML.
    #[error("config {file}{}: {message}", at_line(*line))]
    Syntax {
        /// The file as given.
        file: String,
        /// Where the parser stopped, when it says.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A key that is not a flag of the command.
    #[error("config {file}{}: unknown key `{key}`", at_line(*line))]
    UnknownKey {
        /// The file as given.
        file: String,
        /// The line of the key, when found.
        line: Option<usize>,
        /// The key.
        key: String,
    },
    /// A value of the wrong shape for its flag.
    #[error("config {file}: key `{key}`: {what}")]
    BadValue {
        /// The file as given.
        file: String,
        /// The key.
        key: String,
        /// What was expected.
        what: &'static str,
    },
    /// The command named has no `run` subcommand to take flags from.
    #[error("no `{0} run` command")]
    NoCommand(String),
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// A flag a configuration key may set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flag {
    /// The long name, which is also the key.
    pub long: String,
    /// The environment variable that also sets it, if any.
    pub env: Option<String>,
    /// Whether it takes a value (false: a switch, set by `key = true`).
    pub takes_value: bool,
    /// Whether it may be given several times (a TOML list).
    pub repeatable: bool,
}

/// The flags of `command`'s subcommand `group run` — the keys a file for
/// `group run` or `group check-config` may set.
pub fn flags_of(command: &clap::Command, group: &str) -> Result<Vec<Flag>, ConfigError> {
    let run = command
        .find_subcommand(group)
        .and_then(|g| g.find_subcommand("run"))
        .ok_or_else(|| ConfigError::NoCommand(group.to_owned()))?;
    Ok(flags_of_command(run))
}

/// The flags of one (sub)command that a configuration key may set.
pub fn flags_of_command(command: &clap::Command) -> Vec<Flag> {
    command
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
        .collect()
}

/// What a file adds to a command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileFlags {
    /// The flags, in key order, to go before the command line's own.
    pub args: Vec<String>,
    /// The keys they came from.
    pub keys: BTreeSet<String>,
}

/// Turns the text of a configuration file into flags. `file` is only for
/// messages; keys named in `given` (flags already on the command line) and
/// keys whose environment variable `env_set` reports set are skipped.
pub fn expand_text(
    file: &str,
    text: &str,
    flags: &[Flag],
    given: &BTreeSet<&str>,
    env_set: impl Fn(&str) -> bool,
) -> Result<FileFlags, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
        file: file.to_owned(),
        line: e.span().map(|s| line_at(text, s.start)),
        message: e.message().trim().replace('\n', " "),
    })?;
    let mut out = FileFlags::default();
    for (key, value) in &table {
        let Some(flag) = flags.iter().find(|f| f.long == *key) else {
            return Err(ConfigError::UnknownKey { file: file.to_owned(), line: line_of(text, key), key: key.clone() });
        };
        if given.contains(key.as_str()) || flag.env.as_deref().is_some_and(&env_set) {
            continue;
        }
        let bad = |what| ConfigError::BadValue { file: file.to_owned(), key: key.clone(), what };
        if !flag.takes_value {
            match value {
                toml::Value::Boolean(true) => {
                    out.args.push(format!("--{key}"));
                    out.keys.insert(key.clone());
                }
                toml::Value::Boolean(false) => {}
                _ => return Err(bad("expected true or false")),
            }
            continue;
        }
        let values: Vec<String> = match value {
            toml::Value::String(s) => vec![s.clone()],
            toml::Value::Integer(i) => vec![i.to_string()],
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
        // An empty list sets nothing, so the key is not counted as given.
        if values.is_empty() {
            continue;
        }
        for v in values {
            // `--key=value`, so that a value starting with `-` stays a value.
            out.args.push(format!("--{key}={v}"));
        }
        out.keys.insert(key.clone());
    }
    Ok(out)
}

/// The line (from 1) holding byte `offset` of `text`.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// The line of `text` where `key` is set, for messages.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('=')))
        .map(|i| i + 1)
}

/// A command line after its configuration file was expanded.
#[derive(Debug, Default)]
pub struct Expanded {
    /// The whole argument list, file flags first.
    pub args: Vec<OsString>,
    /// The file, when there was one.
    pub file: Option<String>,
    /// The keys taken from the file.
    pub keys: BTreeSet<String>,
}

/// Expands `--config FILE` into flags when `args` (program name first) run
/// one of `configurable` — `(group, subcommands)` pairs whose keys are the
/// flags of `group run` in `command`. Any other command line is returned as
/// is.
pub fn expand(
    args: Vec<OsString>,
    command: &clap::Command,
    configurable: &[(&str, &[&str])],
) -> Result<Expanded, ConfigError> {
    let words: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let (Some(group), Some(sub)) = (words.get(1), words.get(2)) else {
        return Ok(Expanded { args, ..Expanded::default() });
    };
    if !configurable.iter().any(|(g, subs)| g == group && subs.contains(&sub.as_str())) {
        return Ok(Expanded { args, ..Expanded::default() });
    }
    let Some(file) = config_path(&words[3..])? else {
        return Ok(Expanded { args, ..Expanded::default() });
    };
    let text =
        std::fs::read_to_string(&file).map_err(|e| ConfigError::Read { file: file.clone(), reason: e.to_string() })?;
    let flags = flags_of(command, group)?;
    let given: BTreeSet<&str> = words[3..]
        .iter()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.split_once('=').map_or(w, |(name, _)| name))
        .collect();
    let added = expand_text(&file, &text, &flags, &given, |var| std::env::var_os(var).is_some())?;
    let mut expanded: Vec<OsString> = args[..3].to_vec();
    expanded.extend(added.args.into_iter().map(OsString::from));
    expanded.extend(args[3..].iter().cloned());
    Ok(Expanded { args: expanded, file: Some(file), keys: added.keys })
}

/// The value of `--config` among `args`, if any.
fn config_path(args: &[String]) -> Result<Option<String>, ConfigError> {
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--config" {
            return rest.next().cloned().map(Some).ok_or(ConfigError::MissingPath);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Ok(Some(path.to_owned()));
        }
    }
    Ok(None)
}

/// clap's one-line message `line` for `error`, saying so when the value it
/// refused came from the file.
pub fn explain(expanded: &Expanded, error: &clap::Error, line: String) -> String {
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
mod tests;
