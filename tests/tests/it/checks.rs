//! Verdicts users can trust: a table of hostile and quirky sites, the network guard, Retry-After,
//! charsets and body caps — all through the real pipeline (cycle → queue → worker → write-back).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use sqlx::PgPool;

use linkpulse_shared::scrape::MAX_HEAD_BYTES;

use crate::app::TestApp;
use crate::helpers::wait_for;

/// Requests a site received: (method, path, time).
type Log = Arc<Mutex<Vec<(String, String, tokio::time::Instant)>>>;

/// What a quirky site saw, and how much of each hostile body it handed out.
#[derive(Debug, Clone, Default)]
struct Site {
    log: Log,
    huge: Arc<Served>,
    bomb: Arc<Served>,
}

/// Bytes a streamed body handed to the server (decoded bytes, for a compressed one), and how many
/// such bodies are still being streamed (the server drops a body once it is sent or the client
/// has gone away).
#[derive(Debug, Default)]
struct Served {
    bytes: AtomicUsize,
    streams: AtomicUsize,
    open: AtomicUsize,
}

impl Served {
    /// Waits until every body started has been dropped by the server, then says how many bytes
    /// they handed out.
    async fn total_once_dropped(&self, what: &str) -> usize {
        wait_for(
            Duration::from_secs(30),
            &format!("the server to drop the {what} body"),
            || async {
                (self.streams.load(Ordering::SeqCst) > 0 && self.open.load(Ordering::SeqCst) == 0).then_some(())
            },
        )
        .await;
        self.bytes.load(Ordering::SeqCst)
    }
}

/// Marks a streamed body as dropped.
struct OpenStream(Arc<Served>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A body paced like a slow network: `first`, then `chunk` `count` times, one every
/// [`BODY_PACE`]. Each piece stands for `*_decoded` bytes of the decoded body, counted in `served`
/// as the server pulls it. Pacing keeps what the kernel's socket buffers swallow after the client
/// stops reading small, so the count shows where the client stopped.
fn paced_body(
    served: Arc<Served>,
    (first, first_decoded): (axum::body::Bytes, usize),
    (chunk, chunk_decoded): (axum::body::Bytes, usize),
    count: usize,
) -> Body {
    served.streams.fetch_add(1, Ordering::SeqCst);
    served.open.fetch_add(1, Ordering::SeqCst);
    let guard = OpenStream(served);
    let stream = futures::stream::unfold((0usize, guard), move |(sent, guard)| {
        let (first, chunk) = (first.clone(), chunk.clone());
        async move {
            let (piece, decoded) = match sent {
                0 => (first, first_decoded),
                n if n <= count => {
                    tokio::time::sleep(BODY_PACE).await;
                    (chunk, chunk_decoded)
                }
                _ => return None,
            };
            guard.0.bytes.fetch_add(decoded, Ordering::SeqCst);
            Some((Ok::<_, std::io::Error>(piece), (sent + 1, guard)))
        }
    });
    Body::from_stream(stream)
}

/// One piece of a paced hostile body every this often.
const BODY_PACE: Duration = Duration::from_millis(20);
/// Decoded bytes per piece of a hostile body.
const PIECE: usize = 64 * 1024;
/// Pieces after the first: 64 MiB decoded, 20 s at the pace — far past the cap, and longer than
/// the fetch deadline, so a reader without the cap is still reading when it gives up.
const PIECES: usize = 1024;
/// What the server may still hand out after the reader reached the cap: pieces paced out while
/// the reader hangs up and the server notices (16 pieces: a reader stalled for 300 ms; on a calm
/// machine the server stops at the very piece that crosses the cap).
const SERVED_PAST_THE_CAP: usize = 16 * PIECE;

const CHALLENGE: &str = "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body><div id=\"challenge-running\"></div><form id=\"challenge-form\" action=\"/cdn-cgi/challenge-platform/h/b/orchestrate/jsch/v1\"></form></body></html>";

/// The start of the huge page: a title, no `</head>`, so only the byte cap stops the reader.
const HUGE_HEAD: &[u8] = b"<html><body><title>Huge</title>";
/// The start of the bomb's decoded page: a title, no `</head>`, then spaces without end.
const BOMB_HEAD: &[u8] = b"<html><head><title>Bomb</title>";

/// A gzip bomb in two pieces: the gzip header with the deflated [`BOMB_HEAD`] and [`PIECE`]
/// spaces, then a deflated block of [`PIECE`] more spaces that may follow it (and itself) any
/// number of times — each block ends on a byte boundary (sync flush) and refers back only to
/// spaces — so the bomb can be streamed without end and never built in full.
fn gzip_bomb() -> &'static (Vec<u8>, Vec<u8>) {
    fn deflate(compress: &mut flate2::Compress, input: &[u8], out: &mut Vec<u8>) {
        let start = compress.total_in();
        loop {
            out.reserve(64 * 1024);
            let consumed = usize::try_from(compress.total_in() - start).expect("fits");
            compress
                .compress_vec(&input[consumed..], out, flate2::FlushCompress::Sync)
                .expect("deflate");
            let done = usize::try_from(compress.total_in() - start).expect("fits") == input.len();
            if done && out.len() < out.capacity() {
                return;
            }
        }
    }
    static BOMB: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| {
        let spaces = vec![b' '; PIECE];
        let mut compress = flate2::Compress::new(flate2::Compression::best(), false);
        // gzip header: magic, deflate, no flags, no mtime, no extra flags, unknown OS
        let mut first = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        deflate(&mut compress, &[BOMB_HEAD, &spaces].concat(), &mut first);
        let mut repeat = Vec::new();
        deflate(&mut compress, &spaces, &mut repeat);
        (first, repeat)
    })
}

