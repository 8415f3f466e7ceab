//! The dashboard in a real (headless) Chromium: the browser and console harness, the seeding the
//! page tests share, and the expired session. The pages themselves are driven in
//! [`crate::dashboard_pages`], stored markup in [`crate::dashboard_markup`]. Each page is saved as
//! a PNG (see [`screenshot_dir`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use linkpulse_queue::{ClaimedJob, Completion, NewJob, Outcome};
use linkpulse_shared::config::{AdminToken, Settings};
use linkpulse_shared::link_jobs::{CHECK, REFRESH, dedupe_key};

use crate::app::TestApp;
use crate::helpers::{lease_of, wait_for};

/// The admin token of these tests.
pub(crate) const TOKEN: &str = "dashboard-test-token";
/// How long a browser wait may take.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);
/// Rows per page of both lists (`PAGE_SIZE` of `producer/src/admin/console/{jobs,links}.rs`).
pub(crate) const PAGE: usize = 50;
/// The Jaeger UI the seeded jobs' and links' traces link to.
pub(crate) const JAEGER: &str = "http://jaeger.example.org:16686/";

pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Set to `1` to skip the browser test where Chromium cannot be installed (never in CI).
pub(crate) const SKIP_VARIABLE: &str = "LINKPULSE_SKIP_BROWSER_TESTS";

/// Chromium and chromedriver, or `None` when the operator explicitly skips the browser test.
/// A missing browser is a failure, not a silent pass: CI (`.ci/run` exports `CI=true`) installs
/// it with `scripts/ensure-browser.sh`, and a local run must either do the same or say it skips.
pub(crate) fn browser() -> Option<(PathBuf, PathBuf)> {
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

/// Where the screenshots go: `LINKPULSE_SCREENSHOT_DIR`, else `target/screenshots` of the
/// workspace.
pub(crate) fn screenshot_dir() -> PathBuf {
    std::env::var_os("LINKPULSE_SCREENSHOT_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots"),
        PathBuf::from,
    )
}

/// A chromedriver child and a WebDriver session of headless Chromium with a throwaway profile.
pub(crate) struct Browser {
    /// The session; every test drives the page through it.
    pub(crate) client: Client,
    chromedriver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a 1280×900 session with `chromium`.
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
                    "--window-size=1280,900", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        // An alert stays open for `get_alert_text` to see, rather than being dismissed by the
        // next command.
        capabilities.insert("unhandledPromptBehavior".into(), serde_json::json!("ignore"));
        let client = ClientBuilder::rustls()
            .expect("tls connector")
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("webdriver session");
        client.set_window_size(1280, 900).await.expect("window size");
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

/// Signs in on the loaded sign-in page with `token` (sets the cookie) and waits for the
/// signed-in page.
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
    if let Err(error) = client
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Id("session"))
        .await
    {
        let url = client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        let source = client.source().await.unwrap_or_default();
        panic!("not signed in ({error}) at {url}: {source}");
    }
}

/// Saves the current page as `name` in [`screenshot_dir`].
pub(crate) async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    std::fs::write(dir.join(name), png).expect("write screenshot");
}

/// Starts the admin server on 127.0.0.1:0 with the admin token [`TOKEN`], `tweak`ed.
pub(crate) async fn serve_console(app: &TestApp, tweak: impl FnOnce(&mut Settings)) -> (SocketAddr, CancellationToken) {
    let mut settings = app.settings.clone();
    settings.admin_addr = "127.0.0.1:0".parse().expect("addr");
    settings.admin_token = Some(AdminToken::new(TOKEN));
    tweak(&mut settings);
    let stop = CancellationToken::new();
    let addr = producer::admin::serve(app.pool.clone(), Arc::new(settings), stop.clone())
        .await
        .expect("admin server");
    (addr, stop)
}

