//! The files people move links around in: one URL per line, CSV with a `url` column, and browser
//! bookmarks (the Netscape HTML that Firefox, Chrome, Linkwarden and Karakeep export), read as
//! streams of [`Item`]s; and the bookmarks file written back ([`netscape::HEADER`] and friends).
//!
//! Every reader holds at most one line (one CSV record) of its input at a time, so a file of a
//! million lines is read in bounded memory, and a line that cannot be read (invalid UTF-8, longer
//! than the cap, a CSV row without a URL) becomes a [`Rejected`] item with its line number while
//! reading goes on: one bad byte must not lose the rest of somebody's collection. URLs are not
//! validated here; that is [`crate::link_url`]'s job.
//!
//! # Layout
//!
//! - this file: [`Format`], its detection by content, [`read`], the items.
//! - [`lines`]: the capped line reader under every format, and the one-URL-per-line format.
//! - [`csv`]: CSV with a header naming a `url` column (and maybe `title`).
//! - [`netscape`]: the bookmarks HTML, read with html5ever's tokenizer and written.

pub mod csv;
pub mod lines;
pub mod netscape;

use std::io::{self, BufRead, Cursor, Read};

/// Longest line (CSV record) read; a longer one is rejected without being held in memory. No URL
/// is near this (they are capped at 2,048 characters once normalised).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Most characters of a rejected input shown back in its report.
pub const SHOWN_INPUT_CHARS: usize = 200;

/// Most characters of a title kept (a page's `<title>` is rarely a tenth of it; a longer one is a
/// description pasted in the wrong column).
pub const MAX_TITLE_CHARS: usize = 2048;

/// `text` with its runs of whitespace folded to one space, cut at [`MAX_TITLE_CHARS`]; `None`
/// when nothing is left.
pub fn clean_title(text: &str) -> Option<String> {
    let mut title = String::new();
    for word in text.split_whitespace() {
        if !title.is_empty() {
            title.push(' ');
        }
        title.push_str(word);
        if title.len() >= MAX_TITLE_CHARS * 4 {
            break;
        }
    }
    let title: String = title.chars().take(MAX_TITLE_CHARS).collect();
    (!title.is_empty()).then_some(title)
}

/// A file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One URL per line; blank lines and `#` comments skipped.
    Lines,
    /// CSV whose header names a `url` column.
    Csv,
    /// Netscape bookmarks HTML.
    Html,
}

impl Format {
    /// Every format, by name.
    pub const NAMES: [&'static str; 3] = ["lines", "csv", "html"];

    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lines => "lines",
            Self::Csv => "csv",
            Self::Html => "html",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lines" => Ok(Self::Lines),
            "csv" => Ok(Self::Csv),
            "html" => Ok(Self::Html),
            other => Err(format!("unknown format {other:?} (expected lines, csv or html)")),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A URL found in the input, as written (trimmed, not validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line where it starts.
    pub line: u64,
    /// The URL.
    pub url: String,
    /// Its title, when the format carries one (bookmarks, a CSV `title` column).
    pub title: Option<String>,
}

/// A line that could not be read, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based line.
    pub line: u64,
    /// What it held, shortened for display ([`shown`]).
    pub input: String,
    /// Why it was skipped.
    pub reason: String,
}

/// One step of reading a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A URL.
    Entry(Entry),
    /// A line skipped, with its reason.
    Rejected(Rejected),
}

/// A file that cannot be read at all (as opposed to a bad line, which is an [`Item`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The input failed.
    #[error("cannot read input: {0}")]
    Io(#[from] io::Error),
    /// `--format csv` on a file whose header has no `url` column.
    #[error("the CSV header has no `url` column (header: {0})")]
    NoUrlColumn(String),
}

/// The items of a file.
pub type Items<'a> = Box<dyn Iterator<Item = Result<Item, ReadError>> + 'a>;

/// The format of a file from its first line: the Netscape doctype, a CSV header with a `url`
/// column, or else lines.
pub fn detect(first_line: &[u8]) -> Format {
    let head = strip_bom(first_line);
    let start = head.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(head.len());
    let head = &head[start..];
    let doctype = netscape::DOCTYPE.as_bytes();
    if head.len() >= doctype.len() && head[..doctype.len()].eq_ignore_ascii_case(doctype) {
        return Format::Html;
    }
    if csv::header_columns(head).iter().any(|c| c == "url") {
        return Format::Csv;
    }
    Format::Lines
}

/// Reads `reader` as `format`, or as the format its first line shows ([`detect`]).
///
/// # Errors
///
/// [`ReadError`] if the first line cannot be read, or a CSV file has no `url` column.
pub fn read<'a, R: BufRead + 'a>(mut reader: R, format: Option<Format>) -> Result<(Format, Items<'a>), ReadError> {
    let head = read_head(&mut reader)?;
    let format = format.unwrap_or_else(|| detect(&head));
    let whole = Cursor::new(head).chain(reader);
    let items: Items<'a> = match format {
        Format::Lines => Box::new(lines::LinesFormat::new(whole)),
        Format::Csv => Box::new(csv::CsvFormat::new(whole)?),
        Format::Html => Box::new(netscape::NetscapeFormat::new(whole)),
    };
    Ok((format, items))
}