async fn quirky(State(site): State<Site>, method: Method, Path(path): Path<String>, uri: Uri) -> Response {
    let path = format!("/{path}");
    site.log
        .lock()
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
            let head = (axum::body::Bytes::from_static(HUGE_HEAD), HUGE_HEAD.len());
            let chunk = (axum::body::Bytes::from(vec![b'x'; PIECE]), PIECE);
            let body = paced_body(site.huge.clone(), head, chunk, PIECES);
            ([(header::CONTENT_TYPE, "text/html")], body).into_response()
        }
        "/bomb" => {
            let (first, repeat) = gzip_bomb();
            let first = (axum::body::Bytes::from_static(first.as_slice()), BOMB_HEAD.len() + PIECE);
            let repeat = (axum::body::Bytes::from_static(repeat.as_slice()), PIECE);
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            (headers, paced_body(site.bomb.clone(), first, repeat, PIECES)).into_response()
        }
        "/latin1" => html(b"<html><head><title>Caf\xe9 cr\xe8me</title></head></html>", "text/html; charset=ISO-8859-1"),
        "/cp1252" => html(b"<html><head><meta charset=\"windows-1252\"><title>\x93Quoted\x94 \x80 price</title></head></html>", "text/html"),
        "/og-only" => html(b"<html><head><meta property=\"og:title\" content=\"From Open Graph\"></head></html>", "text/html"),
        "/base-href" => html(b"<html><head><title>B</title><base href=\"https://cdn.example.com/assets/\"><meta property=\"og:image\" content=\"img/card.png\"></head></html>", "text/html"),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn quirky_site(ip: &str) -> (SocketAddr, Site) {
    let site = Site::default();
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/{*path}", any(quirky)).with_state(site.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, site)
}

