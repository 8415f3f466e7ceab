//! Netscape bookmarks HTML: what Firefox, Chrome, Linkwarden and Karakeep export, and what
//! `links export --format html` writes (browsers and this reader import it back).
//!
//! The format is loose HTML: `<DT><A HREF="…" ADD_DATE="…">title</A>` per bookmark inside nested
//! `<DL><p>` lists, `<DT><H3>` for folders, entities in titles and URLs. It is read with
//! html5ever's tokenizer (the one under scraper), fed line by line: a tokenizer streams and stays
//! linear, where building a document (scraper) would hold the whole file in memory and its tree
//! builder is superlinear on hostile nesting. A line that is not UTF-8, or longer than
//! [`MAX_HTML_LINE_BYTES`], is reported and left out; markup left open for more than that many
//! bytes (an unterminated quote) is reported too and the tokenizer starts afresh.

use linkpulse_util::text::html_escape_into as escape_into;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::BufRead;
use std::rc::Rc;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::{
    BufferQueue, CharacterTokens, EndTag, StartTag, TagToken, Token, TokenSink, TokenSinkResult, Tokenizer,
    TokenizerOpts,
};

use super::lines::{LineReader, too_long};
use super::{Entry, Item, MAX_TITLE_CHARS, ReadError, Rejected, clean_title, invalid_utf8, shown};

/// The first line of a Netscape bookmarks file.
pub const DOCTYPE: &str = "<!DOCTYPE NETSCAPE-Bookmark-file-1>";

/// Longest line of a bookmarks file: larger than for other formats because browsers put each
/// bookmark's favicon in its line as a `data:` URI (`ICON="data:image/png;base64,…"`).
pub const MAX_HTML_LINE_BYTES: usize = 1024 * 1024;

/// What [`write_entry`] output starts with (as Firefox writes it).
pub const HEADER: &str = "<!DOCTYPE NETSCAPE-Bookmark-file-1>
<!-- This is an automatically generated file.
     It will be read and overwritten.
     DO NOT EDIT! -->
<META HTTP-EQUIV=\"Content-Type\" CONTENT=\"text/html; charset=UTF-8\">
<TITLE>Bookmarks</TITLE>
<H1>Bookmarks</H1>
<DL><p>
";

/// What the output ends with.
pub const FOOTER: &str = "</DL><p>\n";

/// Appends one bookmark line: `url` and `title` escaped, `added` as `ADD_DATE` (Unix seconds).
/// A link without a title gets an empty one (browsers show the URL), so that importing the file
/// back does not make the URL its title.
pub fn write_entry(out: &mut String, url: &str, title: Option<&str>, added: Option<i64>) {
    out.push_str("    <DT><A HREF=\"");
    escape_into(out, url);
    out.push('"');
    if let Some(added) = added {
        out.push_str(&format!(" ADD_DATE=\"{added}\""));
    }
    out.push('>');
    escape_into(out, title.unwrap_or_default());
    out.push_str("</A>\n");
}

/// A bookmark whose `</A>` has not come yet.
#[derive(Debug)]
struct Anchor {
    line: u64,
    href: String,
    title: String,
    title_chars: usize,
}

/// What the token sink shares with the reader.
#[derive(Debug, Default)]
struct SinkState {
    /// The line being fed.
    line: Cell<u64>,
    /// Tokens seen so far (to notice markup that never ends).
    tokens: Cell<u64>,
    anchor: RefCell<Option<Anchor>>,
    items: RefCell<VecDeque<Item>>,
}

impl SinkState {
    /// Emits the open bookmark, if any.
    fn close_anchor(&self) {
        if let Some(anchor) = self.anchor.borrow_mut().take() {
            let url = anchor.href.trim().to_owned();
            // A title that is the URL itself says nothing (our own export of an untitled link,
            // some exporters' fallback).
            let title = clean_title(&anchor.title).filter(|title| *title != url);
            self.items.borrow_mut().push_back(Item::Entry(Entry {
                line: anchor.line,
                url,
                title,
            }));
        }
    }
}

