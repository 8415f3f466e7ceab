//! The dashboard's defences over plain HTTP: CSRF (origin check and per-session token), the `Host`
//! allowlist against DNS rebinding, the session cookie's attributes, signature, expiry and
//! token rotation, and read-only sessions.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION, SET_COOKIE};
use sqlx::PgPool;

use linkpulse_shared::config::AdminToken;

use crate::app::TestApp;
use crate::dashboard::{TOKEN, failed_job, serve_console};

/// The read token of these tests.
const READER: &str = "reader-token";
/// A session key shared by servers that must accept each other's cookies.
const SESSION_KEY: &str = "0123456789abcdef0123456789abcdef-session-key";

/// One HTTP response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    /// A header's value, empty when absent.
    pub(crate) fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// Every `Set-Cookie` of the session cookie.
    fn session_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|c| c.starts_with("linkpulse_session="))
            .map(str::to_owned)
            .collect()
    }
}

/// Sends a request to the admin server at `addr` (redirects not followed).
pub(crate) async fn request(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut builder = client.request(method, format!("http://{addr}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if let Some(body) = body {
        builder = builder
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.to_owned());
    }
    let response = builder.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("body");
    Reply { status, headers, body }
}

/// `GET path` with the session `cookie` (`name=value`), if any.
pub(crate) async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", *c)).collect();
    request(addr, reqwest::Method::GET, path, &headers, None).await
}

/// A form post as a browser on this server's own page sends it: same `Origin`, the cookie.
pub(crate) async fn post_form(addr: SocketAddr, path: &str, cookie: Option<&str>, body: &str) -> Reply {
    let origin = format!("http://{addr}");
    let mut headers = vec![("Origin", origin.as_str()), ("Sec-Fetch-Site", "same-origin")];
    if let Some(cookie) = cookie {
        headers.push(("Cookie", cookie));
    }
    request(addr, reqwest::Method::POST, path, &headers, Some(body)).await
}

/// A signed-in session over plain HTTP.
#[derive(Debug, Clone)]
pub(crate) struct HttpSession {
    /// `linkpulse_session=…`, for a `Cookie` header.
    pub(crate) cookie: String,
    /// The whole `Set-Cookie` it came with.
    pub(crate) set_cookie: String,
    /// The session's CSRF value, as its forms carry it.
    pub(crate) csrf: String,
}

/// The `csrf` value of the first form in `page`.
pub(crate) fn csrf_in(page: &str) -> Option<String> {
    let start = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let end = page[start..].find('"')?;
    Some(page[start..start + end].to_owned())
}

/// Signs in with `token` as the sign-in form does, and reads the session's CSRF value from a page.
pub(crate) async fn sign_in_http(addr: SocketAddr, token: &str) -> HttpSession {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .append_pair("next", "/")
        .finish();
    let reply = request(addr, reqwest::Method::POST, "/signin", &[], Some(&body)).await;
    assert_eq!(reply.status, 303, "sign in: {}", reply.body);
    let set_cookie = reply.session_cookies().pop().expect("a session cookie");
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    let page = get(addr, "/signin", Some(&cookie)).await;
    let csrf = csrf_in(&page.body).unwrap_or_else(|| panic!("no csrf in {}", page.body));
    assert_eq!(csrf.len(), 32, "{csrf}");
    HttpSession {
        cookie,
        set_cookie,
        csrf,
    }
}

