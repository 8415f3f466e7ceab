//! The metadata of a page, read from its skimmed head: fallbacks between sources, URL
//! resolution, and the caps that keep a hostile page from filling our rows.
//!
//! # Why pages are skimmed before scraper sees them
//!
//! html5ever's tree builder (under scraper) is superlinear on hostile markup: deep nesting, piles of
//! formatting elements, tags with thousands of attributes. 70 KB of `<p><b id=N></p>` makes it build
//! eight million nodes. So a linear tag scanner (the `Skimmer`, in `skim`) first copies out the few
//! tags we read (`<title>`, `<meta>`, `<link>`, `<base>`, with only the attributes we need,
//! verbatim) into a flat document, and scraper parses that: same entity and attribute rules as on
//! the real page, no nesting, linear time.

use std::collections::HashMap;

use scraper::{ElementRef, Html};
use url::Url;

use super::head::head_prefix;
use super::skim::skim;

/// Metadata read from a page; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PageMetadata {
    pub title: Option<String>,
    pub description: Option<String>,
    pub image_url: Option<String>,
    pub favicon_url: Option<String>,
    pub site_name: Option<String>,
}

/// Caps on stored values (in chars): enough for any honest title or description, and they keep a
/// hostile page from filling our rows.
pub(super) const MAX_TITLE_CHARS: usize = 300;
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
const MAX_SITE_NAME_CHARS: usize = 200;

/// Longest URL we keep (in bytes, all ASCII once serialised). Longer ones are dropped, not
/// truncated: a truncated URL is a broken one.
const MAX_URL_LEN: usize = 2048;

/// Extracts metadata from a decoded page fetched from `page_url` (the final URL after redirects).
///
/// Only the head is read when [`head_end`](super::head_end) finds it, else at most
/// [`MAX_HEAD_BYTES`](super::MAX_HEAD_BYTES): that is all
/// the fetcher reads anyway.
pub fn extract(html: &str, page_url: &Url) -> PageMetadata {
    let doc = Html::parse_document(&skim(head_prefix(html)));
    let tags = HeadTags::collect(&doc);
    let base = tags.base_url(page_url);
    PageMetadata {
        title: first_text(
            tags.title
                .as_deref()
                .into_iter()
                .chain(tags.meta_values(&["og:title", "twitter:title"])),
            MAX_TITLE_CHARS,
        ),
        description: first_text(
            tags.meta_values(&["description", "og:description", "twitter:description"]),
            MAX_DESCRIPTION_CHARS,
        ),
        image_url: first_url(
            tags.meta_values(&[
                "og:image",
                "og:image:url",
                "og:image:secure_url",
                "twitter:image",
                "twitter:image:src",
            ]),
            &base,
        ),
        favicon_url: tags.favicon_url(&base, page_url),
        site_name: first_text(
            tags.meta_values(&["og:site_name", "application-name"]),
            MAX_SITE_NAME_CHARS,
        ),
    }
}

/// What [`extract`] needs from the (skimmed) document, gathered in one walk over its elements.
#[derive(Debug, Default)]
pub(super) struct HeadTags<'a> {
    /// Text of the first `<title>`.
    pub(super) title: Option<String>,
    /// `content` of each `<meta>` by lower-cased `property` and `name`, in document order.
    metas: HashMap<String, Vec<&'a str>>,
    /// `href` of `<link rel~=icon>`, in document order.
    icons: Vec<&'a str>,
    /// `href` of `<link rel~=apple-touch-icon>`: big and square, a fallback for `icons`.
    touch_icons: Vec<&'a str>,
    /// `href` of the first `<base href>`, the only one that counts.
    base_href: Option<&'a str>,
}

impl<'a> HeadTags<'a> {
    pub(super) fn collect(doc: &'a Html) -> Self {
        let mut tags = Self::default();
        for element in doc.root_element().descendent_elements() {
            tags.add(element);
        }
        tags
    }

