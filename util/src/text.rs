//! Text PostgreSQL always accepts and people may read: error text of jobs and links.

/// Longest error text kept (characters): a hostile server's endless reason must not bloat rows.
pub const MAX_ERROR_CHARS: usize = 2000;

/// Error text PostgreSQL will always accept: no NUL (text columns refuse it, and one bad row
/// would fail the whole batch), bounded length. Also used for the links' error text.
///
/// URLs in it lose their query strings and credentials first ([`crate::redact::urls_in`]): error
/// text is shown by the API and the dashboard, and a saved link's query can hold a token.
pub fn storable(error: &str) -> String {
    let error = crate::redact::urls_in(error);
    let mut text: String = error.chars().filter(|c| *c != '\0').take(MAX_ERROR_CHARS).collect();
    if error.chars().count() > MAX_ERROR_CHARS {
        text.push('…');
    }
    text
}
/// HTML-escapes `text` into `out`, safe in element content and in single- or double-quoted
/// attribute values: the one escaper of the dashboard's pages and the bookmarks export.
pub fn html_escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// [`html_escape_into`] a new string.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    html_escape_into(&mut out, text);
    out
}