async fn job_state(pool: &PgPool, id: i64) -> String {
    sqlx::query_scalar("SELECT state FROM queue_jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("job state")
}

async fn link_status(pool: &PgPool, id: i64) -> String {
    sqlx::query_scalar("SELECT status FROM links WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("link status")
}

/// An inaccessible link with a failed check job: (link, job).
async fn fixture(app: &TestApp) -> (i64, i64) {
    let url = "https://docs.example.org/guide";
    let link = app.add_links(&[url.to_owned()]).await[0];
    sqlx::query("UPDATE links SET status = 'inaccessible', consecutive_failures = 3 WHERE id = $1")
        .bind(link)
        .execute(&app.pool)
        .await
        .expect("inaccessible");
    let job = failed_job(&app.pool, link, url, "HTTP 503 Service Unavailable").await;
    (link, job)
}

/// A cross-site post is refused before its CSRF value is even looked at, and a same-origin post
/// without the session's CSRF value is refused too; only both together change anything.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_cross_site_post_is_refused_even_with_a_valid_session_and_csrf(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (link, job) = fixture(&app).await;
    let (addr, _stop) = serve_console(&app, |_| {}).await;
    let session = sign_in_http(addr, TOKEN).await;
    let cookie = session.cookie.as_str();
    let form = format!("csrf={}", session.csrf);
    let requeue = format!("/jobs/{job}/requeue");
    let activate = format!("/links/{link}/activate");

    // Valid cookie and CSRF value, but from another site.
    for (name, value) in [
        ("Origin", "http://attacker.example"),
        ("Origin", "null"),
        ("Origin", "https://127.0.0.1.attacker.example"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
    ] {
        for path in [&requeue, &activate, &"/signout".to_owned()] {
            let headers = [(name, value), ("Cookie", cookie)];
            let reply = request(addr, reqwest::Method::POST, path, &headers, Some(&form)).await;
            assert_eq!(reply.status, 403, "{path} with {name}: {value}: {}", reply.body);
            assert!(reply.body.contains("refused"), "{}", reply.body);
        }
    }
    assert_eq!(job_state(&app.pool, job).await, "failed");
    assert_eq!(link_status(&app.pool, link).await, "inaccessible");

    // Same origin, but no, a wrong, or another session's CSRF value.
    let other = sign_in_http(addr, TOKEN).await;
    assert_ne!(other.csrf, session.csrf);
    for body in [
        String::new(),
        "csrf=".to_owned(),
        format!("csrf={}", "0".repeat(32)),
        format!("csrf={}", other.csrf),
        format!("csrf={}x", session.csrf),
    ] {
        let reply = post_form(addr, &requeue, Some(cookie), &body).await;
        assert_eq!(reply.status, 403, "{body:?}: {}", reply.body);
        assert!(reply.body.contains("security token"), "{}", reply.body);
        assert!(reply.body.contains("id=\"error\""), "an error page: {}", reply.body);
    }
    // The right CSRF value without the cookie is no session at all.
    let reply = post_form(addr, &requeue, None, &form).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(job_state(&app.pool, job).await, "failed", "nothing changed");

    // Same origin with the session's CSRF value: done.
    let reply = post_form(addr, &requeue, Some(cookie), &form).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(reply.header("location"), format!("/jobs/{job}"));
    assert_eq!(job_state(&app.pool, job).await, "queued");
    // Again: the job's page says why not (409), nothing else happens.
    let reply = post_form(addr, &requeue, Some(cookie), &form).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(reply.body.contains("id=\"error\""), "{}", reply.body);
    assert!(reply.body.contains("was not requeued: it is queued"), "{}", reply.body);
    // An API client without Origin or Sec-Fetch-Site passes the origin check (the token checks
    // are its gate): the same form post with no such header works.
    let headers = [("Cookie", cookie)];
    let reply = request(addr, reqwest::Method::POST, &activate, &headers, Some(&form)).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(link_status(&app.pool, link).await, "active");
}

/// DNS rebinding: a name that is not ours is refused (400) everywhere but the probes and metrics;
/// loopback names, IP literals and the public URL's host are served.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_foreign_host_is_refused_except_for_probes_and_metrics(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, job) = fixture(&app).await;
    let public = url::Url::parse("https://links.example.org/").expect("url");
    let (addr, _stop) = serve_console(&app, |s| s.public_url = Some(public)).await;
    let session = sign_in_http(addr, TOKEN).await;
    let port = addr.port();

    // Signed in and with the token: what a foreign name gets is the Host check's answer alone.
    let bearer = format!("Bearer {TOKEN}");
    let cookie = session.cookie.clone();
    let with_host = |host: String, path: &'static str| {
        let (bearer, cookie) = (bearer.clone(), cookie.clone());
        async move {
            let headers = [
                ("Host", host.as_str()),
                ("Cookie", cookie.as_str()),
                ("Authorization", bearer.as_str()),
            ];
            let reply = request(addr, reqwest::Method::GET, path, &headers, None).await;
            (reply.status, reply.body)
        }
    };
    for host in [
        "attacker.example".to_owned(),
        format!("attacker.example:{port}"),
        "links.example.org.attacker.example".to_owned(),
        "localhost.attacker.example".to_owned(),
    ] {
        for path in ["/", "/jobs", "/signin", "/api/queue/stats", "/api/jobs"] {
            let (status, body) = with_host(host.clone(), path).await;
            assert_eq!(status, 400, "{host} {path}: {body}");
            assert!(body.contains("is not served here"), "{body}");
        }
        for path in ["/livez", "/readyz", "/metrics"] {
            let (status, body) = with_host(host.clone(), path).await;
            assert_eq!(status, 200, "{host} {path}: {body}");
        }
    }
    // Nor does a post under a foreign name get through with a valid session.
    let form = format!("csrf={}", session.csrf);
    let headers = [("Host", "attacker.example"), ("Cookie", session.cookie.as_str())];
    let path = format!("/jobs/{job}/requeue");
    let reply = request(addr, reqwest::Method::POST, &path, &headers, Some(&form)).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(job_state(&app.pool, job).await, "failed");

    for host in [
        "links.example.org".to_owned(),
        "LINKS.Example.ORG:443".to_owned(),
        "links.example.org.".to_owned(),
        format!("localhost:{port}"),
        "app.localhost".to_owned(),
        format!("127.0.0.1:{port}"),
        "10.1.2.3".to_owned(),
        format!("[::1]:{port}"),
    ] {
        for path in ["/", "/api/queue/stats"] {
            let (status, body) = with_host(host.clone(), path).await;
            assert_eq!(status, 200, "{host} {path}: {body}");
        }
    }

    // A public URL means a proxy may forward the world from loopback: reads are no longer open
    // on a loopback address without a token, pages send to sign-in.
    let anonymous = |path: &'static str| async move {
        request(addr, reqwest::Method::GET, path, &[("Host", "links.example.org")], None).await
    };
    let reply = anonymous("/api/queue/stats").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let reply = anonymous("/jobs").await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert!(
        reply.header("location").starts_with("/signin?next="),
        "{}",
        reply.header("location")
    );
}

