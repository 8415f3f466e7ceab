//! Hostile pages against the scrape: random and adversarial HTML never panics, and the work and
//! the output stay bounded (deep nesting, 100,000 attributes, unterminated comments, mixed
//! encodings, NUL bytes, broken charsets).
//!
//! The first tests are the scrape's own traps (each one made html5ever's tree builder superlinear);
//! the property tests after them throw random and adversarial pages at the whole scrape.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use url::Url;

use super::extract::MAX_TITLE_CHARS;
use super::test_support;
use super::{MAX_HEAD_BYTES, decode_html, extract, head_end, is_challenge_page};

/// Generous bound: the point is "no blow-up" (quadratic cases took minutes), not a benchmark.
const HOSTILE_BUDGET: Duration = Duration::from_secs(10);

/// Extracts and judges `html` within the budget; `challenge` is the expected verdict.
fn assert_survives(name: &str, html: &str, challenge: bool) {
    let started = Instant::now();
    let m = extract(html, &test_support::page_url());
    let judged = is_challenge_page(html);
    let elapsed = started.elapsed();
    assert!(elapsed < HOSTILE_BUDGET, "{name} took {elapsed:?}");
    assert_eq!(judged, challenge, "{name}: is_challenge_page");
    assert!(
        m.title.as_ref().is_none_or(|t| t.chars().count() <= MAX_TITLE_CHARS),
        "{name}"
    );
}

#[test]
fn hostile_input_does_not_panic_or_blow_up() {
    // Each of these makes html5ever's tree builder superlinear in time or memory.
    let deep_divs = format!("<title>t</title>{}", "<div>".repeat(200_000));
    let distinct_formatting: String = (0..100_000).map(|i| format!("<b id={i}>")).collect();
    let reopened_formatting: String = (0..100_000).map(|i| format!("<p><b id={i}></p>")).collect();
    let many_attributes = format!("<meta {}>", (0..200_000).map(|i| format!("a{i} ")).collect::<String>());
    let deep_svg = format!("<svg>{}", "<g>".repeat(200_000));
    let deep_tables = "<table><tr><td>".repeat(50_000);
    let garbage: String = (0..20 * 1024 * 1024)
        .map(|i| char::from(b"<>/=\"'a &;#!-x\n"[i % 15]))
        .collect();
    let unclosed_comment = format!("<title>x</title><!--{}", "a".repeat(1_000_000));
    let unclosed_script = format!("<script>{}", "</scrip".repeat(100_000));
    let many_titles = "<title>x".repeat(100_000);
    let many_metas = r#"<meta property="og:title" content="">"#.repeat(100_000);
    let cases = [
        ("deep divs", deep_divs.as_str()),
        ("distinct formatting elements", distinct_formatting.as_str()),
        ("reopened formatting elements", reopened_formatting.as_str()),
        ("many attributes", many_attributes.as_str()),
        ("deep svg", deep_svg.as_str()),
        ("deep tables", deep_tables.as_str()),
        ("20 MB of garbage", garbage.as_str()),
        ("unclosed comment", unclosed_comment.as_str()),
        ("unclosed script", unclosed_script.as_str()),
        ("many titles", many_titles.as_str()),
        ("many empty metas", many_metas.as_str()),
    ];
    for (name, html) in cases {
        // None of them mentions a challenge marker: the quick exit answers.
        assert_survives(name, html, false);
        // A marker in a comment is not a challenge, but it makes the check scan every tag and
        // parse the page; a challenge title in front of the same markup is found by that scan.
        let hinted = format!("<!-- checking your browser -->{html}");
        assert_survives(&format!("{name} behind a hint"), &hinted, false);
        let titled = format!("<title>Just a moment...</title>{html}");
        assert_survives(&format!("{name} under a challenge title"), &titled, true);
    }
}

#[test]
fn invalid_utf8_and_binary_bodies_decode_lossily() {
    let binary: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024).collect();
    for content_type in [
        None,
        Some("text/html; charset=utf-8"),
        Some("text/html; charset=shift_jis"),
    ] {
        let html = decode_html(&binary, content_type);
        assert_survives("binary", &html, false);
    }
    // Declared UTF-8 (undeclared bytes that are not UTF-8 get a detected charset instead).
    assert_eq!(
        decode_html(b"<title>\xc3(</title>", Some("text/html; charset=utf-8")),
        "<title>\u{fffd}(</title>"
    );
}

/// Longest value [`extract`] may return for text fields (title cap 300, description 1,000, site
/// name 200, URLs 2,048): the caps are on characters, so bytes are at most four times that.
const MAX_FIELD_BYTES: usize = 4 * 2048;

/// Generous wall-clock bound for one page of at most [`MAX_HEAD_BYTES`] on a loaded 2-core
/// machine; a superlinear parser blows through it by orders of magnitude (minutes).
const PAGE_DEADLINE: Duration = Duration::from_secs(5);

fn page_url() -> Url {
    Url::parse("https://example.com/dir/page.html").expect("url")
}

