use super::*;

/// A command shaped like lanyard's: `server run` and `agent run` with a
/// value flag, a repeatable flag, a switch and a flag with an environment
/// variable.
fn command() -> clap::Command {
    use clap::{Arg, ArgAction, Command};
    let run = |extra: Arg| {
        Command::new("run")
            .arg(Arg::new("config").long("config"))
            .arg(Arg::new("listen").long("listen"))
            .arg(Arg::new("trust-domain").long("trust-domain"))
            .arg(Arg::new("checkpoint-every").long("checkpoint-every").value_parser(clap::value_parser!(u32)))
            .arg(Arg::new("server").long("server").action(ArgAction::Append))
            .arg(Arg::new("insecure").long("insecure").action(ArgAction::SetTrue))
            .arg(Arg::new("kek-file").long("kek-file").env("LANYARD_TEST_CONFIG_KEK"))
            .arg(extra)
    };
    Command::new("lanyard")
        .subcommand(
            Command::new("server")
                .subcommand(run(Arg::new("data-dir").long("data-dir")))
                .subcommand(Command::new("check-config").arg(Arg::new("config").long("config"))),
        )
        .subcommand(Command::new("agent").subcommand(run(Arg::new("join-token").long("join-token"))))
        .subcommand(Command::new("entry").subcommand(Command::new("list")))
}

const CONFIGURABLE: [(&str, &[&str]); 2] = [("server", &["run", "check-config"]), ("agent", &["run"])];

fn args(words: &[&str]) -> Vec<OsString> {
    words.iter().map(OsString::from).collect()
}

fn with_file(text: &str, words: &[&str]) -> Result<Expanded, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lanyard-server.toml");
    std::fs::write(&path, text).unwrap();
    let mut all = vec!["lanyard"];
    all.extend_from_slice(&words[..2]);
    let path = path.to_str().unwrap().to_owned();
    all.extend(["--config", path.as_str()]);
    all.extend_from_slice(&words[2..]);
    expand(args(&all), &command(), &CONFIGURABLE)
}

fn strings(e: &Expanded) -> Vec<String> {
    e.args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
}

#[test]
fn keys_become_flags_before_the_command_lines_own_which_win() {
    let text = "trust-domain = \"example.org\"\nlisten = \"127.0.0.1:9000\"\ncheckpoint-every = 10\n";
    let e = with_file(text, &["server", "run", "--listen", "127.0.0.1:7000"]).unwrap();
    let got = strings(&e);
    assert_eq!(&got[3..5], ["--checkpoint-every=10", "--trust-domain=example.org"]);
    assert!(!got.iter().any(|a| a.contains("127.0.0.1:9000")), "the flag wins over the file: {got:?}");
    assert_eq!(e.keys.iter().map(String::as_str).collect::<Vec<_>>(), ["checkpoint-every", "trust-domain"]);
    assert!(e.file.as_deref().is_some_and(|f| f.ends_with("lanyard-server.toml")));
}

#[test]
fn lists_fill_repeatable_flags_and_true_sets_a_switch() {
    let e = with_file("server = [\"a:1\", \"b:2\"]\ninsecure = true\n", &["agent", "run"]).unwrap();
    assert_eq!(&strings(&e)[3..6], ["--insecure", "--server=a:1", "--server=b:2"]);
    let e = with_file("insecure = false\n", &["agent", "run"]).unwrap();
    assert!(e.keys.is_empty() && !strings(&e).contains(&"--insecure".to_owned()), "false leaves the switch off");
    // Found by the config fuzz target: an empty list was counted as a key
    // that set nothing.
    let e = with_file("server = []\n", &["agent", "run"]).unwrap();
    assert!(e.keys.is_empty() && !strings(&e).iter().any(|a| a.starts_with("--server")), "an empty list sets nothing");
}

#[test]
fn a_value_starting_with_a_dash_stays_a_value() {
    let e = with_file("trust-domain = \"--insecure\"\n", &["server", "run"]).unwrap();
    let matches = command().try_get_matches_from(&e.args).unwrap();
    let run = matches.subcommand_matches("server").unwrap().subcommand_matches("run").unwrap();
    assert_eq!(run.get_one::<String>("trust-domain").map(String::as_str), Some("--insecure"));
    assert!(!run.get_flag("insecure"));
}

