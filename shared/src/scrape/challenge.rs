//! Bot challenges and interstitials: pages whose metadata ("Just a moment...") must never
//! overwrite good values, and which a check records as blocked rather than as the page.

use scraper::Html;

use super::extract::{HeadTags, MAX_TITLE_CHARS, clean_text};
use super::head::MAX_HEAD_BYTES;
use super::prefix_at_most;
use super::skim::{Skimmer, Tag, skim};

/// True when the page is a bot challenge / interstitial (Cloudflare "Just a moment...", "Attention
/// Required! | Cloudflare", `cf-browser-verification`, `challenge-platform`, "Checking your
/// browser", DDoS-Guard, Akamai "Access Denied" with reference #, PerimeterX "px-captcha",
/// hCaptcha/recaptcha challenge pages titled like "Verify you are human"...). Its metadata must
/// never overwrite good values.
///
/// Markers count in the title, in `id`/`class` names, and in scripts and form actions, never in
/// the page's prose: an article about Cloudflare challenges is not one. The script Cloudflare
/// injects into ordinary pages (`/cdn-cgi/challenge-platform/scripts/jsd/...`) does not count
/// either. Challenge pages are small, so only the first [`MAX_HEAD_BYTES`] are looked at.
pub fn is_challenge_page(html: &str) -> bool {
    let prefix = prefix_at_most(html, MAX_HEAD_BYTES);
    let lower = prefix.to_ascii_lowercase();
    // Most pages mention none of the markers: skip scanning their tags.
    if !CHALLENGE_HINTS.iter().any(|hint| lower.contains(hint)) {
        return false;
    }
    if any_challenge_markup(prefix) {
        return true;
    }
    let doc = Html::parse_document(&skim(prefix));
    HeadTags::collect(&doc)
        .title
        .and_then(|title| clean_text(&title, MAX_TITLE_CHARS))
        .is_some_and(|title| is_challenge_title(&title.to_lowercase(), &lower))
}

/// Lower-case strings at least one of which appears in the raw HTML of every challenge page we
/// recognise; a cheap screen before scanning tags.
const CHALLENGE_HINTS: &[&str] = &[
    "just a moment",
    "attention required",
    "checking your browser",
    "cf-browser-verification",
    "cf-challenge",
    "challenge-platform",
    "challenge-form",
    "cf_chl_",
    "ddos-guard",
    "access denied",
    "px-captcha",
    "verify you are",
    "verifying you are",
    "are you a robot",
    "are you human",
    "human verification",
    "pardon our interruption",
    "access to this page has been denied",
    "one more step",
    "security check",
];

/// Titles (lower-cased, whitespace collapsed) that are a challenge whatever else the page holds.
const CHALLENGE_TITLES: &[&str] = &[
    "just a moment...",
    "just a moment…",
    "just a moment",
    "one more step",
    "ddos-guard",
    "access to this page has been denied",
    "access to this page has been denied.",
    "pardon our interruption",
    "human verification",
    "security check",
];

/// Phrases that make a title a challenge wherever they appear in it ("Checking your browser
/// before accessing example.com", "Verify you are human - example.com").
const CHALLENGE_TITLE_PHRASES: &[&str] = &[
    "checking your browser",
    "verify you are human",
    "verify you are a human",
    "verifying you are human",
    "are you a robot",
    "are you human",
    "attention required! | cloudflare",
    "ddos-guard",
];

/// `id` and `class` names used only by challenge pages.
const CHALLENGE_IDS: &[&str] = &[
    "cf-browser-verification",
    "cf-challenge-running",
    "cf-challenge-form",
    "challenge-form",
    "challenge-running",
    "px-captcha",
];

/// Strings in a script (inline or `src`) or a form action that only challenge pages carry.
const CHALLENGE_SCRIPT_MARKERS: &[&str] = &["_cf_chl_opt", "cf_chl_", "ddos-guard/js-challenge", "px-captcha"];

/// Whether any tag of `html` carries challenge markup ([`has_challenge_markup`]).
fn any_challenge_markup(html: &str) -> bool {
    Skimmer::new(html).any(|tag| has_challenge_markup(&tag))
}

/// `title` and `page` are lower-cased.
fn is_challenge_title(title: &str, page: &str) -> bool {
    CHALLENGE_TITLES.contains(&title)
        || CHALLENGE_TITLE_PHRASES.iter().any(|phrase| title.contains(phrase))
        || (title == "access denied" && is_akamai_denial(page))
}

/// Akamai's "Access Denied" page carries a "Reference #18.xxxx", written with entities; a site's
/// own "Access Denied" page is an error, not a challenge.
fn is_akamai_denial(page: &str) -> bool {
    page.contains("reference #") || page.contains("reference&#32;&#35;")
}

fn has_challenge_markup(tag: &Tag<'_>) -> bool {
    let named = ["id", "class"]
        .iter()
        .filter_map(|name| tag.attr(name))
        .any(|attr| is_challenge_id_list(attr.value));
    let scripted = if tag.is("script") {
        tag.attr("src").is_some_and(|src| is_challenge_script(src.value)) || tag.text.is_some_and(is_challenge_script)
    } else {
        tag.is("form")
            && tag
                .attr("action")
                .is_some_and(|action| is_challenge_script(action.value))
    };
    named || scripted
}

