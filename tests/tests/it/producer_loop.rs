//! `producer run` as a process: the cycle loop keeps its interval when a cycle overruns, survives
//! failing cycles, moves `linkpulse_cycles_total` and `linkpulse_producer_leader` as the README
//! documents them, and never enqueues a kind that is turned off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use linkpulse_shared::config::ExposeSecret;

use crate::admin::{http, parse_prometheus};
use crate::app::TestApp;
use crate::helpers::{count_state, wait_for};

/// A `producer` command on the test's database with no OpenTelemetry variable inherited from the
/// test's own environment; `env` comes last and wins.
pub(crate) fn producer_command(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_linkpulse-producer"));
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") || name.starts_with("LINKPULSE_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("LINKPULSE_ADMIN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// A `producer run` child process: its admin address and its JSON log lines.
pub(crate) struct ProducerRun {
    child: Child,
    pid: i32,
    /// Where its admin server listens.
    pub(crate) admin: SocketAddr,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl ProducerRun {
    /// Starts `producer run` and waits until its admin server listens.
    pub(crate) async fn spawn(database_url: &str, env: &[(&str, &str)]) -> Self {
        let mut child = producer_command(database_url, &["run"], env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn producer run");
        let pid = i32::try_from(child.id().expect("pid")).expect("pid fits");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("[producer {pid}] {line}");
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    seen.lock().expect("lock").push(value);
                }
            }
        });
        let admin = wait_for(Duration::from_secs(30), "the admin server to listen", || {
            let lines = lines.clone();
            async move {
                lines
                    .lock()
                    .expect("lock")
                    .iter()
                    .find(|l| l["message"] == "admin server listening")
                    .and_then(|l| l["addr"].as_str()?.parse().ok())
            }
        })
        .await;
        Self {
            child,
            pid,
            admin,
            lines,
        }
    }

    /// Its `/metrics`, parsed.
    pub(crate) async fn metrics(&self) -> HashMap<String, f64> {
        let reply = http(self.admin, "GET", "/metrics", None, None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        parse_prometheus(&reply.body)
    }

    /// `linkpulse_cycles_total` (absent before the first cycle: 0).
    pub(crate) async fn cycles(&self) -> f64 {
        self.metrics()
            .await
            .get("linkpulse_cycles_total")
            .copied()
            .unwrap_or_default()
    }

    /// `linkpulse_producer_leader`, once the loop has set it.
    async fn leader_gauge(&self) -> Option<f64> {
        self.metrics().await.get("linkpulse_producer_leader").copied()
    }

    /// Log lines whose message is `message`.
    pub(crate) fn logged(&self, message: &str) -> Vec<Value> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|l| l["message"] == message)
            .cloned()
            .collect()
    }

    /// Whether the process still runs.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sends `signal`, then waits for the exit code.
    pub(crate) async fn stop(mut self, signal: Signal) -> Option<i32> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), signal).expect("signal producer");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("producer exited in time")
            .expect("wait")
            .code()
    }
}

/// Settings of the loop tests: a check of every link every cycle, refreshes off.
fn loop_env(interval: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("LINKPULSE_CYCLE_INTERVAL", interval),
        ("LINKPULSE_CHECK_AFTER", "0s"),
        ("LINKPULSE_REFRESH_ENABLED", "false"),
    ]
}

/// Statements waiting for the lock that session `blocker` holds.
async fn statements_blocked_by(pool: &PgPool, blocker: i32) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND $1 = ANY (pg_blocking_pids(pid))",
    )
    .bind(blocker)
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity");
    n
}

