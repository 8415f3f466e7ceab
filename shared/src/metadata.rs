//! Page metadata extraction: title, description, image, favicon and site name from a fetched page.
//!
//! Pure and synchronous (no I/O): the `refresh` job fetches a page, then calls
//!
//! - [`HeadScanner`] while reading, to stop once the `<head>` is complete (metadata lives there);
//! - [`decode_html`] to turn the bytes into text with the charset the page declares;
//! - [`is_challenge_page`] to recognise bot challenges and interstitials, whose metadata
//!   ("Just a moment...") must never overwrite good values;
//! - [`extract`] to read the [`PageMetadata`].
//!
//! Everything here accepts hostile input: work is linear in the input and bounded by
//! [`MAX_HEAD_BYTES`], nothing panics, and junk comes out as `None` rather than as an error.
//!
//! # Why pages are skimmed before scraper sees them
//!
//! html5ever's tree builder (under scraper) is superlinear on hostile markup: deep nesting, piles of
//! formatting elements, tags with thousands of attributes. 70 KB of `<p><b id=N></p>` makes it build
//! eight million nodes. So a linear tag scanner (the `Skimmer`) first copies out the few tags we
//! read (`<title>`, `<meta>`, `<link>`, `<base>`, with only the attributes we need, verbatim) into a
//! flat document, and scraper parses that: same entity and attribute rules as on the real page, no
//! nesting, linear time.

use std::collections::HashMap;

use encoding_rs::{Encoding, REPLACEMENT, UTF_8, UTF_16BE, UTF_16LE, WINDOWS_1252, X_USER_DEFINED};
use scraper::{ElementRef, Html};
use url::Url;

/// Metadata read from a page; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PageMetadata {
    pub title: Option<String>,
    pub description: Option<String>,
    pub image_url: Option<String>,
    pub favicon_url: Option<String>,
    pub site_name: Option<String>,
}

/// Longest HTML prefix worth reading: stop at `</head>` or this many bytes.
///
/// Metadata sits in the head; a head larger than this is either inlined assets we don't need or
/// hostile, and reading more would only cost time and memory.
pub const MAX_HEAD_BYTES: usize = 512 * 1024;

/// Caps on stored values (in chars): enough for any honest title or description, and they keep a
/// hostile page from filling our rows.
const MAX_TITLE_CHARS: usize = 300;
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
const MAX_SITE_NAME_CHARS: usize = 200;

/// Longest URL we keep (in bytes, all ASCII once serialised). Longer ones are dropped, not
/// truncated: a truncated URL is a broken one.
const MAX_URL_LEN: usize = 2048;

/// How much of the body the `<meta charset>` prescan looks at, as in the HTML spec: a declaration
/// further down does not count for browsers either.
const PRESCAN_BYTES: usize = 1024;

/// Decodes `body` to text. Charset from BOM → `Content-Type` header charset → `<meta charset>` /
/// `<meta http-equiv="Content-Type" content="...charset=...">` (prescan of the first 1024 bytes,
/// like the HTML spec) → UTF-8, with `encoding_rs` (lossy replacement, never an error).
///
/// Labels are resolved the WHATWG way (`iso-8859-1` and `us-ascii` mean windows-1252, which is what
/// pages labelled so really are). One deviation from browsers: a label meaning the "replacement"
/// encoding (`iso-2022-kr` and friends) is ignored instead of turning the page into a single U+FFFD;
/// that rule protects script execution, which we don't do, and it would only cost us the metadata.
pub fn decode_html(body: &[u8], content_type: Option<&str>) -> String {
    let encoding = sniff_encoding(body, content_type);
    // `decode` strips a BOM itself (and a BOM is what chose the encoding when there is one).
    let (text, _, _) = encoding.decode(body);
    text.into_owned()
}

/// Where the head ends: index just past `</head>` (case-insensitive) within the first
/// MAX_HEAD_BYTES. None if not found.
///
/// `</head >` (whitespace before the `>`, which HTML allows) counts too; `</header>` does not.
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    HeadScanner::default().feed(bytes)
}

/// Finds the end of the head while a body streams in, looking at each byte once: the fetcher
/// feeds it chunk by chunk, so a server that sends a page one byte at a time costs linear work,
/// not a rescan of everything read so far per byte (which kept a core busy until the deadline).
///
/// A small state machine over `</head` + HTML spaces + `>`, case-insensitive, restarted by every
/// `<`; bytes past [`MAX_HEAD_BYTES`] are not looked at.
#[derive(Debug, Clone, Default)]
pub struct HeadScanner {
    /// Bytes of the body seen so far (the index of the next byte fed).
    seen: usize,
    /// Bytes examined by the state machine, for the tests that prove the scan is linear.
    scanned: usize,
    /// How much of `</head` matched (0 = none, 6 = all of it, 7 = and spaces after it).
    matched: u8,
    /// Where the head ends, once found (later feeds answer it again without scanning).
    found: Option<usize>,
}

impl HeadScanner {
    /// Bytes the scanner has examined: at most each byte fed once.
    pub fn scanned(&self) -> usize {
        self.scanned
    }