#[test]
fn the_environment_wins_over_the_file() {
    let flags = flags_of(&command(), "server").unwrap();
    let text = "kek-file = \"/etc/kek\"\nlisten = \"x\"\n";
    let got = expand_text("f", text, &flags, &BTreeSet::new(), |var| var == "LANYARD_TEST_CONFIG_KEK").unwrap();
    assert_eq!(got.args, ["--listen=x"]);
    let got = expand_text("f", text, &flags, &BTreeSet::new(), |_| false).unwrap();
    assert_eq!(got.args, ["--kek-file=/etc/kek", "--listen=x"]);
}

#[test]
fn unknown_keys_and_bad_shapes_name_the_file_and_the_key() {
    let e = with_file("trust-domain = \"x\"\nlisten-on = \"y\"\n", &["server", "run"]).unwrap_err().to_string();
    assert!(e.contains("lanyard-server.toml (line 2): unknown key `listen-on`"), "{e}");
    let e = with_file("listen = [\"a\", \"b\"]\n", &["server", "run"]).unwrap_err().to_string();
    assert!(e.contains("key `listen`: takes one value"), "{e}");
    let e = with_file("[table]\nx = 1\n", &["server", "run"]).unwrap_err().to_string();
    assert!(e.contains("key `table`"), "{e}");
    for value in ["1.5", "\"yes\"", "1"] {
        let e = with_file(&format!("insecure = {value}\n"), &["agent", "run"]).unwrap_err().to_string();
        assert!(e.contains("key `insecure`: expected true or false"), "{value}: {e}");
    }
    let e = with_file("listen = \n", &["server", "run"]).unwrap_err().to_string();
    assert!(e.contains("lanyard-server.toml (line 1):"), "{e}");
    // A key of the agent is not one of the server.
    let e = with_file("join-token = \"t\"\n", &["server", "run"]).unwrap_err().to_string();
    assert!(e.contains("unknown key `join-token`"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn a_syntax_error_is_one_line_with_its_line_number() {
    let e = expand_text("f.toml", "a = 1\nb = \"x\nc = 2\n", &[], &BTreeSet::new(), |_| false).unwrap_err();
    let ConfigError::Syntax { line, .. } = &e else { panic!("{e:?}") };
    assert_eq!(*line, Some(2));
    assert!(!e.to_string().contains('\n'), "{e}");
}

#[test]
fn a_value_the_flag_refuses_is_attributed_to_the_file() {
    let e = with_file("checkpoint-every = \"often\"\n", &["server", "run"]).unwrap();
    let error = command().try_get_matches_from(&e.args).unwrap_err();
    let line = explain(&e, &error, "invalid value 'often'".to_owned());
    assert!(line.starts_with("config ") && line.contains("key `checkpoint-every`: invalid value"), "{line}");
    // A flag on the command line is not blamed on the file.
    let e = with_file("", &["server", "run", "--checkpoint-every", "often"]).unwrap();
    let error = command().try_get_matches_from(&e.args).unwrap_err();
    assert_eq!(explain(&e, &error, "plain".to_owned()), "plain");
}

#[test]
fn other_commands_no_config_and_unreadable_files() {
    for words in [&["lanyard", "entry", "list"][..], &["lanyard", "server", "run", "--listen", "x"][..]] {
        let e = expand(args(words), &command(), &CONFIGURABLE).unwrap();
        assert_eq!(e.args, args(words));
        assert!(e.file.is_none());
    }
    let e = expand(args(&["lanyard", "server", "run", "--config"]), &command(), &CONFIGURABLE).unwrap_err();
    assert_eq!(e, ConfigError::MissingPath);
    let e = expand(args(&["lanyard", "server", "run", "--config=/nonexistent/x.toml"]), &command(), &CONFIGURABLE)
        .unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    assert!(e.to_string().starts_with("config /nonexistent/x.toml: "), "{e}");
}
