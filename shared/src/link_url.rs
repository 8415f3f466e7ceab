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
    /// Longer than [`MAX_URL_LEN`], as typed or once normalised.
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
    // Normalisation can lengthen a URL (percent-encoding, punycode): the limit holds for what is
    // stored and fetched, not only for what was typed.
    if url.as_str().len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
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

/// Property tests: normalisation is idempotent, never panics, respects the length limit, and
/// never changes what the network guard decides before any DNS lookup.
#[cfg(test)]
mod property_tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fetch::GuardPolicy;

    fn scheme() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "http",
            "https",
            "HTTP",
            "HtTpS",
            "ftp",
            "javascript",
            "file",
            "data",
        ])
        .prop_map(str::to_owned)
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "example.com",
                "EXAMPLE.com.",
                "127.0.0.1",
                "0x7f.1",
                "2130706433",
                "[::1]",
                "[::ffff:127.0.0.1]",
                "[fe80::1%25eth0]",
                "169.254.169.254",
                "%31%32%37.0.0.1",
                "bücher.example",
                "xn--bcher-kva.example",
                "localhost",
                "a.localhost",
                "metadata.google.internal",
                "[64:ff9b:1::1]",
                "１２７.０.０.１",
                "",
            ])
            .prop_map(str::to_owned),
            "[a-zA-Z0-9.-]{1,30}",
        ]
    }

    fn raw_url() -> impl Strategy<Value = String> {
        (
            scheme(),
            prop::option::of("[a-z:@]{0,8}"),
            host(),
            prop::option::of(0u32..70_000),
            "[/a-zA-Z0-9%._~!$&'()*+,;=:@ \\\\\u{e9}\u{1F600}-]{0,60}",
            prop::option::of("[a-zA-Z0-9=&%+ ]{0,30}"),
            prop::option::of("[a-z#]{0,10}"),
        )
            .prop_map(|(scheme, userinfo, host, port, path, query, fragment)| {
                let mut url = format!("{scheme}://");
                if let Some(userinfo) = userinfo {
                    url.push_str(&userinfo);
                    url.push('@');
                }
                url.push_str(&host);
                if let Some(port) = port {
                    url.push_str(&format!(":{port}"));
                }
                url.push_str(&path);
                if let Some(query) = query {
                    url.push('?');
                    url.push_str(&query);
                }
                if let Some(fragment) = fragment {
                    url.push('#');
                    url.push_str(&fragment);
                }
                url
            })
    }

    fn policies() -> [GuardPolicy; 2] {
        [
            GuardPolicy::default(),
            GuardPolicy {
                allow_private_networks: true,
                ..GuardPolicy::default()
            },
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn normalising_is_idempotent_bounded_and_keeps_the_guards_decision(input in prop_oneof![raw_url(), "\\PC{0,80}"]) {
            let Ok(link) = parse_link(&input) else {
                return Ok(());
            };
            prop_assert!(link.url.as_str().len() <= MAX_URL_LEN);
            prop_assert_eq!(link.url.fragment(), None);
            let again = parse_link(link.url.as_str());
            prop_assert_eq!(again.as_ref().map(|l| l.url.as_str()), Ok(link.url.as_str()), "not idempotent");
            prop_assert_eq!(again.map(|l| l.host), Ok(link.host.clone()));
            let typed = Url::parse(input.trim()).expect("parse_link accepted it");
            for policy in policies() {
                prop_assert_eq!(
                    policy.check_url(&typed).is_ok(),
                    policy.check_url(&link.url).is_ok(),
                    "the guard decides differently for {:?} and {}", input, link.url
                );
            }
        }
    }

    #[test]
    fn a_url_that_grows_past_the_limit_when_normalised_is_refused() {
        // Each space becomes %20: 700 of them push a 2,000-character URL over the limit.
        let input = format!("https://example.com/{}{}", " x".repeat(700), "a".repeat(600));
        assert!(input.len() <= MAX_URL_LEN, "premise: short enough as typed");
        assert_eq!(parse_link(&input), Err(UrlError::TooLong));
    }
}
