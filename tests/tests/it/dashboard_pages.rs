//! Every dashboard page in a real (headless) Chromium on realistic data (300 jobs, 300 links):
//! the filters and keyset pagers of both lists, a job's and a link's page, requeue (one job and,
//! after its confirmation, every failed job of a filter), mark active and check now, sign in and
//! sign out. Each page is saved as a PNG ([`crate::dashboard::screenshot_dir`]).

use std::collections::BTreeSet;

use fantoccini::Locator;
use sqlx::PgPool;

use linkpulse_shared::link_jobs::dedupe_key;

use crate::app::TestApp;
use crate::dashboard::*;

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn console_pages_filters_pagers_and_buttons_work_in_a_real_browser(pool: PgPool) {
    let Some((chromium, driver)) = browser() else {
        return;
    };
    let app = TestApp::spawn(pool).await;
    let seeded = seed(&app).await;
    let pool = &app.pool;
    let jaeger = url::Url::parse(JAEGER).expect("url");
    let (addr, stop) = serve_console(&app, |s| s.jaeger_url = Some(jaeger)).await;
    let base = format!("http://{addr}");
    let browser = Browser::start(&chromium, &driver).await;
    let client = &browser.client;

    // ---- Overview, open without signing in on a loopback address.
    client.goto(&format!("{base}/")).await.expect("overview");
    client.find(Locator::Id("signin-link")).await.expect("not signed in");
    for state in ["queued", "running", "done", "failed"] {
        let expected = scalar(
            pool,
            &format!("SELECT count(*) FROM queue_jobs WHERE kind = 'check' AND state = '{state}'"),
        )
        .await;
        let shown = wait_text(client, &format!("#queue-check td[data-state={state}]"), |_| true).await;
        assert_eq!(shown, expected.to_string(), "check jobs {state}");
        let href = client
            .find(Locator::Css(&format!("#queue-check td[data-state={state}] a")))
            .await
            .expect("count links to the list")
            .attr("href")
            .await
            .expect("href");
        assert_eq!(
            href.as_deref(),
            Some(format!("/jobs?kind=check&state={state}").as_str())
        );
    }
    assert!(scalar(pool, "SELECT count(*) FROM queue_jobs WHERE state = 'running'").await == 10);
    // The chart: every finished job of the hour in a bar.
    let mut chart = (0, 0);
    for bar in client
        .find_all(Locator::Css("#throughput g[data-done]"))
        .await
        .expect("bars")
    {
        let number = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok()).expect("a count");
        chart.0 += number(bar.attr("data-done").await.expect("attr"));
        chart.1 += number(bar.attr("data-failed").await.expect("attr"));
    }
    let failed_now = scalar(pool, "SELECT count(*) FROM queue_jobs WHERE state = 'failed'").await;
    assert_eq!(
        chart,
        (seeded.done + seeded.history_done, failed_now + seeded.history_failed),
        "the chart sums the hour"
    );
    let workers = wait_text(client, "#workers", |_| true).await;
    assert!(workers.contains("linkpulse-worker-7f3c"), "{workers}");
    assert!(client.find(Locator::Id("no-workers")).await.is_err());
    let leader = wait_text(client, "#leader", |_| true).await;
    assert!(leader.contains("leader since"), "{leader}");
    client.find(Locator::Id("schedule-check")).await.expect("schedules");
    let webhooks = wait_text(client, "#webhooks", |_| true).await;
    assert!(
        webhooks.contains("https://chat.example.net/hooks/T0001") && webhooks.contains("HTTP 500 from the receiver"),
        "{webhooks}"
    );
    assert!(
        !client
            .source()
            .await
            .expect("source")
            .contains("http-equiv=\"refresh\"")
    );
    click(client, "refresh-toggle").await;
    wait_url(client, "auto-refresh", |u| u.query() == Some("refresh=on")).await;
    wait_text(client, "#refresh-toggle", |t| t == "turn off").await;
    assert!(
        client
            .source()
            .await
            .expect("source")
            .contains("http-equiv=\"refresh\"")
    );
    client.goto(&format!("{base}/")).await.expect("overview");
    screenshot(client, "overview.png").await;

    // Open pages, no buttons without a session.
    client.goto(&format!("{base}/jobs?state=failed")).await.expect("jobs");
    client.find(Locator::Id("jobs")).await.expect("failed jobs listed");
    assert!(
        client.find(Locator::Id("bulk-requeue")).await.is_err(),
        "no bulk requeue unsigned"
    );

    // ---- Sign in.
    client.goto(&format!("{base}/signin")).await.expect("sign-in page");
    screenshot(client, "signin.png").await;
    sign_in(client, TOKEN).await;
    assert_eq!(wait_text(client, "#session", |_| true).await, "Signed in (admin)");

    // ---- Jobs: newest first, 50 a page; the next page continues below the last id, no overlap.
    client.goto(&format!("{base}/jobs")).await.expect("jobs");
    let newest = ids(pool, "SELECT id FROM queue_jobs ORDER BY id DESC LIMIT 50").await;
    let page1 = wait_rows(client, "job", "data-state", &newest).await;
    assert_eq!(page1.len(), PAGE);
    assert!(
        client.find(Locator::Id("first-page")).await.is_err(),
        "already the newest"
    );
    // Each row's URL cell leads to its link's page.
    let (top, _) = page1[0];
    let top_link = scalar(
        pool,
        &format!("SELECT (payload->>'link_id')::int8 FROM queue_jobs WHERE id = {top}"),
    )
    .await;
    let href = client
        .find(Locator::Css(&format!("#job-{top} td.url a")))
        .await
        .expect("url cell")
        .attr("href")
        .await
        .expect("href");
    assert_eq!(href, Some(format!("/links/{top_link}")));
    screenshot(client, "jobs.png").await;
    click(client, "next-page").await;
    let older = ids(pool, "SELECT id FROM queue_jobs ORDER BY id DESC LIMIT 50 OFFSET 50").await;
    let url = wait_url(client, "the second page", |u| {
        u.query().is_some_and(|q| q.contains("before="))
    })
    .await;
    assert!(
        url.query()
            .is_some_and(|q| q.contains(&format!("before={}", newest[PAGE - 1]))),
        "{url}"
    );
    let page2 = wait_rows(client, "job", "data-state", &older).await;
    let first: BTreeSet<i64> = page1.iter().map(|(id, _)| *id).collect();
    assert!(page2.iter().all(|(id, _)| !first.contains(id)), "no overlap");
    assert!(page2[0].0 < newest[PAGE - 1], "continues below the last id");
    click(client, "first-page").await;
    wait_rows(client, "job", "data-state", &newest).await;

    // Filters: state and host.
    choose(client, "filter-state", "failed").await;
    type_into(client, "filter-host", "blog.example.net").await;
    click(client, "apply-filters").await;
    let expected = ids(
        pool,
        "SELECT id FROM queue_jobs WHERE state = 'failed' AND group_key = 'blog.example.net' ORDER BY id DESC LIMIT 50",
    )
    .await;
    assert!(expected.len() > 5, "{expected:?}");
    let shown = wait_rows(client, "job", "data-state", &expected).await;
    assert!(shown.iter().all(|(_, state)| state == "failed"), "{shown:?}");
    // Kind and result class (host cleared).
    type_into(client, "filter-host", "").await;
    choose(client, "filter-kind", "check").await;
    choose(client, "filter-result", "transient").await;
    click(client, "apply-filters").await;
    let transient = ids(
        pool,
        "SELECT id FROM queue_jobs WHERE state = 'failed' AND kind = 'check' AND result_class = 'transient' ORDER BY id DESC",
    )
    .await;
    assert!(transient.len() > 5 && transient.len() < PAGE, "{transient:?}");
    wait_rows(client, "job", "data-state", &transient).await;
    for id in &transient[..3] {
        let result = text_at(client, &format!("#job-{id} td.result")).await;
        assert_eq!(result.as_deref(), Some("transient"));
    }

    // ---- Bulk requeue of what the filter shows, after a confirmation that says how many.
    let other_failed = ids(
        pool,
        "SELECT id FROM queue_jobs WHERE state = 'failed' AND NOT (kind = 'check' AND result_class = 'transient') ORDER BY id",
    )
    .await;
    assert!(!other_failed.is_empty());
    click(client, "bulk-requeue-button").await;
    let count = wait_text(client, "#bulk-count", |_| true).await;
    assert!(
        count.starts_with(&format!("{} failed job(s) match", transient.len())),
        "{count}"
    );
    let confirm = wait_text(client, "#confirm-requeue", |_| true).await;
    assert_eq!(confirm, format!("Requeue {} job(s)", transient.len()));
    for id in &transient {
        assert_eq!(
            job_state(pool, *id).await,
            "failed",
            "nothing moved before the confirmation"
        );
    }
    click(client, "confirm-requeue").await;
    let done = wait_text(client, "#bulk-done", |_| true).await;
    assert!(
        done.starts_with(&format!("Requeued {} job(s); skipped 0", transient.len())),
        "{done}"
    );
    for id in &transient {
        assert_eq!(job_state(pool, *id).await, "queued", "job {id} requeued");
    }
    for id in &other_failed {
        assert_eq!(job_state(pool, *id).await, "failed", "job {id} was not in the filter");
    }

    // Link filter: one link's jobs.
    client.goto(&format!("{base}/jobs")).await.expect("jobs");
    let link = seeded.links[28];
    type_into(client, "filter-link", &link.to_string()).await;
    click(client, "apply-filters").await;
    let of_link = ids(
        pool,
        &format!("SELECT id FROM queue_jobs WHERE dedupe_key = 'link:{link}' ORDER BY id DESC"),
    )
    .await;
    assert_eq!(of_link.len(), 1);
    wait_rows(client, "job", "data-state", &of_link).await;

    // ---- A failed job's page: facts, errors, payload, trace; requeue it.
    let job = of_link[0];
    assert_eq!(job_state(pool, job).await, "failed");
    client.goto(&format!("{base}/jobs/{job}")).await.expect("job page");
    assert_eq!(wait_text(client, "#job-state", |_| true).await, "failed");
    let problem = wait_text(client, "#job-problem", |_| true).await;
    assert_eq!(problem, "connection refused (os error 111)");
    let errors = wait_text(client, "#errors", |_| true).await;
    assert!(errors.contains("connection refused (os error 111)"), "{errors}");
    let payload = wait_text(client, "#payload", |_| true).await;
    assert!(payload.contains(&format!("\"link_id\": {link}")), "{payload}");
    let lease = wait_text(client, "#job-lease", |_| true).await;
    assert!(lease.starts_with("none"), "{lease}");
    let trace_id: String =
        sqlx::query_scalar("SELECT split_part(trace_context->>'traceparent', '-', 2) FROM queue_jobs WHERE id = $1")
            .bind(job)
            .fetch_one(pool)
            .await
            .expect("trace id");
    let trace = client
        .find(Locator::Id("trace-link"))
        .await
        .expect("trace link")
        .attr("href")
        .await
        .expect("href");
    assert_eq!(trace, Some(format!("{JAEGER}trace/{trace_id}")));
    screenshot(client, "job.png").await;
    click(client, "requeue-button").await;
    wait_text(client, "#job-state", |t| t == "queued").await;
    assert_eq!(job_state(pool, job).await, "queued");
    wait_gone(client, "#requeue-button").await;

    // A running job's page names its worker.
    let running = ids(
        pool,
        "SELECT id FROM queue_jobs WHERE state = 'running' ORDER BY id LIMIT 1",
    )
    .await[0];
    client.goto(&format!("{base}/jobs/{running}")).await.expect("job page");
    let lease = wait_text(client, "#job-lease", |_| true).await;
    assert!(lease.contains("linkpulse-worker-7f3c"), "{lease}");
    assert!(
        client.find(Locator::Id("requeue")).await.is_err(),
        "a running job has no requeue"
    );

    // ---- Links: active only by default, 50 a page by id, the next page after the last id.
    client.goto(&format!("{base}/links")).await.expect("links");
    let status = client
        .find(Locator::Id("filter-status"))
        .await
        .expect("status filter")
        .prop("value")
        .await
        .expect("value");
    assert_eq!(status.as_deref(), Some("active"));
    let active = ids(
        pool,
        "SELECT id FROM links WHERE status = 'active' ORDER BY id LIMIT 50",
    )
    .await;
    let page1 = wait_rows(client, "link", "data-status", &active).await;
    assert!(page1.iter().all(|(_, s)| s == "active"));
    click(client, "next-page").await;
    let next = ids(
        pool,
        "SELECT id FROM links WHERE status = 'active' ORDER BY id LIMIT 50 OFFSET 50",
    )
    .await;
    wait_url(client, "the links' second page", |u| {
        u.query()
            .is_some_and(|q| q.contains(&format!("after={}", active[PAGE - 1])))
    })
    .await;
    let page2 = wait_rows(client, "link", "data-status", &next).await;
    assert!(page2.iter().all(|(id, _)| *id > active[PAGE - 1]), "no overlap");
    // Inaccessible links: red, struck through.
    choose(client, "filter-status", "inaccessible").await;
    click(client, "apply-filters").await;
    let dead = ids(pool, "SELECT id FROM links WHERE status = 'inaccessible' ORDER BY id").await;
    assert_eq!(dead.len(), 30);
    let shown = wait_rows(client, "link", "data-status", &dead).await;
    assert!(shown.iter().all(|(_, s)| s == "inaccessible"));
    for id in &dead[..3] {
        let class = client
            .find(Locator::Css(&format!("#link-{id} td.url a")))
            .await
            .expect("url cell")
            .attr("class")
            .await
            .expect("class");
        assert_eq!(class.as_deref(), Some("dead-url"));
    }
    // Search and host.
    choose(client, "filter-status", "active").await;
    type_into(client, "filter-q", "guide").await;
    click(client, "apply-filters").await;
    let guides = ids(
        pool,
        "SELECT id FROM links WHERE status = 'active' AND (url ILIKE '%guide%' OR title ILIKE '%guide%') ORDER BY id LIMIT 50",
    )
    .await;
    assert!(guides.len() > 10, "{guides:?}");
    wait_rows(client, "link", "data-status", &guides).await;
    type_into(client, "filter-q", "").await;
    choose(client, "filter-status", "all").await;
    type_into(client, "filter-host", "github.com").await;
    click(client, "apply-filters").await;
    let github = ids(
        pool,
        "SELECT id FROM links WHERE host = 'github.com' ORDER BY id LIMIT 50",
    )
    .await;
    let shown = wait_rows(client, "link", "data-status", &github).await;
    assert!(shown.iter().any(|(_, s)| s == "archived") && shown.iter().any(|(_, s)| s == "paused"));
    client.goto(&format!("{base}/links?status=all")).await.expect("links");
    screenshot(client, "links.png").await;

    // A GitHub link's page: its facts and trace.
    let repo = seeded.links[12];
    client.goto(&format!("{base}/links/{repo}")).await.expect("link page");
    let facts = wait_text(client, "#link-github", |_| true).await;
    assert!(facts.starts_with("example/project-12 · ★ 444"), "{facts}");
    let trace = client
        .find(Locator::Id("trace-link"))
        .await
        .expect("trace link")
        .attr("href")
        .await
        .expect("href");
    let trace_id: String = sqlx::query_scalar("SELECT last_trace_id FROM links WHERE id = $1")
        .bind(repo)
        .fetch_one(pool)
        .await
        .expect("trace id");
    assert_eq!(trace, Some(format!("{JAEGER}trace/{trace_id}")));

    // ---- An inaccessible link's page: mark it active, then check it now.
    let dead_link = seeded.links[13];
    client
        .goto(&format!("{base}/links/{dead_link}"))
        .await
        .expect("link page");
    assert_eq!(
        wait_text(client, "#link-url", |_| true).await,
        "https://news.example.com/story?id=13"
    );
    let class = client
        .find(Locator::Id("link-url"))
        .await
        .expect("url")
        .attr("class")
        .await
        .expect("class");
    assert_eq!(class.as_deref(), Some("dead-url"));
    assert_eq!(wait_text(client, "#link-title", |_| true).await, "Story 13");
    assert_eq!(
        wait_text(client, "#link-description", |_| true).await,
        "Today's news, in brief."
    );
    assert_eq!(wait_text(client, "#link-error", |_| true).await, "HTTP 404: Not Found");
    screenshot(client, "link.png").await;
    click(client, "activate-button").await;
    wait_gone(client, "#activate-button").await;
    let (status, failures): (String, i32) =
        sqlx::query_as("SELECT status, consecutive_failures FROM links WHERE id = $1")
            .bind(dead_link)
            .fetch_one(pool)
            .await
            .expect("link");
    assert_eq!((status.as_str(), failures), ("active", 0));
    let events = wait_text(client, "#events", |_| true).await;
    assert!(events.contains("inaccessible → active"), "{events}");
    let unfinished = format!(
        "SELECT count(*) FROM queue_jobs WHERE kind = 'check' AND dedupe_key = 'link:{dead_link}' AND state IN ('queued', 'running')"
    );
    assert_eq!(scalar(pool, &unfinished).await, 0);
    click(client, "check-button").await;
    let notice = wait_text(client, "#notice", |_| true).await;
    let queued: i64 =
        sqlx::query_scalar("SELECT id FROM queue_jobs WHERE kind = 'check' AND dedupe_key = $1 AND state = 'queued'")
            .bind(dedupe_key(dead_link))
            .fetch_one(pool)
            .await
            .expect("the check job");
    assert_eq!(notice, format!("Check enqueued as job {queued}."));
    // Pressed again: the same job, not a second one.
    client
        .goto(&format!("{base}/links/{dead_link}"))
        .await
        .expect("link page");
    click(client, "check-button").await;
    let notice = wait_text(client, "#notice", |_| true).await;
    assert_eq!(
        notice,
        format!("A check of this link is already queued or running (job {queued}).")
    );
    assert_eq!(scalar(pool, &unfinished).await, 1);

    // ---- Schedules.
    client.goto(&format!("{base}/schedules")).await.expect("schedules");
    wait_text(client, "#schedule-check td.enabled", |t| t == "yes").await;
    client.find(Locator::Id("toggle-check")).await.expect("toggle");
    client.find(Locator::Id("runs")).await.expect("runs");
    screenshot(client, "schedules.png").await;

    // ---- Sign out in another tab: the form still open here is refused, and nothing changes.
    let victim = seeded.links[56];
    let failed: i64 = sqlx::query_scalar("SELECT id FROM queue_jobs WHERE dedupe_key = $1")
        .bind(dedupe_key(victim))
        .fetch_one(pool)
        .await
        .expect("job");
    assert_eq!(job_state(pool, failed).await, "failed");
    client.goto(&format!("{base}/jobs/{failed}")).await.expect("job page");
    client
        .find(Locator::Id("requeue-button"))
        .await
        .expect("requeue button");
    let here = client.window().await.expect("window");
    let tab = client.new_window(true).await.expect("new tab");
    client.switch_to_window(tab.handle).await.expect("switch");
    client.goto(&format!("{base}/")).await.expect("overview");
    click(client, "signout-button").await;
    wait_url(client, "the sign-in page", |u| u.path() == "/signin").await;
    client.find(Locator::Id("signin-link")).await.expect("signed out");
    assert!(client.find(Locator::Id("session")).await.is_err());
    let cookies = client.get_all_cookies().await.expect("cookies");
    assert!(cookies.iter().all(|c| c.name() != "linkpulse_session"), "{cookies:?}");
    client.close_window().await.expect("close tab");
    client.switch_to_window(here).await.expect("switch back");
    click(client, "requeue-button").await;
    let error = wait_text(client, "#error", |_| true).await;
    assert!(error.contains("not signed in"), "{error}");
    assert_eq!(client.title().await.expect("title"), "Sign in required · linkpulse");
    assert_eq!(job_state(pool, failed).await, "failed", "refused after signing out");
    client.goto(&format!("{base}/jobs/{failed}")).await.expect("job page");
    wait_text(client, "#job-state", |t| t == "failed").await;
    assert!(
        client.find(Locator::Id("requeue")).await.is_err(),
        "no buttons signed out"
    );
    client.goto(&format!("{base}/jobs?state=failed")).await.expect("jobs");
    client.find(Locator::Id("jobs")).await.expect("jobs");
    assert!(client.find(Locator::Id("bulk-requeue")).await.is_err());

    browser.close().await;
    stop.cancel();
}