    fn add(&mut self, element: ElementRef<'a>) {
        let value = element.value();
        match value.name() {
            "title" if self.title.is_none() => self.title = Some(element.text().collect()),
            "meta" => self.add_meta(element),
            "link" => self.add_link(element),
            "base" if self.base_href.is_none() => self.base_href = value.attr("href"),
            _ => {}
        }
    }

    /// Files `content` under both `property` (Open Graph) and `name` (everyone else): sites mix
    /// them up, and a few set both on one tag.
    fn add_meta(&mut self, element: ElementRef<'a>) {
        let value = element.value();
        let Some(content) = value.attr("content") else { return };
        for key in [value.attr("property"), value.attr("name")].into_iter().flatten() {
            let key = key.trim().to_ascii_lowercase();
            if !key.is_empty() {
                self.metas.entry(key).or_default().push(content);
            }
        }
    }

    fn add_link(&mut self, element: ElementRef<'a>) {
        let value = element.value();
        let (Some(rel), Some(href)) = (value.attr("rel"), value.attr("href")) else {
            return;
        };
        if has_token(rel, "icon") {
            self.icons.push(href);
        } else if has_token(rel, "apple-touch-icon") || has_token(rel, "apple-touch-icon-precomposed") {
            self.touch_icons.push(href);
        }
    }

    /// Contents of the given meta keys, all values of the first key before those of the next.
    fn meta_values<'k>(&self, keys: &'k [&'k str]) -> impl Iterator<Item = &'a str> + use<'a, '_, 'k> {
        keys.iter().filter_map(|key| self.metas.get(*key)).flatten().copied()
    }

    /// The URL relative links resolve against: `<base href>` (itself relative to the page) when it
    /// gives an http(s) URL, else the page's URL.
    fn base_url(&self, page_url: &Url) -> Url {
        self.base_href
            .map(str::trim)
            .filter(|href| !href.is_empty())
            .and_then(|href| page_url.join(href).ok())
            .filter(is_web_url)
            .unwrap_or_else(|| page_url.clone())
    }

    /// First usable icon link, then touch icon, then `/favicon.ico` of the page's origin (which
    /// browsers request when a page declares nothing; we store the URL and don't check it exists).
    fn favicon_url(&self, base: &Url, page_url: &Url) -> Option<String> {
        first_url(self.icons.iter().chain(&self.touch_icons).copied(), base).or_else(|| default_favicon(page_url))
    }
}

fn default_favicon(page_url: &Url) -> Option<String> {
    if !is_web_url(page_url) {
        return None;
    }
    page_url
        .join("/favicon.ico")
        .ok()
        .map(String::from)
        .filter(|url| url.len() <= MAX_URL_LEN)
}

/// Whether a space-separated token list (`rel`, `class`) holds `token`, ASCII case-insensitively.
fn has_token(list: &str, token: &str) -> bool {
    list.split_ascii_whitespace().any(|t| t.eq_ignore_ascii_case(token))
}

/// First candidate that is still non-empty once cleaned.
fn first_text<'a>(candidates: impl IntoIterator<Item = &'a str>, max_chars: usize) -> Option<String> {
    candidates.into_iter().find_map(|raw| clean_text(raw, max_chars))
}

/// Collapses every run of whitespace (newlines, NBSP, other Unicode spaces) and control
/// characters into one space, trims, and truncates to `max_chars` chars. `None` when nothing is
/// left, so that an empty tag falls through to the next source. (Also for GitHub's descriptions:
/// text from a server we do not control gets the same caps wherever it comes from.)
pub fn clean_text(raw: &str, max_chars: usize) -> Option<String> {
    let collapsed = raw
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let truncated = match collapsed.char_indices().nth(max_chars) {
        Some((end, _)) => collapsed[..end].trim_end(),
        None => collapsed.as_str(),
    };
    (!truncated.is_empty()).then(|| truncated.to_owned())
}

/// First candidate that resolves to a usable URL.
fn first_url<'a>(candidates: impl IntoIterator<Item = &'a str>, base: &Url) -> Option<String> {
    candidates.into_iter().find_map(|raw| resolve_url(raw, base))
}

