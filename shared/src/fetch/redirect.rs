//! Redirects followed by hand, one hop at a time, so every hop is judged before it is requested.
//!
//! [`Redirects`] is the hop-by-hop rule both HTTP users share: the fetcher (up to
//! [`MAX_REDIRECTS`] hops anywhere the guard allows) and the GitHub client (three hops, on the
//! API's own origin). A hop's `Location` is resolved against the URL that answered, its fragment
//! dropped; a hop is refused when it leaves the allowed origin, comes back to a URL already
//! visited, or is one too many.

use std::collections::HashSet;

use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use url::{Origin, Url};

use super::errors::FetchError;

/// Redirects the fetcher follows before giving up.
pub const MAX_REDIRECTS: u32 = 10;

/// Why a redirect was not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedirectError {
    /// No `Location`, or one that is not text or not a URL (the text without its query).
    #[error("invalid redirect: {0}")]
    Invalid(String),
    /// The target leaves the origin the redirects are confined to.
    #[error("refused redirect away from {allowed} to {target}")]
    OffOrigin {
        /// The origin allowed (`scheme://host:port`).
        allowed: String,
        /// The target's origin.
        target: String,
    },
    /// The target was already visited (without its query).
    #[error("redirect loop at {0}")]
    Loop(String),
    /// One more hop than allowed.
    #[error("more than {0} redirects")]
    TooMany(u32),
}

impl From<RedirectError> for FetchError {
    fn from(error: RedirectError) -> Self {
        match error {
            RedirectError::Invalid(reason) => Self::InvalidRedirect(reason),
            off @ RedirectError::OffOrigin { .. } => Self::InvalidRedirect(off.to_string()),
            RedirectError::Loop(at) => Self::RedirectLoop(at),
            RedirectError::TooMany(max) => Self::TooManyRedirects(max),
        }
    }
}

/// Whether `status` is a redirect we follow (300 and 304 are not).
pub fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The redirects of one request: how many were followed, where they went, where they may go.
#[derive(Debug, Clone)]
pub struct Redirects {
    max: u32,
    followed: u32,
    visited: HashSet<String>,
    within: Option<Origin>,
}

impl Redirects {
    /// Redirects of a request to `start`: at most `max`, anywhere.
    pub fn new(start: &Url, max: u32) -> Self {
        Self {
            max,
            followed: 0,
            visited: HashSet::from([start.to_string()]),
            within: None,
        }
    }

    /// Confines the hops to `origin` (scheme, host and port).
    #[must_use]
    pub fn within(mut self, origin: Origin) -> Self {
        self.within = Some(origin);
        self
    }

    /// Hops followed so far.
    pub fn followed(&self) -> u32 {
        self.followed
    }

    /// The next URL after a redirect answer from `from` with this `Location`.
    ///
    /// # Errors
    ///
    /// A [`RedirectError`] when the hop must not be taken: the checks run in the order of the
    /// variants, so a loop on the last allowed hop is reported as a loop.
    pub fn next(&mut self, from: &Url, location: Option<&HeaderValue>) -> Result<Url, RedirectError> {
        let location = location
            .ok_or_else(|| RedirectError::Invalid("no Location header".into()))?
            .to_str()
            .map_err(|_| RedirectError::Invalid("Location is not valid text".into()))?;
        let mut target = from
            .join(location)
            .map_err(|e| RedirectError::Invalid(format!("{:?}: {e}", linkpulse_util::redact::urls_in(location))))?;
        target.set_fragment(None);
        if let Some(allowed) = &self.within
            && target.origin() != *allowed
        {
            return Err(RedirectError::OffOrigin {
                allowed: allowed.ascii_serialization(),
                target: target.origin().ascii_serialization(),
            });
        }
        if self.visited.contains(target.as_str()) {
            return Err(RedirectError::Loop(linkpulse_util::redact::url(&target)));
        }
        if self.followed == self.max {
            return Err(RedirectError::TooMany(self.max));
        }
        self.followed += 1;
        self.visited.insert(target.to_string());
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    fn location(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("header")
    }

    #[test]
    fn hops_resolve_against_the_answering_url_and_drop_the_fragment() {
        let start = url("https://a.example/x/y");
        let mut hops = Redirects::new(&start, 3);
        let next = hops.next(&start, Some(&location("../z#frag"))).expect("hop");
        assert_eq!(next.as_str(), "https://a.example/z");
        assert_eq!(hops.followed(), 1);
    }

    #[test]
    fn the_limit_loops_and_bad_locations_are_refused() {
        let start = url("https://a.example/0");
        let mut hops = Redirects::new(&start, 2);
        let one = hops.next(&start, Some(&location("/1"))).expect("hop 1");
        let two = hops.next(&one, Some(&location("/2"))).expect("hop 2");
        assert_eq!(hops.next(&two, Some(&location("/3"))), Err(RedirectError::TooMany(2)));
        assert!(matches!(
            hops.next(&two, Some(&location("/0?token=s3cret"))),
            Err(RedirectError::TooMany(2))
        ));
        let mut looping = Redirects::new(&start, 2);
        let back = looping.next(&start, Some(&location("/0")));
        assert!(matches!(back, Err(RedirectError::Loop(_))), "{back:?}");
        assert!(matches!(looping.next(&start, None), Err(RedirectError::Invalid(_))));
        assert!(matches!(
            looping.next(&start, Some(&location("http://[::1"))),
            Err(RedirectError::Invalid(_))
        ));
    }

    #[test]
    fn a_confined_redirect_stays_on_its_origin() {
        let start = url("https://api.example/repos/a/b");
        let mut hops = Redirects::new(&start, 3).within(start.origin());
        assert!(hops.next(&start, Some(&location("/repositories/1"))).is_ok());
        for elsewhere in [
            "https://evil.example/",
            "http://api.example/",
            "https://api.example:8443/",
        ] {
            let refused = hops.next(&start, Some(&location(elsewhere)));
            assert!(
                matches!(refused, Err(RedirectError::OffOrigin { .. })),
                "{elsewhere}: {refused:?}"
            );
        }
    }
}
