//! HTTP fetching of user URLs with the safety rules: guarded addresses on every hop, redirects
//! followed by hand, caps on time, redirects and decoded body bytes.
//!
//! # Layout
//!
//! - [`guard`]: which addresses may be reached, and the resolver enforcing it.
//! - [`client`]: the fetcher (manual redirects, streamed capped bodies).

pub mod client;
pub mod guard;

pub use client::{FetchError, FetchRequest, FetchResponse, FetchSettings, Fetcher};
pub use guard::{GuardPolicy, Refused};
