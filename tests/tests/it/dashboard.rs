//! The dashboard in a real (headless) Chromium: sign in, requeue a failed job and mark an
//! inaccessible link active, and see both on the page.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use linkpulse_shared::config::AdminToken;

use crate::app::TestApp;
use crate::helpers::{count_state, wait_for};

const TOKEN: &str = "dashboard-test-token";

fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Set to `1` to skip the browser test where Chromium cannot be installed (never in CI).
const SKIP_VARIABLE: &str = "LINKPULSE_SKIP_BROWSER_TESTS";

/// Chromium and chromedriver, or `None` when the operator explicitly skips the browser test.
/// A missing browser is a failure, not a silent pass: CI (`.ci/run` exports `CI=true`) installs
/// it with `scripts/ensure-browser.sh`, and a local run must either do the same or say it skips.
pub(crate) fn browser() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let skip = std::env::var(SKIP_VARIABLE).is_ok_and(|v| v == "1");
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    if skip && !in_ci {
        eprintln!("skipping the browser test: {SKIP_VARIABLE}=1");
        return None;
    }
    let found = (find_program("chromium"), find_program("chromedriver"));
    let (Some(chromium), Some(driver)) = found else {
        panic!(
            "chromium and chromedriver must be on PATH for the dashboard's browser test (found {found:?}): \
             run scripts/ensure-browser.sh, or set {SKIP_VARIABLE}=1 outside CI to skip it"
        );
    };
    Some((chromium, driver))
}

/// A chromedriver child and a WebDriver session of headless Chromium with a throwaway profile.
pub(crate) struct Browser {
    /// The session; every test drives the page through it.
    pub(crate) client: Client,
    chromedriver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session with `chromium`.
    pub(crate) async fn start(chromium: &Path, driver: &Path) -> Self {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            listener.local_addr().expect("addr").port()
        };
        let chromedriver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromedriver");
        wait_for(Duration::from_secs(20), "chromedriver to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        let profile = std::env::temp_dir().join(format!("linkpulse-chromium-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = ClientBuilder::rustls()
            .expect("tls connector")
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("webdriver session");
        Self {
            client,
            chromedriver,
            profile,
        }
    }

