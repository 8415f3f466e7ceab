//! Validation and normalisation of the URLs users save.

use url::Url;

/// Longest URL accepted (browsers and most servers stop around here).
pub const MAX_URL_LEN: usize = 2048;

/// Why a URL was rejected; the message is shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not parsable as an absolute URL.
    #[error("not a URL: {0}")]
    NotAUrl(String),
    /// A scheme other than http or https.
    #[error("scheme {0:?} is not allowed (only http and https)")]
    Scheme(String),
    /// user:password@ in the URL (credentials must never be stored or sent).
    #[error("URLs with a user name or password are not allowed")]
    Userinfo,
    /// No host.
    #[error("URL has no host")]
    EmptyHost,
    /// Longer than [`MAX_URL_LEN`].
    #[error("URL is longer than {MAX_URL_LEN} characters")]
    TooLong,
}

/// A validated, normalised link URL and its host (the queue's concurrency group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkUrl {
    /// Normalised URL: lower-case scheme and host, default port and fragment removed,
    /// path percent-encoding normalised by the WHATWG parser.
    pub url: Url,
    /// Host (lower-case; IPv6 in brackets).
    pub host: String,
}

/// Parses and normalises `input`.
///
/// # Errors
///
/// A [`UrlError`] naming the reason.
pub fn parse_link(input: &str) -> Result<LinkUrl, UrlError> {
    let trimmed = input.trim();
    if trimmed.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    let mut url = Url::parse(trimmed).map_err(|e| UrlError::NotAUrl(format!("{trimmed:?} ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(url.scheme().to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Userinfo);
    }
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.to_owned(),
        _ => return Err(UrlError::EmptyHost),
    };
    // The fragment never reaches the server: two URLs differing only there are the same link.
    url.set_fragment(None);
    Ok(LinkUrl { url, host })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_urls_are_normalised() {
        let cases = [
            ("HTTPS://Example.COM:443/a#frag", "https://example.com/a"),
            ("http://example.com", "http://example.com/"),
            ("  http://example.com:8080/x?q=1  ", "http://example.com:8080/x?q=1"),
            ("https://bücher.example/", "https://xn--bcher-kva.example/"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_link(input).map(|l| l.url.to_string()),
                Ok(expected.to_owned()),
                "{input}"
            );
        }
        assert_eq!(
            parse_link("https://Example.com/x").map(|l| l.host),
            Ok("example.com".to_owned())
        );
    }

    #[test]
    fn rejected_urls_carry_their_reason() {
        assert!(matches!(parse_link("not a url"), Err(UrlError::NotAUrl(_))));
        assert!(matches!(parse_link("/relative/path"), Err(UrlError::NotAUrl(_))));
        assert_eq!(parse_link("ftp://example.com/"), Err(UrlError::Scheme("ftp".into())));
        assert_eq!(
            parse_link("javascript:alert(1)"),
            Err(UrlError::Scheme("javascript".into()))
        );
        assert_eq!(parse_link("https://user:pw@example.com/"), Err(UrlError::Userinfo));
        assert_eq!(parse_link("https://user@example.com/"), Err(UrlError::Userinfo));
        assert!(parse_link("http://").is_err());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(parse_link(&long), Err(UrlError::TooLong));
    }
}