/// A cycle held up for six intervals finishes once and is followed by at most the one late tick
/// and the next scheduled one: the missed ticks are dropped, not run back to back. While it is
/// held up, no second cycle starts beside it.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn an_overrunning_cycle_is_not_started_twice(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/a")]).await;
    let interval = Duration::from_secs(1);
    let producer = ProducerRun::spawn(app.settings.database_url.expose_secret(), &loop_env("1s")).await;
    wait_for(Duration::from_secs(30), "the first cycle", || async {
        (producer.cycles().await >= 1.0).then_some(())
    })
    .await;

    // SHARE mode lets readers (the metrics scrape) through but blocks the cycle's INSERT.
    let mut blocker = PgConnection::connect(app.settings.database_url.expose_secret())
        .await
        .expect("blocker connection");
    let (blocker_pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(&mut blocker)
        .await
        .expect("pid");
    sqlx::raw_sql("BEGIN; LOCK TABLE queue_jobs IN SHARE MODE")
        .execute(&mut blocker)
        .await
        .expect("lock the queue");
    wait_for(Duration::from_secs(10), "a cycle to wait for the lock", || async {
        (statements_blocked_by(&app.pool, blocker_pid).await == 1).then_some(())
    })
    .await;
    let before = producer.cycles().await;
    let overrun = interval * 6;
    let held_until = Instant::now() + overrun;
    while Instant::now() < held_until {
        assert_eq!(
            statements_blocked_by(&app.pool, blocker_pid).await,
            1,
            "one cycle at a time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        producer.cycles().await,
        before,
        "premise: the held cycle has not finished"
    );
    sqlx::raw_sql("COMMIT")
        .execute(&mut blocker)
        .await
        .expect("release the queue");
    let released = Instant::now();

    wait_for(Duration::from_secs(10), "the held cycle to finish", || async {
        (producer.cycles().await > before).then_some(())
    })
    .await;
    // One interval after the release (the window measured, not a wait for an event): the held
    // cycle, the late tick that found it overrunning and the ticks on schedule, one or two.
    // Running the six missed ticks back to back would add six.
    tokio::time::sleep_until(released + interval).await;
    let after = producer.cycles().await - before;
    assert!(
        (1.0..=4.0).contains(&after),
        "{after} cycles finished within {interval:?} of a {overrun:?} overrun"
    );
    assert!(
        !producer.logged("schedule run overran its interval").is_empty(),
        "the overrun is logged"
    );
}

/// A cycle that fails (here every insert into the queue is refused) is logged and not counted;
/// the loop goes on, keeps the lead, and cycles again once the database accepts the jobs.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_loop_survives_failing_cycles(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/a")]).await;
    let mut producer = ProducerRun::spawn(app.settings.database_url.expose_secret(), &loop_env("300ms")).await;
    wait_for(Duration::from_secs(30), "the first cycle", || async {
        (producer.cycles().await >= 1.0).then_some(())
    })
    .await;

    sqlx::raw_sql(
        "CREATE FUNCTION refuse_jobs() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN RAISE EXCEPTION 'the test refuses new jobs'; END$$; \
         CREATE TRIGGER refuse_jobs BEFORE INSERT ON queue_jobs \
         FOR EACH STATEMENT EXECUTE FUNCTION refuse_jobs()",
    )
    .execute(&app.pool)
    .await
    .expect("refuse inserts");
    // Cycles run one after another: once one failed, every later one meets the trigger.
    let failures_before = producer.logged("schedule run failed").len();
    wait_for(Duration::from_secs(30), "a failed cycle", || async {
        (producer.logged("schedule run failed").len() > failures_before).then_some(())
    })
    .await;
    let counted = producer.cycles().await;
    wait_for(Duration::from_secs(30), "three more failed cycles", || async {
        (producer.logged("schedule run failed").len() >= failures_before + 4).then_some(())
    })
    .await;
    let failed = producer.logged("schedule run failed");
    let error = failed.last().and_then(|l| l["error"].as_str()).unwrap_or_default();
    assert!(error.contains("the test refuses new jobs"), "{failed:#?}");
    assert_eq!(producer.cycles().await, counted, "failed cycles are not counted");
    assert!(producer.is_running(), "the loop survived the failures");
    assert_eq!(http(producer.admin, "GET", "/livez", None, None).await.status, 200);
    assert_eq!(producer.leader_gauge().await, Some(1.0), "still the leader");

    // The job of the last good cycle is finished; once inserts work again a cycle enqueues anew.
    sqlx::raw_sql(
        "UPDATE queue_jobs SET state = 'done', finished_at = now(); \
         DROP TRIGGER refuse_jobs ON queue_jobs",
    )
    .execute(&app.pool)
    .await
    .expect("accept inserts again");
    wait_for(Duration::from_secs(30), "a cycle after the failures", || async {
        (count_state(&app.pool, "queued").await == 1).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(10), "the good cycle to be counted", || async {
        (producer.cycles().await > counted).then_some(())
    })
    .await;
    assert_eq!(producer.stop(Signal::SIGTERM).await, Some(0));
}

/// Two replicas: the leader's gauge is 1 and its counter grows, the follower's gauge is 0 and its
/// counter moves only for a cycle asked of it through `POST /api/cycle`. When the leader stops,
/// the follower's gauge turns 1 and its counter grows on its own.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn cycles_total_and_the_leader_gauge_move_as_documented(pool: PgPool) {
    const TOKEN: &str = "loop-test-token";
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/a")]).await;
    let mut env = loop_env("300ms");
    env.push(("LINKPULSE_ADMIN_TOKEN", TOKEN));
    let first = ProducerRun::spawn(app.settings.database_url.expose_secret(), &env).await;
    let second = ProducerRun::spawn(app.settings.database_url.expose_secret(), &env).await;

    // Both gauges are set at every tick, leader or not.
    let first_leads = wait_for(Duration::from_secs(30), "one leader and one follower", || async {
        match (first.leader_gauge().await, second.leader_gauge().await) {
            (Some(a), Some(b)) if a + b == 1.0 => Some(a == 1.0),
            _ => None,
        }
    })
    .await;
    let (leader, follower) = if first_leads { (first, second) } else { (second, first) };
    // The leader counts its cycles; after several ticks the follower still follows.
    wait_for(Duration::from_secs(30), "the leader's cycles", || async {
        (leader.cycles().await >= 3.0).then_some(())
    })
    .await;
    assert_eq!(leader.leader_gauge().await, Some(1.0));
    assert_eq!(follower.leader_gauge().await, Some(0.0));
    assert_eq!(follower.cycles().await, 0.0, "a follower does not cycle");

    // A cycle asked of the follower counts on the follower.
    let reply = http(follower.admin, "POST", "/api/cycle", Some(TOKEN), None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(follower.cycles().await, 1.0, "POST /api/cycle counts");
    assert_eq!(follower.leader_gauge().await, Some(0.0), "and does not make it lead");

    assert_eq!(
        leader.stop(Signal::SIGTERM).await,
        Some(0),
        "the leader stopped cleanly"
    );
    wait_for(Duration::from_secs(30), "the follower to lead", || async {
        (follower.leader_gauge().await == Some(1.0)).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(30), "the new leader's own cycles", || async {
        (follower.cycles().await >= 3.0).then_some(())
    })
    .await;
}

/// `LINKPULSE_<KIND>_ENABLED=false`: the loop runs cycles, the other kind is enqueued, this one
/// never; `producer cycle --json` reports it disabled.
async fn a_disabled_kind_enqueues_nothing(pool: PgPool, disabled: &str, enabled: &str) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/a"), app.url("/b")]).await;
    let variable = format!("LINKPULSE_{}_ENABLED", disabled.to_uppercase());
    let env = [
        ("LINKPULSE_CYCLE_INTERVAL", "200ms"),
        ("LINKPULSE_CHECK_AFTER", "0s"),
        ("LINKPULSE_REFRESH_AFTER", "0s"),
        (variable.as_str(), "false"),
    ];
    let producer = ProducerRun::spawn(app.settings.database_url.expose_secret(), &env).await;
    wait_for(Duration::from_secs(30), "three cycles", || async {
        (producer.cycles().await >= 3.0).then_some(())
    })
    .await;
    assert_eq!(jobs_of_kind(&app.pool, enabled).await, 2, "premise: both links are due");
    assert_eq!(jobs_of_kind(&app.pool, disabled).await, 0, "{variable}=false");
    assert_eq!(producer.stop(Signal::SIGTERM).await, Some(0));

    // The one-shot command reads the same variable and says so.
    sqlx::query("UPDATE queue_jobs SET state = 'done', finished_at = now()")
        .execute(&app.pool)
        .await
        .expect("finish jobs");
    let output = producer_command(app.settings.database_url.expose_secret(), &["cycle", "--json"], &env)
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("producer cycle");
    assert!(output.status.success(), "producer cycle failed");
    let report: Value = serde_json::from_slice(&output.stdout).expect("cycle JSON");
    assert_eq!(report[disabled]["enabled"], false, "{report}");
    assert_eq!(report[disabled]["enqueued"], 0, "{report}");
    assert_eq!(report[enabled]["enabled"], true, "{report}");
    assert_eq!(report[enabled]["enqueued"], 2, "{report}");
    assert_eq!(jobs_of_kind(&app.pool, disabled).await, 0, "{variable}=false");
}

async fn jobs_of_kind(pool: &PgPool, kind: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE kind = $1")
        .bind(kind)
        .fetch_one(pool)
        .await
        .expect("count");
    n
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_disabled_check_kind_enqueues_nothing(pool: PgPool) {
    a_disabled_kind_enqueues_nothing(pool, "check", "refresh").await;
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_disabled_refresh_kind_enqueues_nothing(pool: PgPool) {
    a_disabled_kind_enqueues_nothing(pool, "refresh", "check").await;
}