/// Resolves `raw` against `base`, keeping only http(s) URLs of at most [`MAX_URL_LEN`] bytes:
/// `javascript:`, `data:` and the like are useless (or dangerous) to whoever displays them.
fn resolve_url(raw: &str, base: &Url) -> Option<String> {
    let raw = raw.trim();
    // An empty reference resolves to the base itself, which is not an image.
    if raw.is_empty() {
        return None;
    }
    let url = base.join(raw).ok().filter(is_web_url)?;
    let url = String::from(url);
    (url.len() <= MAX_URL_LEN).then_some(url)
}

fn is_web_url(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::test_support::{check_field, extract_head, page_url};

    #[test]
    fn title_falls_back_from_title_tag_to_og_title_to_twitter_title() {
        check_field(
            &[
                (
                    r#"<title>Tag</title><meta property="og:title" content="OG"><meta name="twitter:title" content="TW">"#,
                    Some("Tag"),
                ),
                (
                    r#"<meta property="og:title" content="OG"><meta name="twitter:title" content="TW">"#,
                    Some("OG"),
                ),
                (r#"<meta name="twitter:title" content="TW">"#, Some("TW")),
                (
                    r#"<meta property="twitter:title" content="TW as property">"#,
                    Some("TW as property"),
                ),
                (r#"<meta name="og:title" content="OG as name">"#, Some("OG as name")),
                (
                    r#"<title>  </title><meta property="og:title" content="OG">"#,
                    Some("OG"),
                ),
                (
                    r#"<meta property="OG:Title" content="Upper-case key">"#,
                    Some("Upper-case key"),
                ),
                ("", None),
            ],
            |m| m.title,
        );
    }

    #[test]
    fn description_falls_back_from_meta_description_to_og_to_twitter() {
        check_field(
            &[
                (
                    r#"<meta name="description" content="Meta"><meta property="og:description" content="OG"><meta name="twitter:description" content="TW">"#,
                    Some("Meta"),
                ),
                (
                    r#"<meta property="og:description" content="OG"><meta name="twitter:description" content="TW">"#,
                    Some("OG"),
                ),
                (r#"<meta name="twitter:description" content="TW">"#, Some("TW")),
                (
                    r#"<meta name="description" content=""><meta property="og:description" content="OG">"#,
                    Some("OG"),
                ),
                (r#"<meta name="description">"#, None),
            ],
            |m| m.description,
        );
    }

    #[test]
    fn site_name_falls_back_from_og_site_name_to_application_name() {
        check_field(
            &[
                (
                    r#"<meta property="og:site_name" content="OG"><meta name="application-name" content="App">"#,
                    Some("OG"),
                ),
                (r#"<meta name="application-name" content="App">"#, Some("App")),
                ("", None),
            ],
            |m| m.site_name,
        );
    }

    #[test]
    fn image_urls_resolve_against_base_href_then_the_page() {
        check_field(
            &[
                (
                    r#"<base href="https://cdn.example.net/assets/"><meta property="og:image" content="img/a.png">"#,
                    Some("https://cdn.example.net/assets/img/a.png"),
                ),
                (
                    r#"<base href="/static/"><meta property="og:image" content="a.png">"#,
                    Some("https://example.com/static/a.png"),
                ),
                (
                    r#"<meta property="og:image" content="a.png">"#,
                    Some("https://example.com/articles/a.png"),
                ),
                (
                    r#"<meta property="og:image" content="//cdn.example.net/b.png">"#,
                    Some("https://cdn.example.net/b.png"),
                ),
                (
                    r#"<base href="javascript:alert(1)"><meta property="og:image" content="a.png">"#,
                    Some("https://example.com/articles/a.png"),
                ),
                (
                    r#"<base href="/first/"><base href="/second/"><meta property="og:image" content="a.png">"#,
                    Some("https://example.com/first/a.png"),
                ),
                (
                    r#"<meta property="og:image:url" content="/url.png">"#,
                    Some("https://example.com/url.png"),
                ),
                (
                    r#"<meta property="og:image:secure_url" content="/secure.png">"#,
                    Some("https://example.com/secure.png"),
                ),
                (
                    r#"<meta name="twitter:image" content="/tw.png">"#,
                    Some("https://example.com/tw.png"),
                ),
                (
                    r#"<meta name="twitter:image" content="/tw.png"><meta property="og:image" content="/og.png">"#,
                    Some("https://example.com/og.png"),
                ),
                (r#"<meta property="og:image" content="  ">"#, None),
            ],
            |m| m.image_url,
        );
    }

    #[test]
    fn non_web_image_urls_are_dropped_and_the_next_source_is_used() {
        check_field(
            &[
                (r#"<meta property="og:image" content="javascript:alert(1)">"#, None),
                (r#"<meta property="og:image" content="JavaScript:alert(1)">"#, None),
                (
                    r#"<meta property="og:image" content="data:image/png;base64,iVBORw0KGgo=">"#,
                    None,
                ),
                (r#"<meta property="og:image" content="ftp://example.com/a.png">"#, None),
                (r#"<meta property="og:image" content="http://[::1">"#, None),
                (
                    r#"<meta property="og:image" content="javascript:alert(1)"><meta name="twitter:image" content="/tw.png">"#,
                    Some("https://example.com/tw.png"),
                ),
            ],
            |m| m.image_url,
        );
    }

    #[test]
    fn favicon_comes_from_icon_links_then_touch_icons_then_favicon_ico() {
        check_field(
            &[
                (
                    r#"<link rel="shortcut icon" href="/fav.ico">"#,
                    Some("https://example.com/fav.ico"),
                ),
                (
                    r#"<link rel="ICON" href="icons/fav.png">"#,
                    Some("https://example.com/articles/icons/fav.png"),
                ),
                (
                    r#"<link rel="apple-touch-icon" href="/touch.png"><link rel="icon" href="/fav.png">"#,
                    Some("https://example.com/fav.png"),
                ),
                (
                    r#"<link rel="apple-touch-icon" href="/touch.png">"#,
                    Some("https://example.com/touch.png"),
                ),
                (
                    r#"<link rel="icon" href="data:image/x-icon;base64,AAAB"><link rel="icon" href="/fav.png">"#,
                    Some("https://example.com/fav.png"),
                ),
                (
                    r#"<base href="https://cdn.example.net/"><link rel="icon" href="fav.png">"#,
                    Some("https://cdn.example.net/fav.png"),
                ),
                (
                    r#"<link rel="stylesheet" href="/site.css"><link rel="mask-icon" href="/mask.svg">"#,
                    Some("https://example.com/favicon.ico"),
                ),
                (r#"<link rel="icon" href="">"#, Some("https://example.com/favicon.ico")),
                ("", Some("https://example.com/favicon.ico")),
            ],
            |m| m.favicon_url,
        );
    }

    #[test]
    fn favicon_fallback_uses_the_page_origin_and_needs_a_web_page() {
        let with_port = Url::parse("http://example.com:8080/a/b").expect("valid URL");
        assert_eq!(
            extract("", &with_port).favicon_url.as_deref(),
            Some("http://example.com:8080/favicon.ico")
        );
        let file = Url::parse("file:///tmp/page.html").expect("valid URL");
        assert_eq!(extract("", &file).favicon_url, None);
    }

    #[test]
    fn entities_are_decoded_in_text_and_urls() {
        let m = extract_head(
            r#"<title>Tom &amp; Jerry&#8217;s &quot;Show&quot; &eacute;</title>
               <meta name="description" content="Caf&eacute; &lt;b&gt; &#x2014; done">
               <meta property="og:image" content="/img?a=1&amp;b=2">"#,
        );
        assert_eq!(m.title.as_deref(), Some("Tom & Jerry\u{2019}s \"Show\" é"));
        assert_eq!(m.description.as_deref(), Some("Café <b> \u{2014} done"));
        assert_eq!(m.image_url.as_deref(), Some("https://example.com/img?a=1&b=2"));
    }

    #[test]
    fn whitespace_is_collapsed_and_trimmed() {
        check_field(
            &[
                ("<title>\n   Hello\n\t  world  \n</title>", Some("Hello world")),
                (
                    "<title>Non&nbsp;&nbsp;breaking\u{a0}space</title>",
                    Some("Non breaking space"),
                ),
                (
                    "<title>Ideographic\u{3000}space and\u{2009}thin</title>",
                    Some("Ideographic space and thin"),
                ),
                ("<title>Control\u{1}chars\u{7f}gone</title>", Some("Control chars gone")),
                ("<title>\n\t&nbsp;\n</title>", None),
            ],
            |m| m.title,
        );
    }

    #[test]
    fn long_values_are_capped_on_char_boundaries() {
        let title = "é".repeat(MAX_TITLE_CHARS + 50);
        let description = "ü".repeat(MAX_DESCRIPTION_CHARS + 1);
        let site_name = "日".repeat(MAX_SITE_NAME_CHARS * 2);
        let m = extract_head(&format!(
            r#"<title>{title}</title><meta name="description" content="{description}"><meta property="og:site_name" content="{site_name}">"#
        ));
        assert_eq!(m.title, Some("é".repeat(MAX_TITLE_CHARS)));
        assert_eq!(m.description, Some("ü".repeat(MAX_DESCRIPTION_CHARS)));
        assert_eq!(m.site_name, Some("日".repeat(MAX_SITE_NAME_CHARS)));
    }

    #[test]
    fn truncation_does_not_leave_a_trailing_space() {
        let title = format!("{} tail", "a".repeat(MAX_TITLE_CHARS - 1));
        let m = extract_head(&format!("<title>{title}</title>"));
        assert_eq!(m.title, Some("a".repeat(MAX_TITLE_CHARS - 1)));
    }

    #[test]
    fn overlong_urls_are_dropped_not_truncated() {
        let fits = format!("/{}", "a".repeat(MAX_URL_LEN - "https://example.com/".len()));
        let too_long = format!("{fits}b");
        let m = extract_head(&format!(r#"<meta property="og:image" content="{fits}">"#));
        assert_eq!(m.image_url.map(|u| u.len()), Some(MAX_URL_LEN));
        let m = extract_head(&format!(
            r#"<meta property="og:image" content="{too_long}"><meta name="twitter:image" content="/short.png"><link rel="icon" href="{too_long}">"#
        ));
        assert_eq!(m.image_url.as_deref(), Some("https://example.com/short.png"));
        assert_eq!(m.favicon_url.as_deref(), Some("https://example.com/favicon.ico"));
    }

    #[test]
    fn only_the_head_is_read_when_it_ends() {
        let html = r#"<html><head><meta property="og:title" content="Head"></head>
            <body><meta name="description" content="Body"></body></html>"#;
        let m = extract(html, &page_url());
        assert_eq!((m.title.as_deref(), m.description), (Some("Head"), None));
    }

    #[test]
    fn metadata_is_found_without_a_closing_head_tag() {
        let html = r#"<html><title>No head end</title><meta name="description" content="Still here"><p>text"#;
        let m = extract(html, &page_url());
        assert_eq!(m.title.as_deref(), Some("No head end"));
        assert_eq!(m.description.as_deref(), Some("Still here"));
    }

    #[test]
    fn a_page_with_nothing_gives_only_the_default_favicon() {
        let expected = PageMetadata {
            favicon_url: Some("https://example.com/favicon.ico".to_owned()),
            ..PageMetadata::default()
        };
        for html in ["", "plain text", "<html></html>", "<<<>>>", "\u{0}\u{0}"] {
            assert_eq!(extract(html, &page_url()), expected, "html: {html:?}");
        }
    }
}