    /// Feeds the next bytes of the body. Returns the index (in the whole body) just past
    /// `</head>` as soon as it has been seen.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        const CLOSE: &[u8] = b"</head";
        if self.found.is_some() {
            return self.found;
        }
        let room = MAX_HEAD_BYTES.saturating_sub(self.seen);
        for (offset, &byte) in chunk.iter().take(room).enumerate() {
            self.scanned += 1;
            let matched = usize::from(self.matched);
            self.matched = if byte == b'<' {
                1
            } else if matched >= CLOSE.len() && byte == b'>' {
                let end = self.seen + offset + 1;
                self.found = Some(end);
                self.seen += offset + 1;
                return self.found;
            } else if matched >= CLOSE.len() && is_space(byte) {
                7
            } else if (1..CLOSE.len()).contains(&matched) && byte.eq_ignore_ascii_case(&CLOSE[matched]) {
                self.matched + 1
            } else {
                0
            };
        }
        self.seen += chunk.len();
        None
    }
}

impl crate::fetch::client::StopAt for HeadScanner {
    fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        HeadScanner::feed(self, chunk)
    }
}

/// A fresh [`HeadScanner`] for [`crate::fetch::FetchRequest::stop_at`]: the scrape reads a page
/// only up to the end of its head.
pub fn head_stop() -> Box<dyn crate::fetch::client::StopAt> {
    Box::new(HeadScanner::default())
}

#[cfg(test)]
mod head_scanner_tests {
    use super::*;

    #[test]
    fn the_scanner_finds_the_head_end_across_any_chunking() {
        let page = b"<html><head><title>x</title></HEAD\t \n></head><body>";
        let expected = head_end(page);
        assert_eq!(expected, Some(38));
        for size in 1..page.len() {
            let mut scanner = HeadScanner::default();
            let found = page.chunks(size).find_map(|chunk| scanner.feed(chunk));
            assert_eq!(found, expected, "chunks of {size}");
        }
    }

    #[test]
    fn a_page_sent_one_byte_at_a_time_is_scanned_in_linear_work() {
        // 512 KiB of near-misses (`</hea`, `</head x`, `<<`) ending in the real `</head>`.
        let mut page = Vec::with_capacity(MAX_HEAD_BYTES);
        while page.len() < MAX_HEAD_BYTES - 64 {
            page.extend_from_slice(b"</hea </head x << </header> ");
        }
        page.extend_from_slice(b"</head>");
        let mut scanner = HeadScanner::default();
        let mut found = None;
        for byte in page.chunks(1) {
            if let Some(end) = scanner.feed(byte) {
                found = Some(end);
                break;
            }
        }
        assert_eq!(found, Some(page.len()));
        assert!(
            scanner.scanned() < 2 * page.len(),
            "scanned {} bytes for a {}-byte page",
            scanner.scanned(),
            page.len()
        );
    }
}

/// Extracts metadata from a decoded page fetched from `page_url` (the final URL after redirects).
///
/// Only the head is read when [`head_end`] finds it, else at most [`MAX_HEAD_BYTES`]: that is all
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
    if Skimmer::new(prefix).any(|tag| has_challenge_markup(&tag)) {
        return true;
    }
    let doc = Html::parse_document(&skim(prefix));
    HeadTags::collect(&doc)
        .title
        .and_then(|title| clean_text(&title, MAX_TITLE_CHARS))
        .is_some_and(|title| is_challenge_title(&title.to_lowercase(), &lower))
}

// ---------------------------------------------------------------------------------------------
// Extraction
// ---------------------------------------------------------------------------------------------

