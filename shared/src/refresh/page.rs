//! The page half of a refresh: a conditional GET with the validators stored at the last refresh,
//! read only up to the end of the head, and what its answer means for the stored metadata.

use reqwest::header::{
    ACCEPT, CONTENT_TYPE, ETAG, HeaderMap, HeaderName, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::check::{CheckResult, Verdict, classify};
use crate::db::links::{CacheState, RefreshRecord};
use crate::fetch::{FetchError, FetchRequest, FetchResponse, Fetcher};
use crate::politeness::HostPacer;
use crate::scrape::{self, MAX_HEAD_BYTES};

/// `Accept` of a refresh: HTML first, anything else as a last resort (a page served as
/// `text/plain` still has a URL worth a favicon).
const ACCEPT_PAGE: &str = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5";

/// The conditional GET of `url`: `If-None-Match` and `If-Modified-Since` from the validators the
/// last refresh stored (one that is no longer a valid header value is left out), reading the body
/// only up to the end of its head ([`scrape::head_stop`], at most [`MAX_HEAD_BYTES`]).
pub fn page_request(url: &Url, cache: &CacheState) -> FetchRequest {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_PAGE));
    if let Some(etag) = cache.http_etag.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(IF_NONE_MATCH, etag);
    }
    if let Some(modified) = cache
        .http_last_modified
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(IF_MODIFIED_SINCE, modified);
    }
    FetchRequest {
        method: Method::GET,
        url: url.clone(),
        headers,
        max_body: MAX_HEAD_BYTES,
        stop_at: Some(scrape::head_stop),
    }
}

/// A page fetched for a refresh, and the check's verdict on the answer (what the job reports, and
/// what the caller's rate-limit and retry decisions read).
#[derive(Debug)]
pub struct FetchedPage {
    /// The answer, or why there is none.
    pub response: Result<FetchResponse, FetchError>,
    /// [`classify`] of `response`.
    pub verdict: CheckResult,
}

/// Waits for the host's slot in `pacer`, then fetches [`page_request`] and classifies the answer.
/// The caller has already checked that the host is not cooling down.
pub async fn fetch_page(fetcher: &Fetcher, pacer: &HostPacer, url: &Url, cache: &CacheState) -> FetchedPage {
    let request = page_request(url, cache);
    pacer.wait(url.host_str().unwrap_or_default()).await;
    let response = fetcher.fetch(request).await;
    let verdict = classify(&response);
    FetchedPage { response, verdict }
}

/// What a refreshed page means for the link's metadata. Every record is fill-only: a `None` field
/// leaves the stored value alone.
#[derive(Debug, Clone, PartialEq)]
pub enum PageOutcome {
    /// 304 for our validators: nothing changed, nothing to write for the page.
    NotModified,
    /// No page to read (dead, blocked or rate-limited by its status, a network failure): `record`
    /// carries only the error, `refresh: <reason>`. `transient` when another attempt may get the
    /// page (the verdict is transient).
    NoPage {
        /// The error alone.
        record: RefreshRecord,
        /// The verdict is transient.
        transient: bool,
    },
    /// A bot challenge page, answered with `status`: its metadata ("Just a moment...") must never
    /// replace the real one, so `record` keeps only the page's validators and says why.
    Challenge {
        /// Validators and the error.
        record: RefreshRecord,
        /// The HTTP status the challenge came with.
        status: u16,
    },
    /// The page's metadata and validators.
    Read(RefreshRecord),
}

impl FetchedPage {
    /// What this answer means for the stored metadata: the body is decoded (declared charset, else
    /// detected), judged for a bot challenge, and scraped.
    pub fn read(&self) -> PageOutcome {
        let response = match &self.response {
            Ok(response) if response.status.is_success() => response,
            Ok(response) if response.status == StatusCode::NOT_MODIFIED => return PageOutcome::NotModified,
            _ => {
                return PageOutcome::NoPage {
                    record: RefreshRecord {
                        error: Some(format!("refresh: {}", self.verdict.reason)),
                        ..RefreshRecord::default()
                    },
                    transient: self.verdict.verdict == Verdict::Transient,
                };
            }
        };
        let html = scrape::decode_page(&response.body, header(response, CONTENT_TYPE).as_deref(), &response.url);
        let mut record = RefreshRecord {
            http_etag: header(response, ETAG),
            http_last_modified: header(response, LAST_MODIFIED),
            ..RefreshRecord::default()
        };
        if self.verdict.verdict == Verdict::Blocked || scrape::is_challenge_page(&html) {
            record.error = Some("refresh: bot challenge page, metadata kept".into());
            return PageOutcome::Challenge {
                record,
                status: response.status.as_u16(),
            };
        }
        let meta = scrape::extract(&html, &response.url);
        record.title = meta.title;
        record.description = meta.description;
        record.favicon_url = meta.favicon_url;
        record.image_url = meta.image_url;
        record.site_name = meta.site_name;
        PageOutcome::Read(record)
    }
}

