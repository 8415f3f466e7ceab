//! The command line explains itself: `--help` lists every configuration variable of the table
//! with its default and never a secret's value, `--json` is global, and a wrong value is refused
//! by clap with the possible ones. The real binaries, as an operator runs them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::PgPool;

use crate::helpers::url_of;

const PRODUCER: &str = env!("CARGO_BIN_EXE_linkpulse-producer");
const WORKER: &str = env!("CARGO_BIN_EXE_linkpulse-worker");

/// Runs `bin args` with only `vars` in its environment.
fn run(bin: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(bin)
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("run the binary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The variables `--help` names as `[env: NAME…]`.
fn help_variables(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

/// The configuration table's file: docs/configuration.md where the docs keep it, else the README.
fn table_file() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let docs = root.join("docs/configuration.md");
    if docs.exists() { docs } else { root.join("README.md") }
}

/// Every variable in the first column of the table headed `| variable | default | meaning |`
/// (a cell may name several, each in backticks).
fn table_variables(markdown: &str) -> BTreeSet<String> {
    let mut lines = markdown
        .lines()
        .skip_while(|line| line.trim() != "| variable | default | meaning |")
        .skip(2); // the header and the `|---|` line
    let mut variables = BTreeSet::new();
    while let Some(line) = lines.next().filter(|l| l.trim_start().starts_with('|')) {
        let first = line
            .trim_start()
            .trim_start_matches('|')
            .split('|')
            .next()
            .unwrap_or("");
        for (i, piece) in first.split('`').enumerate() {
            let is_name = !piece.is_empty()
                && piece
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if i % 2 == 1 && is_name {
                variables.insert(piece.to_owned());
            }
        }
    }
    variables
}

#[test]
fn help_lists_every_configuration_variable_and_only_those() {
    let file = table_file();
    let markdown = std::fs::read_to_string(&file).expect("read the configuration table");
    let table = table_variables(&markdown);
    assert!(
        table.len() > 30,
        "no configuration table found in {}: {table:?}",
        file.display()
    );

    let producer_help = run(PRODUCER, &["--help"], &[]);
    assert!(producer_help.status.success(), "{producer_help:?}");
    let producer = help_variables(&stdout(&producer_help));
    let worker_help = run(WORKER, &["--help"], &[]);
    assert!(worker_help.status.success(), "{worker_help:?}");
    let worker = help_variables(&stdout(&worker_help));

    let in_help: BTreeSet<String> = producer.union(&worker).cloned().collect();
    let missing: Vec<&String> = table.difference(&in_help).collect();
    assert!(
        missing.is_empty(),
        "in {} but in neither --help: {missing:?}",
        file.display()
    );
    for (bin, vars) in [("producer", &producer), ("worker", &worker)] {
        let undocumented: Vec<&String> = vars.difference(&table).collect();
        assert!(
            undocumented.is_empty(),
            "{bin} --help names variables missing from {}: {undocumented:?}",
            file.display()
        );
    }

    // Each shows its default, rendered from the same constants the settings use.
    let text = stdout(&producer_help);
    for expected in [
        "[default: 1d]",
        "[default: 127.0.0.1:8080]",
        "[default: linkpulse-producer]",
    ] {
        assert!(text.contains(expected), "{expected} missing from producer --help");
    }
    assert!(stdout(&worker_help).contains("[default: linkpulse-worker]"));
}

#[test]
fn help_never_shows_a_secret_set_in_the_environment() {
    let vars = [
        ("LINKPULSE_ADMIN_TOKEN", "sekrit-value"),
        ("LINKPULSE_READ_TOKEN", "sekrit-reader"),
        ("LINKPULSE_SESSION_KEY", "sekrit-session-key-of-more-than-32-chars"),
        ("GITHUB_TOKEN", "sekrit-github"),
        ("DATABASE_URL", "postgres://app:sekrit-password@db/links"),
        // The premise: a value that is not a secret is shown.
        ("LINKPULSE_CHECK_AFTER", "36h"),
    ];
    for (bin, args) in [
        (PRODUCER, &["--help"][..]),
        (PRODUCER, &["-h"][..]),
        (WORKER, &["--help"][..]),
    ] {
        let output = run(bin, args, &vars);
        assert!(output.status.success(), "{output:?}");
        let help = stdout(&output);
        assert!(help.contains("LINKPULSE_CHECK_AFTER=36h"), "{bin} {args:?}: {help}");
        assert!(help.contains("LINKPULSE_ADMIN_TOKEN"), "{bin} {args:?}: {help}");
        assert!(!help.contains("sekrit"), "{bin} {args:?} shows a secret: {help}");
    }
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn json_is_accepted_before_and_after_the_subcommand(pool: PgPool) {
    let database_url = url_of(&pool).await;
    let env = [("DATABASE_URL", database_url.as_str()), ("RUST_LOG", "warn")];
    let mut outputs = Vec::new();
    for args in [
        &["--json", "queue", "stats"][..],
        &["queue", "stats", "--json"][..],
        &["queue", "--json", "stats"][..],
    ] {
        // Blocking is fine here: the child has its own connection, the pool waits.
        let output = run(PRODUCER, args, &env);
        assert!(output.status.success(), "{args:?}: {output:?}");
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
        assert!(value["kinds"]["check"]["queued"].is_number(), "{args:?}: {value}");
        outputs.push(value);
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]), "{outputs:?}");

    // A listing nested two levels down honours it too, and a setting flag (before the
    // subcommand) stands in for its variable.
    let output = run(
        PRODUCER,
        &["--database-url", &database_url, "links", "list", "--json"],
        &[("RUST_LOG", "warn")],
    );
    assert!(output.status.success(), "{output:?}");
    let links: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(links, serde_json::json!([]));
}

#[test]
fn a_wrong_state_is_refused_with_the_possible_values() {
    let output = run(PRODUCER, &["queue", "list", "--state", "bogus"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // clap's refusal, with the producer's exit code for a usage error (1: the operator's
    // mistake; 2 is reserved for internal errors), before any database is needed.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("invalid value 'bogus'"), "{stderr}");
    assert!(
        stderr.contains("[possible values: queued, running, done, failed]"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());

    // Help lists them too, and the other closed sets.
    let help = stdout(&run(PRODUCER, &["queue", "list", "--help"], &[]));
    assert!(help.contains("queued") && help.contains("deliver"), "{help}");
    let help = stdout(&run(PRODUCER, &["links", "list", "--help"], &[]));
    assert!(help.contains("repo_unavailable"), "{help}");
}