/// What [`extract`] needs from the (skimmed) document, gathered in one walk over its elements.
#[derive(Debug, Default)]
struct HeadTags<'a> {
    /// Text of the first `<title>`.
    title: Option<String>,
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
    fn collect(doc: &'a Html) -> Self {
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

/// The part of `html` worth reading: up to `</head>` when there is one, else [`MAX_HEAD_BYTES`].
fn head_prefix(html: &str) -> &str {
    match head_end(html.as_bytes()) {
        // `head_end` ends just after an ASCII `>`, so this is a char boundary.
        Some(end) => html.get(..end).unwrap_or(html),
        None => prefix_at_most(html, MAX_HEAD_BYTES),
    }
}

/// The longest prefix of `text` no longer than `max_bytes` that ends on a char boundary.
fn prefix_at_most(text: &str, max_bytes: usize) -> &str {
    &text[..text.floor_char_boundary(max_bytes)]
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

// ---------------------------------------------------------------------------------------------
// Skimming
// ---------------------------------------------------------------------------------------------

/// Rewrites `html` as a flat document of the tags [`HeadTags`] reads: the first HTML `<title>` and
/// every `<meta content>`, `<link rel href>` and `<base href>`, with only those attributes, copied
/// as written so that scraper decodes them exactly as it would have on the page (see the module
/// documentation for why).
fn skim(html: &str) -> String {
    let mut out = String::new();
    let mut has_title = false;
    for tag in Skimmer::new(html) {
        if tag.is("title") && !has_title {
            has_title = true;
            out.push_str("<title>");
            out.push_str(tag.text.unwrap_or_default());
            out.push_str("</title>");
        } else if tag.is("meta") && tag.attr("content").is_some() {
            write_tag(&mut out, "meta", &tag, &["property", "name", "content"]);
        } else if tag.is("link") && tag.attr("rel").is_some() && tag.attr("href").is_some() {
            write_tag(&mut out, "link", &tag, &["rel", "href"]);
        } else if tag.is("base") && tag.attr("href").is_some() {
            write_tag(&mut out, "base", &tag, &["href"]);
        }
    }
    out
}

/// Writes `<name attr=value ...>` with the first of each of `attrs` that `tag` has, values as
/// written (quotes included), which tokenises back to the same values.
fn write_tag(out: &mut String, name: &str, tag: &Tag<'_>, attrs: &[&str]) {
    out.push('<');
    out.push_str(name);
    for attr_name in attrs {
        let Some(attr) = tag.attr(attr_name) else { continue };
        out.push(' ');
        out.push_str(attr_name);
        if !attr.written.is_empty() {
            out.push('=');
            out.push_str(attr.written);
        }
    }
    out.push('>');
}

/// Raw-text elements: their content is text up to the matching end tag, not markup (`title` and
/// `textarea` decode entities in it, which scraper does for the title we copy). `noscript` is one
/// too, because scraper parses with scripting enabled, as browsers do.
const RAW_TEXT_ELEMENTS: &[&str] = &[
    "title",
    "textarea",
    "script",
    "style",
    "xmp",
    "iframe",
    "noembed",
    "noframes",
    "noscript",
    "plaintext",
];

/// HTML elements that end `<svg>`/`<math>` content when they start inside it (`font` only with
/// `color`, `face` or `size`).
const BREAKOUT_ELEMENTS: &str = "b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i \
    img li listing menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul var";

/// A start tag seen by the [`Skimmer`].
#[derive(Debug, Clone, Copy)]
struct Tag<'a> {
    /// The name as written.
    name: &'a str,
    /// The source between the name and the closing `>`, read by [`Tag::attrs`].
    attrs: &'a str,
    /// Inside `<svg>` or `<math>`: not HTML (an SVG `<title>` is a tooltip, not the page's title).
    foreign: bool,
    /// Content of a raw-text element ([`RAW_TEXT_ELEMENTS`]), as written.
    text: Option<&'a str>,
}

impl<'a> Tag<'a> {
    /// Whether this is the HTML element `name`.
    fn is(&self, name: &str) -> bool {
        !self.foreign && self.name.eq_ignore_ascii_case(name)
    }

    fn attrs(&self) -> Attrs<'a> {
        Attrs {
            src: self.attrs,
            pos: 0,
            self_closing: false,
        }
    }

    /// The first attribute called `name`: browsers ignore repeated ones.
    fn attr(&self, name: &str) -> Option<Attr<'a>> {
        self.attrs().find(|attr| attr.name.eq_ignore_ascii_case(name))
    }
}

/// An attribute as written: entities are not decoded.
#[derive(Debug, Clone, Copy)]
struct Attr<'a> {
    name: &'a str,
    /// The value with its quotes, if any; empty when the attribute has no value.
    written: &'a str,
    /// The value without quotes.
    value: &'a str,
}

/// The attributes of a tag, tokenised as the HTML spec does (from "before attribute name" to the
/// tag's `>`), which is what it takes to find where a tag ends: `<a title="x>y">` is one tag.
#[derive(Debug)]
struct Attrs<'a> {
    src: &'a str,
    /// Where the next attribute may start; once the iterator is done, on the tag's `>` (or at the
    /// end of `src` when there is none).
    pos: usize,
    /// Whether the tag ended with `/>`.
    self_closing: bool,
}

impl<'a> Attrs<'a> {
    /// Index of the first byte from `from` on that satisfies `stop` (or the end). Delimiters are
    /// ASCII, so this is always a char boundary.
    fn until(&self, from: usize, stop: impl Fn(u8) -> bool) -> usize {
        let bytes = self.src.as_bytes();
        bytes
            .get(from..)
            .and_then(|rest| rest.iter().position(|&b| stop(b)))
            .map_or(bytes.len(), |i| from + i)
    }

    fn slice(&self, from: usize, to: usize) -> &'a str {
        self.src.get(from..to).unwrap_or_default()
    }

    /// Skips whitespace and stray slashes before an attribute; false at the tag's end.
    fn skip_to_name(&mut self) -> bool {
        let bytes = self.src.as_bytes();
        loop {
            match bytes.get(self.pos) {
                Some(&b) if is_space(b) => self.pos += 1,
                Some(b'/') => {
                    self.pos += 1;
                    self.self_closing = bytes.get(self.pos) == Some(&b'>');
                }
                None | Some(b'>') => return false,
                Some(_) => return true,
            }
        }
    }

    /// After the `=`: the value as written and without its quotes.
    fn value(&mut self) -> (&'a str, &'a str) {
        let bytes = self.src.as_bytes();
        let start = self.pos;
        match bytes.get(start) {
            Some(&quote @ (b'"' | b'\'')) => {
                let close = self.until(start + 1, |b| b == quote);
                self.pos = (close + 1).min(bytes.len());
                (self.slice(start, self.pos), self.slice(start + 1, close))
            }
            None | Some(b'>') => ("", ""),
            Some(_) => {
                self.pos = self.until(start, |b| is_space(b) || b == b'>');
                let value = self.slice(start, self.pos);
                (value, value)
            }
        }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        if !self.skip_to_name() {
            return None;
        }
        let start = self.pos;
        // A leading `=` belongs to the name (a parse error browsers tolerate).
        let name_from = if self.src.as_bytes().get(start) == Some(&b'=') {
            start + 1
        } else {
            start
        };
        self.pos = self.until(name_from, |b| is_space(b) || matches!(b, b'/' | b'>' | b'='));
        let name = self.slice(start, self.pos);
        self.pos = skip_spaces(self.src.as_bytes(), self.pos);
        if self.src.as_bytes().get(self.pos) != Some(&b'=') {
            return Some(Attr {
                name,
                written: "",
                value: "",
            });
        }
        self.pos = skip_spaces(self.src.as_bytes(), self.pos + 1);
        let (written, value) = self.value();
        Some(Attr { name, written, value })
    }
}

