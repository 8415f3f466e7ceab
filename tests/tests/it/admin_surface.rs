//! The operator's surfaces beyond the API calls: the dashboard's session cookie, `/readyz` while
//! the database is down, and the CLI's exit codes.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use linkpulse_shared::config::ExposeSecret;

use crate::admin::{admin, http};
use crate::app::TestApp;
use crate::helpers::wait_for;
use crate::producer_loop::{ProducerRun, producer_command};

const TOKEN: &str = "surface-test-token";

/// A raw HTTP/1.0 exchange: status, headers (names lowercased) and body.
async fn exchange(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut raw))
        .await
        .expect("reply in time")
        .expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// `POST /signin` with the sign-in form's body.
async fn sign_in(addr: SocketAddr, token: &str) -> (u16, Vec<(String, String)>, String) {
    let body = format!("token={token}&next=/jobs");
    let request = format!(
        "POST /signin HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, &request).await
}

/// A dashboard session signed in with `token`: its `Cookie` header value and the CSRF value its
/// forms carry (read from a page, as a browser would).
pub(crate) async fn console_session(addr: SocketAddr, token: &str) -> (String, String) {
    let (status, headers, body) = sign_in(addr, token).await;
    assert_eq!(status, 303, "signed in: {body}");
    let cookie = headers
        .iter()
        .find(|(name, _)| name == "set-cookie")
        .and_then(|(_, value)| value.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let page = exchange(
        addr,
        &format!("GET / HTTP/1.0\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n"),
    )
    .await
    .2;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF value on the page")
        .to_owned();
    (cookie, csrf)
}

/// Signing in issues a session cookie, never the token: signed, expiring (`Max-Age`), unreadable
/// by page scripts (`HttpOnly`), left out of requests another site starts (`SameSite=Strict`), for
/// the whole dashboard (`Path=/`); a wrong token gets the form again (401) and no cookie.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_dashboard_session_cookie_is_signed_expiring_http_only_and_same_site_strict(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (addr, _stop) = admin(&app, Some(TOKEN)).await;

    let (status, headers, body) = sign_in(addr, "wrong").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("id=\"login\""), "the form again: {body}");
    assert!(
        headers.iter().all(|(name, _)| name != "set-cookie"),
        "no cookie for a wrong token: {headers:?}"
    );

    let (status, headers, body) = sign_in(addr, TOKEN).await;
    assert_eq!(status, 303, "on to next: {body}");
    assert!(
        headers.iter().any(|(n, v)| n == "location" && v == "/jobs"),
        "{headers:?}"
    );
    let cookies: Vec<&str> = headers
        .iter()
        .filter(|(name, _)| name == "set-cookie")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(cookies.len(), 1, "{headers:?}");
    let mut parts = cookies[0].split(';').map(str::trim);
    let value = parts.next().expect("name=value");
    assert!(value.starts_with("linkpulse_session="), "{value}");
    assert!(!value.contains(TOKEN), "the token never goes into the cookie: {value}");
    let attributes: Vec<String> = parts.map(str::to_ascii_lowercase).collect();
    for expected in ["httponly", "samesite=strict", "path=/", "max-age=43200"] {
        assert!(
            attributes.iter().any(|a| a == expected),
            "{expected} missing from {:?}",
            cookies[0]
        );
    }
    assert!(!attributes.iter().any(|a| a == "secure"), "plain http: not Secure");

    // The cookie is the session: the page shows the signed-in state with it, a sign-in link
    // without, and a forged value (the right shape, a wrong signature) is no session.
    let page = |cookie: Option<String>| async move {
        let header = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
        exchange(addr, &format!("GET / HTTP/1.0\r\nHost: {addr}\r\n{header}\r\n"))
            .await
            .2
    };
    assert!(page(Some(value.to_owned())).await.contains("id=\"session\""));
    assert!(page(None).await.contains("id=\"signin-link\""));
    let forged = format!("linkpulse_session=admin.99999999999.{}", "0".repeat(32));
    assert!(page(Some(forged)).await.contains("id=\"signin-link\""));
}

