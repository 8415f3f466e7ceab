//! A refresh's domain logic: what to ask a page and the GitHub API, and what their answers mean
//! for the link's stored metadata.
//!
//! The worker's `refresh` handler wires these to the queue: it respects the host's and the API's
//! cool-downs before asking, leaves the verdict in the job's report, writes the
//! [`RefreshRecord`](crate::db::links::RefreshRecord) back, and turns what cannot be answered now
//! into a retry, a snooze or a failure. Everything that decides *what the answer is* lives here,
//! next to the check's (`check`) and the scrape's (`scrape`).
//!
//! # Layout
//!
//! - [`page`]: the conditional GET with the stored `ETag`/`Last-Modified`, 304 → not modified,
//!   challenge pages kept out, the scraped fields mapped onto the record.
//! - [`repo`]: the GitHub decision tree (found, renamed, not modified, gone, rate-limited,
//!   transient, other failures) mapped onto the record.

pub mod page;
pub mod repo;

pub use page::{FetchedPage, PageOutcome, fetch_page, page_request};
pub use repo::{RepoOutcome, is_repository, lookup_repo, repo_to_ask};
