//! Rules per host (`LINKPULSE_RULES_FILE`): exclude patterns (links saved `paused` with the rule as
//! reason, never enqueued, never fetched; `links apply-rules` for links saved before), accepted
//! status codes (a host's 403 counts as ok), `producer config` showing them, and a bad file
//! stopping the processes with its path and line.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use linkpulse_shared::rules::Rules;

use crate::app::TestApp;
use crate::helpers::url_of;
use crate::import_export::TempDir;
use crate::producer_loop::producer_command;

/// The exclude pattern of these tests: anything under `/excluded/` on the local site.
const PATTERN: &str = r"^http://127\.0\.0\.1:\d+/excluded/";

/// A rules file holding `text`.
fn rules_file(text: &str) -> (String, TempDir) {
    let dir = TempDir::new();
    let path = dir.0.join("rules.toml");
    std::fs::write(&path, text).expect("write rules");
    (path.display().to_string(), dir)
}

fn exclude_rules() -> String {
    format!("[[exclude]]\npattern = '{PATTERN}'\n")
}

/// `(exit code, stdout, stderr)` of `producer ARGS` with `env`, `stdin` fed to it.
async fn producer(pool: &PgPool, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> (Option<i32>, String, String) {
    let url = url_of(pool).await;
    let mut child = producer_command(&url, args, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn producer");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin).await.expect("write stdin");
    drop(pipe);
    let output = child.wait_with_output().await.expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `(status, status_reason)` of the link saved as `url`.
async fn status_of(pool: &PgPool, url: &str) -> (i64, String, Option<String>) {
    sqlx::query_as("SELECT id, status, status_reason FROM links WHERE url = $1")
        .bind(url)
        .fetch_one(pool)
        .await
        .expect("link")
}

/// Jobs ever enqueued for link `id` (any kind, any state).
async fn jobs_of(pool: &PgPool, id: i64) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE dedupe_key = 'link:' || $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("count");
    n
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn an_excluded_link_is_saved_paused_with_its_rule_and_never_enqueued_or_fetched(pool: PgPool) {
    let mut app = TestApp::spawn(pool.clone()).await;
    let (path, _dir) = rules_file(&exclude_rules());
    let excluded = app.url("/excluded/page");
    let kept = app.url("/ok");
    let input = format!("{excluded}\n{kept}\n");
    let (code, stdout, stderr) = producer(
        &pool,
        &["links", "import", "-", "--json"],
        &[("LINKPULSE_RULES_FILE", &path)],
        input.as_bytes(),
    )
    .await;
    assert_eq!(code, Some(0), "an excluded link is accepted, not rejected: {stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(
        (report["accepted"].as_i64(), report["excluded"].as_i64()),
        (Some(2), Some(1))
    );

    let (excluded_id, status, reason) = status_of(&pool, &excluded).await;
    assert_eq!(status, "paused");
    assert_eq!(
        reason.as_deref(),
        Some(format!("excluded by rule \"{PATTERN}\"").as_str())
    );
    let (kept_id, status, reason) = status_of(&pool, &kept).await;
    assert_eq!((status.as_str(), reason), ("active", None));
    assert_eq!(jobs_of(&pool, excluded_id).await, 0, "no first jobs for a paused link");
    assert_eq!(jobs_of(&pool, kept_id).await, 2, "a check and a refresh for the other");

    // Every kind due every cycle: the excluded link is still never picked, never fetched.
    app.settings.refresh_enabled = true;
    app.settings.refresh_after = std::time::Duration::ZERO;
    for _ in 0..2 {
        app.cycle_and_work().await;
    }
    assert_eq!(jobs_of(&pool, excluded_id).await, 0);
    assert!(
        jobs_of(&pool, kept_id).await >= 4,
        "the other link is checked every cycle"
    );
    assert_eq!(app.site.hits("/excluded/page"), 0);
    assert!(app.site.hits("/ok") > 0);
    assert_eq!(status_of(&pool, &excluded).await.1, "paused");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn apply_rules_pauses_the_saved_links_a_pattern_matches_and_cancels_their_jobs(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let urls = [app.url("/excluded/one"), app.url("/excluded/two"), app.url("/ok")];
    let ids = app.add_links(&urls).await;
    // A queued check for each, as a cycle leaves them.
    let report = app.run_cycle().await;
    assert_eq!(report.check.enqueued, 3);
    sqlx::query("UPDATE links SET status = 'inaccessible' WHERE id = $1")
        .bind(ids[1])
        .execute(&pool)
        .await
        .expect("a dead one");

    // Without a rules file there is nothing to apply.
    let (code, stdout, _) = producer(&pool, &["links", "apply-rules"], &[], b"").await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("LINKPULSE_RULES_FILE is not set") && stdout.contains("0 link(s) paused"),
        "{stdout}"
    );

    let (path, _dir) = rules_file(&exclude_rules());
    let env = [("LINKPULSE_RULES_FILE", path.as_str())];
    let (code, stdout, stderr) = producer(&pool, &["links", "apply-rules", "--json"], &env, b"").await;
    assert_eq!(code, Some(0), "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(answer["rules_file"], path.as_str());
    let paused = answer["paused"].as_array().expect("paused");
    let paused_ids: Vec<i64> = paused.iter().map(|p| p["id"].as_i64().expect("id")).collect();
    assert_eq!(paused_ids, ids[..2]);
    assert_eq!(paused[1]["from"], "inaccessible");
    assert!(paused.iter().all(|p| p["cancelled_jobs"] == 1), "{answer}");

    let reason = format!("excluded by rule \"{PATTERN}\"");
    for (id, url) in ids[..2].iter().zip(&urls) {
        let (_, status, stored) = status_of(&pool, url).await;
        assert_eq!((status.as_str(), stored.as_deref()), ("paused", Some(reason.as_str())));
        let (state, class): (String, Option<String>) =
            sqlx::query_as("SELECT state, result_class FROM queue_jobs WHERE dedupe_key = 'link:' || $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("job");
        assert_eq!((state.as_str(), class.as_deref()), ("failed", Some("cancelled")));
    }
    // Each transition has its event, by `rule`.
    let events: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
        "SELECT link_id, to_status, actor, reason FROM link_events WHERE actor = 'rule' ORDER BY link_id",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.1 == "paused" && e.3.as_deref() == Some(reason.as_str()))
    );
    // The link the pattern does not match is untouched, and a second run finds nothing to do.
    assert_eq!(status_of(&pool, &urls[2]).await.1, "active");
    let (code, stdout, _) = producer(&pool, &["links", "apply-rules"], &env, b"").await;
    assert_eq!((code, stdout.trim()), (Some(0), "0 link(s) paused"));
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_hosts_accepted_403_counts_as_ok_and_without_the_rule_it_is_blocked(pool: PgPool) {
    let mut app = TestApp::spawn(pool.clone()).await;
    app.site.toggle.store(403, Ordering::SeqCst);
    let id = app.add_links(&[app.url("/toggle")]).await[0];

    app.cycle_and_work().await;
    let link = app.link(id).await;
    assert_eq!(
        (link.last_outcome.as_deref(), link.last_status_code),
        (Some("blocked"), Some(403)),
        "without a rule a 403 is blocked"
    );

    app.settings.rules = Arc::new(Rules::parse("[[host]]\nname = \"127.0.0.1\"\naccept = [403]\n").expect("rules"));
    app.cycle_and_work().await;
    let link = app.link(id).await;
    assert_eq!(
        (
            link.last_outcome.as_deref(),
            link.last_status_code,
            link.last_error.as_deref()
        ),
        (Some("ok"), Some(403), None),
        "the host's accepted 403 is ok"
    );
    assert_eq!((link.status.as_str(), link.consecutive_failures), ("active", 0));

    // A code the rule does not list is judged as usual.
    app.site.toggle.store(404, Ordering::SeqCst);
    app.cycle_and_work().await;
    let link = app.link(id).await;
    assert_eq!(
        (link.last_outcome.as_deref(), link.consecutive_failures),
        (Some("dead"), 1)
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_bad_rules_file_stops_the_processes_naming_the_file_and_line(pool: PgPool) {
    let (bad, _dir) = rules_file("[[host]]\nname = \"example.org\"\naccept = [403, 42]\n");
    for args in [&["config"][..], &["run"], &["links", "import", "-"]] {
        let (code, _, stderr) = producer(&pool, args, &[("LINKPULSE_RULES_FILE", &bad)], b"").await;
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("LINKPULSE_RULES_FILE=\"{bad}\"")) && stderr.contains("line 3"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("between 100 and 999"), "{stderr}");
    }
    let url = url_of(&pool).await;
    let worker = Command::new(env!("CARGO_BIN_EXE_linkpulse-worker"))
        .env("DATABASE_URL", &url)
        .env("LINKPULSE_RULES_FILE", &bad)
        .env("LINKPULSE_WORKER_ADDR", "127.0.0.1:0")
        .kill_on_drop(true)
        .output()
        .await
        .expect("worker");
    assert_eq!(worker.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&worker.stderr).contains(&bad));

    let (code, _, stderr) = producer(
        &pool,
        &["config"],
        &[("LINKPULSE_RULES_FILE", "/nonexistent/rules.toml")],
        b"",
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("/nonexistent/rules.toml") && stderr.contains("cannot read the rules file"),
        "{stderr}"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn producer_config_shows_the_rules_file_and_its_summary(pool: PgPool) {
    let (path, _dir) = rules_file(&format!(
        "{}\n[[host]]\nname = \"Example.org\"\naccept = [403, 429]\n",
        exclude_rules()
    ));
    let env = [("LINKPULSE_RULES_FILE", path.as_str())];
    let (code, stdout, stderr) = producer(&pool, &["config", "--json"], &env, b"").await;
    assert_eq!(code, Some(0), "{stderr}");
    let config: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(config["settings"]["LINKPULSE_RULES_FILE"], path.as_str());
    assert_eq!(
        config["rules"],
        serde_json::json!({
            "file": path,
            "exclude_patterns": 1,
            "patterns": [PATTERN],
            "hosts": [{"name": "example.org", "accept": [403, 429]}],
        })
    );
    let (code, stdout, _) = producer(&pool, &["config"], &env, b"").await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains(&format!("LINKPULSE_RULES_FILE={path}\n")), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "# rules (from {path}): 1 exclude pattern(s), 1 host(s) with accepted status codes"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("# host example.org accepts 403, 429"), "{stdout}");
    let (_, stdout, _) = producer(&pool, &["config"], &[], b"").await;
    assert!(stdout.contains("LINKPULSE_RULES_FILE=(unset)"), "{stdout}");
    assert!(stdout.contains("# rules: none"), "{stdout}");
}