/// The cookie: `HttpOnly`, `SameSite=Strict`, `Path=/`, `Max-Age` = the session TTL, `Secure` when
/// (and only when) the public URL is https; it never holds the token; signing out removes it.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_session_cookie_is_http_only_strict_expiring_and_secure_behind_https(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for (public, secure) in [
        (None, false),
        (Some("http://links.example.org/"), false),
        (Some("https://links.example.org/"), true),
    ] {
        let (addr, stop) = serve_console(&app, |s| {
            s.session_ttl = Duration::from_secs(600);
            s.public_url = public.map(|u| url::Url::parse(u).expect("url"));
        })
        .await;
        let session = sign_in_http(addr, TOKEN).await;
        let attributes: Vec<&str> = session.set_cookie.split("; ").skip(1).collect();
        for expected in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=600"] {
            assert!(attributes.contains(&expected), "{public:?}: {}", session.set_cookie);
        }
        assert_eq!(
            attributes.contains(&"Secure"),
            secure,
            "{public:?}: {}",
            session.set_cookie
        );
        assert!(!session.set_cookie.contains(TOKEN), "{}", session.set_cookie);

        let reply = post_form(
            addr,
            "/signout",
            Some(&session.cookie),
            &format!("csrf={}", session.csrf),
        )
        .await;
        assert_eq!(reply.status, 303, "{}", reply.body);
        assert_eq!(reply.header("location"), "/signin");
        let removal = reply.session_cookies();
        assert!(
            removal.len() == 1 && removal[0].starts_with("linkpulse_session=;") && removal[0].contains("Max-Age=0"),
            "{removal:?}"
        );
        stop.cancel();
    }
}

