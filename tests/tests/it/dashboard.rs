//! The dashboard in a real (headless) Chromium: sign in, requeue a failed job, see it queued.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use sqlx::PgPool;
use tokio::process::Command;
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

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn dashboard_requeues_a_failed_job_from_the_browser(pool: PgPool) {
    let (Some(chromium), Some(driver)) = (find_program("chromium"), find_program("chromedriver")) else {
        // Locally a missing browser is a skip; in CI (scripts/ensure-browser.sh ran) it is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium and chromedriver must be installed in CI (scripts/ensure-browser.sh)"
        );
        eprintln!("skipping the browser test: chromium or chromedriver not found (run scripts/ensure-browser.sh)");
        return;
    };

    let app = TestApp::spawn(pool).await;
    let ids = app.add_links(&[app.url("/a"), app.url("/b")]).await;
    app.run_cycle().await;
    sqlx::query(
        "UPDATE queue_jobs SET state = 'failed', finished_at = now(), attempts = max_attempts, \
         result_class = 'transient', status_code = 599, duration_ms = 42, \
         errors = errors || '[{\"error\":\"HTTP 503 from the test\"}]'::jsonb",
    )
    .execute(&app.pool)
    .await
    .expect("fail jobs");
    let key = linkpulse_shared::jobs::dedupe_key(ids[0]);
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

    // chromedriver on a free port, headless Chromium with a throwaway profile.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        listener.local_addr().expect("addr").port()
    };
    let mut chromedriver = Command::new(driver)
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

    // Sign in (sets the cookie), then requeue exactly that job.
    client
        .find(Locator::Id("token"))
        .await
        .expect("token field")
        .send_keys(TOKEN)
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

    client.close().await.expect("close session");
    let _ = chromedriver.kill().await;
    let _ = std::fs::remove_dir_all(&profile);
    stop.cancel();
}
