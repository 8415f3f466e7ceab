//! The link check: HEAD, then GET when HEAD does not succeed, and a verdict as a value.
//!
//! Verdicts follow what users complain checkers get wrong: servers that refuse HEAD, bot walls
//! answering 403/429/999, one-off timeouts. Only `dead` (and `transient` once its retries are
//! spent) counts toward making a link `inaccessible`; `blocked` is recorded and never counts.
//!
//! # Layout
//!
//! - this file: [`check_url`], the requests a check makes.
//! - [`verdict`]: what a response or a failure means ([`classify`], [`Verdict`], [`CheckResult`]).

pub mod verdict;

use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use url::Url;

use crate::fetch::{FetchRequest, Fetcher};
use crate::politeness::HostPacer;
use crate::rules::Rules;

pub use verdict::{CheckResult, Verdict, classify, verdict_of_error, verdict_of_response, with_accepted};

/// Body bytes a check's GET reads (enough to recognise a challenge page).
const CHECK_BODY_BYTES: usize = 64 * 1024;

/// Checks `url`: HEAD; on anything but success, GET (servers answer HEAD with 405, 404, 403 while
/// GET works). Each request waits for the host's slot in `pacer`. A status the host's rules accept
/// (`[[host]] accept` of `LINKPULSE_RULES_FILE`) counts as success.
pub async fn check_url(fetcher: &Fetcher, pacer: &HostPacer, rules: &Rules, url: &Url) -> CheckResult {
    let host = url.host_str().unwrap_or_default();
    let accepted = |code: u16| rules.accepts(host, code);
    pacer.wait(host).await;
    let head = crate::metrics::timed_fetch(fetcher.fetch(request(Method::HEAD, url))).await;
    let first = with_accepted(classify(&head), accepted);
    if first.verdict == Verdict::Ok {
        return first;
    }
    pacer.wait(host).await;
    let get = crate::metrics::timed_fetch(fetcher.fetch(request(Method::GET, url))).await;
    with_accepted(classify(&get), accepted)
}

fn request(method: Method, url: &Url) -> FetchRequest {
    let mut headers = HeaderMap::new();
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
    );
    FetchRequest {
        method,
        url: url.clone(),
        headers,
        max_body: CHECK_BODY_BYTES,
        stop_at: None,
    }
}