/// A linear scan over a page's start tags, following the HTML tokenizer where it matters for
/// finding tags: comments, raw-text elements (a `<meta>` inside a `<script>` string is not a tag),
/// quoted attribute values, and SVG/MathML content. End tags, text and doctypes are skipped; it
/// builds no tree, so it costs the same whatever the nesting.
#[derive(Debug)]
struct Skimmer<'a> {
    src: &'a str,
    pos: usize,
    /// How deep inside `<svg>`/`<math>` we are (0: in HTML).
    foreign_depth: usize,
}

impl<'a> Skimmer<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            pos: 0,
            foreign_depth: 0,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    /// Index just past the first `needle` at or after `from` (or the end).
    fn past(&self, from: usize, needle: &[u8]) -> usize {
        let bytes = self.bytes();
        bytes
            .get(from..)
            .and_then(|rest| rest.windows(needle.len()).position(|w| w == needle))
            .map_or(bytes.len(), |i| from + i + needle.len())
    }

    /// The attributes of a tag whose name ends at `from`, left on the tag's `>` once exhausted.
    fn attrs_from(&self, from: usize) -> Attrs<'a> {
        Attrs {
            src: self.src,
            pos: from,
            self_closing: false,
        }
    }

    /// Index just past a comment starting at `at`: `<!-->` and `<!--->` are whole (empty)
    /// comments; otherwise it ends at `-->` or `--!>`.
    fn past_comment(&self, at: usize) -> usize {
        let body = at + b"<!--".len();
        let rest = self.bytes().get(body..).unwrap_or_default();
        if rest.starts_with(b">") {
            return body + 1;
        }
        if rest.starts_with(b"->") {
            return body + 2;
        }
        let mut from = body;
        loop {
            let dashes = self.past(from, b"--");
            match self.bytes().get(dashes..) {
                Some(after) if after.starts_with(b">") => return dashes + 1,
                Some(after) if after.starts_with(b"!>") => return dashes + 2,
                Some(after) if !after.is_empty() => from = dashes - 1,
                _ => return self.bytes().len(),
            }
        }
    }

    /// Skips an end tag at `at` (`</` already seen), keeping track of foreign content.
    fn skip_end_tag(&mut self, at: usize) {
        let name_start = at + 2;
        match self.bytes().get(name_start) {
            Some(b) if b.is_ascii_alphabetic() => {
                let mut attrs = self.attrs_from(name_start);
                let name_end = attrs.until(name_start, |b| is_space(b) || b == b'/' || b == b'>');
                let name = self.src.get(name_start..name_end).unwrap_or_default();
                attrs.pos = name_end;
                attrs.by_ref().for_each(drop);
                self.pos = attrs.pos + 1;
                if name.eq_ignore_ascii_case("p") || name.eq_ignore_ascii_case("br") {
                    self.foreign_depth = 0;
                } else {
                    self.foreign_depth = self.foreign_depth.saturating_sub(1);
                }
            }
            Some(b'>') => self.pos = at + 3,
            // A bogus comment, up to the next `>`.
            Some(_) => self.pos = self.past(name_start, b">"),
            None => self.pos = self.bytes().len(),
        }
    }

    /// Reads a start tag at `at` (`<` and a letter already seen). `None` when the input ends inside
    /// it: browsers drop such a tag.
    fn start_tag(&mut self, at: usize) -> Option<Tag<'a>> {
        let mut attrs = self.attrs_from(at + 1);
        let name_end = attrs.until(at + 1, |b| is_space(b) || b == b'/' || b == b'>');
        attrs.pos = name_end;
        attrs.by_ref().for_each(drop);
        if attrs.pos >= self.src.len() {
            self.pos = self.src.len();
            return None;
        }
        self.pos = attrs.pos + 1;
        let name = self.src.get(at + 1..name_end)?;
        let mut tag = Tag {
            name,
            attrs: self.src.get(name_end..attrs.pos)?,
            foreign: false,
            text: None,
        };
        if self.foreign_depth > 0 && !breaks_out(&tag) {
            self.foreign_depth += usize::from(!attrs.self_closing);
            tag.foreign = true;
        } else if name.eq_ignore_ascii_case("svg") || name.eq_ignore_ascii_case("math") {
            self.foreign_depth = usize::from(!attrs.self_closing);
            tag.foreign = true;
        } else {
            self.foreign_depth = 0;
            if RAW_TEXT_ELEMENTS.iter().any(|raw| name.eq_ignore_ascii_case(raw)) {
                tag.text = Some(self.raw_text(name));
            }
        }
        Some(tag)
    }

    /// The content of the raw-text element `name` whose start tag was just read, up to its end
    /// tag, which is skipped too.
    fn raw_text(&mut self, name: &str) -> &'a str {
        let start = self.pos;
        let bytes = self.bytes();
        if name.eq_ignore_ascii_case("plaintext") {
            self.pos = bytes.len();
            return self.src.get(start..).unwrap_or_default();
        }
        let mut from = start;
        while let Some(offset) = bytes
            .get(from..)
            .and_then(|rest| rest.windows(2).position(|w| w == b"</"))
        {
            let lt = from + offset;
            let name_end = lt + 2 + name.len();
            let same_name = bytes
                .get(lt + 2..name_end)
                .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()));
            if same_name
                && bytes
                    .get(name_end)
                    .is_none_or(|&b| is_space(b) || b == b'/' || b == b'>')
            {
                let mut attrs = self.attrs_from(name_end);
                attrs.by_ref().for_each(drop);
                self.pos = (attrs.pos + 1).min(bytes.len());
                return self.src.get(start..lt).unwrap_or_default();
            }
            from = lt + 2;
        }
        self.pos = bytes.len();
        self.src.get(start..).unwrap_or_default()
    }
}