/// The cookie's bytes flipped by one character are no session, and neither is a cookie signed
/// before the admin token rotated (same session key); the same key with the same tokens still
/// accepts it, so the refusal is the rotation's doing.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_tampered_cookie_or_one_from_before_a_token_rotation_is_no_session(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, job) = fixture(&app).await;
    let settings = |token: &'static str| {
        move |s: &mut linkpulse_shared::config::Settings| {
            s.admin_token = Some(AdminToken::new(token));
            s.read_token = Some(AdminToken::new(READER));
            s.session_key = Some(SESSION_KEY.to_owned().into());
        }
    };
    let (first, stop_first) = serve_console(&app, settings(TOKEN)).await;
    let session = sign_in_http(first, TOKEN).await;
    let form = format!("csrf={}", session.csrf);
    let requeue = format!("/jobs/{job}/requeue");
    assert_eq!(get(first, "/", Some(&session.cookie)).await.status, 200);
    let reply = get(first, "/", None).await;
    assert_eq!(
        (reply.status, reply.header("location")),
        (303, "/signin?next=%2F".to_owned())
    );

    // `linkpulse_session=<signature><role>.<expiry>.<csrf>`: flip a character of each part.
    let value = session.cookie.strip_prefix("linkpulse_session=").expect("value");
    let role_at = value.find("admin.").expect("role in the value");
    let expiry_end = role_at + "admin.".len() + value[role_at + "admin.".len()..].find('.').expect("expiry");
    for at in [0, role_at + 1, expiry_end - 1, value.len() - 1] {
        let mut bytes = value.as_bytes().to_vec();
        bytes[at] = match bytes[at] {
            b'0' => b'1',
            b'a' => b'b',
            _ if bytes[at].is_ascii_digit() => b'0',
            _ => b'a',
        };
        let tampered = format!("linkpulse_session={}", String::from_utf8(bytes).expect("ascii"));
        assert_ne!(tampered, session.cookie);
        let reply = get(first, "/", Some(&tampered)).await;
        assert_eq!(reply.status, 303, "byte {at} changed: {}", reply.body);
        assert!(reply.header("location").starts_with("/signin"));
        let reply = post_form(first, &requeue, Some(&tampered), &form).await;
        assert_eq!(reply.status, 401, "byte {at} changed: {}", reply.body);
    }

    // Restarted with the admin token rotated: the old cookie is refused.
    stop_first.cancel();
    let (rotated, _stop_rotated) = serve_console(&app, settings("rotated-admin-token")).await;
    let reply = get(rotated, "/", Some(&session.cookie)).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert!(reply.header("location").starts_with("/signin"));
    let reply = post_form(rotated, &requeue, Some(&session.cookie), &form).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(job_state(&app.pool, job).await, "failed");
    // The control: another process with the same key and tokens takes it.
    let (same, _stop_same) = serve_console(&app, settings(TOKEN)).await;
    assert_eq!(get(same, "/", Some(&session.cookie)).await.status, 200);
    let reply = post_form(same, &requeue, Some(&session.cookie), &form).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(job_state(&app.pool, job).await, "queued");
}

/// The expiry is inside the signed value: a client that keeps the cookie past its time gets no
/// session from the server.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn an_expired_cookie_is_refused_by_the_server_whatever_the_client_keeps(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, job) = fixture(&app).await;
    let ttl = Duration::from_secs(1);
    let (addr, _stop) = serve_console(&app, |s| {
        s.read_token = Some(AdminToken::new(READER));
        s.session_ttl = ttl;
    })
    .await;
    let session = sign_in_http(addr, TOKEN).await;
    assert!(session.set_cookie.contains("Max-Age=1"), "{}", session.set_cookie);
    assert_eq!(get(addr, "/", Some(&session.cookie)).await.status, 200);
    let issued = std::time::Instant::now();
    tokio::time::sleep(ttl + Duration::from_millis(1100)).await;
    assert!(issued.elapsed() > ttl + Duration::from_secs(1));
    let reply = get(addr, &format!("/jobs/{job}"), Some(&session.cookie)).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(reply.header("location"), format!("/signin?next=%2Fjobs%2F{job}"));
    let reply = post_form(
        addr,
        &format!("/jobs/{job}/requeue"),
        Some(&session.cookie),
        &format!("csrf={}", session.csrf),
    )
    .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(reply.body.contains("expired"), "{}", reply.body);
    assert_eq!(job_state(&app.pool, job).await, "failed");
}

