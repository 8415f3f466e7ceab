//! HTTP plumbing for user URLs and the GitHub API, with the safety rules: guarded addresses on
//! every hop, redirects followed by hand, caps on time, redirects and decoded body bytes, and
//! failures classified by their types.
//!
//! Nothing here knows HTML or GitHub: the scrape says where a body may stop through [`StopAt`],
//! and the GitHub client follows its redirects with [`Redirects`] and reads its bodies with
//! [`read_capped`].
//!
//! # Layout
//!
//! - [`guard`]: which addresses may be reached, and the resolver enforcing it.
//! - [`client`]: the fetcher (the hop loop, its settings, its span).
//! - [`redirect`]: the hop-by-hop rule for redirects (target, origin, loops, limit).
//! - [`body`]: capped, streamed bodies and where they may stop early.
//! - [`errors`]: [`FetchError`], and how a transport failure becomes one.
//! - [`retry_after`]: the `Retry-After` header.
//! - [`post`]: one guarded `POST` without redirects (webhook deliveries).

pub mod body;
pub mod client;
pub mod errors;
pub mod guard;
pub mod post;
pub mod redirect;
pub mod retry_after;

pub use body::{StopAt, StopAtFactory, read_capped};
pub use client::{DEFAULT_HTTP_TIMEOUT, FetchRequest, FetchResponse, FetchSettings, Fetcher};
pub use errors::{FetchError, TimeoutPhase};
pub use guard::{GuardPolicy, Refused};
pub use post::{MAX_POST_ANSWER, PostResponse};
pub use redirect::{MAX_REDIRECTS, RedirectError, Redirects, is_redirect};
pub use retry_after::{MAX_RETRY_AFTER, parse_retry_after};