impl<'a> Iterator for Skimmer<'a> {
    type Item = Tag<'a>;

    fn next(&mut self) -> Option<Tag<'a>> {
        loop {
            let at = self.pos + self.bytes().get(self.pos..)?.iter().position(|&b| b == b'<')?;
            let rest = &self.bytes()[at..];
            // By default a `<` is text.
            self.pos = at + 1;
            if rest.starts_with(b"<!--") {
                self.pos = self.past_comment(at);
            } else if self.foreign_depth > 0 && rest.starts_with(b"<![CDATA[") {
                self.pos = self.past(at, b"]]>");
            } else if rest.starts_with(b"<!") || rest.starts_with(b"<?") {
                // Doctype or bogus comment, up to the next `>`.
                self.pos = self.past(at + 2, b">");
            } else if rest.starts_with(b"</") {
                self.skip_end_tag(at);
            } else if rest.get(1).is_some_and(u8::is_ascii_alphabetic)
                && let Some(tag) = self.start_tag(at)
            {
                return Some(tag);
            }
        }
    }
}

/// Whether `tag`, inside SVG/MathML, ends it (the spec's list for "in foreign content").
fn breaks_out(tag: &Tag<'_>) -> bool {
    let name = tag.name;
    BREAKOUT_ELEMENTS
        .split_ascii_whitespace()
        .any(|e| name.eq_ignore_ascii_case(e))
        || (name.eq_ignore_ascii_case("font") && ["color", "face", "size"].iter().any(|a| tag.attr(a).is_some()))
}

// ---------------------------------------------------------------------------------------------
// Challenge pages
// ---------------------------------------------------------------------------------------------

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
    let named = ["id", "class"].iter().filter_map(|name| tag.attr(name)).any(|attr| {
        attr.value
            .split_ascii_whitespace()
            .any(|token| CHALLENGE_IDS.iter().any(|id| token.eq_ignore_ascii_case(id)))
    });
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

fn is_challenge_script(script: &str) -> bool {
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

// ---------------------------------------------------------------------------------------------
// Charset sniffing
// ---------------------------------------------------------------------------------------------

fn sniff_encoding(body: &[u8], content_type: Option<&str>) -> &'static Encoding {
    Encoding::for_bom(body)
        .map(|(encoding, _)| encoding)
        .or_else(|| content_type.and_then(charset_from_content_type))
        .or_else(|| prescan_encoding(&body[..body.len().min(PRESCAN_BYTES)]))
        .unwrap_or(UTF_8)
}

/// The `charset` parameter of a `Content-Type` value, if it names an encoding we can use.
fn charset_from_content_type(content_type: &str) -> Option<&'static Encoding> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        usable(Encoding::for_label(value.as_bytes()))
    })
}

/// Drops the "replacement" encoding (see [`decode_html`]).
fn usable(encoding: Option<&'static Encoding>) -> Option<&'static Encoding> {
    encoding.filter(|e| *e != REPLACEMENT)
}

/// The HTML spec's "prescan a byte stream to determine its encoding" over `bytes` (the first
/// [`PRESCAN_BYTES`] of the body): finds the first `<meta charset>` or `<meta http-equiv=
/// "Content-Type" content="…charset=…">`, skipping comments and other tags' attributes the way a
/// browser does, so `charset=` inside a comment or a `<script>` attribute is not mistaken for one.
fn prescan_encoding(bytes: &[u8]) -> Option<&'static Encoding> {
    Prescan { bytes, pos: 0 }.run().ok().flatten()
}

/// The input ran out mid-construct: the spec then gives up on the prescan.
#[derive(Debug)]
struct EndOfInput;

type Scan<T> = Result<T, EndOfInput>;

