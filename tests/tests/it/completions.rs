//! `producer completions SHELL` and `worker completions SHELL`: scripts generated from the argument
//! definitions, printed without a database, that the shell accepts.

use std::process::Stdio;

use tokio::process::Command;

/// Runs `BIN completions SHELL` with an empty environment (no `DATABASE_URL`); its script.
async fn completions(bin: &str, shell: &str) -> String {
    let output = Command::new(bin)
        .args(["completions", shell])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run completions");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("utf-8")
}

#[tokio::test]
async fn completion_scripts_name_every_subcommand_and_parse_in_bash() {
    let producer = completions(env!("CARGO_BIN_EXE_linkpulse-producer"), "bash").await;
    for word in [
        "queue",
        "requeue",
        "recount",
        "schedules",
        "webhooks",
        "healthcheck",
        "--older-than",
    ] {
        assert!(producer.contains(word), "{word} missing from the bash script");
    }
    // bash itself parses the script without running it. Through stdin: with the global setting
    // flags in every subcommand the script is longer than one argument may be (128 KiB).
    let mut bash = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash -n");
    let mut stdin = bash.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, producer.as_bytes())
        .await
        .expect("write the script");
    drop(stdin);
    let checked = bash.wait_with_output().await.expect("bash -n");
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));

    let worker = completions(env!("CARGO_BIN_EXE_linkpulse-worker"), "zsh").await;
    assert!(
        worker.contains("--until-empty") && worker.contains("healthcheck"),
        "{worker}"
    );
    let refused = Command::new(env!("CARGO_BIN_EXE_linkpulse-producer"))
        .args(["completions", "tcsh"])
        .env_clear()
        .output()
        .await
        .expect("run completions");
    assert_eq!(refused.status.code(), Some(1), "an unknown shell is a usage error");
}