/// Whether an `id` or `class` value names one of [`CHALLENGE_IDS`].
pub(super) fn is_challenge_id_list(value: &str) -> bool {
    value
        .split_ascii_whitespace()
        .any(|token| CHALLENGE_IDS.iter().any(|id| token.eq_ignore_ascii_case(id)))
}

pub(super) fn is_challenge_script(script: &str) -> bool {
    let script = script.to_ascii_lowercase();
    CHALLENGE_SCRIPT_MARKERS.iter().any(|marker| script.contains(marker)) || mentions_challenge_platform(&script)
}

/// Whether `script` (lower-cased) refers to Cloudflare's challenge platform other than through the
/// "JavaScript detections" script Cloudflare adds to ordinary pages it serves.
fn mentions_challenge_platform(script: &str) -> bool {
    const PLATFORM: &str = "challenge-platform";
    script
        .match_indices(PLATFORM)
        .any(|(at, _)| !script[at + PLATFORM.len()..].starts_with("/scripts/jsd/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::extract;
    use crate::scrape::test_support::page_url;

    #[test]
    fn challenge_pages_are_recognised() {
        let cases: &[(&str, &str)] = &[
            (
                "cloudflare managed challenge",
                include_str!("../../tests/fixtures/metadata/cloudflare_just_a_moment.html"),
            ),
            (
                "cloudflare title only",
                "<html><head><title>Just a moment...</title></head><body></body></html>",
            ),
            (
                "cloudflare block",
                "<html><head><title>Attention Required! | Cloudflare</title></head><body>Sorry, you have been blocked</body></html>",
            ),
            (
                "cloudflare legacy",
                r#"<html><head><title>example.com</title></head><body><div id="cf-browser-verification" class="cf-im-under-attack">Please wait</div></body></html>"#,
            ),
            (
                "checking your browser",
                "<html><head><title>Checking your browser before accessing example.com.</title></head></html>",
            ),
            (
                "cloudflare challenge script under another title",
                r#"<html><head><title>Un instant…</title></head><body><script src="/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1?ray=1"></script></body></html>"#,
            ),
            (
                "ddos-guard",
                r#"<html><head><title>DDoS-Guard</title></head><body><script src="/.well-known/ddos-guard/js-challenge/index.js"></script></body></html>"#,
            ),
            (
                "akamai",
                "<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\nYou don't have permission to access this server.<P>\nReference&#32;&#35;18&#46;2d1c2e17&#46;1633012345&#46;6a7b8c\n</BODY>\n</HTML>",
            ),
            (
                "perimeterx",
                r#"<html><head><title>Access to this page has been denied</title></head><body><div id="px-captcha"></div></body></html>"#,
            ),
            (
                "perimeterx under the site's title",
                r#"<html><head><title>Shop</title></head><body><div id="px-captcha"></div></body></html>"#,
            ),
            (
                "hcaptcha",
                r#"<html><head><title>Verify you are human | Shop</title></head><body><div class="h-captcha" data-sitekey="x"></div></body></html>"#,
            ),
        ];
        for (name, html) in cases {
            assert!(is_challenge_page(html), "{name}");
        }
    }

    #[test]
    fn ordinary_pages_are_not_challenges() {
        let cases: &[(&str, &str)] = &[
            (
                "article about cloudflare",
                include_str!("../../tests/fixtures/metadata/cloudflare_article.html"),
            ),
            ("empty", ""),
            (
                "plain",
                "<html><head><title>Home</title></head><body>Hello</body></html>",
            ),
            (
                "site's own access denied page",
                "<html><head><title>Access Denied</title></head><body>Please log in.</body></html>",
            ),
            (
                "login form with a captcha",
                r#"<html><head><title>Sign in</title><script src="https://www.google.com/recaptcha/api.js"></script></head><body><form action="/login"><div class="g-recaptcha"></div></form></body></html>"#,
            ),
            (
                "title merely containing the words",
                "<html><head><title>Just a moment in time: a photo essay</title></head></html>",
            ),
        ];
        for (name, html) in cases {
            assert!(!is_challenge_page(html), "{name}");
        }
    }

    #[test]
    fn the_article_fixture_still_yields_its_metadata() {
        let m = extract(
            include_str!("../../tests/fixtures/metadata/cloudflare_article.html"),
            &page_url(),
        );
        assert_eq!(
            m.title.as_deref(),
            Some("How bot challenges work \u{2014} Example Engineering")
        );
        assert_eq!(
            m.description.as_deref(),
            Some("Why Cloudflare shows \"Just a moment...\" and what cf-browser-verification did.")
        );
        assert_eq!(m.site_name.as_deref(), Some("Example Engineering"));
        assert_eq!(m.favicon_url.as_deref(), Some("https://example.com/static/favicon.svg"));
    }
}