/// The text of the first element at `css`, if there is one.
pub(crate) async fn text_at(client: &Client, css: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// Waits until the element at `css` has a text `accept`s (the page a click leads to can have the
/// same elements as the one before, so wait for the value), and returns it.
pub(crate) async fn wait_text(client: &Client, css: &str, accept: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = text_at(client, css).await;
        if let Some(text) = text.as_deref().filter(|t| accept(t)) {
            return text.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} never read as expected (last: {text:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the browser shows a URL `accept`ed, and returns it.
pub(crate) async fn wait_url(client: &Client, what: &str, accept: impl Fn(&url::Url) -> bool) -> url::Url {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let url = client.current_url().await.expect("url");
        if accept(&url) {
            return url;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {what} (at {url})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until nothing matches `css`.
pub(crate) async fn wait_gone(client: &Client, css: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while client.find(Locator::Css(css)).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "{css} is still on the page");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the element with id `id`.
pub(crate) async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click #{id}: {e}"));
}

/// Replaces the text of the input with id `id`.
pub(crate) async fn type_into(client: &Client, id: &str, text: &str) {
    let input = client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"));
    input.clear().await.expect("clear");
    if !text.is_empty() {
        input.send_keys(text).await.expect("type");
    }
}

/// Chooses `value` in the select with id `id`.
pub(crate) async fn choose(client: &Client, id: &str, value: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("choose {value:?} in #{id}: {e}"));
}

/// The ids of the table rows whose id is `{prefix}-N`, with the row's `attribute`, in page order.
pub(crate) async fn rows(client: &Client, prefix: &str, attribute: &str) -> Vec<(i64, String)> {
    let mut rows = Vec::new();
    let Ok(elements) = client.find_all(Locator::Css(&format!("tr[id^='{prefix}-']"))).await else {
        return rows;
    };
    for element in elements {
        let (Ok(Some(id)), Ok(value)) = (element.attr("id").await, element.attr(attribute).await) else {
            // The page went away under us: the caller waits again.
            return Vec::new();
        };
        let Some(id) = id.strip_prefix(&format!("{prefix}-")).and_then(|n| n.parse().ok()) else {
            continue;
        };
        rows.push((id, value.unwrap_or_default()));
    }
    rows
}

/// Waits until the rows `{prefix}-N` are exactly `expected` (ids in page order), and returns them
/// with their `attribute`.
pub(crate) async fn wait_rows(client: &Client, prefix: &str, attribute: &str, expected: &[i64]) -> Vec<(i64, String)> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let shown = rows(client, prefix, attribute).await;
        if shown.iter().map(|(id, _)| *id).eq(expected.iter().copied()) {
            return shown;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the {prefix} rows never became {expected:?}; shown: {:?}",
            shown.iter().map(|(id, _)| id).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Ids a query returns, in order.
pub(crate) async fn ids(pool: &PgPool, sql: &str) -> Vec<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(pool)
        .await
        .expect(sql)
}

pub(crate) async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .expect(sql)
}

pub(crate) async fn job_state(pool: &PgPool, id: i64) -> String {
    sqlx::query_scalar("SELECT state FROM queue_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("job state")
}

/// Inserts one job per `(kind, link id, url, host)` as the producer would (payload, dedupe key,
/// group, a trace context) and returns their ids in order.
pub(crate) async fn enqueue_link_jobs(pool: &PgPool, jobs: &[(&str, i64, String, String)]) -> Vec<i64> {
    let before = scalar(pool, "SELECT coalesce(max(id), 0) FROM queue_jobs").await;
    let new: Vec<NewJob> = jobs
        .iter()
        .map(|(kind, link, url, host)| {
            let mut job = NewJob::new(*kind, serde_json::json!({ "link_id": link, "url": url }), 3).dedupe_key(dedupe_key(*link));
            job.group_key = Some(host.clone());
            job.trace_context = Some(serde_json::json!({
                "traceparent": format!("00-{:032x}-{:016x}-01", 0x00ab_cdef_u128 * 1_000_003 + u128::from(link.unsigned_abs()), link.unsigned_abs() + 1)
            }));
            job
        })
        .collect();
    linkpulse_queue::insert_many(pool, &new).await.expect("insert jobs");
    sqlx::query_scalar("SELECT id FROM queue_jobs WHERE id > $1 ORDER BY id")
        .bind(before)
        .fetch_all(pool)
        .await
        .expect("ids")
}

/// Registers a worker named `name` and claims every queued link job for it.
pub(crate) async fn claim_all(pool: &PgPool, name: &str) -> Vec<ClaimedJob> {
    let owner = Uuid::new_v4();
    linkpulse_queue::registry::register(pool, owner, name)
        .await
        .expect("register");
    linkpulse_queue::claim::claim_batch(pool, owner, &[CHECK, REFRESH], 10_000, 10_000)
        .await
        .expect("claim")
}

/// How an attempt ends: `None` error = done; `result`, `status`, `detail` as a handler reports.
pub(crate) fn completion(
    job: &ClaimedJob,
    error: Option<&str>,
    result: Option<&str>,
    status: Option<i32>,
    detail: Option<&str>,
    millis: u64,
) -> Completion {
    let outcome = match error {
        None => Outcome::Done,
        Some(error) => Outcome::Fail { error: error.into() },
    };
    let mut completion = Completion::new(lease_of(job), outcome);
    completion.report.result = result.map(str::to_owned);
    completion.report.status_code = status;
    completion.report.detail = detail.map(str::to_owned);
    completion.duration = Some(Duration::from_millis(millis));
    completion
}

/// Writes `completions` back as a worker's acknowledgements do (counters and per-minute figures
/// included).
pub(crate) async fn acknowledge(pool: &PgPool, completions: &[Completion]) {
    linkpulse_queue::ack::complete_many(pool, completions, &linkpulse_queue::RetryPolicy::default())
        .await
        .expect("acknowledge");
}

/// A failed check job of `link` (the job id), failed with `error` through the real queue.
pub(crate) async fn failed_job(pool: &PgPool, link: i64, url: &str, error: &str) -> i64 {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let id = enqueue_link_jobs(pool, &[(CHECK, link, url.to_owned(), host)]).await[0];
    let claimed = claim_all(pool, "linkpulse-worker").await;
    let job = claimed.iter().find(|j| j.id == id).expect("claimed the job");
    acknowledge(
        pool,
        &[completion(job, Some(error), Some("transient"), Some(503), None, 120)],
    )
    .await;
    id
}

/// The seeded hosts, by `i % 5`.
pub(crate) const HOSTS: [&str; 5] = [
    "docs.example.org",
    "blog.example.net",
    "github.com",
    "news.example.com",
    "shop.example.io",
];

/// What [`seed`] made.
pub(crate) struct Seeded {
    /// Link ids by seed index.
    pub(crate) links: Vec<i64>,
    /// Jobs per outcome acknowledged "done".
    pub(crate) done: i64,
    /// Synthetic earlier minutes' done and failed jobs (the chart's history).
    pub(crate) history_done: i64,
    pub(crate) history_failed: i64,
    /// A lock connection holding the leader's advisory lock.
    pub(crate) _leader: sqlx::pool::PoolConnection<sqlx::Postgres>,
}

/// 300 links on five hosts (inaccessible, archived, paused and active ones, titles, GitHub facts,
/// trace ids) and 300 jobs: 250 run through the real queue (done ok, done dead, failed transient,
/// failed errors, 10 still running on a registered worker) and 50 queued; an hour of per-minute
/// history for the chart; a leader; schedules; two webhooks.
pub(crate) async fn seed(app: &TestApp) -> Seeded {
    let pool = &app.pool;
    let urls: Vec<String> = (0..300)
        .map(|i| match i % 5 {
            0 if i == 0 => "https://docs.example.org/guide".to_owned(),
            0 => format!("https://docs.example.org/guide/chapter-{i}"),
            1 => format!("https://blog.example.net/2025/post-{i}"),
            2 => format!("https://github.com/example/project-{i}"),
            3 => format!("https://news.example.com/story?id={i}"),
            _ => format!("https://shop.example.io/items/{i}"),
        })
        .collect();
    let links = app.add_links(&urls).await;
    sqlx::query(
        "WITH seeded AS (SELECT id, ord - 1 AS i FROM unnest($1::int8[]) WITH ORDINALITY AS s(id, ord))
         UPDATE links l SET
           title = CASE s.i % 5 WHEN 0 THEN 'Guide: chapter ' || s.i WHEN 1 THEN 'Notes from the field #' || s.i
                   WHEN 2 THEN 'example/project-' || s.i WHEN 3 THEN 'Story ' || s.i ELSE 'Item ' || s.i END,
           description = CASE s.i % 5 WHEN 0 THEN 'How to set up and run the service, step by step.'
                   WHEN 1 THEN 'What we learned running link checks at scale.' WHEN 2 THEN 'A sample project.'
                   WHEN 3 THEN 'Today''s news, in brief.' ELSE 'A fine item, in stock.' END,
           site_name = CASE s.i % 5 WHEN 0 THEN 'Example Docs' WHEN 1 THEN 'Example Blog' WHEN 2 THEN 'GitHub'
                   WHEN 3 THEN 'Example News' ELSE 'Example Shop' END,
           status = CASE WHEN s.i % 10 = 3 THEN 'inaccessible' WHEN s.i % 50 = 17 THEN 'archived'
                   WHEN s.i % 60 = 42 THEN 'paused' ELSE 'active' END,
           status_reason = CASE WHEN s.i % 60 = 42 THEN 'moved to the new docs' END,
           consecutive_failures = CASE WHEN s.i % 10 = 3 THEN 3 ELSE 0 END,
           last_outcome = CASE WHEN s.i % 10 = 3 THEN 'dead' ELSE 'ok' END,
           last_status_code = CASE WHEN s.i % 10 = 3 THEN 404 ELSE 200 END,
           last_error = CASE WHEN s.i % 10 = 3 THEN 'HTTP 404: Not Found' END,
           last_checked_at = now() - make_interval(mins => (s.i % 50)::int),
           github_owner = CASE WHEN s.i % 5 = 2 THEN 'example' END,
           github_repo = CASE WHEN s.i % 5 = 2 THEN 'project-' || s.i END,
           github_stars = CASE WHEN s.i % 5 = 2 THEN (s.i * 37) % 5000 END,
           github_description = CASE WHEN s.i % 5 = 2 THEN 'An example repository' END,
           github_archived = CASE WHEN s.i % 5 = 2 THEN s.i % 50 = 17 END,
           last_trace_id = CASE WHEN s.i % 5 IN (2, 3) THEN md5(l.id::text) END
         FROM seeded s WHERE l.id = s.id",
    )
    .bind(&links)
    .execute(pool)
    .await
    .expect("describe links");

    // 250 jobs through the queue: claimed by a registered worker, then acknowledged.
    let first: Vec<(&str, i64, String, String)> = (0..250)
        .map(|i| {
            let kind = if i % 4 == 0 { REFRESH } else { CHECK };
            (kind, links[i], urls[i].clone(), HOSTS[i % 5].to_owned())
        })
        .collect();
    enqueue_link_jobs(pool, &first).await;
    let claimed = claim_all(pool, "linkpulse-worker-7f3c").await;
    assert_eq!(claimed.len(), 250, "every seeded job claimed");
    let index_of = |job: &ClaimedJob| {
        let link = job.payload["link_id"].as_i64().expect("link id");
        links.iter().position(|l| *l == link).expect("a seeded link")
    };
    let mut completions = Vec::new();
    let mut done = 0;
    for job in &claimed {
        let i = index_of(job);
        let millis = 40 + (i as u64 * 37) % 900;
        let completion = if i % 25 == 0 {
            continue; // still running
        } else if i % 7 == 0 {
            completion(job, Some("connection refused (os error 111)"), None, None, None, millis)
        } else if i % 5 == 1 {
            let error = format!("HTTP 503 Service Unavailable from {}", HOSTS[i % 5]);
            completion(
                job,
                Some(&error),
                Some("transient"),
                Some(503),
                Some("HTTP 503: Service Unavailable"),
                millis,
            )
        } else if i % 10 == 3 {
            done += 1;
            completion(job, None, Some("dead"), Some(404), Some("HTTP 404: Not Found"), millis)
        } else {
            done += 1;
            completion(job, None, Some("ok"), Some(200), None, millis)
        };
        completions.push(completion);
    }
    acknowledge(pool, &completions).await;

    // 50 jobs waiting, for links that had none.
    let queued: Vec<(&str, i64, String, String)> = (250..300)
        .map(|i| (CHECK, links[i], urls[i].clone(), HOSTS[i % 5].to_owned()))
        .collect();
    enqueue_link_jobs(pool, &queued).await;
    assert_eq!(scalar(pool, "SELECT count(*) FROM queue_jobs").await, 300);

    // The chart's last hour: earlier minutes as the acknowledgements would have counted them.
    let (history_done, history_failed): (i64, i64) = sqlx::query_as(
        "WITH minutes AS (
           INSERT INTO queue_finished_minutes (minute, kind, state, shard, n, duration_ms_sum, duration_n)
           SELECT date_trunc('minute', now()) - make_interval(mins => m), 'check', st, 0,
                  CASE st WHEN 'done' THEN 3 + (m * 7) % 11 ELSE (m * 5) % 4 END, 0, 0
           FROM generate_series(2, 50) AS m, unnest(ARRAY['done', 'failed']) AS st
           ON CONFLICT (minute, kind, state, shard) DO UPDATE SET n = queue_finished_minutes.n + EXCLUDED.n
           RETURNING state, n)
         SELECT coalesce(sum(n) FILTER (WHERE state = 'done'), 0)::int8, coalesce(sum(n) FILTER (WHERE state = 'failed'), 0)::int8
         FROM minutes",
    )
    .fetch_one(pool)
    .await
    .expect("chart history");

    // A leader (the lock `producer run` holds), the schedules, two webhooks.
    let mut leader = pool.acquire().await.expect("connection");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(producer::run::LEADER_LOCK_KEY)
        .execute(&mut *leader)
        .await
        .expect("leader lock");
    producer::schedules::store::seed(pool, &app.settings)
        .await
        .expect("seed schedules");
    sqlx::query(
        "INSERT INTO webhooks (url, events, secret, last_success_at, failing_since, last_error, created_by) VALUES
           ('https://hooks.example.com/linkpulse', ARRAY['link.down', 'link.up'], repeat('a', 64), now() - interval '4 minutes', NULL, NULL, 'cli:ops'),
           ('https://chat.example.net/hooks/T0001', ARRAY['link.down'], repeat('b', 64), NULL, now() - interval '2 hours', 'HTTP 500 from the receiver', 'api')",
    )
    .execute(pool)
    .await
    .expect("webhooks");
    Seeded {
        links,
        done,
        history_done,
        history_failed,
        _leader: leader,
    }
}

/// The whole console on 300 jobs and 300 links, as an operator uses it: every page, both lists'
/// filters and pagers, a job's and a link's page, requeue of one job and (confirmed) of every
/// failed job of a filter, mark active, check now, sign in and sign out.
/// Where pages need a session (a read token is set), an expired one is sent to sign in and its
/// still-open forms are refused.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn an_expired_session_is_sent_to_sign_in_and_its_forms_are_refused(pool: PgPool) {
    let Some((chromium, driver)) = browser() else {
        return;
    };
    let app = TestApp::spawn(pool).await;
    let url = "https://docs.example.org/guide";
    let link = app.add_links(&[url.to_owned()]).await[0];
    let job = failed_job(&app.pool, link, url, "HTTP 503 Service Unavailable").await;
    let ttl = Duration::from_secs(2);
    let (addr, stop) = serve_console(&app, |s| {
        s.read_token = Some(AdminToken::new("reader-token"));
        s.session_ttl = ttl;
    })
    .await;
    let base = format!("http://{addr}");
    let browser = Browser::start(&chromium, &driver).await;
    let client = &browser.client;

    client.goto(&format!("{base}/jobs/{job}")).await.expect("job page");
    let at = wait_url(client, "the sign-in page", |u| u.path() == "/signin").await;
    assert_eq!(at.query(), Some(format!("next=%2Fjobs%2F{job}").as_str()));
    sign_in(client, TOKEN).await;
    let at = wait_url(client, "the job's page", |u| u.path() == format!("/jobs/{job}")).await;
    assert_eq!(at.path(), format!("/jobs/{job}"));
    client
        .find(Locator::Id("requeue-button"))
        .await
        .expect("requeue button");
    let signed_in = std::time::Instant::now();

    tokio::time::sleep(ttl + Duration::from_millis(1500)).await;
    assert!(signed_in.elapsed() > ttl);
    click(client, "requeue-button").await;
    let error = wait_text(client, "#error", |_| true).await;
    assert!(error.contains("expired"), "{error}");
    assert_eq!(client.title().await.expect("title"), "Sign in required · linkpulse");
    client
        .find(Locator::Id("signin-again"))
        .await
        .expect("a way to sign in again");
    assert_eq!(
        job_state(&app.pool, job).await,
        "failed",
        "an expired session changes nothing"
    );

    client.goto(&format!("{base}/jobs/{job}")).await.expect("job page");
    let at = wait_url(client, "the sign-in page", |u| u.path() == "/signin").await;
    assert_eq!(at.query(), Some(format!("next=%2Fjobs%2F{job}").as_str()));
    client.find(Locator::Id("login")).await.expect("the sign-in form");

    browser.close().await;
    stop.cancel();
}
