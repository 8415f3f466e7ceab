//! The links HTTP API (`/api/links…`), its tokens, its OpenAPI document and the link lifecycle
//! (paused links, removal, check-now, a new link's first jobs).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use linkpulse_shared::config::AdminToken;

use crate::app::TestApp;

pub(crate) const ADMIN: &str = "adm1n-t0ken";
const READ: &str = "re4d-t0ken";

/// One answer: status, headers and body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The target of `Link: <…>; rel="next"`, if there is one.
    pub(crate) fn next(&self) -> Option<String> {
        let link = self.headers.get(reqwest::header::LINK)?.to_str().expect("ASCII Link");
        let (target, params) = link.split_once(';').expect("Link params");
        assert_eq!(params.trim(), "rel=\"next\"", "{link}");
        Some(
            target
                .trim()
                .strip_prefix('<')
                .and_then(|t| t.strip_suffix('>'))
                .expect("<target>")
                .to_owned(),
        )
    }
}

/// A client of one admin server.
pub(crate) struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(addr: SocketAddr) -> Self {
        let client = reqwest::Client::builder().no_proxy().build().expect("client");
        Self {
            base: format!("http://{addr}"),
            client,
        }
    }

    pub(crate) async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("send");
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.expect("body"),
        }
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call(Method::GET, path, token, None).await
    }
}

/// The admin server on 127.0.0.1:0 with these tokens; `configured_addr` is what the read rule
/// sees as `LINKPULSE_ADMIN_ADDR` (the listener itself is always on loopback).
pub(crate) async fn serve(
    app: &TestApp,
    admin: Option<&str>,
    read: Option<&str>,
    configured_addr: &str,
) -> (Api, CancellationToken) {
    let mut settings = app.settings.clone();
    settings.admin_token = admin.map(AdminToken::new);
    settings.read_token = read.map(AdminToken::new);
    settings.admin_addr = configured_addr.parse().expect("addr");
    let state = producer::admin::AdminState::new(
        app.pool.clone(),
        app.pool.clone(),
        Arc::new(settings),
        linkpulse_shared::metrics::install(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let cancelled = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, producer::admin::router(state))
            .with_graceful_shutdown(async move { cancelled.cancelled().await })
            .await
    });
    (Api::new(addr), stop)
}

/// The usual server: loopback, admin token, no read token.
pub(crate) async fn api(app: &TestApp) -> (Api, CancellationToken) {
    serve(app, Some(ADMIN), None, "127.0.0.1:8080").await
}

/// Inserts `n` links `https://site{i % hosts}.example/p/{i}` by SQL (no jobs), in id order.
pub(crate) async fn bulk_links(pool: &PgPool, n: i64, hosts: i64) {
    sqlx::query(
        "INSERT INTO links (url, host) \
         SELECT 'https://site' || (g % $2) || '.example/p/' || g, 'site' || (g % $2) || '.example' \
         FROM generate_series(1, $1) g ORDER BY g",
    )
    .bind(n)
    .bind(hosts)
    .execute(pool)
    .await
    .expect("bulk links");
}

pub(crate) async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .expect(sql);
    n
}

pub(crate) fn ids(page: &Value) -> Vec<i64> {
    page.as_array()
        .expect("array")
        .iter()
        .map(|l| l["id"].as_i64().expect("id"))
        .collect()
}