/// A TestApp whose links point at a quirky site; few attempts, short delays.
async fn app_with_site(pool: PgPool) -> (TestApp, SocketAddr, Site) {
    let mut app = TestApp::spawn(pool).await;
    let (addr, site) = quirky_site("127.0.0.1").await;
    app.settings.queue.max_attempts = 2;
    app.settings.queue.retry.base = Duration::from_millis(50);
    app.settings.fetch.timeout = Duration::from_millis(800);
    (app, addr, site)
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn each_kind_of_site_gets_the_right_verdict(pool: PgPool) {
    let (app, addr, site) = app_with_site(pool).await;
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
    let requests = site.log.lock().expect("lock");
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

/// A name this machine resolves (through the system resolver, as the fetcher does) to a loopback or
/// private address, and that address: the machine's own name on most hosts (in containers it
/// resolves to the container's private address). The guard knows none of these by name, so only
/// its resolver can refuse them.
async fn name_resolving_to_a_private_address() -> (String, IpAddr) {
    let own_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let candidates = [
        own_name.trim(),
        "localhost.localdomain",
        "ip6-localhost",
        "ip6-loopback",
    ];
    for name in candidates {
        if name.is_empty() || name == "localhost" || name.ends_with(".localhost") {
            continue;
        }
        let Ok(addrs) = tokio::net::lookup_host((name, 0)).await else {
            continue;
        };
        let private = addrs.map(|a| a.ip()).find(|ip| match ip {
            IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
        });
        if let Some(ip) = private {
            return (name.to_owned(), ip);
        }
    }
    panic!("premise: none of {candidates:?} resolves to a loopback or private address on this machine");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_guard_refuses_private_addresses_in_every_spelling_without_connecting(pool: PgPool) {
    let (mut app, addr, site) = app_with_site(pool).await;
    app.settings.fetch.guard.allow_private_networks = false;
    let port = addr.port();
    let (private_name, private_ip) = name_resolving_to_a_private_address().await;
    let targets = [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://localhost:{port}/ok"),
        format!("http://[::1]:{port}/ok"),
        format!("http://0x7f000001:{port}/ok"),
        format!("http://2130706433:{port}/ok"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::ffff:127.0.0.1]:{port}/ok"),
        "http://10.0.0.1/".to_owned(),
        format!("http://{private_name}:{port}/ok"),
    ];
    let ids = app.add_links(&targets).await;
    app.cycle_and_work().await;
    for (url, id) in targets.iter().zip(&ids) {
        let link = app.link(*id).await;
        assert_eq!(link.last_outcome.as_deref(), Some("dead"), "{url}");
        let reason = link.last_error.unwrap_or_default();
        assert!(reason.contains("refused by the network guard"), "{url}: {reason}");
    }
    // Not "no such host": the name resolved, and the guard's resolver refused what it resolved to.
    let reason = app.link(ids[8]).await.last_error.unwrap_or_default();
    assert!(
        reason.contains(&format!("{private_name} resolves to")) && reason.contains(&private_ip.to_string()),
        "{private_name}: {reason}"
    );
    assert!(
        site.log.lock().expect("lock").is_empty(),
        "the guard let a request through"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_redirect_into_private_space_is_refused_at_the_hop(pool: PgPool) {
    let (mut app, addr, site) = app_with_site(pool).await;
    let (inner_addr, inner_site) = quirky_site("127.0.0.2").await;
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
    assert!(
        inner_site.log.lock().expect("lock").is_empty(),
        "127.0.0.2 saw a request"
    );
    assert!(!site.log.lock().expect("lock").is_empty());
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_429_with_retry_after_delays_the_job_and_cools_the_host_down(pool: PgPool) {
    for path in ["/retry-after-secs", "/retry-after-date"] {
        let (app, addr, site) = app_with_site(pool.clone()).await;
        sqlx::query("TRUNCATE queue_jobs, links, link_verdicts, host_cooldowns")
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
        let requests = site.log.lock().expect("lock").clone();
        let starts: Vec<_> = requests
            .iter()
            .filter(|(m, ..)| m == "HEAD")
            .map(|(.., at)| *at)
            .collect();
        assert_eq!(starts.len(), 2, "{path}: two attempts");
        // `Retry-After: 2` waits 2 s; the date form names a whole second about 2 s ahead, so at
        // least 1 s remains of it (and a shorter wait is raised to 1 s). The retry policy alone
        // would come back after 25–50 ms.
        let least = if path == "/retry-after-secs" {
            Duration::from_millis(1900)
        } else {
            Duration::from_secs(1)
        };
        let waited = starts[1] - starts[0];
        assert!(waited >= least, "{path}: retried after {waited:?}, before Retry-After");
        let (cooldowns,): (i64,) = sqlx::query_as("SELECT count(*) FROM host_cooldowns WHERE host = '127.0.0.1'")
            .fetch_one(&app.pool)
            .await
            .expect("cooldowns");
        assert_eq!(cooldowns, 1, "{path}: the host was put on cool-down");
    }
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn refresh_decodes_charsets_follows_fallbacks_and_caps_hostile_bodies(pool: PgPool) {
    let (mut app, addr, site) = app_with_site(pool).await;
    app.settings.check_enabled = false;
    app.settings.refresh_enabled = true;
    app.settings.fetch.timeout = Duration::from_secs(10);
    // Premise: the bomb's pieces really decode to the page and then spaces, piece after piece.
    let (first, repeat) = gzip_bomb();
    let mut decoded = vec![0; BOMB_HEAD.len() + 3 * PIECE];
    std::io::Read::read_exact(
        &mut flate2::read::GzDecoder::new(&[first.as_slice(), repeat.as_slice(), repeat.as_slice()].concat()[..]),
        &mut decoded,
    )
    .expect("the bomb decodes");
    assert!(decoded.starts_with(BOMB_HEAD) && decoded[BOMB_HEAD.len()..].iter().all(|b| *b == b' '));
    assert!(
        repeat.len() * 100 < PIECE,
        "premise: a bomb ({} bytes per {PIECE})",
        repeat.len()
    );

    let paths = ["/latin1", "/cp1252", "/og-only", "/base-href", "/huge", "/bomb"];
    let ids = app
        .add_links(&paths.iter().map(|p| format!("http://{addr}{p}")).collect::<Vec<_>>())
        .await;
    app.cycle_and_work().await;
    // The reader stopped at the cap and hung up: the server handed out the cap's worth and a
    // little more, not the whole body (a reader without the cap takes all 64 MiB, or reads until
    // its deadline).
    for (what, served) in [("huge", &site.huge), ("bomb", &site.bomb)] {
        let bytes = served.total_once_dropped(what).await;
        assert!(
            (MAX_HEAD_BYTES..=MAX_HEAD_BYTES + SERVED_PAST_THE_CAP).contains(&bytes),
            "{what}: {bytes} decoded bytes served, cap {MAX_HEAD_BYTES}"
        );
        assert_eq!(served.streams.load(Ordering::SeqCst), 1, "{what}: fetched once");
    }
    let expected = [
        Some("Café crème"),
        Some("\u{201c}Quoted\u{201d} € price"),
        Some("From Open Graph"),
        Some("B"),
        Some("Huge"), // 64 MiB body without </head>: read up to the cap
        Some("Bomb"), // 64 MiB of spaces in under 100 kB of gzip: decoded up to the cap
    ];
    for ((path, id), title) in paths.iter().zip(&ids).zip(expected) {
        assert_eq!(app.link(*id).await.title.as_deref(), title, "{path}");
    }
    assert_eq!(
        app.link(ids[3]).await.image_url.as_deref(),
        Some("https://cdn.example.com/assets/img/card.png")
    );
}
