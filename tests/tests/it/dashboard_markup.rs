//! Stored markup (a title, an error, a URL carrying `<script>` and attribute-breaking quotes) is
//! shown as text on every dashboard page, over HTTP and in a real browser.

use fantoccini::Locator;
use sqlx::PgPool;

use linkpulse_shared::link_jobs::CHECK;

use crate::app::TestApp;
use crate::console_security::{get, sign_in_http};
use crate::dashboard::*;

/// Markup an attacker could store: in titles, descriptions, URLs, errors.
const SCRIPT: &str = "<script>alert(1)</script>";
const BREAKOUT: &str = "\"'><img src=x onerror=alert(1)>";

/// Stored markup in every field the pages show is text, never markup: the raw pages never contain
/// it unescaped, a browser shows it literally and runs nothing.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn stored_markup_is_shown_as_text_on_every_page(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let pool = &app.pool;
    let evil = format!("{SCRIPT} {BREAKOUT}");
    let url = format!("https://evil.example/{SCRIPT}?q={BREAKOUT}");
    let (link,): (i64,) = sqlx::query_as(
        "INSERT INTO links (url, host, status, title, description, last_error, last_outcome, consecutive_failures, site_name, status_reason, image_url, favicon_url)
         VALUES ($1, 'evil.example', 'inaccessible', $2, $2, $2, 'dead', 3, $2, $2, $3, $3) RETURNING id",
    )
    .bind(&url)
    .bind(&evil)
    .bind(format!("javascript:alert(1)//{BREAKOUT}"))
    .fetch_one(pool)
    .await
    .expect("insert link");
    let (script_link,): (i64,) = sqlx::query_as(
        "INSERT INTO links (url, host, title) VALUES ($1, 'evil.example', 'a javascript: URL') RETURNING id",
    )
    .bind(format!("javascript:alert(document.cookie)//{BREAKOUT}"))
    .fetch_one(pool)
    .await
    .expect("insert link");
    let host = "evil.example".to_owned();
    let job = enqueue_link_jobs(pool, &[(CHECK, link, url.clone(), host)]).await[0];
    let claimed = claim_all(pool, &format!("worker {evil}")).await;
    acknowledge(
        pool,
        &[completion(
            &claimed[0],
            Some(&evil),
            Some(&evil),
            Some(500),
            Some(&evil),
            10,
        )],
    )
    .await;
    producer::schedules::store::seed(pool, &app.settings)
        .await
        .expect("schedules");
    sqlx::query(
        "INSERT INTO schedule_runs (schedule, trigger, requested_by, started_at, finished_at, duration_ms, status, error, producer)
         VALUES ('check', 'manual', $1, now(), now(), 5, 'failed', $1, 'test:1')",
    )
    .bind(&evil)
    .execute(pool)
    .await
    .expect("insert run");
    sqlx::query(
        "INSERT INTO webhooks (url, events, secret, failing_since, last_error, created_by)
         VALUES ($1, ARRAY['link.down'], repeat('c', 64), now(), $2, 'api')",
    )
    .bind(format!("https://hooks.example.com/{SCRIPT}?{BREAKOUT}"))
    .bind(&evil)
    .execute(pool)
    .await
    .expect("insert webhook");
    let (addr, stop) = serve_console(&app, |_| {}).await;
    let session = sign_in_http(addr, TOKEN).await;

    // Raw markup, as an admin sees it (every form rendered), and reflected query values too.
    let reflected: String = url::form_urlencoded::byte_serialize(evil.as_bytes()).collect();
    let pages = [
        "/".to_owned(),
        "/jobs".to_owned(),
        "/jobs?state=failed".to_owned(),
        format!("/jobs?host={reflected}&kind={reflected}&result={reflected}"),
        format!("/jobs/{job}"),
        "/links?status=all".to_owned(),
        format!("/links?status=inaccessible&q=%3Cscript&host={reflected}"),
        format!("/links/{link}"),
        format!("/links/{script_link}"),
        "/schedules".to_owned(),
        "/signin".to_owned(),
        format!("/signin?next=/{reflected}"),
        // Error pages echo their input.
        format!("/jobs?link={reflected}"),
        format!("/jobs?state={reflected}"),
        format!("/links?status={reflected}"),
        format!("/links/{reflected}"),
        format!("/no/{reflected}"),
    ];
    for page in &pages {
        for cookie in [None, Some(session.cookie.as_str())] {
            let reply = get(addr, page, cookie).await;
            assert!(
                [200, 400, 404].contains(&reply.status),
                "{page}: {} {}",
                reply.status,
                reply.body
            );
            for raw in ["<script", "<img src=x", "onerror=alert(1)>", "\"'>"] {
                assert!(!reply.body.contains(raw), "{page}: raw {raw:?} in {}", reply.body);
            }
            let csp = reply.header("content-security-policy");
            assert!(csp.contains("default-src 'none'"), "{page}: CSP {csp:?}");
        }
    }
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &quot;'&gt;&lt;img src=x onerror=alert(1)&gt;";
    for page in [
        "/".to_owned(),
        format!("/jobs/{job}"),
        format!("/links/{link}"),
        "/schedules".to_owned(),
    ] {
        let body = get(addr, &page, Some(&session.cookie)).await.body;
        assert!(body.contains(escaped), "{page} shows the text escaped: {body}");
    }
    // A stored `javascript:` URL is text, never a link or an image.
    let body = get(addr, &format!("/links/{script_link}"), None).await.body;
    assert!(body.contains("<span id=\"link-url\">javascript:"), "{body}");
    assert!(
        !body.contains("href=\"javascript:") && !body.contains("src=\"javascript:"),
        "{body}"
    );
    let body = get(addr, &format!("/links/{link}"), None).await.body;
    assert!(!body.contains("src=\"javascript:"), "{body}");

    // In a browser: the text shows literally and no dialog opens.
    let Some((chromium, driver)) = browser() else {
        stop.cancel();
        return;
    };
    let browser = Browser::start(&chromium, &driver).await;
    let client = &browser.client;
    let base = format!("http://{addr}");
    client.goto(&format!("{base}/signin")).await.expect("sign-in page");
    sign_in(client, TOKEN).await;
    for page in &pages {
        client.goto(&format!("{base}{page}")).await.expect("page");
        client.find(Locator::Css("main h1")).await.expect("a page");
        assert!(client.get_alert_text().await.is_err(), "{page} opened a dialog");
        let images = client.find_all(Locator::Css("img[src=x]")).await.expect("query");
        assert!(images.is_empty(), "{page} has an injected image");
    }
    client.goto(&format!("{base}/links/{link}")).await.expect("link page");
    assert_eq!(wait_text(client, "#link-title", |_| true).await, evil);
    assert_eq!(wait_text(client, "#link-description", |_| true).await, evil);
    assert_eq!(wait_text(client, "#link-error", |_| true).await, evil);
    assert_eq!(wait_text(client, "#link-url", |_| true).await, url);
    client.goto(&format!("{base}/jobs/{job}")).await.expect("job page");
    assert_eq!(wait_text(client, "#job-problem", |_| true).await, evil);
    let errors = wait_text(client, "#errors", |_| true).await;
    assert!(errors.contains(&evil), "{errors}");
    client.goto(&format!("{base}/schedules")).await.expect("schedules");
    let run = wait_text(client, "#runs td.error", |_| true).await;
    assert_eq!(run, evil);
    client.goto(&format!("{base}/")).await.expect("overview");
    let webhooks = wait_text(client, "#webhooks", |_| true).await;
    assert!(webhooks.contains(&evil) && webhooks.contains(SCRIPT), "{webhooks}");
    let workers = wait_text(client, "#workers", |_| true).await;
    assert!(workers.contains(&format!("worker {evil}")), "{workers}");
    assert!(client.get_alert_text().await.is_err());

    browser.close().await;
    stop.cancel();
}