/// Scrapes `body` as the refresh does and checks the bounds.
fn scrape(body: &[u8], content_type: Option<&str>) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let html = decode_html(body, content_type);
    // UTF-8 replacement characters and UTF-16 surrogate pairs: never more than 3 bytes out per byte in.
    prop_assert!(
        html.len() <= 3 * body.len() + 3,
        "decoded {} bytes from {}",
        html.len(),
        body.len()
    );
    let _ = head_end(html.as_bytes());
    let challenge = is_challenge_page(&html);
    let meta = extract(&html, &page_url());
    let elapsed = started.elapsed();
    prop_assert!(elapsed < PAGE_DEADLINE, "{} bytes took {elapsed:?}", body.len());
    for field in [
        &meta.title,
        &meta.description,
        &meta.site_name,
        &meta.image_url,
        &meta.favicon_url,
    ]
    .into_iter()
    .flatten()
    {
        prop_assert!(field.len() <= MAX_FIELD_BYTES, "field of {} bytes", field.len());
        prop_assert!(!field.contains('\0'), "NUL in {field:?}");
    }
    // A page either is a challenge or is not; asking twice gives the same answer.
    prop_assert_eq!(challenge, is_challenge_page(&html));
    Ok(())
}

/// Pieces of HTML that stress tokenisers and tree builders.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("<title>".to_owned()),
        Just("</title>".to_owned()),
        Just("<!--".to_owned()),
        Just("-->".to_owned()),
        Just("<head>".to_owned()),
        Just("</head>".to_owned()),
        Just("<script>".to_owned()),
        Just("<![CDATA[".to_owned()),
        Just("<p><b id=1>".to_owned()),
        Just("<meta charset=\"shift_jis\">".to_owned()),
        Just("<meta charset=utf-16>".to_owned()),
        Just("<meta property=\"og:title\" content=\"".to_owned()),
        Just("<meta name=description content='".to_owned()),
        Just("<link rel=icon href=\"javascript:alert(1)\">".to_owned()),
        Just("<base href=\"//evil.example/\">".to_owned()),
        Just("<meta property=og:image content=\"data:image/png;base64,AAAA\">".to_owned()),
        Just("&amp;&#0;&#x110000;&#xD800;&notanentity".to_owned()),
        Just("\0".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("Just a moment...".to_owned()),
        "[a-z =\"'<>/!-]{0,20}",
        "\\PC{0,20}",
    ]
}

fn random_page() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(fragment(), 0..200).prop_map(|parts| parts.concat().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..4096),
        (
            prop::collection::vec(fragment(), 0..50),
            prop::collection::vec(any::<u8>(), 0..512)
        )
            .prop_map(|(parts, bytes)| {
                let mut page = parts.concat().into_bytes();
                page.extend_from_slice(&bytes);
                page
            }),
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        Just("text/html; charset=utf-8".to_owned()),
        Just("text/html; charset=\"windows-1251\"".to_owned()),
        Just("text/html; charset=utf-16le".to_owned()),
        Just("text/html; charset=x-user-defined".to_owned()),
        Just("text/html; charset=iso-2022-kr".to_owned()),
        Just("text/html; charset=".to_owned()),
        "[ -~]{0,40}",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_pages_never_panic_and_stay_bounded(page in random_page(), content_type in content_type()) {
        scrape(&page, content_type.as_deref())?;
    }
}

/// Adversarial pages at the size limit, one per known trap.
pub(super) fn adversarial_pages() -> Vec<(&'static str, Vec<u8>)> {
    let fill = |unit: &str| unit.repeat(MAX_HEAD_BYTES / unit.len()).into_bytes();
    let mut attributes = b"<html><head><meta ".to_vec();
    for i in 0..100_000 {
        attributes.extend_from_slice(format!("a{i}=x ").as_bytes());
    }
    attributes.extend_from_slice(b"><title>t</title></head>");
    vec![
        ("deep nesting", fill("<div>")),
        ("formatting elements", fill("<p><b id=1></p>")),
        ("100,000 attributes", attributes),
        ("unterminated comment", [b"<head><!--".to_vec(), fill("x")].concat()),
        ("unterminated title", [b"<head><title>".to_vec(), fill("a ")].concat()),
        (
            "unterminated attribute",
            [b"<head><meta content=\"".to_vec(), fill("x")].concat(),
        ),
        ("tag soup of lt", fill("<")),
        ("near-miss head ends", fill("</hea")),
        ("mixed encodings", {
            let mut page = b"<meta charset=utf-8><title>caf\xc3\xa9 ".to_vec();
            page.extend_from_slice(b"caf\xe9 \xff\xfe\x00t\x00i\x00\x81\x82");
            page.extend_from_slice(&fill("\u{1F600}\u{e9}\x00"));
            page
        }),
        ("NUL flood", vec![0; MAX_HEAD_BYTES]),
    ]
}

#[test]
fn adversarial_pages_at_the_size_limit_are_scraped_in_bounded_time() {
    for (name, page) in adversarial_pages() {
        for content_type in [
            None,
            Some("text/html; charset=utf-16be"),
            Some("text/html; charset=gb18030"),
        ] {
            if let Err(failure) = scrape(&page, content_type) {
                panic!("{name} ({content_type:?}): {failure}");
            }
        }
    }
}
