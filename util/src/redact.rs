//! Keeping secrets out of stored and shown text.
//!
//! Saved links carry tokens in their query strings (`?token=…`, signed URLs) and sometimes
//! credentials in their userinfo. Traces already record hosts only; everything that stores or
//! shows error text (job errors, audit details, the API, the dashboard, logs) goes through
//! [`urls_in`], which keeps each URL's scheme, host, port and path and drops the rest.

use std::borrow::Cow;

use url::Url;

/// What replaces a removed query string.
pub const REDACTED_QUERY: &str = "?redacted";

/// `url` without userinfo, query or fragment; a removed query shows as [`REDACTED_QUERY`] so a
/// reader knows there was one.
pub fn url(url: &Url) -> String {
    let mut clean = url.clone();
    let had_query = clean.query().is_some_and(|q| !q.is_empty());
    clean.set_query(None);
    clean.set_fragment(None);
    // Both fail only for URLs that cannot have userinfo (no host), which then have none.
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    let mut text = clean.to_string();
    if had_query {
        text.push_str(REDACTED_QUERY);
    }
    text
}

/// `text` with every `http://` / `https://` URL in it passed through [`url`]. URLs that do not
/// parse lose everything after a `?` and before an `@` all the same.
pub fn urls_in(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    if !lower.contains("http://") && !lower.contains("https://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut rest_lower = lower.as_str();
    while let Some(start) = next_url_start(rest_lower) {
        out.push_str(&rest[..start]);
        let token_len = rest[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '(' | ')' | '`'))
            .unwrap_or(rest.len() - start);
        let token = &rest[start..start + token_len];
        // A URL quoted in a sentence often ends with punctuation that is not part of it.
        let trimmed = token.trim_end_matches(['.', ',', ';', ':', ']', '}']);
        out.push_str(&redact_token(trimmed));
        out.push_str(&token[trimmed.len()..]);
        rest = &rest[start + token_len..];
        rest_lower = &rest_lower[start + token_len..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn next_url_start(lower: &str) -> Option<usize> {
    match (lower.find("http://"), lower.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn redact_token(token: &str) -> String {
    if let Ok(parsed) = Url::parse(token) {
        return url(&parsed);
    }
    let (scheme, after) = token.split_once("://").unwrap_or(("", token));
    let mut cut = after.to_owned();
    if let Some(q) = cut.find(['?', '#']) {
        cut.truncate(q);
        cut.push_str(REDACTED_QUERY);
    }
    let authority_end = cut.find('/').unwrap_or(cut.len());
    if let Some(at) = cut[..authority_end].rfind('@') {
        cut.replace_range(..=at, "");
    }
    format!("{scheme}://{cut}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_loses_its_query_userinfo_and_fragment() {
        let parsed = Url::parse("https://user:pw@example.com:8443/a/b?token=s3cret&x=1#frag").expect("url");
        assert_eq!(url(&parsed), "https://example.com:8443/a/b?redacted");
        let plain = Url::parse("http://example.com/path").expect("url");
        assert_eq!(url(&plain), "http://example.com/path");
    }

    #[test]
    fn urls_inside_error_text_are_redacted_and_the_rest_is_kept() {
        let text = "error sending request for url (https://example.com/x?token=s3cret): \
                    redirect to HTTP://user:pw@other.test/y?sig=abc. then \"http://u:p@[bad/x?k=v\"";
        let clean = urls_in(text);
        assert!(!clean.contains("s3cret"), "{clean}");
        assert!(!clean.contains("sig=abc"), "{clean}");
        assert!(!clean.contains("pw@"), "{clean}");
        assert!(!clean.contains("u:p@"), "{clean}");
        assert!(!clean.contains("k=v"), "{clean}");
        assert!(clean.contains("https://example.com/x?redacted)"), "{clean}");
        assert!(clean.contains("other.test/y?redacted."), "{clean}");
        assert!(clean.starts_with("error sending request for url ("), "{clean}");
    }

    #[test]
    fn redacting_twice_changes_nothing_more() {
        let once = urls_in("loop at http://h.test/loop?token=s3cret and http://u:p@[bad/x?k=v").into_owned();
        assert_eq!(urls_in(&once), once);
    }

    #[test]
    fn text_without_urls_is_borrowed_unchanged() {
        assert!(matches!(urls_in("HTTP 404: Not Found"), Cow::Borrowed(_)));
    }
}
