//! The skimmer: a linear scan over a page's start tags, and the flat document of the few tags
//! [`extract`](fn@super::extract) reads.
//!
//! # Why a hand-written tokenizer
//!
//! Measured against `lol_html` 3.0 (Cloudflare's maintained streaming rewriter, the best candidate:
//! it simulates the tree builder's text modes and foreign content without building a tree) doing
//! the same two jobs: the same flat document, the same challenge-markup scan, on 2026-12-07 (the
//! candidate and its timing harness were removed once the decision was taken). The skimmer stays,
//! because
//!
//! - **lol_html does not pass our corpus.** It reports an SVG `<title>` (an HTML integration
//!   point) in the HTML namespace, so an icon's tooltip becomes the page title; telling it apart by
//!   selector (`svg title`) then fails the other way, since its selector stack does not know that
//!   `<svg><p>` left SVG: `<svg><p><title>after breakout</title>` loses the real title
//!   (`title_content_is_text_not_markup`). Getting both right would take our own foreign-content
//!   tracking next to it, which is the skimmer again. Every other unit, hostile and property test
//!   passed with it.
//! - **It is slower on our pages.** Release build, best of 3 × ~50 MB per page, whole scrape
//!   (challenge check + extract, scraper's parse included) / tokenizer alone: the fixture article
//!   15.8 µs vs 36.8 µs (2.3×) / 1.2 µs vs 7.6 µs; the challenge fixture 8.3 vs 21.1 µs (2.5×);
//!   a typical 31 KB head (preloads, cards, JSON-LD, inline style and scripts) 76.5 vs 88.2 µs
//!   (1.15×) / 36 vs 47 µs; 512 KiB of nested `<div>` 1.8 vs 7.8 ms (4.2×: it keeps a stack of
//!   open elements for its selectors). lol_html is faster (by 4–17 %) only on flat junk: NUL
//!   floods, unterminated attributes and titles. Sum over the 13 pages: 26.6 ms vs 40.2 ms (1.5×);
//!   tokenizer alone 8.7 vs 21.9 ms (2.5×).
//!
//! Both stay linear on the adversarial pages (lol_html, with `strict` off, also reads every page);
//! the skimmer costs no dependency and borrows every tag from the input instead of copying it.

use super::{is_space, skip_spaces};

/// Rewrites `html` as a flat document of the tags [`extract`](fn@super::extract) reads: the first
/// HTML `<title>` and every `<meta content>`, `<link rel href>` and `<base href>`, with only those
/// attributes, copied as written so that scraper decodes them exactly as it would have on the page
/// (why scraper never sees the page itself is told in [`extract`](mod@super::extract)).
pub(super) fn skim(html: &str) -> String {
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
pub(super) struct Tag<'a> {
    /// The name as written.
    name: &'a str,
    /// The source between the name and the closing `>`, read by [`Tag::attrs`].
    attrs: &'a str,
    /// Inside `<svg>` or `<math>`: not HTML (an SVG `<title>` is a tooltip, not the page's title).
    foreign: bool,
    /// Content of a raw-text element ([`RAW_TEXT_ELEMENTS`]), as written.
    pub(super) text: Option<&'a str>,
}

impl<'a> Tag<'a> {
    /// Whether this is the HTML element `name`.
    pub(super) fn is(&self, name: &str) -> bool {
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
    pub(super) fn attr(&self, name: &str) -> Option<Attr<'a>> {
        self.attrs().find(|attr| attr.name.eq_ignore_ascii_case(name))
    }
}

/// An attribute as written: entities are not decoded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attr<'a> {
    name: &'a str,
    /// The value with its quotes, if any; empty when the attribute has no value.
    written: &'a str,
    /// The value without quotes.
    pub(super) value: &'a str,
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
pub(super) struct Skimmer<'a> {
    src: &'a str,
    pos: usize,
    /// How deep inside `<svg>`/`<math>` we are (0: in HTML).
    foreign_depth: usize,
}

impl<'a> Skimmer<'a> {
    pub(super) fn new(src: &'a str) -> Self {
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

#[cfg(test)]
mod tests {
    use crate::scrape::extract;
    use crate::scrape::test_support::{check_field, page_url};

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

    #[test]
    fn an_svg_title_in_the_body_is_not_the_page_title() {
        let html = r#"<html><body><svg><title>Icon tooltip</title></svg><meta property="og:title" content="OG"></body></html>"#;
        assert_eq!(extract(html, &page_url()).title.as_deref(), Some("OG"));
    }
}