/// `(kind, state, priority)` of every job of link `id`.
pub(crate) async fn jobs_of(pool: &PgPool, id: i64) -> Vec<(String, String, i16)> {
    sqlx::query_as("SELECT kind, state, priority FROM queue_jobs WHERE dedupe_key = $1 ORDER BY kind, id")
        .bind(format!("link:{id}"))
        .fetch_all(pool)
        .await
        .expect("jobs")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn adding_many_answers_per_url_enqueues_the_new_ones_and_refuses_more_than_ten_thousand(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let existing = app.add_links(&[app.url("/ok")]).await[0];
    let (api, _stop) = api(&app).await;

    let urls = json!({"urls": [
        app.url("/p/1"),
        format!("HTTP://127.0.0.1:{}/p/2#fragment", app.site_addr.port()),
        app.url("/ok"),
        app.url("/p/1"),
        "ftp://example.com/x",
        "not a url",
    ]});
    let answer = api.call(Method::POST, "/api/links", Some(ADMIN), Some(&urls)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let body = answer.json();
    assert_eq!(
        (
            body["accepted"].as_i64(),
            body["duplicate"].as_i64(),
            body["rejected"].as_i64()
        ),
        (Some(2), Some(2), Some(2))
    );
    let results = body["results"].as_array().expect("results");
    let outcomes: Vec<&str> = results.iter().map(|r| r["result"].as_str().expect("result")).collect();
    assert_eq!(
        outcomes,
        ["accepted", "accepted", "duplicate", "duplicate", "rejected", "rejected"]
    );
    assert_eq!(results[1]["url"], app.url("/p/2"), "normalised");
    assert_eq!(results[2]["id"], existing);
    assert_eq!(
        results[3]["id"], results[0]["id"],
        "the repeat names the link it repeats"
    );
    assert_eq!(
        results[4]["url"], "ftp://example.com/x",
        "a rejected URL is named as given"
    );
    for rejected in &results[4..] {
        assert!(rejected["id"].is_null());
        assert!(!rejected["reason"].as_str().expect("reason").is_empty(), "{rejected}");
    }
    assert!(results[..4].iter().all(|r| r["reason"].is_null()));

    // The new links got their first check and refresh at once, ahead of scheduled work; the
    // existing one got nothing.
    for result in &results[..2] {
        let id = result["id"].as_i64().expect("id");
        assert_eq!(
            jobs_of(&app.pool, id).await,
            [
                ("check".into(), "queued".into(), -10),
                ("refresh".into(), "queued".into(), -10)
            ]
        );
    }
    assert!(jobs_of(&app.pool, existing).await.is_empty());

    // Bad bodies lose nothing and say why.
    let links_before = scalar(&app.pool, "SELECT count(*) FROM links").await;
    let too_many: Vec<String> = (0..10_001).map(|i| format!("https://many.example/{i}")).collect();
    for (body, needle) in [
        (json!({"urls": too_many}), "10000"),
        (json!({"urls": []}), "10000"),
        (json!({"url": "https://example.com/"}), "invalid JSON body"),
        (json!({"urls": [1, 2]}), "invalid JSON body"),
    ] {
        let answer = api.call(Method::POST, "/api/links", Some(ADMIN), Some(&body)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert!(
            answer.json()["error"].as_str().expect("error").contains(needle),
            "{}",
            answer.body
        );
    }
    let answer = api.call(Method::POST, "/api/links", None, Some(&urls)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(scalar(&app.pool, "SELECT count(*) FROM links").await, links_before);

    // Exactly the maximum is fine: ten thousand links and twenty thousand jobs in one call.
    let most: Vec<String> = (0..10_000)
        .map(|i| format!("https://many{}.example/{i}", i % 50))
        .collect();
    let answer = api
        .call(Method::POST, "/api/links", Some(ADMIN), Some(&json!({"urls": most})))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["accepted"], 10_000);
    assert_eq!(
        scalar(&app.pool, "SELECT count(*) FROM queue_jobs WHERE priority = -10").await,
        4 + 20_000
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn cursor_pagination_returns_each_of_2500_links_exactly_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    bulk_links(&app.pool, 2500, 7).await;
    let (api, _stop) = api(&app).await;

    let mut seen: Vec<i64> = Vec::new();
    let mut pages = 0;
    let mut next = Some("/api/links?limit=1000".to_owned());
    while let Some(path) = next {
        let answer = api.get(&path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        let page = ids(&answer.json());
        pages += 1;
        if pages == 1 {
            // A link saved mid-way lands after the cursor: on a later page, once.
            bulk_links_after(&app.pool).await;
        }
        assert!(!page.is_empty() || answer.next().is_none(), "an empty page has no next");
        seen.extend(page);
        next = answer.next();
        assert!(next.as_deref().is_none_or(|n| n.starts_with("/api/links?")), "{next:?}");
    }
    assert_eq!(pages, 3, "1000 + 1000 + 501");
    assert_eq!(seen.len(), 2501);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 2501, "no link twice");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "by id");

    // The default page is 100 and the filters travel with the cursor.
    let mut hosts = 0;
    let mut next = Some("/api/links?host=site3.example".to_owned());
    while let Some(path) = next {
        let answer = api.get(&path, None).await;
        let page = answer.json();
        assert!(page.as_array().expect("array").len() <= 100);
        assert!(
            page.as_array()
                .expect("array")
                .iter()
                .all(|l| l["host"] == "site3.example")
        );
        hosts += page.as_array().expect("array").len();
        next = answer.next();
        if let Some(n) = &next {
            assert!(n.contains("host=site3.example") && n.contains("limit=100"), "{n}");
        }
    }
    assert_eq!(
        i64::try_from(hosts).expect("count"),
        scalar(&app.pool, "SELECT count(*) FROM links WHERE host = 'site3.example'").await
    );

    // A cursor is ours to read; anything else is refused.
    for path in ["/api/links?cursor=42", "/api/links?cursor=%21%21"] {
        let answer = api.get(path, None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(answer.json()["error"].as_str().expect("error").contains("cursor"));
    }
}

async fn bulk_links_after(pool: &PgPool) {
    sqlx::query("INSERT INTO links (url, host) VALUES ('https://late.example/', 'late.example')")
        .execute(pool)
        .await
        .expect("late link");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn filters_select_by_status_host_text_and_last_check(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids_by_url = app
        .add_links(&[
            "https://alpha.example/Docs".to_owned(),
            "https://beta.example/x".to_owned(),
            "https://alpha.example/y".to_owned(),
            "https://gamma.example/100%25".to_owned(),
        ])
        .await;
    let [a, b, c, d] = ids_by_url[..] else {
        panic!("four links")
    };
    sqlx::query(
        "UPDATE links SET title = CASE id WHEN $1 THEN 'The Rust Guide' WHEN $2 THEN 'Other' END, \
         status = CASE id WHEN $2 THEN 'inaccessible' WHEN $3 THEN 'paused' ELSE status END, \
         last_checked_at = CASE id WHEN $1 THEN now() - interval '2 days' WHEN $2 THEN now() - interval '1 hour' \
                                   WHEN $4 THEN now() - interval '3 days' END",
    )
    .bind(a)
    .bind(b)
    .bind(c)
    .bind(d)
    .execute(&app.pool)
    .await
    .expect("shape links");
    let (api, _stop) = api(&app).await;
    let day_ago = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let day_ago_offset = (chrono::Utc::now() - chrono::Duration::days(1))
        .with_timezone(&chrono::FixedOffset::east_opt(3600).expect("offset"))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    for (query, expected) in [
        ("status=inaccessible".to_owned(), vec![b]),
        ("status=paused".to_owned(), vec![c]),
        ("host=alpha.example".to_owned(), vec![a, c]),
        ("host=ALPHA.Example".to_owned(), vec![a, c]),
        ("q=rust%20GUIDE".to_owned(), vec![a]),
        ("q=BETA".to_owned(), vec![b]),
        ("q=docs".to_owned(), vec![a]),
        ("q=%25".to_owned(), vec![d]),
        ("q=_".to_owned(), vec![]),
        (format!("checked_before={day_ago}"), vec![a, d]),
        // An offset's `+` sent unencoded arrives as a space: still the same time.
        (format!("checked_before={day_ago_offset}"), vec![a, d]),
        (format!("checked_before={day_ago}&host=alpha.example"), vec![a]),
        ("host=alpha.example&status=active".to_owned(), vec![a]),
        ("status=&host=&q=".to_owned(), vec![a, b, c, d]),
    ] {
        let answer = api.get(&format!("/api/links?{query}"), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{query}: {}", answer.body);
        assert_eq!(ids(&answer.json()), expected, "{query}");
    }
    for (query, needle) in [
        ("status=bogus", "unknown status"),
        ("checked_before=yesterday", "RFC 3339"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ] {
        let answer = api.get(&format!("/api/links?{query}"), None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            answer.json()["error"].as_str().expect("error").contains(needle),
            "{query}: {}",
            answer.body
        );
    }
    let long = "x".repeat(2049);
    assert_eq!(
        api.get(&format!("/api/links?q={long}"), None).await.status,
        StatusCode::BAD_REQUEST
    );

    // `links list` runs the same query and prints the same array.
    let filter = linkpulse_shared::db::links::ListFilter {
        host: Some("alpha.example".into()),
        ..Default::default()
    };
    let mut out = Vec::new();
    producer::commands::links::list_filtered(&app.pool, &filter, 1000, true, &mut out)
        .await
        .expect("list");
    let cli: Value = serde_json::from_slice(&out).expect("CLI JSON");
    assert_eq!(cli, api.get("/api/links?host=alpha.example", None).await.json());
}

/// `(seq, type, from, to, actor, reason)` of link `id`'s events, in order.
pub(crate) async fn events(
    pool: &PgPool,
    id: i64,
) -> Vec<(i64, String, String, String, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT seq, type, from_status, to_status, actor, reason FROM link_events WHERE link_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .expect("events")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn pause_and_resume_write_one_event_each_with_the_actor(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app.add_links(&[app.url("/ok")]).await[0];
    let (api, _stop) = api(&app).await;
    let path = format!("/api/links/{id}");

    let pause = json!({"status": "paused", "reason": "site maintenance"});
    let answer = api.call(Method::PATCH, &path, Some(ADMIN), Some(&pause)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["status"], "paused");
    assert_eq!(answer.json()["status_reason"], "paused by api: site maintenance");
    // Pausing a paused link changes nothing and writes no event.
    let again = api
        .call(Method::PATCH, &path, Some(ADMIN), Some(&json!({"status": "paused"})))
        .await;
    assert_eq!(again.json()["status_reason"], "paused by api: site maintenance");

    let answer = api
        .call(Method::PATCH, &path, Some(ADMIN), Some(&json!({"status": "active"})))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["status"], "active");
    assert!(answer.json()["status_reason"].is_null());

    // A dead link made active by hand is back up: `link.up`, failures reset; named callers too.
    sqlx::query("UPDATE links SET status = 'inaccessible', consecutive_failures = 3 WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .expect("dead");
    let answer = api
        .client
        .post(format!("{}{path}/activate", api.base))
        .bearer_auth(ADMIN)
        .header("X-Requested-By", "dashboard")
        .send()
        .await
        .expect("activate");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(app.link(id).await.consecutive_failures, 0);

    let ev = |seq: i64, kind: &str, from: &str, to: &str, actor: &str, reason: &str| {
        (
            seq,
            kind.to_owned(),
            from.to_owned(),
            to.to_owned(),
            Some(actor.to_owned()),
            Some(reason.to_owned()),
        )
    };
    assert_eq!(
        events(&app.pool, id).await,
        [
            ev(
                1,
                "link.changed",
                "active",
                "paused",
                "api",
                "paused by api: site maintenance"
            ),
            ev(2, "link.changed", "paused", "active", "api", "resumed by api"),
            ev(
                3,
                "link.up",
                "inaccessible",
                "active",
                "api:dashboard",
                "activated by api:dashboard"
            ),
        ]
    );
    assert_eq!(
        scalar(&app.pool, &format!("SELECT event_seq FROM links WHERE id = {id}")).await,
        3,
        "the link's sequence is its last event's"
    );

    // The link's page shows the events, newest first.
    let detail = api.get(&path, None).await.json();
    let shown: Vec<i64> = detail["history"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(shown, [3, 2, 1]);
    assert_eq!(detail["history"]["events"][0]["actor"], "api:dashboard");

    // Refused changes change nothing.
    for (token, body, status) in [
        (Some(ADMIN), json!({"status": "archived"}), StatusCode::BAD_REQUEST),
        (
            Some(ADMIN),
            json!({"status": "paused", "extra": 1}),
            StatusCode::BAD_REQUEST,
        ),
        (None, json!({"status": "paused"}), StatusCode::UNAUTHORIZED),
        (Some(READ), json!({"status": "paused"}), StatusCode::UNAUTHORIZED),
    ] {
        let answer = api.call(Method::PATCH, &path, token, Some(&body)).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
    }
    let missing = api
        .call(Method::PATCH, "/api/links/999999", Some(ADMIN), Some(&pause))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(events(&app.pool, id).await.len(), 3);
    assert_eq!(app.link(id).await.status, "active");

    // The command line records its user.
    let mut out = Vec::new();
    producer::commands::links::set_status(&app.pool, &id.to_string(), "paused", None, None, true, &mut out)
        .await
        .expect("pause");
    let link: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(link["status"], "paused");
    let last = events(&app.pool, id).await.pop().expect("event");
    assert!(last.4.as_deref().is_some_and(|a| a.starts_with("cli")), "{last:?}");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn delete_removes_the_link_and_its_queued_jobs(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (api, _stop) = api(&app).await;
    let added = api
        .call(
            Method::POST,
            "/api/links",
            Some(ADMIN),
            Some(&json!({"urls": [app.url("/ok"), app.url("/p/1")]})),
        )
        .await
        .json();
    let id = added["results"][0]["id"].as_i64().expect("id");
    let other = added["results"][1]["id"].as_i64().expect("id");

    assert_eq!(
        api.call(Method::DELETE, &format!("/api/links/{id}"), None, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let answer = api
        .call(Method::DELETE, &format!("/api/links/{id}"), Some(ADMIN), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.json(),
        json!({"id": id, "url": app.url("/ok"), "removed": true, "cancelled_jobs": 2})
    );
    assert_eq!(
        api.get(&format!("/api/links/{id}"), None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(Method::DELETE, &format!("/api/links/{id}"), Some(ADMIN), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Its jobs left the queue (cancelled, never run); the other link's are untouched.
    let jobs = jobs_of(&app.pool, id).await;
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|(_, state, _)| state == "failed"), "{jobs:?}");
    let (class,): (Option<String>,) =
        sqlx::query_as("SELECT result_class FROM queue_jobs WHERE dedupe_key = $1 LIMIT 1")
            .bind(format!("link:{id}"))
            .fetch_one(&app.pool)
            .await
            .expect("class");
    assert_eq!(class.as_deref(), Some("cancelled"));
    assert!(
        jobs_of(&app.pool, other)
            .await
            .iter()
            .all(|(_, state, _)| state == "queued")
    );

    // By URL from the command line: the same answer.
    let mut out = Vec::new();
    producer::commands::links::remove(&app.pool, &app.url("/p/1"), true, &mut out)
        .await
        .expect("remove");
    let removed: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(removed["id"], other);
    assert_eq!(removed["cancelled_jobs"], 2);
    assert_eq!(scalar(&app.pool, "SELECT count(*) FROM links").await, 0);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn reads_need_the_read_or_admin_token_and_mutations_the_admin_token(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app.add_links(&[app.url("/ok")]).await[0];
    let reads = [
        "/api/links".to_owned(),
        format!("/api/links/{id}"),
        "/api/queue/stats".to_owned(),
        "/api/jobs".to_owned(),
        "/api/queue/paused".to_owned(),
        "/api/schedules".to_owned(),
        "/api/schedules/stats".to_owned(),
        "/api/runs".to_owned(),
    ];
    let add = json!({"urls": [app.url("/p/1")]});

    // With a read token: reads need it (or the admin token), on loopback too.
    let (api, stop) = serve(&app, Some(ADMIN), Some(READ), "127.0.0.1:8080").await;
    for path in &reads {
        for token in [None, Some("wrong"), Some("re4d-t0ke")] {
            let answer = api.get(path, token).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path} {token:?}");
            assert!(
                answer.json()["error"].as_str().expect("error").contains("read token"),
                "{}",
                answer.body
            );
            assert!(answer.headers.contains_key(reqwest::header::WWW_AUTHENTICATE));
        }
        for token in [READ, ADMIN] {
            assert_eq!(
                api.get(path, Some(token)).await.status,
                StatusCode::OK,
                "{path} {token}"
            );
        }
    }
    // The read token never mutates.
    let answer = api.call(Method::POST, "/api/links", Some(READ), Some(&add)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.call(Method::POST, "/api/cycle", Some(READ), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(scalar(&app.pool, "SELECT count(*) FROM links").await, 1);
    assert_eq!(
        api.call(Method::POST, "/api/links", Some(ADMIN), Some(&add))
            .await
            .status,
        StatusCode::OK
    );
    // Always open: the probes, the metrics and the API's description.
    for path in ["/livez", "/readyz", "/metrics", "/api/openapi.json"] {
        assert_eq!(api.get(path, None).await.status, StatusCode::OK, "{path}");
    }
    stop.cancel();

    // Loopback without a read token: reads are open (as before the read token existed).
    let (api, stop) = serve(&app, Some(ADMIN), None, "127.0.0.1:8080").await;
    for path in &reads {
        assert_eq!(api.get(path, None).await.status, StatusCode::OK, "{path}");
    }
    stop.cancel();

    // Listening beyond loopback without a read token: only the admin token reads.
    let (api, stop) = serve(&app, Some(ADMIN), None, "0.0.0.0:8080").await;
    for path in &reads {
        assert_eq!(api.get(path, None).await.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(api.get(path, Some(ADMIN)).await.status, StatusCode::OK, "{path}");
    }
    assert_eq!(api.get("/livez", None).await.status, StatusCode::OK);
    stop.cancel();
    // ... and with no token at all, nobody reads, and the error says what to set.
    let (api, stop) = serve(&app, None, None, "[::]:8080").await;
    for path in &reads {
        let answer = api.get(path, Some(ADMIN)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
        assert!(
            answer.json()["error"]
                .as_str()
                .expect("error")
                .contains("LINKPULSE_READ_TOKEN")
        );
    }
    for path in ["/livez", "/metrics", "/api/openapi.json"] {
        assert_eq!(api.get(path, None).await.status, StatusCode::OK, "{path}");
    }
    stop.cancel();
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn limits_past_the_maximum_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    bulk_links(&app.pool, 1001, 3).await;
    let (api, _stop) = api(&app).await;
    assert_eq!(
        ids(&api.get("/api/links", None).await.json()).len(),
        100,
        "the default page"
    );
    let answer = api.get("/api/links?limit=1000", None).await;
    assert_eq!(ids(&answer.json()).len(), 1000);
    assert!(answer.next().is_some());
    for limit in ["1001", "0", "-5", "many", "99999999999999999999"] {
        let answer = api.get(&format!("/api/links?limit={limit}"), None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{limit}");
        assert!(answer.json()["error"].as_str().expect("error").contains("limit"));
    }
    // A body past 4 MiB is refused before it is read; other routes keep their 64 KiB.
    let huge = json!({"urls": ["https://example.com/".repeat(220_000)]});
    assert_eq!(
        api.call(Method::POST, "/api/links", Some(ADMIN), Some(&huge))
            .await
            .status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let big = json!({"status": "paused", "reason": "x".repeat(100_000)});
    assert_eq!(
        api.call(Method::PATCH, "/api/links/1", Some(ADMIN), Some(&big))
            .await
            .status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let big_requeue = json!({"state": "failed", "kind": "x".repeat(100_000)});
    assert_eq!(
        api.call(Method::POST, "/api/queue/requeue", Some(ADMIN), Some(&big_requeue))
            .await
            .status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        scalar(&app.pool, "SELECT count(*) FROM links WHERE status = 'paused'").await,
        0
    );
}

/// Every route of the admin router but the dashboard's pages, as `(method, path)`.
const ROUTES: [(&str, &str); 34] = [
    ("get", "/livez"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/api/queue/stats"),
    ("get", "/api/jobs"),
    ("post", "/api/queue/requeue"),
    ("post", "/api/queue/pause/{kind}"),
    ("post", "/api/queue/resume/{kind}"),
    ("post", "/api/queue/cancel"),
    ("get", "/api/queue/paused"),
    ("post", "/api/cycle"),
    ("get", "/api/schedules"),
    ("get", "/api/schedules/stats"),
    ("get", "/api/schedules/{name}"),
    ("patch", "/api/schedules/{name}"),
    ("post", "/api/schedules/{name}/run"),
    ("get", "/api/runs"),
    ("get", "/api/links"),
    ("post", "/api/links"),
    ("get", "/api/links/export"),
    ("get", "/api/links/{id}"),
    ("patch", "/api/links/{id}"),
    ("delete", "/api/links/{id}"),
    ("post", "/api/links/{id}/activate"),
    ("post", "/api/links/{id}/check"),
    ("post", "/api/links/{id}/refresh"),
    ("get", "/api/webhooks"),
    ("post", "/api/webhooks"),
    ("get", "/api/webhooks/{id}"),
    ("delete", "/api/webhooks/{id}"),
    ("post", "/api/webhooks/{id}/test"),
    ("post", "/api/webhooks/{id}/rotate"),
    ("post", "/api/webhooks/{id}/enable"),
];

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_openapi_document_is_3_1_and_lists_every_route(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // No admin token: every mutation is refused before it reads anything, so each route can be
    // called to prove it exists.
    let (api, _stop) = serve(&app, None, Some(READ), "127.0.0.1:8080").await;
    let answer = api.get("/api/openapi.json", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let doc = answer.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let listed: HashSet<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    let documented: HashSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|k| ["get", "put", "post", "delete", "patch", "head"].contains(&k.as_str()))
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let missing: Vec<_> = listed.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&listed).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "undocumented: {missing:?}; not routes: {unknown:?}"
    );
    let operation_ids: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().expect("item").values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    assert_eq!(
        operation_ids.len(),
        operation_ids.iter().collect::<HashSet<_>>().len(),
        "unique operation ids"
    );

    // Every listed route is one the router serves: an unknown path or method gets axum's empty
    // 405, or 404 with its "no route" answer; a handler's own 404 names what it did not find.
    for (method, path) in &listed {
        let concrete = path
            .replace("{kind}", "check")
            .replace("{name}", "check")
            .replace("{id}", "1");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let answer = api.call(method.clone(), &concrete, Some(READ), None).await;
        assert!(
            answer.status != StatusCode::METHOD_NOT_ALLOWED
                && !(answer.status == StatusCode::NOT_FOUND && answer.body.contains("no route")),
            "{method} {concrete}: {} {}",
            answer.status,
            answer.body
        );
    }
    let stray = api.get("/api/no-such-route", Some(READ)).await;
    assert_eq!(
        (stray.status, stray.body.as_str()),
        (StatusCode::NOT_FOUND, r#"{"error":"no route /api/no-such-route"}"#),
        "premise: how the router says no"
    );

    // `producer openapi` prints the same document, with no database.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_linkpulse-producer"))
        .arg("openapi")
        .env_remove("DATABASE_URL")
        .output()
        .await
        .expect("producer openapi");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(printed, doc);
}
