//! `LINKPULSE_LOG_FORMAT`: a person at a terminal reads text, a log collector gets JSON. The worker
//! binary runs once on a real pseudo-terminal (util-linux `script`, part of every Debian base
//! system) and once on a pipe, with `--until-empty` on an empty queue so it logs and exits.

use std::process::Stdio;
use std::time::Duration;

use sqlx::PgPool;
use tokio::process::Command;

use crate::helpers::url_of;

/// The worker's line saying it is ready, from a run on a terminal (`tty`) or a pipe, with
/// `LINKPULSE_LOG_FORMAT` set to `format` when given.
async fn ready_line(pool: &PgPool, tty: bool, format: Option<&str>) -> String {
    let worker = env!("CARGO_BIN_EXE_linkpulse-worker");
    let mut command = if tty {
        // `script -qfec CMD /dev/null` runs CMD with a new pseudo-terminal as its stdin, stdout and
        // stderr, and copies what it writes to its own stdout.
        let mut script = Command::new("script");
        script.args(["-qfec", &format!("{worker} --until-empty"), "/dev/null"]);
        script
    } else {
        let mut direct = Command::new(worker);
        direct.arg("--until-empty");
        direct
    };
    command
        .env("DATABASE_URL", url_of(pool).await)
        .env("LINKPULSE_WORKER_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove(linkpulse_shared::telemetry::LOG_FORMAT_VAR)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(format) = format {
        command.env(linkpulse_shared::telemetry::LOG_FORMAT_VAR, format);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the worker exits once the queue is empty")
        .expect("run the worker");
    assert!(output.status.success(), "{output:?}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .find(|line| line.contains("worker ready"))
        .unwrap_or_else(|| panic!("no ready line in:\n{text}"))
        .to_owned()
}

fn is_json(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line.trim()).is_ok_and(|v| v["message"] == "worker ready")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn logs_are_text_on_a_terminal_and_json_elsewhere_unless_the_setting_says(pool: PgPool) {
    let on_terminal = ready_line(&pool, true, None).await;
    assert!(!is_json(&on_terminal), "a terminal gets text: {on_terminal}");
    assert!(on_terminal.contains("INFO"), "{on_terminal}");
    // Colored for the person reading it.
    assert!(on_terminal.contains('\u{1b}'), "{on_terminal:?}");

    let on_pipe = ready_line(&pool, false, None).await;
    assert!(is_json(&on_pipe), "a pipe gets JSON: {on_pipe}");

    let forced_json = ready_line(&pool, true, Some("json")).await;
    assert!(is_json(&forced_json), "json on a terminal: {forced_json}");
    let forced_text = ready_line(&pool, false, Some("text")).await;
    assert!(
        !is_json(&forced_text) && forced_text.contains("INFO"),
        "text on a pipe: {forced_text}"
    );
    assert!(
        !forced_text.contains('\u{1b}'),
        "no color codes in a pipe: {forced_text:?}"
    );
}