/// A cursor over the prescanned bytes; the names of the steps follow the spec.
#[derive(Debug)]
struct Prescan<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// An attribute as the prescan sees it: name and value, ASCII lower-cased.
#[derive(Debug)]
struct Attribute {
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Prescan<'_> {
    fn run(&mut self) -> Scan<Option<&'static Encoding>> {
        while self.pos < self.bytes.len() {
            let rest = &self.bytes[self.pos..];
            if rest.starts_with(b"<!--") {
                self.skip_comment()?;
            } else if starts_with_ignore_case(rest, b"<meta") && rest.get(5).is_some_and(|&b| is_space(b) || b == b'/')
            {
                self.pos += 6;
                if let Some(encoding) = self.meta()? {
                    return Ok(Some(encoding));
                }
            } else if starts_tag(rest) {
                self.skip_tag()?;
            } else if rest.starts_with(b"<!") || rest.starts_with(b"</") || rest.starts_with(b"<?") {
                self.pos = self.find_from(self.pos + 1, |b| b == b'>')?;
            }
            self.pos += 1;
        }
        Ok(None)
    }

    fn byte(&self) -> Scan<u8> {
        self.bytes.get(self.pos).copied().ok_or(EndOfInput)
    }

    /// Index of the first byte from `from` on that satisfies `pred`.
    fn find_from(&self, from: usize, pred: impl Fn(u8) -> bool) -> Scan<usize> {
        let rest = self.bytes.get(from..).ok_or(EndOfInput)?;
        rest.iter().position(|&b| pred(b)).map(|i| from + i).ok_or(EndOfInput)
    }

    /// Leaves `pos` on the `>` of the first `-->` after the `<` (`<!-->` is a whole comment).
    fn skip_comment(&mut self) -> Scan<()> {
        let mut at = self.pos + 2;
        loop {
            at = self.find_from(at + 2, |b| b == b'>')?;
            if self.bytes[at - 2..at] == *b"--" {
                self.pos = at;
                return Ok(());
            }
            at -= 1;
        }
    }

    /// Skips a start or end tag's name and attributes, leaving `pos` on its `>`.
    fn skip_tag(&mut self) -> Scan<()> {
        self.pos = self.find_from(self.pos, |b| is_space(b) || b == b'>')?;
        while self.attribute()?.is_some() {}
        Ok(())
    }

    /// After `<meta `: the encoding this tag declares, if any.
    fn meta(&mut self) -> Scan<Option<&'static Encoding>> {
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut got_pragma = false;
        let mut need_pragma: Option<bool> = None;
        // `None` is the spec's "null", `Some(None)` its "failure".
        let mut charset: Option<Option<&'static Encoding>> = None;
        while let Some(attr) = self.attribute()? {
            if seen.contains(&attr.name) {
                continue;
            }
            match attr.name.as_slice() {
                b"http-equiv" => got_pragma |= attr.value == b"content-type",
                b"content" => {
                    if let (None, Some(found)) = (charset, charset_from_meta_content(&attr.value)) {
                        charset = Some(Some(found));
                        need_pragma = Some(true);
                    }
                }
                b"charset" => {
                    charset = Some(Encoding::for_label(&attr.value));
                    need_pragma = Some(false);
                }
                _ => {}
            }
            seen.push(attr.name);
        }
        let declared = match need_pragma {
            None => None,
            Some(true) if !got_pragma => None,
            Some(_) => charset.flatten(),
        };
        Ok(usable(declared).map(|encoding| match encoding {
            e if e == UTF_16BE || e == UTF_16LE => UTF_8,
            e if e == X_USER_DEFINED => WINDOWS_1252,
            e => e,
        }))
    }

    /// The spec's "get an attribute": `None` at the tag's `>`.
    fn attribute(&mut self) -> Scan<Option<Attribute>> {
        while is_space(self.byte()?) || self.byte()? == b'/' {
            self.pos += 1;
        }
        if self.byte()? == b'>' {
            return Ok(None);
        }
        let mut attr = Attribute {
            name: Vec::new(),
            value: Vec::new(),
        };
        // Name.
        loop {
            match self.byte()? {
                b'=' if !attr.name.is_empty() => {
                    self.pos += 1;
                    return self.attribute_value(attr).map(Some);
                }
                b if is_space(b) => break,
                b'/' | b'>' => return Ok(Some(attr)),
                b => attr.name.push(b.to_ascii_lowercase()),
            }
            self.pos += 1;
        }
        // Spaces between the name and a possible `=`.
        while is_space(self.byte()?) {
            self.pos += 1;
        }
        if self.byte()? != b'=' {
            return Ok(Some(attr));
        }
        self.pos += 1;
        self.attribute_value(attr).map(Some)
    }

    /// After the `=`: the value, quoted or not.
    fn attribute_value(&mut self, mut attr: Attribute) -> Scan<Attribute> {
        while is_space(self.byte()?) {
            self.pos += 1;
        }
        match self.byte()? {
            quote @ (b'"' | b'\'') => {
                self.pos += 1;
                let end = self.find_from(self.pos, |b| b == quote)?;
                attr.value
                    .extend(self.bytes[self.pos..end].iter().map(u8::to_ascii_lowercase));
                self.pos = end + 1;
                return Ok(attr);
            }
            b'>' => return Ok(attr),
            _ => {}
        }
        let end = self.find_from(self.pos, |b| is_space(b) || b == b'>')?;
        attr.value
            .extend(self.bytes[self.pos..end].iter().map(u8::to_ascii_lowercase));
        self.pos = end;
        Ok(attr)
    }
}

/// The spec's "extracting a character encoding from a meta element", on a `content` value such as
/// `text/html; charset=windows-1252`.
fn charset_from_meta_content(content: &[u8]) -> Option<&'static Encoding> {
    let mut from = 0;
    loop {
        let found = find_ignore_case(content.get(from..)?, b"charset")?;
        let mut at = skip_spaces(content, from + found + b"charset".len());
        if content.get(at) != Some(&b'=') {
            from = at;
            continue;
        }
        at = skip_spaces(content, at + 1);
        let rest = content.get(at..)?;
        return match rest.first()? {
            &quote @ (b'"' | b'\'') => {
                let inner = rest.get(1..)?;
                let end = inner.iter().position(|&b| b == quote)?;
                Encoding::for_label(&inner[..end])
            }
            _ => {
                let end = rest
                    .iter()
                    .position(|&b| is_space(b) || b == b';')
                    .unwrap_or(rest.len());
                Encoding::for_label(&rest[..end])
            }
        };
    }
}