/// A session of the read token sees every page, without buttons, and each of its posts is
/// refused (403) even with its own CSRF value; an admin session's identical post works.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_read_only_session_sees_pages_but_its_posts_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (link, job) = fixture(&app).await;
    producer::schedules::store::seed(&app.pool, &app.settings)
        .await
        .expect("schedules");
    let (addr, _stop) = serve_console(&app, |s| s.read_token = Some(AdminToken::new(READER))).await;
    assert_eq!(get(addr, "/", None).await.status, 303, "pages need a session");
    let reader = sign_in_http(addr, READER).await;
    let cookie = Some(reader.cookie.as_str());

    for path in [
        "/".to_owned(),
        "/jobs?state=failed".to_owned(),
        format!("/jobs/{job}"),
        "/links?status=all".to_owned(),
        format!("/links/{link}"),
        "/schedules".to_owned(),
    ] {
        let reply = get(addr, &path, cookie).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert!(reply.body.contains("Signed in (read-only)"), "{path}");
        for button in [
            "bulk-requeue",
            "requeue",
            "activate",
            "check",
            "toggle-check",
            "run-check",
        ] {
            assert!(
                !reply.body.contains(&format!("id=\"{button}\"")),
                "{path} has #{button}"
            );
        }
    }

    let form = format!("csrf={}", reader.csrf);
    let confirmed = format!("csrf={}&confirm=yes", reader.csrf);
    let posts = [
        (format!("/jobs/{job}/requeue"), form.clone()),
        ("/jobs/requeue".to_owned(), format!("{confirmed}&kind=check")),
        (format!("/links/{link}/activate"), form.clone()),
        (format!("/links/{link}/check"), form.clone()),
        ("/schedules/check/toggle".to_owned(), format!("{form}&enabled=false")),
        ("/schedules/check/run".to_owned(), confirmed.clone()),
    ];
    for (path, body) in &posts {
        let reply = post_form(addr, path, cookie, body).await;
        assert_eq!(reply.status, 403, "{path}: {}", reply.body);
        assert!(reply.body.contains("read-only"), "{}", reply.body);
    }
    assert_eq!(job_state(&app.pool, job).await, "failed");
    assert_eq!(link_status(&app.pool, link).await, "inaccessible");
    let (enabled, runs, unfinished): (bool, i64, i64) = sqlx::query_as(
        "SELECT (SELECT enabled FROM schedules WHERE name = 'check'), (SELECT count(*) FROM schedule_runs),
                (SELECT count(*) FROM queue_jobs WHERE state IN ('queued', 'running'))",
    )
    .fetch_one(&app.pool)
    .await
    .expect("state");
    assert_eq!((enabled, runs, unfinished), (true, 0, 0), "nothing changed");

    // The reader may still sign out; an admin's session does what the reader's could not.
    let reply = post_form(addr, "/signout", cookie, &form).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    let admin = sign_in_http(addr, TOKEN).await;
    let reply = post_form(addr, &posts[0].0, Some(&admin.cookie), &format!("csrf={}", admin.csrf)).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(job_state(&app.pool, job).await, "queued");
}

/// A wrong token sets no cookie and says so (401); `next` only ever leads to our own paths.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn signing_in_needs_the_right_token_and_next_stays_on_this_server(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (addr, _stop) = serve_console(&app, |_| {}).await;
    let form = |token: &str, next: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("next", next)
            .finish()
    };
    for token in ["wrong", "", "dashboard-test-toke"] {
        let reply = request(addr, reqwest::Method::POST, "/signin", &[], Some(&form(token, "/"))).await;
        assert_eq!(reply.status, 401, "{token:?}: {}", reply.body);
        assert!(reply.body.contains("id=\"error\""), "{}", reply.body);
        assert!(reply.session_cookies().is_empty(), "{:?}", reply.headers);
    }
    for (next, location) in [
        ("/jobs?state=failed", "/jobs?state=failed"),
        ("//attacker.example/", "/"),
        ("https://attacker.example/", "/"),
        ("/\\attacker.example", "/"),
    ] {
        let reply = request(addr, reqwest::Method::POST, "/signin", &[], Some(&form(TOKEN, next))).await;
        assert_eq!(reply.status, 303, "{}", reply.body);
        assert_eq!(
            reply.headers.get(LOCATION).and_then(|v| v.to_str().ok()),
            Some(location),
            "{next}"
        );
    }
}
