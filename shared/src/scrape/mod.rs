//! The scrape: title, description, image, favicon and site name from a fetched page.
//!
//! Pure and synchronous (no I/O): the `refresh` job fetches a page, then calls
//!
//! - [`head_stop`] (a [`HeadScanner`]) while reading, to stop once the `<head>` is complete
//!   (metadata lives there);
//! - [`decode_html`] to turn the bytes into text with the charset the page declares, or the one
//!   it looks like when it declares none;
//! - [`is_challenge_page`] to recognise bot challenges and interstitials, whose metadata
//!   ("Just a moment...") must never overwrite good values;
//! - [`extract()`](fn@extract) to read the [`PageMetadata`].
//!
//! Everything here accepts hostile input: work is linear in the input and bounded by
//! [`MAX_HEAD_BYTES`], nothing panics, and junk comes out as `None` rather than as an error.
//!
//! # Layout
//!
//! - [`head`]: where the head ends, found while the body streams in; the byte cap.
//! - [`charset`]: bytes to text (BOM → `Content-Type` → `<meta charset>` → detected → UTF-8).
//! - `skim`: the linear tag tokenizer that copies the few tags we read into a flat document for
//!   scraper (why it is hand-written rather than `lol_html`, with the numbers, is told there).
//! - [`challenge`]: bot challenge and interstitial pages.
//! - [`mod@extract`]: the metadata and its caps, from the skimmed tags (why scraper never sees
//!   the page itself is told there).
//! - Tests only: `hostile_tests` (hostile and random pages against the whole scrape),
//!   `test_support`.

pub mod challenge;
pub mod charset;
pub mod extract;
pub mod head;
mod skim;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod test_support;

pub use challenge::is_challenge_page;
pub use charset::{decode_html, decode_page};
pub use extract::{MAX_DESCRIPTION_CHARS, PageMetadata, clean_text, extract};
pub use head::{HeadScanner, MAX_HEAD_BYTES, head_end, head_stop};

/// HTML's ASCII whitespace (TAB, LF, FF, CR, SPACE).
fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\x0C' | b'\r' | b' ')
}

/// Index of the first byte at or after `at` that is not HTML whitespace (or the end).
fn skip_spaces(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(|&b| is_space(b)) {
        at += 1;
    }
    at
}

/// The longest prefix of `text` no longer than `max_bytes` that ends on a char boundary.
fn prefix_at_most(text: &str, max_bytes: usize) -> &str {
    &text[..text.floor_char_boundary(max_bytes)]
}