fn skip_spaces(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(|&b| is_space(b)) {
        at += 1;
    }
    at
}

/// HTML's ASCII whitespace (TAB, LF, FF, CR, SPACE).
fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\x0C' | b'\r' | b' ')
}

/// `<` then a letter, or `</` then a letter: a start or end tag.
fn starts_tag(rest: &[u8]) -> bool {
    let name = rest.strip_prefix(b"</").or_else(|| rest.strip_prefix(b"<"));
    name.and_then(|n| n.first()).is_some_and(u8::is_ascii_alphabetic)
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const PAGE: &str = "https://example.com/articles/one?ref=feed#top";

    fn page_url() -> Url {
        Url::parse(PAGE).expect("valid page URL")
    }

    fn extract_head(head: &str) -> PageMetadata {
        extract(
            &format!("<!DOCTYPE html><html><head>{head}</head><body><p>Body</p></body></html>"),
            &page_url(),
        )
    }

    /// Runs `field` on the metadata of each `(head, expected)` case, naming the failing case.
    fn check_field(cases: &[(&str, Option<&str>)], field: impl Fn(PageMetadata) -> Option<String>) {
        for (head, expected) in cases {
            assert_eq!(field(extract_head(head)).as_deref(), *expected, "head: {head}");
        }
    }

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
    fn an_svg_title_in_the_body_is_not_the_page_title() {
        let html = r#"<html><body><svg><title>Icon tooltip</title></svg><meta property="og:title" content="OG"></body></html>"#;
        assert_eq!(extract(html, &page_url()).title.as_deref(), Some("OG"));
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

    #[test]
    fn iso_8859_1_page_with_charset_only_in_the_content_type_header_decodes() {
        let body = b"<html><head><title>Caf\xe9 cr\xe8me</title></head></html>";
        for content_type in [
            "text/html; charset=ISO-8859-1",
            "text/html;charset=\"latin1\"",
            "text/html; CHARSET=iso-8859-1",
        ] {
            let html = decode_html(body, Some(content_type));
            assert_eq!(
                extract(&html, &page_url()).title.as_deref(),
                Some("Café crème"),
                "{content_type}"
            );
        }
    }

    #[test]
    fn windows_1252_page_with_meta_charset_decodes_curly_quotes() {
        let body =
            b"<html><head><meta charset=\"windows-1252\"><title>\x93Quoted\x94 \x96 it\x92s</title></head></html>";
        let html = decode_html(body, Some("text/html"));
        assert_eq!(
            extract(&html, &page_url()).title.as_deref(),
            Some("\u{201c}Quoted\u{201d} \u{2013} it\u{2019}s")
        );
    }

    #[test]
    fn a_utf8_bom_overrides_a_wrong_content_type_header() {
        let body =
            b"\xef\xbb\xbf<html><head><meta charset=windows-1252><title>Caf\xc3\xa9 \xe2\x80\x9cok\xe2\x80\x9d</title>";
        let html = decode_html(body, Some("text/html; charset=iso-8859-1"));
        assert!(!html.starts_with('\u{feff}'), "the BOM is not part of the text");
        assert_eq!(
            extract(&html, &page_url()).title.as_deref(),
            Some("Café \u{201c}ok\u{201d}")
        );
    }

    #[test]
    fn charset_is_chosen_in_spec_order() {
        let cases: &[(&[u8], Option<&str>, &str)] = &[
            // A UTF-16LE BOM.
            (b"\xff\xfe<\0b\0>\0", None, "<b>"),
            // The header beats a meta.
            (
                b"<meta charset=utf-8>\xe9",
                Some("text/html; charset=windows-1252"),
                "<meta charset=utf-8>é",
            ),
            // An unknown header charset falls through to the meta.
            (
                b"<meta charset=windows-1252>\xe9",
                Some("text/html; charset=nonsense"),
                "<meta charset=windows-1252>é",
            ),
            // http-equiv form, attributes in any order, unquoted.
            (
                b"<META content='text/html; charset=ISO-8859-1' HTTP-EQUIV=Content-Type>\xe9",
                None,
                "<META content='text/html; charset=ISO-8859-1' HTTP-EQUIV=Content-Type>é",
            ),
            // `content` without http-equiv does not count.
            (
                b"<meta content='text/html; charset=ISO-8859-1'>\xc3\xa9",
                None,
                "<meta content='text/html; charset=ISO-8859-1'>é",
            ),
            // A meta inside a comment does not count.
            (
                b"<!-- <meta charset=windows-1252> -->\xc3\xa9",
                None,
                "<!-- <meta charset=windows-1252> -->é",
            ),
            // Another tag's attribute value does not count.
            (
                b"<a title='<meta charset=windows-1252>'>\xc3\xa9",
                None,
                "<a title='<meta charset=windows-1252>'>é",
            ),
            // A meta declaring UTF-16 means UTF-8 (the bytes are evidently ASCII-compatible).
            (b"<meta charset=utf-16le>\xc3\xa9", None, "<meta charset=utf-16le>é"),
            // The "replacement" encoding is ignored rather than blanking the page.
            (
                b"<meta charset=iso-2022-kr>\xc3\xa9",
                None,
                "<meta charset=iso-2022-kr>é",
            ),
            // Nothing declared: UTF-8, invalid bytes replaced.
            (b"caf\xc3\xa9 \xff", None, "café \u{fffd}"),
        ];
        for (body, content_type, expected) in cases {
            assert_eq!(
                decode_html(body, *content_type),
                *expected,
                "body: {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_meta_charset_after_the_first_1024_bytes_is_ignored() {
        let mut body = vec![b' '; PRESCAN_BYTES];
        body.extend_from_slice(b"<meta charset=windows-1252>\xe9");
        assert!(decode_html(&body, None).ends_with('\u{fffd}'));
        let mut body = b"<meta charset=windows-1252>".to_vec();
        body.extend(std::iter::repeat_n(b' ', PRESCAN_BYTES));
        body.push(0xe9);
        assert!(decode_html(&body, None).ends_with('é'));
    }

    #[test]
    fn charset_is_extracted_from_meta_content_like_the_spec() {
        let cases: &[(&[u8], Option<&'static Encoding>)] = &[
            (b"text/html; charset=windows-1252", Some(WINDOWS_1252)),
            (b"text/html;charset = \"koi8-r\"", Some(encoding_rs::KOI8_R)),
            (b"text/html; charset='shift_jis'; foo", Some(encoding_rs::SHIFT_JIS)),
            (b"text/html; charsetx; charset=utf-8", Some(UTF_8)),
            (b"text/html; charset=\"unterminated", None),
            (b"text/html; charset=", None),
            (b"text/html", None),
        ];
        for (content, expected) in cases {
            assert_eq!(
                charset_from_meta_content(content),
                *expected,
                "{:?}",
                String::from_utf8_lossy(content)
            );
        }
    }

    #[test]
    fn head_end_finds_the_closing_head_tag() {
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"<html><head><title>x</title></head><body>", Some(35)),
            (b"<HTML><HEAD></HEAD>", Some(19)),
            (b"<head></HeAd >", Some(14)),
            (b"<head><header></header>", None),
            (b"<head><title>no end", None),
            (b"</head", None),
            (b"", None),
        ];
        for (bytes, expected) in cases {
            assert_eq!(head_end(bytes), *expected, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn head_end_only_looks_at_the_first_max_head_bytes() {
        let mut bytes = vec![b'x'; MAX_HEAD_BYTES - "</head>".len()];
        bytes.extend_from_slice(b"</head>");
        assert_eq!(head_end(&bytes), Some(MAX_HEAD_BYTES));
        bytes.insert(0, b'x');
        assert_eq!(head_end(&bytes), None);
    }

    #[test]
    fn challenge_pages_are_recognised() {
        let cases: &[(&str, &str)] = &[
            (
                "cloudflare managed challenge",
                include_str!("../tests/fixtures/metadata/cloudflare_just_a_moment.html"),
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
                include_str!("../tests/fixtures/metadata/cloudflare_article.html"),
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
            include_str!("../tests/fixtures/metadata/cloudflare_article.html"),
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

    #[test]
    fn tags_are_found_the_way_a_browser_tokenises_them() {
        check_field(
            &[
                // A `>` inside a quoted value does not end the tag.
                (r#"<meta name="description" content="a > b">"#, Some("a > b")),
                (r#"<meta name='description' content='say "hi"'>"#, Some("say \"hi\"")),
                // Unquoted values, upper-case names, repeated attributes (the first one counts).
                ("<META NAME=description CONTENT=plain content=second>", Some("plain")),
                // Not tags: inside a comment, a script, a style, a noscript or a textarea.
                (r#"<!-- <meta name="description" content="comment"> -->"#, None),
                (
                    r#"<script>var s = '<meta name="description" content="script">';</script>"#,
                    None,
                ),
                (
                    r#"<style>/* <meta name="description" content="style"> */</style>"#,
                    None,
                ),
                (
                    r#"<noscript><meta name="description" content="noscript"></noscript>"#,
                    None,
                ),
                // ...but what follows them is.
                (
                    r#"<script>if (a </b) {}</script><!--x--><meta name="description" content="after">"#,
                    Some("after"),
                ),
                // A tag cut off by the end of the input is dropped, as browsers do.
                (r#"<meta name="description" content="unterminated"#, None),
            ],
            |m| m.description,
        );
    }

    #[test]
    fn title_content_is_text_not_markup() {
        check_field(
            &[
                ("<title>a <b>bold</b> move</title>", Some("a <b>bold</b> move")),
                ("<title>one</title><title>two</title>", Some("one")),
                ("<TITLE>upper</TITLE >", Some("upper")),
                ("<svg><title>tooltip</title></svg><title>real</title>", Some("real")),
                ("<svg><p><title>after breakout</title>", Some("after breakout")),
            ],
            |m| m.title,
        );
    }

    /// Generous bound: the point is "no blow-up" (quadratic cases took minutes), not a benchmark.
    const HOSTILE_BUDGET: Duration = Duration::from_secs(10);

    /// Extracts and judges `html` within the budget; `challenge` is the expected verdict.
    fn assert_survives(name: &str, html: &str, challenge: bool) {
        let started = Instant::now();
        let m = extract(html, &page_url());
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
        assert_eq!(decode_html(b"<title>\xc3(</title>", None), "<title>\u{fffd}(</title>");
    }
}
