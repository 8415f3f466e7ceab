//! `links import` of bookmarks HTML, CSV and lines (bad lines reported with their number and
//! reason, exit codes 0/1), and `links export` / `GET /api/links/export` in json, csv and html
//! (streamed in batches, the same bytes from both, html importable back).

use std::collections::HashMap;
use std::process::Stdio;

use serde_json::Value;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;

use crate::admin::admin;
use crate::app::TestApp;
use crate::helpers::url_of;
use crate::producer_loop::producer_command;

/// The Firefox export in `tests/fixtures`.
const FIREFOX_FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/bookmarks-firefox.html");

/// What one `producer` run left behind.
struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.stdout)))
    }

    fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("UTF-8 output")
    }
}

/// Runs `producer ARGS` on the test's database, `stdin` fed to it.
async fn producer(pool: &PgPool, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let url = url_of(pool).await;
    let mut child = producer_command(&url, args, &[])
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn producer");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input).await.expect("write stdin");
        drop(pipe);
    }
    let output = child.wait_with_output().await.expect("producer output");
    Run {
        code: output.status.code(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A scratch file holding `bytes`, removed with the test's temp dir.
fn scratch_file(name: &str, bytes: &[u8]) -> (std::path::PathBuf, TempDir) {
    let dir = TempDir::new();
    let path = dir.0.join(name);
    std::fs::write(&path, bytes).expect("write scratch file");
    (path, dir)
}

/// A directory removed on drop.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        let path = std::env::temp_dir().join(format!("linkpulse-it-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `url → title` of every saved link.
async fn titles(pool: &PgPool) -> HashMap<String, Option<String>> {
    sqlx::query_as::<_, (String, Option<String>)>("SELECT url, title FROM links")
        .fetch_all(pool)
        .await
        .expect("links")
        .into_iter()
        .collect()
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_firefox_bookmarks_export_is_imported_with_its_titles(pool: PgPool) {
    // Saved before: one without a title (the file fills it), one with a title (kept).
    sqlx::query(
        "INSERT INTO links (url, host, title) VALUES
         ('https://doc.rust-lang.org/book/', 'doc.rust-lang.org', NULL),
         ('https://github.com/rust-lang/rust', 'github.com', 'Mine')",
    )
    .execute(&pool)
    .await
    .expect("saved links");

    let run = producer(&pool, &["links", "import", FIREFOX_FIXTURE, "--json"], None).await;
    assert_eq!(
        run.code,
        Some(0),
        "every bookmark accepted or a duplicate: {}",
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["format"], "html");
    assert_eq!(report["accepted"], 7, "{report}");
    assert_eq!(
        report["duplicates"], 3,
        "two saved before, one bookmarked twice: {report}"
    );
    assert_eq!(report["rejected"], serde_json::json!([]));
    assert_eq!(report["titled"], 1);

    let saved = titles(&pool).await;
    let expected = [
        (
            "https://www.mozilla.org/en-US/firefox/central/",
            Some("Getting Started"),
        ),
        ("https://support.mozilla.org/en-US/products/firefox", Some("Get Help")),
        (
            "https://support.mozilla.org/en-US/kb/customize-firefox-controls-buttons-and-toolbars?utm_source=firefox-browser&utm_medium=default-bookmarks&utm_campaign=customize",
            Some("Customize Firefox"),
        ),
        (
            "https://doc.rust-lang.org/book/",
            Some("The Rust Programming Language \u{2014} \"The Book\""),
        ),
        (
            "https://example.com/search?q=caf%C3%A9&lang=fr",
            Some("Café <menu> & prices"),
        ),
        ("https://example.org/article", Some("Über Bücher — ein Artikel")),
        ("https://xn--bcher-kva.example/katalog", Some("Katalog \u{1F4DA}")),
        ("https://github.com/rust-lang/rust", Some("Mine")),
        ("https://news.example.net/", None),
    ];
    let expected: HashMap<String, Option<String>> = expected
        .iter()
        .map(|(url, title)| ((*url).to_owned(), title.map(str::to_owned)))
        .collect();
    assert_eq!(saved, expected);

    // New links get their first check and refresh at once, like links added by hand.
    let (jobs,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM queue_jobs q JOIN links l ON q.dedupe_key = 'link:' || l.id
         WHERE l.url = 'https://www.mozilla.org/en-US/firefox/central/' AND q.kind IN ('check', 'refresh')",
    )
    .fetch_one(&pool)
    .await
    .expect("jobs");
    assert_eq!(jobs, 2);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_csv_with_a_url_column_is_imported_whatever_its_other_columns(pool: PgPool) {
    let csv = "id,Title,notes,URL,tags\r\n\
               1,\"Hello, world\",\"a \"\"quoted\"\", note, with commas\",https://a.example/,x\r\n\
               2,,\"two\nlines\",https://b.example/path?x=1,y\r\n\
               \r\n\
               3,Not a link,,mailto:someone@example.com,z\r\n\
               4,Short row\r\n";
    let (path, _dir) = scratch_file("links.csv", csv.as_bytes());
    let run = producer(
        &pool,
        &["links", "import", path.to_str().expect("path"), "--json"],
        None,
    )
    .await;
    assert_eq!(run.code, Some(1), "two rows rejected: {}", run.stderr);
    assert!(run.stderr.contains("2 line(s) rejected"), "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["format"], "csv");
    assert_eq!(report["accepted"], 2);
    let rejected: Vec<(i64, String)> = report["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            (
                r["line"].as_i64().expect("line"),
                r["reason"].as_str().expect("reason").to_owned(),
            )
        })
        .collect();
    assert_eq!(rejected.len(), 2, "{report}");
    assert_eq!(
        rejected[0].0, 6,
        "line numbers count the quoted newline and the blank line"
    );
    assert!(rejected[0].1.contains("scheme \"mailto\""), "{}", rejected[0].1);
    assert_eq!(rejected[1], (7, "no url column in this row".to_owned()));
    let saved = titles(&pool).await;
    assert_eq!(saved.get("https://a.example/"), Some(&Some("Hello, world".to_owned())));
    assert_eq!(saved.get("https://b.example/path?x=1"), Some(&None));

    // Forced as lines, the same file is one URL per line: the header and rows are not URLs.
    let run = producer(
        &pool,
        &["links", "import", path.to_str().expect("path"), "--format", "lines"],
        None,
    )
    .await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.text()
            .contains("line 1: rejected id,Title,notes,URL,tags: not a URL"),
        "{}",
        run.text()
    );

    // A CSV without a url column is refused as a whole, naming the header.
    let (no_url, _dir2) = scratch_file("no-url.csv", b"link,title\nhttps://c.example/,C\n");
    let run = producer(
        &pool,
        &["links", "import", no_url.to_str().expect("path"), "--format", "csv"],
        None,
    )
    .await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("no `url` column"), "{}", run.stderr);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn bad_lines_are_reported_with_their_number_and_reason_and_the_good_ones_imported(pool: PgPool) {
    let long_url = format!("https://example.com/{}", "a".repeat(5000 - 20));
    assert_eq!(long_url.len(), 5000);
    let mut input = Vec::new();
    input.extend_from_slice(b"https://good.example/1\n");
    input.extend_from_slice(b"https://bad.example/\xff\xfe\n");
    input.extend_from_slice(long_url.as_bytes());
    input.extend_from_slice(b"\n# a comment\n\nhttps://good.example/2\r\n");
    input.extend_from_slice(&vec![b'x'; 100 * 1024]);
    input.extend_from_slice(b"\nnot a url\nhttps://good.example/3");

    // From stdin, as text.
    let run = producer(&pool, &["links", "import", "-"], Some(&input)).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let text = run.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(
        lines[0],
        "line 2: rejected https://bad.example/\u{fffd}\u{fffd}: invalid UTF-8 at byte 21"
    );
    assert!(
        lines[1].starts_with("line 3: rejected https://example.com/aaa")
            && lines[1].ends_with("…: URL is longer than 2048 characters"),
        "{}",
        lines[1]
    );
    assert!(lines[2].starts_with("line 7: rejected xxx"), "{}", lines[2]);
    assert!(
        lines[2].ends_with(": line is 102400 bytes long, longer than the limit of 64 KiB"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("line 8: rejected not a url: not a URL"),
        "{}",
        lines[3]
    );
    assert_eq!(lines[4], "3 accepted, 0 duplicate, 4 rejected");
    let saved = titles(&pool).await;
    let mut urls: Vec<&String> = saved.keys().collect();
    urls.sort();
    assert_eq!(
        urls,
        [
            "https://good.example/1",
            "https://good.example/2",
            "https://good.example/3"
        ]
    );

    // The same file again, as JSON: the good lines are duplicates now, the bad ones still bad.
    let (path, _dir) = scratch_file("links.txt", &input);
    let run = producer(
        &pool,
        &["links", "import", path.to_str().expect("path"), "--json"],
        None,
    )
    .await;
    assert_eq!(run.code, Some(1));
    let report = run.json();
    assert_eq!(
        (report["accepted"].as_i64(), report["duplicates"].as_i64()),
        (Some(0), Some(3))
    );
    let numbers: Vec<i64> = report["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| r["line"].as_i64().expect("line"))
        .collect();
    assert_eq!(numbers, [2, 3, 7, 8]);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn an_import_without_a_bad_line_exits_0_even_when_all_are_duplicates(pool: PgPool) {
    let input = b"https://a.example/\nhttps://b.example/\nHTTPS://A.EXAMPLE/#again\n";
    let run = producer(&pool, &["links", "import", "-", "--json"], Some(input)).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let report = run.json();
    assert_eq!(
        (report["accepted"].as_i64(), report["duplicates"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(report["format"], "lines");
    let run = producer(&pool, &["links", "import", "-"], Some(input)).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.text(), "0 accepted, 3 duplicate, 0 rejected\n");
    // A file that cannot be opened is the operator's error, with the path.
    let run = producer(&pool, &["links", "import", "/nonexistent/links.txt"], None).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("cannot open /nonexistent/links.txt"),
        "{}",
        run.stderr
    );
}

/// Saves `n` links (normalised URLs with a `&` to escape) with awkward titles (markup,
/// quotes, commas, a newline, non-ASCII, none), a few of them paused.
async fn save_links(pool: &PgPool, n: i64) {
    sqlx::query(
        "INSERT INTO links (url, host, title, status, status_reason)
         SELECT 'https://host' || (i % 7) || '.example/p/' || i || '?a=1&b=%22x%22', 'host' || (i % 7) || '.example',
                CASE i % 4 WHEN 0 THEN NULL
                           WHEN 1 THEN 'Title ' || i || ' & <b>\"quoted\"</b>, comma''s'
                           WHEN 2 THEN E'Zwei\\nZeilen ' || i
                           ELSE 'Café ' || i END,
                CASE WHEN i % 100 = 0 THEN 'paused' ELSE 'active' END,
                CASE WHEN i % 100 = 0 THEN 'paused by test' END
         FROM generate_series(1, $1) AS i",
    )
    .bind(n)
    .execute(pool)
    .await
    .expect("save links");
}

fn normalise(title: &Option<String>) -> Option<String> {
    title
        .as_ref()
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty())
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn exports_stream_every_link_and_the_html_one_imports_back(pool: PgPool) {
    save_links(&pool, 3000).await;
    let saved = titles(&pool).await;

    // json: the `links list --json` array, whole.
    let json = producer(&pool, &["links", "export", "--format", "json"], None).await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let list = producer(&pool, &["links", "list", "--json", "--limit", "5000"], None).await;
    assert_eq!(json.stdout, list.stdout, "the same bytes as links list --json");
    let exported = json.json();
    let ids: Vec<i64> = exported
        .as_array()
        .expect("array")
        .iter()
        .map(|l| l["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids.len(), 3000);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "by id, each once");

    // csv: a header, then every link with its fields quoted as needed.
    let csv = producer(&pool, &["links", "export", "--format", "csv"], None).await;
    assert_eq!(csv.code, Some(0), "{}", csv.stderr);
    let mut reader = csv::Reader::from_reader(&csv.stdout[..]);
    let header: Vec<String> = reader.headers().expect("header").iter().map(str::to_owned).collect();
    assert_eq!(&header[..3], ["url", "status", "title"]);
    let mut rows = 0;
    for record in reader.records() {
        let record = record.expect("row");
        let title = Some(record[2].to_owned()).filter(|t| !t.is_empty());
        assert_eq!(saved.get(&record[0]), Some(&title), "row {rows}: {record:?}");
        if &record[1] == "paused" {
            assert_eq!(&record[3], "paused by test");
        }
        rows += 1;
    }
    assert_eq!(rows, 3000);

    // html: bookmarks; importing them back finds every link saved already.
    let html = producer(&pool, &["links", "export", "--format", "html"], None).await;
    assert_eq!(html.code, Some(0), "{}", html.stderr);
    assert!(html.stdout.starts_with(b"<!DOCTYPE NETSCAPE-Bookmark-file-1>"));
    let (path, _dir) = scratch_file("bookmarks.html", &html.stdout);
    let path = path.to_str().expect("path");
    let again = producer(&pool, &["links", "import", path, "--json"], None).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    let report = again.json();
    assert_eq!(report["format"], "html");
    assert_eq!(
        (report["accepted"].as_i64(), report["duplicates"].as_i64()),
        (Some(0), Some(3000))
    );
    assert_eq!(report["rejected"], serde_json::json!([]));

    // Into an empty collection, the same URLs with the same titles (whitespace folded).
    sqlx::query("TRUNCATE links CASCADE")
        .execute(&pool)
        .await
        .expect("empty");
    let fresh = producer(&pool, &["links", "import", path, "--json"], None).await;
    assert_eq!(fresh.code, Some(0), "{}", fresh.stderr);
    assert_eq!(fresh.json()["accepted"], 3000);
    let imported = titles(&pool).await;
    let normalised = |m: &HashMap<String, Option<String>>| -> HashMap<String, Option<String>> {
        m.iter().map(|(u, t)| (u.clone(), normalise(t))).collect()
    };
    assert_eq!(normalised(&imported), normalised(&saved));
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn an_export_is_read_in_batches_not_at_once(pool: PgPool) {
    use futures::StreamExt;
    save_links(&pool, 2500).await;
    let chunks: Vec<Vec<u8>> =
        producer::commands::export::chunks(pool.clone(), producer::commands::export::ExportFormat::Json)
            .map(|chunk| chunk.expect("chunk"))
            .collect()
            .await;
    assert_eq!(
        chunks.len(),
        3,
        "one chunk per batch of {}",
        producer::commands::export::EXPORT_BATCH
    );
    let whole: Vec<u8> = chunks.concat();
    let links: Value = serde_json::from_slice(&whole).expect("one JSON array");
    assert_eq!(links.as_array().map(Vec::len), Some(2500));
    // An empty collection is an empty array, a header-only CSV, an empty bookmark list.
    sqlx::query("TRUNCATE links CASCADE")
        .execute(&pool)
        .await
        .expect("empty");
    let empty = producer(&pool, &["links", "export"], None).await;
    assert_eq!(empty.text(), "[]\n");
    let empty = producer(&pool, &["links", "export", "--format", "csv"], None).await;
    assert!(empty.text().starts_with("url,status,title,") && empty.text().lines().count() == 1);
    let bad = producer(&pool, &["links", "export", "--format", "xml"], None).await;
    assert_eq!(bad.code, Some(1), "a bad format is the operator's error");
    assert!(
        bad.stderr.contains("invalid value 'xml'") && bad.stderr.contains("json, csv, html"),
        "{}",
        bad.stderr
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_api_export_sends_the_same_bytes_as_the_cli(pool: PgPool) {
    save_links(&pool, 1200).await;
    let app = TestApp::spawn(pool.clone()).await;
    let (addr, _stop) = admin(&app, None).await;
    let client = reqwest::Client::new();
    for (format, content_type) in [
        ("json", "application/json"),
        ("csv", "text/csv; charset=utf-8"),
        ("html", "text/html; charset=utf-8"),
    ] {
        let cli = producer(&pool, &["links", "export", "--format", format], None).await;
        assert_eq!(cli.code, Some(0), "{}", cli.stderr);
        let response = client
            .get(format!("http://{addr}/api/links/export?format={format}"))
            .send()
            .await
            .expect("export");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers().get("content-type").and_then(|v| v.to_str().ok()),
            Some(content_type)
        );
        let body = response.bytes().await.expect("body");
        assert_eq!(body.len(), cli.stdout.len(), "{format}");
        assert!(body[..] == cli.stdout[..], "{format}: the API and the CLI differ");
    }
    let default = client
        .get(format!("http://{addr}/api/links/export"))
        .send()
        .await
        .expect("export");
    assert!(
        default.bytes().await.expect("body").starts_with(b"[{"),
        "json by default"
    );
    let bad = client
        .get(format!("http://{addr}/api/links/export?format=xml"))
        .send()
        .await
        .expect("export");
    assert_eq!(bad.status().as_u16(), 400);
    let body: Value = bad.json().await.expect("JSON error");
    assert!(
        body["error"].as_str().expect("error").contains("unknown export format"),
        "{body}"
    );
}