/// The first line of `reader` (with its newline), or its first [`MAX_LINE_BYTES`] + 1 bytes:
/// enough to detect the format, consumed exactly so that it can be put back in front.
fn read_head<R: BufRead>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    while head.len() <= MAX_LINE_BYTES {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        let room = MAX_LINE_BYTES + 1 - head.len();
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) if i < room => (i + 1, true),
            _ => (available.len().min(room), false),
        };
        head.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            break;
        }
    }
    Ok(head)
}

/// `bytes` without a leading UTF-8 byte order mark.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
}

/// `bytes` for display in a report: invalid UTF-8 replaced, cut at [`SHOWN_INPUT_CHARS`].
pub fn shown(bytes: &[u8]) -> String {
    shorten(&String::from_utf8_lossy(bytes))
}

/// `text` cut at [`SHOWN_INPUT_CHARS`] characters, with `…` when cut.
pub fn shorten(text: &str) -> String {
    match text.char_indices().nth(SHOWN_INPUT_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The reason of a line that is not UTF-8.
fn invalid_utf8(error: &std::str::Utf8Error) -> String {
    format!("invalid UTF-8 at byte {}", error.valid_up_to() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(input: &[u8], format: Option<Format>) -> (Format, Vec<Item>) {
        let (format, items) = read(input, format).expect("readable");
        (format, items.map(|i| i.expect("item")).collect())
    }

    #[test]
    fn the_format_is_detected_from_the_first_line() {
        assert_eq!(detect(b"<!DOCTYPE NETSCAPE-Bookmark-file-1>\n"), Format::Html);
        assert_eq!(
            detect(b"\xef\xbb\xbf  <!doctype netscape-bookmark-file-1>"),
            Format::Html
        );
        assert_eq!(detect(b"id,URL,title\n"), Format::Csv);
        assert_eq!(detect(b"\"url\",\"note, with comma\"\r\n"), Format::Csv);
        assert_eq!(detect(b"https://example.com/\n"), Format::Lines);
        assert_eq!(detect(b"https://example.com/?url,x\n"), Format::Lines);
        assert_eq!(detect(b"<!DOCTYPE html>\n"), Format::Lines);
        assert_eq!(detect(b""), Format::Lines);
    }

    #[test]
    fn read_puts_the_detection_line_back() {
        let (format, got) = items(b"url,title\nhttps://a.example/,A\n", None);
        assert_eq!(format, Format::Csv);
        assert_eq!(
            got,
            [Item::Entry(Entry {
                line: 2,
                url: "https://a.example/".into(),
                title: Some("A".into())
            })]
        );
        let (format, got) = items(b"https://a.example/\nhttps://b.example/", None);
        assert_eq!(format, Format::Lines);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn an_explicit_format_wins_over_detection() {
        let (format, got) = items(b"url\nhttps://a.example/\n", Some(Format::Lines));
        assert_eq!(format, Format::Lines);
        assert_eq!(got.len(), 2, "the header is a line like any other");
        let err = read(&b"https://a.example/\n"[..], Some(Format::Csv))
            .err()
            .expect("no url column");
        assert!(matches!(err, ReadError::NoUrlColumn(_)), "{err}");
    }

    #[test]
    fn a_first_line_longer_than_the_cap_is_still_read_whole() {
        let mut input = vec![b'x'; MAX_LINE_BYTES * 3];
        input.extend_from_slice(b"\nhttps://a.example/\n");
        let (format, got) = items(&input, None);
        assert_eq!(format, Format::Lines);
        assert!(matches!(&got[0], Item::Rejected(r) if r.line == 1 && r.reason.contains("longer than")));
        assert!(matches!(&got[1], Item::Entry(e) if e.line == 2));
    }

    #[test]
    fn titles_are_folded_and_capped() {
        assert_eq!(clean_title("  two\n lines\t here "), Some("two lines here".to_owned()));
        assert_eq!(clean_title(" \n "), None);
        let long = clean_title(&"é ".repeat(MAX_TITLE_CHARS * 3)).expect("title");
        assert_eq!(long.chars().count(), MAX_TITLE_CHARS);
    }

    #[test]
    fn shown_input_is_cut_and_lossy() {
        assert_eq!(shown(b"ab\xffc"), "ab\u{fffd}c");
        let long = "é".repeat(SHOWN_INPUT_CHARS + 5);
        let cut = shorten(&long);
        assert_eq!(cut.chars().count(), SHOWN_INPUT_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(
            Format::NAMES.map(|n| n.parse::<Format>().map(Format::as_str)),
            Format::NAMES.map(Ok)
        );
    }
}
