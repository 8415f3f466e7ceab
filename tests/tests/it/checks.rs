//! Verdicts users can trust: a table of hostile and quirky sites, the network guard, Retry-After,
//! charsets and body caps — all through the real pipeline (cycle → queue → worker → write-back).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use sqlx::PgPool;

use crate::app::TestApp;

/// Requests a site received: (method, path, time).
type Log = Arc<Mutex<Vec<(String, String, tokio::time::Instant)>>>;

const CHALLENGE: &str = "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body><div id=\"challenge-running\"></div><form id=\"challenge-form\" action=\"/cdn-cgi/challenge-platform/h/b/orchestrate/jsch/v1\"></form></body></html>";

fn gzip_bomb() -> Vec<u8> {
    use std::io::Write;
    static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"<html><head><title>Bomb</title></head><body>")
            .expect("write");
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..1024 {
            gz.write_all(&zeros).expect("write"); // 1 GiB decoded
        }
        gz.finish().expect("finish")
    })
    .clone()
}

async fn quirky(State(log): State<Log>, method: Method, Path(path): Path<String>, uri: Uri) -> Response {
    let path = format!("/{path}");
    log.lock()
        .expect("lock")
        .push((method.to_string(), path.clone(), tokio::time::Instant::now()));
    let html = |body: &'static [u8], content_type: &'static str| {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    match path.as_str() {
        "/head-405" if method == Method::HEAD => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        "/head-404" if method == Method::HEAD => StatusCode::NOT_FOUND.into_response(),
        "/head-405" | "/head-404" | "/ok" => "ok".into_response(),
        "/challenge" => (StatusCode::FORBIDDEN, [("cf-mitigated", "challenge")], CHALLENGE).into_response(),
        "/retry-after-secs" => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "2")]).into_response(),
        "/retry-after-date" => {
            let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, at)]).into_response()
        }
        "/redirect-to" => (StatusCode::FOUND, [(header::LOCATION, uri.query().unwrap_or("/").to_owned())]).into_response(),
        "/999" => StatusCode::from_u16(999).expect("999").into_response(),
        "/always-503" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "/404" => StatusCode::NOT_FOUND.into_response(),
        "/410" => StatusCode::GONE.into_response(),
        "/loop-a" => (StatusCode::FOUND, [(header::LOCATION, "/loop-b")]).into_response(),
        "/loop-b" => (StatusCode::FOUND, [(header::LOCATION, "/loop-a")]).into_response(),
        p if p.starts_with("/chain/") || p.starts_with("/long/") => {
            let (prefix, n) = p.rsplit_once('/').unwrap_or((p, "0"));
            let n: u32 = n.parse().unwrap_or(0);
            if n == 0 {
                "end of chain".into_response()
            } else {
                (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, format!("{prefix}/{}", n - 1))]).into_response()
            }
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late".into_response()
        }
        "/stall" => {
            // Headers and a first chunk, then nothing, forever.
            let first = futures::stream::once(async { Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"<html><head>")) });
            let body = Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()));
            ([(header::CONTENT_TYPE, "text/html")], body).into_response()
        }
        "/huge" => {
            let chunk = axum::body::Bytes::from(vec![b'x'; 1 << 20]);
            let head = axum::body::Bytes::from_static(b"<html><body><title>Huge</title>");
            let stream = futures::stream::iter(
                std::iter::once(Ok::<_, std::io::Error>(head)).chain((0..20).map(move |_| Ok(chunk.clone()))),
            );
            ([(header::CONTENT_TYPE, "text/html")], Body::from_stream(stream)).into_response()
        }
        "/bomb" => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            (headers, gzip_bomb()).into_response()
        }
        "/latin1" => html(b"<html><head><title>Caf\xe9 cr\xe8me</title></head></html>", "text/html; charset=ISO-8859-1"),
        "/cp1252" => html(b"<html><head><meta charset=\"windows-1252\"><title>\x93Quoted\x94 \x80 price</title></head></html>", "text/html"),
        "/og-only" => html(b"<html><head><meta property=\"og:title\" content=\"From Open Graph\"></head></html>", "text/html"),
        "/base-href" => html(b"<html><head><title>B</title><base href=\"https://cdn.example.com/assets/\"><meta property=\"og:image\" content=\"img/card.png\"></head></html>", "text/html"),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn quirky_site(ip: &str) -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/{*path}", any(quirky)).with_state(log.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, log)
}