/// html5ever's token sink: `<A HREF>` opens a bookmark, its text is the title, `</A>` (or the next
/// list item, folder or list) closes it.
struct Sink(Rc<SinkState>);

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let state = &self.0;
        state.tokens.set(state.tokens.get() + 1);
        match token {
            TagToken(tag) => match (tag.kind, &*tag.name) {
                (StartTag, "a") => {
                    state.close_anchor();
                    let href = tag
                        .attrs
                        .iter()
                        .find(|a| &*a.name.local == "href")
                        .map(|a| a.value.to_string());
                    if let Some(href) = href {
                        *state.anchor.borrow_mut() = Some(Anchor {
                            line: state.line.get(),
                            href,
                            title: String::new(),
                            title_chars: 0,
                        });
                    }
                }
                (EndTag, "a") | (_, "dt" | "dl" | "dd" | "h3") => state.close_anchor(),
                _ => {}
            },
            CharacterTokens(text) => {
                if let Some(anchor) = state.anchor.borrow_mut().as_mut() {
                    for c in text.chars().take(MAX_TITLE_CHARS.saturating_sub(anchor.title_chars)) {
                        anchor.title.push(c);
                        anchor.title_chars += 1;
                    }
                }
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

fn tokenizer(state: &Rc<SinkState>) -> Tokenizer<Sink> {
    Tokenizer::new(Sink(Rc::clone(state)), TokenizerOpts::default())
}

/// The bookmarks of a Netscape HTML file, in file order.
pub struct NetscapeFormat<R> {
    lines: LineReader<R>,
    state: Rc<SinkState>,
    tokenizer: Tokenizer<Sink>,
    /// Bytes fed since the last token: markup left open.
    open_bytes: usize,
    /// The last line that produced a token: open markup started there or after it.
    open_line: u64,
    finished: bool,
}

impl<R> std::fmt::Debug for NetscapeFormat<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetscapeFormat")
            .field("state", &self.state)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl<R: BufRead> NetscapeFormat<R> {
    /// Reads bookmarks from `inner`.
    pub fn new(inner: R) -> Self {
        let state = Rc::new(SinkState::default());
        Self {
            lines: LineReader::new(inner, MAX_HTML_LINE_BYTES),
            tokenizer: tokenizer(&state),
            state,
            open_bytes: 0,
            open_line: 1,
            finished: false,
        }
    }

    fn reject(&self, line: u64, input: String, reason: String) {
        self.state
            .items
            .borrow_mut()
            .push_back(Item::Rejected(Rejected { line, input, reason }));
    }

    /// Reads and tokenizes the next line; `false` at the end of the input.
    fn feed_line(&mut self) -> Result<bool, ReadError> {
        let Some(line) = self.lines.next_line()? else {
            self.tokenizer.end();
            self.state.close_anchor();
            return Ok(false);
        };
        let (number, len, too) = (line.number, line.len, line.too_long);
        if too {
            let input = shown(line.bytes);
            self.reject(number, input, too_long(len, MAX_HTML_LINE_BYTES));
            return Ok(true);
        }
        let text = match std::str::from_utf8(line.bytes) {
            Ok(text) => text,
            Err(e) => {
                let input = shown(line.bytes);
                self.reject(number, input, invalid_utf8(&e));
                return Ok(true);
            }
        };
        let before = self.state.tokens.get();
        self.state.line.set(number);
        let queue = BufferQueue::default();
        let mut chunk = StrTendril::from_slice(text);
        chunk.push_char('\n');
        queue.push_back(chunk);
        let _ = self.tokenizer.feed(&queue);
        if self.state.tokens.get() != before {
            self.open_bytes = 0;
            self.open_line = number;
        } else {
            self.open_bytes += text.len() + 1;
            if self.open_bytes > MAX_HTML_LINE_BYTES {
                let reason = format!(
                    "markup left open for more than {} KiB (unterminated quote or comment?): lines after this one up to {number} skipped",
                    MAX_HTML_LINE_BYTES / 1024
                );
                self.reject(self.open_line, String::new(), reason);
                self.state.anchor.borrow_mut().take();
                self.tokenizer = tokenizer(&self.state);
                self.open_bytes = 0;
            }
        }
        Ok(true)
    }
}

impl<R: BufRead> Iterator for NetscapeFormat<R> {
    type Item = Result<Item, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.state.items.borrow_mut().pop_front() {
                return Some(Ok(item));
            }
            if self.finished {
                return None;
            }
            match self.feed_line() {
                Ok(true) => {}
                Ok(false) => self.finished = true,
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> Vec<Item> {
        NetscapeFormat::new(input).map(|i| i.expect("item")).collect()
    }

    fn entries(items: &[Item]) -> Vec<(u64, &str, Option<&str>)> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Entry(e) => Some((e.line, e.url.as_str(), e.title.as_deref())),
                Item::Rejected(_) => None,
            })
            .collect()
    }

    const FIREFOX: &str = r#"<!DOCTYPE NETSCAPE-Bookmark-file-1>
<!-- This is an automatically generated file. -->
<META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=UTF-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'self'; script-src 'none'; img-src data: *; object-src 'none'"></meta>
<TITLE>Bookmarks</TITLE>
<H1>Bookmarks Menu</H1>
<DL><p>
    <DT><H3 ADD_DATE="1700000000" LAST_MODIFIED="1700000001">Rust &amp; friends</H3>
    <DL><p>
        <DT><A HREF="https://www.rust-lang.org/?a=1&amp;b=2" ADD_DATE="1700000002" ICON="data:image/png;base64,iVBORw0KGgo=">Rust &lt;lang&gt; &#8212; &quot;home&quot;</A>
        <DD>A description that is not the title
        <DT><A HREF="https://docs.rs/" ADD_DATE="1700000003" TAGS="docs,rust">Docs.rs</A>
    </DL><p>
    <DT><A HREF="https://example.com/untitled"></A>
    <DT><A HREF="https://example.com/split">Split
      across lines</A>
    <DT><A NAME="no-href">not a bookmark</A>
    <DT><A HREF="place:sort=8&maxResults=10">Recent Tags</A>
</DL><p>
"#;

    #[test]
    fn bookmarks_are_read_with_their_titles_and_lines() {
        let items = read(FIREFOX.as_bytes());
        assert_eq!(
            entries(&items),
            [
                (
                    10,
                    "https://www.rust-lang.org/?a=1&b=2",
                    Some("Rust <lang> \u{2014} \"home\"")
                ),
                (12, "https://docs.rs/", Some("Docs.rs")),
                (14, "https://example.com/untitled", None),
                (15, "https://example.com/split", Some("Split across lines")),
                (18, "place:sort=8&maxResults=10", Some("Recent Tags")),
            ]
        );
        assert_eq!(items.len(), 5, "no rejection");
    }

    #[test]
    fn what_we_write_reads_back_the_same() {
        let mut out = String::from(HEADER);
        let links = [
            ("https://example.com/a?x=1&y=\"2\"", Some("A & B <c> 'd'")),
            ("https://example.com/b", None),
            ("https://example.com/c", Some("https://example.com/c")),
        ];
        for (url, title) in links {
            write_entry(&mut out, url, title, Some(1_700_000_000));
        }
        out.push_str(FOOTER);
        assert!(
            out.contains("HREF=\"https://example.com/a?x=1&amp;y=&quot;2&quot;\""),
            "{out}"
        );
        let read_back = read(out.as_bytes());
        assert_eq!(
            entries(&read_back),
            [
                (9, links[0].0, links[0].1),
                (10, links[1].0, None),
                (11, links[2].0, None),
            ]
        );
    }

    #[test]
    fn bad_lines_are_reported_and_the_rest_is_read() {
        let mut input =
            b"<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n<DT><A HREF=\"https://a.example/\">A\xff</A>\n".to_vec();
        input.extend_from_slice(b"<DT><A HREF=\"https://b.example/\" ICON=\"");
        input.extend_from_slice(&vec![b'x'; MAX_HTML_LINE_BYTES]);
        input.extend_from_slice(b"\">B</A>\n<DT><A HREF=\"https://c.example/\">C</A>\n</DL>\n");
        let items = read(&input);
        assert!(matches!(&items[0], Item::Rejected(r) if r.line == 3 && r.reason.starts_with("invalid UTF-8")));
        assert!(matches!(&items[1], Item::Rejected(r) if r.line == 4 && r.reason.contains("longer than")));
        assert_eq!(entries(&items), [(5, "https://c.example/", Some("C"))]);
    }

    #[test]
    fn markup_left_open_is_reported_and_reading_resumes() {
        let mut input = b"<DL><p>\n<DT><A HREF=\"https://a.example/\n".to_vec();
        for _ in 0..(MAX_HTML_LINE_BYTES / 1000 + 10) {
            input.extend_from_slice(&[b'x'; 999]);
            input.push(b'\n');
        }
        input.extend_from_slice(b"<DT><A HREF=\"https://b.example/\">B</A>\n");
        let items = read(&input);
        assert!(
            matches!(&items[0], Item::Rejected(r) if r.line == 2 && r.reason.contains("left open")),
            "{items:?}"
        );
        assert_eq!(
            entries(&items).last(),
            Some(&(last_line(&input), "https://b.example/", Some("B")))
        );
    }

    fn last_line(input: &[u8]) -> u64 {
        input.iter().filter(|b| **b == b'\n').count() as u64
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        let mut out = String::new();
        escape_into(&mut out, "<a href=\"x\">'&'</a>");
        assert_eq!(out, "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