/// A response header as text, when it is one.
fn header(response: &FetchResponse, name: HeaderName) -> Option<String> {
    response
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_url() -> Url {
        Url::parse("https://example.com/post").expect("valid URL")
    }

    fn answered(status: u16, headers: &[(&'static str, &str)], body: &[u8]) -> FetchedPage {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).expect("valid header"));
        }
        let response = Ok(FetchResponse {
            url: page_url(),
            status: StatusCode::from_u16(status).expect("valid status"),
            headers: map,
            body: body.to_vec(),
            redirects: 0,
            truncated: false,
        });
        let verdict = classify(&response);
        FetchedPage { response, verdict }
    }

    #[test]
    fn the_request_is_conditional_on_the_stored_validators() {
        let cache = CacheState {
            http_etag: Some("\"v1\"".into()),
            http_last_modified: Some("Tue, 01 Dec 2026 10:00:00 GMT".into()),
            ..CacheState::default()
        };
        let request = page_request(&page_url(), &cache);
        assert_eq!(request.method, Method::GET);
        assert_eq!(request.max_body, MAX_HEAD_BYTES);
        assert!(request.stop_at.is_some(), "reads stop at the end of the head");
        assert_eq!(request.headers[IF_NONE_MATCH], "\"v1\"");
        assert_eq!(request.headers[IF_MODIFIED_SINCE], "Tue, 01 Dec 2026 10:00:00 GMT");
        let invalid = CacheState {
            http_etag: Some("bad\nvalue".into()),
            ..CacheState::default()
        };
        let request = page_request(&page_url(), &invalid);
        assert!(!request.headers.contains_key(IF_NONE_MATCH));
        assert!(!request.headers.contains_key(IF_MODIFIED_SINCE));
    }

    #[test]
    fn a_page_is_scraped_into_the_record_with_its_validators() {
        let page = answered(
            200,
            &[("etag", "\"v2\""), ("last-modified", "Wed, 02 Dec 2026 10:00:00 GMT")],
            b"<html><head><title>Post</title><meta name=description content=About></head>",
        );
        let PageOutcome::Read(record) = page.read() else {
            panic!("expected metadata, got {:?}", page.read());
        };
        assert_eq!(record.title.as_deref(), Some("Post"));
        assert_eq!(record.description.as_deref(), Some("About"));
        assert_eq!(record.favicon_url.as_deref(), Some("https://example.com/favicon.ico"));
        assert_eq!(record.http_etag.as_deref(), Some("\"v2\""));
        assert_eq!(
            record.http_last_modified.as_deref(),
            Some("Wed, 02 Dec 2026 10:00:00 GMT")
        );
        assert_eq!(record.error, None);
    }

    #[test]
    fn not_modified_writes_nothing() {
        assert_eq!(answered(304, &[], b"").read(), PageOutcome::NotModified);
    }

    #[test]
    fn a_challenge_page_keeps_the_stored_metadata() {
        let page = answered(
            200,
            &[("etag", "\"c\"")],
            b"<html><head><title>Just a moment...</title></head></html>",
        );
        let PageOutcome::Challenge { record, status } = page.read() else {
            panic!("expected a challenge, got {:?}", page.read());
        };
        assert_eq!(status, 200);
        assert_eq!(record.title, None);
        assert_eq!(record.http_etag.as_deref(), Some("\"c\""));
        assert_eq!(
            record.error.as_deref(),
            Some("refresh: bot challenge page, metadata kept")
        );
    }

    #[test]
    fn no_page_records_only_the_error_and_says_whether_to_try_again() {
        for (status, transient) in [(404, false), (403, false), (503, true)] {
            let page = answered(status, &[], b"<title>Error page</title>");
            let PageOutcome::NoPage {
                record,
                transient: again,
            } = page.read()
            else {
                panic!("HTTP {status}: expected no page, got {:?}", page.read());
            };
            assert_eq!(again, transient, "HTTP {status}");
            assert_eq!(
                record,
                RefreshRecord {
                    error: Some(format!("refresh: {}", page.verdict.reason)),
                    ..RefreshRecord::default()
                }
            );
        }
    }

    #[test]
    fn an_undeclared_legacy_charset_is_detected_from_the_bytes() {
        // Russian in windows-1251, declared nowhere (the refresh decodes with the detected charset).
        let body = b"<html><head><title>\xcd\xee\xe2\xee\xf1\xf2\xe8 \xef\xf0\xee \xef\xee\xe3\xee\xe4\xf3 \xe8 \xea\xeb\xe8\xec\xe0\xf2</title></head>";
        let page = answered(200, &[], body);
        let PageOutcome::Read(record) = page.read() else {
            panic!("expected metadata");
        };
        assert_eq!(record.title.as_deref(), Some("Новости про погоду и климат"));
    }
}