/// A TestApp whose links point at a quirky site; few attempts, short delays.
async fn app_with_site(pool: PgPool) -> (TestApp, SocketAddr, Log) {
    let mut app = TestApp::spawn(pool).await;
    let (addr, log) = quirky_site("127.0.0.1").await;
    app.settings.queue.max_attempts = 2;
    app.settings.queue.retry.base = Duration::from_millis(50);
    app.settings.fetch.timeout = Duration::from_millis(800);
    (app, addr, log)
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn each_kind_of_site_gets_the_right_verdict(pool: PgPool) {
    let (app, addr, log) = app_with_site(pool).await;
    // path, verdict, status code, failures counted after one check
    let table: &[(&str, &str, Option<i32>, i32)] = &[
        ("/head-405", "ok", Some(200), 0),
        ("/head-404", "ok", Some(200), 0),
        ("/challenge", "blocked", Some(403), 0),
        ("/999", "blocked", Some(999), 0),
        ("/always-503", "transient", Some(503), 1),
        ("/slow", "transient", None, 1),
        ("/stall", "ok", Some(200), 0),
        ("/chain/5", "ok", Some(200), 0),
        ("/long/11", "dead", None, 1),
        ("/loop-a", "dead", None, 1),
        ("/404", "dead", Some(404), 1),
        ("/410", "dead", Some(410), 1),
    ];
    let urls: Vec<String> = table.iter().map(|(p, ..)| format!("http://{addr}{p}")).collect();
    let ids = app.add_links(&urls).await;
    app.cycle_and_work().await;
    for ((path, verdict, code, failures), id) in table.iter().zip(ids) {
        let link = app.link(id).await;
        assert_eq!(
            link.last_outcome.as_deref(),
            Some(*verdict),
            "{path}: {:?}",
            link.last_error
        );
        assert_eq!(link.last_status_code, *code, "{path}");
        assert_eq!(link.consecutive_failures, *failures, "{path}");
        assert_eq!(
            link.status, "active",
            "{path}: one check never makes a link inaccessible"
        );
    }
    let reason = app
        .link(app.add_links(&[urls[9].clone()]).await[0])
        .await
        .last_error
        .unwrap_or_default();
    assert!(reason.contains("redirect loop"), "{reason}");
    let requests = log.lock().expect("lock");
    let heads = |path: &str| requests.iter().filter(|(m, p, _)| m == "HEAD" && p == path).count();
    assert_eq!(
        heads("/chain/5"),
        1,
        "a successful HEAD through 5 redirects needs no GET"
    );
    let gets_of_long_chain = requests
        .iter()
        .filter(|(m, p, _)| m == "GET" && p == "/long/11")
        .count();
    assert_eq!(
        gets_of_long_chain, 1,
        "more than 10 redirects: HEAD failed, GET tried once, then judged"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_guard_refuses_private_addresses_in_every_spelling_without_connecting(pool: PgPool) {
    let (mut app, addr, log) = app_with_site(pool).await;
    app.settings.fetch.guard.allow_private_networks = false;
    let port = addr.port();
    // The machine's own name resolves to loopback on most hosts; "localhost" is refused by name.
    let own_name = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let targets = [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://localhost:{port}/ok"),
        format!("http://[::1]:{port}/ok"),
        format!("http://0x7f000001:{port}/ok"),
        format!("http://2130706433:{port}/ok"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::ffff:127.0.0.1]:{port}/ok"),
        "http://10.0.0.1/".to_owned(),
        format!("http://{own_name}:{port}/ok"),
    ];
    let ids = app.add_links(&targets).await;
    app.cycle_and_work().await;
    for (url, id) in targets.iter().zip(ids) {
        let link = app.link(id).await;
        assert_eq!(link.last_outcome.as_deref(), Some("dead"), "{url}");
        let reason = link.last_error.unwrap_or_default();
        assert!(
            reason.contains("refused by the network guard") || reason.contains("no such host"),
            "{url}: {reason}"
        );
    }
    assert!(log.lock().expect("lock").is_empty(), "the guard let a request through");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_redirect_into_private_space_is_refused_at_the_hop(pool: PgPool) {
    let (mut app, addr, log) = app_with_site(pool).await;
    let (inner_addr, inner_log) = quirky_site("127.0.0.2").await;
    app.settings.fetch.guard.allow_private_networks = false;
    app.settings.fetch.guard.allowed_hosts = ["127.0.0.1".to_owned()].into();
    let target = format!("http://{inner_addr}/ok");
    let links = [
        format!("http://{addr}/ok"),
        format!("http://{addr}/redirect-to?{target}"),
        target.clone(),
    ];
    let ids = app.add_links(&links).await;
    app.cycle_and_work().await;
    assert_eq!(
        app.link(ids[0]).await.last_outcome.as_deref(),
        Some("ok"),
        "premise: the allowed host is reachable"
    );
    for id in &ids[1..] {
        let refused = app.link(*id).await;
        assert_eq!(refused.last_outcome.as_deref(), Some("dead"), "{}", refused.url);
        let reason = refused.last_error.unwrap_or_default();
        assert!(
            reason.contains("refused by the network guard") && reason.contains("127.0.0.2"),
            "{reason}"
        );
    }
    assert!(inner_log.lock().expect("lock").is_empty(), "127.0.0.2 saw a request");
    assert!(!log.lock().expect("lock").is_empty());
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_429_with_retry_after_delays_the_job_and_cools_the_host_down(pool: PgPool) {
    for path in ["/retry-after-secs", "/retry-after-date"] {
        let (app, addr, log) = app_with_site(pool.clone()).await;
        sqlx::query("TRUNCATE queue_jobs, links, host_cooldowns")
            .execute(&app.pool)
            .await
            .expect("reset");
        let id = app.add_links(&[format!("http://{addr}{path}")]).await[0];
        app.cycle_and_work().await;
        let link = app.link(id).await;
        assert_eq!(link.last_outcome.as_deref(), Some("blocked"), "{path}");
        assert_eq!(
            (link.last_status_code, link.consecutive_failures),
            (Some(429), 0),
            "{path}: a 429 is never counted"
        );
        let requests = log.lock().expect("lock").clone();
        let starts: Vec<_> = requests
            .iter()
            .filter(|(m, ..)| m == "HEAD")
            .map(|(.., at)| *at)
            .collect();
        assert_eq!(starts.len(), 2, "{path}: two attempts");
        let waited = starts[1] - starts[0];
        assert!(
            waited >= Duration::from_millis(900),
            "{path}: retried after {waited:?}, before Retry-After"
        );
        let (cooldowns,): (i64,) = sqlx::query_as("SELECT count(*) FROM host_cooldowns WHERE host = '127.0.0.1'")
            .fetch_one(&app.pool)
            .await
            .expect("cooldowns");
        assert_eq!(cooldowns, 1, "{path}: the host was put on cool-down");
    }
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn refresh_decodes_charsets_follows_fallbacks_and_caps_hostile_bodies(pool: PgPool) {
    let (mut app, addr, _log) = app_with_site(pool).await;
    app.settings.check_enabled = false;
    app.settings.refresh_enabled = true;
    app.settings.fetch.timeout = Duration::from_secs(10);
    let paths = ["/latin1", "/cp1252", "/og-only", "/base-href", "/huge", "/bomb"];
    let ids = app
        .add_links(&paths.iter().map(|p| format!("http://{addr}{p}")).collect::<Vec<_>>())
        .await;
    let started = tokio::time::Instant::now();
    app.cycle_and_work().await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "hostile bodies must stop at the cap"
    );
    let expected = [
        Some("Café crème"),
        Some("\u{201c}Quoted\u{201d} € price"),
        Some("From Open Graph"),
        Some("B"),
        Some("Huge"), // 20 MB body: read only up to the cap
        Some("Bomb"), // 1 GiB gzip bomb: read only up to </head>
    ];
    for ((path, id), title) in paths.iter().zip(&ids).zip(expected) {
        assert_eq!(app.link(*id).await.title.as_deref(), title, "{path}");
    }
    assert_eq!(
        app.link(ids[3]).await.image_url.as_deref(),
        Some("https://cdn.example.com/assets/img/card.png")
    );
}
