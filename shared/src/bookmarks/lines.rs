//! Lines of bytes with a length cap, and the one-URL-per-line format on top of them.
//!
//! `BufRead::read_line` would need valid UTF-8 (one bad byte fails the whole import) and
//! `read_until` buffers a line however long it is; this reader keeps at most `cap` bytes of a
//! line, skips the rest, and says how long the line really was.

use std::io::{self, BufRead};

use super::{Entry, Item, MAX_LINE_BYTES, ReadError, Rejected, invalid_utf8, shown, strip_bom};

/// One line as read.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// 1-based line number.
    pub number: u64,
    /// The line without its `\n` or `\r\n`, or its first `cap` bytes when it is longer.
    pub bytes: &'a [u8],
    /// Its real length without the line ending.
    pub len: u64,
    /// Longer than the cap: `bytes` holds only the start.
    pub too_long: bool,
}

/// Reads lines of at most `cap` bytes from a `BufRead`, in bounded memory.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    cap: usize,
    number: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    /// Lines of `inner`, each held up to `cap` bytes.
    pub fn new(inner: R, cap: usize) -> Self {
        Self {
            inner,
            cap,
            number: 0,
            buf: Vec::new(),
        }
    }

    /// The next line, or `None` at the end of the input.
    ///
    /// # Errors
    ///
    /// If the input fails.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        // Two bytes more than the cap: room for a `\r\n` after a line of exactly `cap` bytes.
        let keep = self.cap + 2;
        let mut total: u64 = 0;
        let mut ended = false;
        // The byte before the `\n` (to tell `\r\n`), which a long line no longer has in `buf`.
        let mut last: Option<u8> = None;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                break;
            }
            let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
                Some(i) => (&available[..=i], true),
                None => (available, false),
            };
            let room = keep.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            total += chunk.len() as u64;
            let before = if done {
                chunk.len().checked_sub(2)
            } else {
                chunk.len().checked_sub(1)
            };
            if let Some(at) = before {
                last = Some(chunk[at]);
            }
            let used = chunk.len();
            self.inner.consume(used);
            if done {
                ended = true;
                break;
            }
        }
        if total == 0 {
            return Ok(None);
        }
        self.number += 1;
        let ending: usize = match (ended, last) {
            (false, _) => 0,
            (true, Some(b'\r')) => 2,
            (true, _) => 1,
        };
        let len = total - ending as u64;
        let too_long = len > self.cap as u64;
        let kept = if too_long { self.cap } else { self.buf.len() - ending };
        Ok(Some(Line {
            number: self.number,
            bytes: &self.buf[..kept],
            len,
            too_long,
        }))
    }
}

/// The reason of a line longer than `cap`.
pub fn too_long(len: u64, cap: usize) -> String {
    format!("line is {len} bytes long, longer than the limit of {} KiB", cap / 1024)
}

/// One URL per line; blank lines and lines starting with `#` are skipped.
#[derive(Debug)]
pub struct LinesFormat<R> {
    lines: LineReader<R>,
}

impl<R: BufRead> LinesFormat<R> {
    /// Reads `inner` with lines capped at [`MAX_LINE_BYTES`].
    pub fn new(inner: R) -> Self {
        Self {
            lines: LineReader::new(inner, MAX_LINE_BYTES),
        }
    }
}

impl<R: BufRead> Iterator for LinesFormat<R> {
    type Item = Result<Item, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(e) => return Some(Err(e.into())),
            };
            let bytes = if line.number == 1 {
                strip_bom(line.bytes)
            } else {
                line.bytes
            };
            let rejected = |reason: String| {
                Some(Ok(Item::Rejected(Rejected {
                    line: line.number,
                    input: shown(bytes),
                    reason,
                })))
            };
            if line.too_long {
                return rejected(too_long(line.len, MAX_LINE_BYTES));
            }
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => text.trim(),
                Err(e) => return rejected(invalid_utf8(&e)),
            };
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            return Some(Ok(Item::Entry(Entry {
                line: line.number,
                url: text.to_owned(),
                title: None,
            })));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], cap: usize) -> Vec<(u64, Vec<u8>, u64, bool)> {
        let mut reader = LineReader::new(input, cap);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().expect("read") {
            out.push((line.number, line.bytes.to_vec(), line.len, line.too_long));
        }
        out
    }

    #[test]
    fn line_endings_are_stripped_and_counted() {
        assert_eq!(
            lines(b"a\r\nbb\n\nccc", 10),
            [
                (1, b"a".to_vec(), 1, false),
                (2, b"bb".to_vec(), 2, false),
                (3, b"".to_vec(), 0, false),
                (4, b"ccc".to_vec(), 3, false),
            ]
        );
        assert_eq!(lines(b"", 10), []);
        assert_eq!(lines(b"\n", 10), [(1, b"".to_vec(), 0, false)]);
    }

    #[test]
    fn a_line_at_the_cap_fits_and_one_past_it_does_not() {
        assert_eq!(lines(b"abcd\r\n", 4), [(1, b"abcd".to_vec(), 4, false)]);
        assert_eq!(
            lines(b"abcde\nx\n", 4),
            [(1, b"abcd".to_vec(), 5, true), (2, b"x".to_vec(), 1, false)]
        );
    }

    #[test]
    fn a_huge_line_is_never_held_whole() {
        let mut input = vec![b'a'; 10 * 1024 * 1024];
        input.extend_from_slice(b"\nnext\n");
        let mut reader = LineReader::new(std::io::BufReader::new(&input[..]), 1024);
        let line = reader.next_line().expect("read").expect("line");
        assert!(line.too_long);
        assert_eq!(line.len, 10 * 1024 * 1024);
        assert_eq!(line.bytes.len(), 1024);
        assert!(reader.buf.capacity() < 4096, "buffer grew to {}", reader.buf.capacity());
        let next = reader.next_line().expect("read").expect("line");
        assert_eq!((next.number, next.bytes), (2, &b"next"[..]));
    }

    #[test]
    fn bad_lines_are_rejected_with_their_number_and_the_rest_is_read() {
        let mut input =
            b"\xef\xbb\xbfhttps://a.example/\n# comment\n\n  https://b.example/  \nhttps://bad\xff.example/\n".to_vec();
        input.extend_from_slice(&vec![b'x'; MAX_LINE_BYTES + 1]);
        input.extend_from_slice(b"\nhttps://c.example/");
        let items: Vec<Item> = LinesFormat::new(&input[..]).map(|i| i.expect("item")).collect();
        let summary: Vec<(u64, &str)> = items
            .iter()
            .map(|i| match i {
                Item::Entry(e) => (e.line, e.url.as_str()),
                Item::Rejected(r) => (r.line, r.reason.as_str()),
            })
            .collect();
        assert_eq!(summary[0], (1, "https://a.example/"));
        assert_eq!(summary[1], (4, "https://b.example/"));
        assert_eq!(summary[2], (5, "invalid UTF-8 at byte 12"));
        assert_eq!(summary[3].0, 6);
        assert!(
            summary[3].1.contains("longer than the limit of 64 KiB"),
            "{}",
            summary[3].1
        );
        assert_eq!(summary[4], (7, "https://c.example/"));
        assert_eq!(summary.len(), 5);
        let Item::Rejected(long) = &items[3] else {
            panic!("rejected")
        };
        assert!(long.input.chars().count() <= super::super::SHOWN_INPUT_CHARS + 1);
    }
}
