//! Helpers shared by the scrape's unit tests: one page URL, a page around a head, and a table
//! runner that names the failing case.

use url::Url;

use super::{PageMetadata, extract};

const PAGE: &str = "https://example.com/articles/one?ref=feed#top";

pub(super) fn page_url() -> Url {
    Url::parse(PAGE).expect("valid page URL")
}

pub(super) fn extract_head(head: &str) -> PageMetadata {
    extract(
        &format!("<!DOCTYPE html><html><head>{head}</head><body><p>Body</p></body></html>"),
        &page_url(),
    )
}

/// Runs `field` on the metadata of each `(head, expected)` case, naming the failing case.
pub(super) fn check_field(cases: &[(&str, Option<&str>)], field: impl Fn(PageMetadata) -> Option<String>) {
    for (head, expected) in cases {
        assert_eq!(field(extract_head(head)).as_deref(), *expected, "head: {head}");
    }
}