    /// Ends the session, chromedriver and the profile.
    pub(crate) async fn close(mut self) {
        self.client.close().await.expect("close session");
        let _ = self.chromedriver.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Signs in on the loaded dashboard with `token` (sets the cookie) and waits for the signed-in
/// page.
pub(crate) async fn sign_in(client: &Client, token: &str) {
    client
        .find(Locator::Id("token"))
        .await
        .expect("token field")
        .send_keys(token)
        .await
        .expect("type token");
    client
        .find(Locator::Css("#login button"))
        .await
        .expect("sign-in button")
        .click()
        .await
        .expect("sign in");
    // A click returns before the navigation it starts ends: wait for the signed-in page.
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("session"))
        .await
        .expect("signed in");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn dashboard_requeues_a_failed_job_and_marks_a_link_active_from_the_browser(pool: PgPool) {
    let Some((chromium, driver)) = browser() else {
        return;
    };

    let app = TestApp::spawn(pool).await;
    let ids = app.add_links(&[app.url("/a"), app.url("/b")]).await;
    app.run_cycle().await;
    // Every job fails its attempt, as a worker's acknowledgement writes it.
    let owner = uuid::Uuid::new_v4();
    linkpulse_queue::registry::register(&app.pool, owner, "dashboard-test")
        .await
        .expect("register");
    let kinds = [linkpulse_shared::link_jobs::CHECK, linkpulse_shared::link_jobs::REFRESH];
    let claimed = linkpulse_queue::claim::claim_batch(&app.pool, owner, &kinds, 100, 100)
        .await
        .expect("claim");
    let failures: Vec<linkpulse_queue::Completion> = claimed
        .iter()
        .map(|job| {
            let mut completion = linkpulse_queue::Completion::new(
                crate::helpers::lease_of(job),
                linkpulse_queue::Outcome::Fail {
                    error: "HTTP 503 from the test".into(),
                },
            );
            completion.report.result = Some("transient".into());
            completion.report.status_code = Some(599);
            completion.duration = Some(Duration::from_millis(42));
            completion
        })
        .collect();
    linkpulse_queue::ack::complete_many(&app.pool, &failures, &linkpulse_queue::RetryPolicy::default())
        .await
        .expect("fail jobs");
    // A link the checks gave up on, with no job of its own: the "mark active" button's target.
    let dead = app.add_links(&[app.url("/dead")]).await[0];
    sqlx::query("UPDATE links SET status = 'inaccessible', consecutive_failures = 3 WHERE id = $1")
        .bind(dead)
        .execute(&app.pool)
        .await
        .expect("mark the link inaccessible");
    let key = linkpulse_shared::link_jobs::dedupe_key(ids[0]);
    let (job_id,): (i64,) = sqlx::query_as("SELECT id FROM queue_jobs WHERE dedupe_key = $1")
        .bind(&key)
        .fetch_one(&app.pool)
        .await
        .expect("job");

    let mut settings = app.settings.clone();
    settings.admin_addr = "127.0.0.1:0".parse().expect("addr");
    settings.admin_token = Some(AdminToken::new(TOKEN));
    let stop = CancellationToken::new();
    let admin = producer::admin::serve(app.pool.clone(), Arc::new(settings), stop.clone())
        .await
        .expect("admin server");

    let browser = Browser::start(&chromium, &driver).await;
    let client = &browser.client;

    let base = format!("http://{admin}/");
    client.goto(&base).await.expect("load dashboard");
    let failed_cell = client
        .find(Locator::Css("#queue-check td[data-state=failed]"))
        .await
        .expect("queue table");
    assert_eq!(failed_cell.text().await.expect("text"), "2");
    let row = client
        .find(Locator::Id(&format!("job-{job_id}")))
        .await
        .expect("failed job row");
    let text = row.text().await.expect("text");
    assert!(text.contains("HTTP 503 from the test"), "{text}");
    // The audit trail: result class, status code and duration of the final attempt.
    assert!(
        text.contains("transient") && text.contains("599") && text.contains("42 ms"),
        "{text}"
    );
    let failed_24h = client
        .find(Locator::Css("#queue-check td[data-stat=failed_24h]"))
        .await
        .expect("queue table")
        .text()
        .await
        .expect("text");
    assert_eq!(failed_24h, "2");
    client
        .find(Locator::Id(&format!("finished-{job_id}")))
        .await
        .expect("the job in the recently finished table");
    let dead_row = client
        .find(Locator::Id(&format!("link-{dead}")))
        .await
        .expect("the inaccessible link's row")
        .text()
        .await
        .expect("text");
    assert!(dead_row.contains("inaccessible"), "{dead_row}");

    // Sign in (sets the cookie), then requeue exactly that job.
    sign_in(client, TOKEN).await;
    client
        .find(Locator::Id(&format!("requeue-{job_id}")))
        .await
        .expect("requeue button")
        .click()
        .await
        .expect("click requeue");

    wait_for(Duration::from_secs(10), "the job to be queued", || async {
        let (state,): (String,) = sqlx::query_as("SELECT state FROM queue_jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&app.pool)
            .await
            .expect("state");
        (state == "queued").then_some(())
    })
    .await;
    assert_eq!(count_state(&app.pool, "failed").await, 1, "only the clicked job moved");

    // The page we were redirected to shows it: one queued, one failed, the row gone. The old page
    // has the same table, so wait for the new count rather than for the element.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let queued = match client.find(Locator::Css("#queue-check td[data-state=queued]")).await {
            Ok(cell) => cell.text().await.ok(),
            Err(_) => None,
        };
        if queued.as_deref() == Some("1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page never showed one queued job (last: {queued:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let source = client.source().await.expect("page source");
    assert!(
        !source.contains(&format!("id=\"job-{job_id}\"")),
        "requeued job no longer listed as failed"
    );

    // Mark the inaccessible link active: the override resets its failures, and the page the
    // button leads back to no longer lists it among the links that are not active.
    client
        .find(Locator::Id(&format!("activate-{dead}")))
        .await
        .expect("mark-active button")
        .click()
        .await
        .expect("click mark active");
    wait_for(Duration::from_secs(10), "the link to be active", || async {
        let link = app.link(dead).await;
        (link.status == "active" && link.consecutive_failures == 0).then_some(())
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client
        .source()
        .await
        .expect("page source")
        .contains(&format!("id=\"link-{dead}\""))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page still lists the activated link as not active"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    browser.close().await;
    stop.cancel();
}