/// `producer run`'s `/readyz` follows the database: 200, then 503 while the database refuses
/// connections (its sessions terminated, new ones not allowed), then 200 again; `/livez` and the
/// process stay up throughout.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn readyz_answers_503_while_the_database_is_down(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let env = [
        ("LINKPULSE_CYCLE_INTERVAL", "1s"),
        ("LINKPULSE_REFRESH_ENABLED", "false"),
    ];
    let mut producer = ProducerRun::spawn(app.settings.database_url.expose_secret(), &env).await;
    assert_eq!(http(producer.admin, "GET", "/readyz", None, None).await.status, 200);

    let (database,): (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .expect("database name");
    // From the maintenance database, so our own session is not one of those cut off.
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let mut control = PgConnection::connect(&base).await.expect("control connection");
    let allow = |allowed: bool| format!("ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS {allowed}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(allow(false)))
        .execute(&mut control)
        .await
        .expect("refuse connections");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&mut control)
        .await
        .expect("terminate sessions");

    let reply = http(producer.admin, "GET", "/readyz", None, None).await;
    let restored = sqlx::raw_sql(sqlx::AssertSqlSafe(allow(true)))
        .execute(&mut control)
        .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    restored.expect("allow connections again");
    assert!(producer.is_running(), "the outage did not stop the producer");
    assert_eq!(http(producer.admin, "GET", "/livez", None, None).await.status, 200);

    wait_for(Duration::from_secs(20), "/readyz to recover", || async {
        (http(producer.admin, "GET", "/readyz", None, None).await.status == 200).then_some(())
    })
    .await;
    assert_eq!(producer.stop(Signal::SIGTERM).await, Some(0));
}

/// Runs the producer binary; returns its exit code and the lines of stderr that are not JSON
/// log lines (what the operator reads).
async fn exit_of(database_url: &str, args: &[&str]) -> (Option<i32>, Vec<String>) {
    let output = producer_command(database_url, args, &[])
        .stdout(Stdio::null())
        .output()
        .await
        .expect("run producer");
    let stderr = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .map(str::to_owned)
        .collect();
    (output.status.code(), stderr)
}

/// Exit 1 for what the operator must fix (a bad argument, an unknown link or kind, a rejected
/// URL), with the reason on the first line; exit 2 for what broke on our side (the database is
/// unreachable).
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn cli_exits_1_on_user_errors_and_2_on_internal_errors(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let url = app.settings.database_url.expose_secret().to_owned();
    let (code, stderr) = exit_of(&url, &["queue", "stats", "--json"]).await;
    assert_eq!(code, Some(0), "premise: the database answers: {stderr:?}");

    for (args, reason) in [
        (&["links", "show", "999999"][..], "no link 999999"),
        // clap refuses a kind outside the closed set, naming the value (and listing the kinds).
        (&["queue", "requeue", "--kind", "nope"][..], "'nope'"),
        (&["links", "add", "not a url"][..], "rejected"),
        (&["queue", "list", "--state", "bogus"][..], "bogus"),
        (&["frobnicate"][..], "frobnicate"),
    ] {
        let (code, stderr) = exit_of(&url, args).await;
        assert_eq!(code, Some(1), "{args:?}: {stderr:?}");
        let first = stderr.iter().find(|l| !l.trim().is_empty()).map(String::as_str);
        assert!(
            first.is_some_and(|l| l.starts_with("error:") && l.contains(reason)),
            "{args:?}: the reason on one line: {stderr:?}"
        );
    }
    let (code, stderr) = exit_of(&url, &["--help"]).await;
    assert_eq!(code, Some(0), "help is not an error: {stderr:?}");

    // Nothing listens on port 1: the database is unreachable.
    let unreachable = "postgres://postgres@127.0.0.1:1/postgres";
    for args in [&["queue", "stats"][..], &["links", "show", "1"][..]] {
        let (code, stderr) = exit_of(unreachable, args).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr:?}");
        assert!(
            stderr.iter().any(|l| l.starts_with("error:") && l.contains("database")),
            "{args:?}: {stderr:?}"
        );
    }
}
