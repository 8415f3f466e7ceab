//! Where a page's head ends, found while its body streams in: the scrape reads no further.

use super::{is_space, prefix_at_most};

/// Longest HTML prefix worth reading: stop at `</head>` or this many bytes.
///
/// Metadata sits in the head; a head larger than this is either inlined assets we don't need or
/// hostile, and reading more would only cost time and memory.
pub const MAX_HEAD_BYTES: usize = 512 * 1024;

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

impl crate::fetch::StopAt for HeadScanner {
    fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        HeadScanner::feed(self, chunk)
    }
}

/// A fresh [`HeadScanner`] for [`crate::fetch::FetchRequest::stop_at`]: the scrape reads a page
/// only up to the end of its head.
pub fn head_stop() -> Box<dyn crate::fetch::StopAt> {
    Box::new(HeadScanner::default())
}

/// The part of `html` worth reading: up to `</head>` when there is one, else [`MAX_HEAD_BYTES`].
pub(super) fn head_prefix(html: &str) -> &str {
    match head_end(html.as_bytes()) {
        // `head_end` ends just after an ASCII `>`, so this is a char boundary.
        Some(end) => html.get(..end).unwrap_or(html),
        None => prefix_at_most(html, MAX_HEAD_BYTES),
    }
}

#[cfg(test)]
mod tests {
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
}
