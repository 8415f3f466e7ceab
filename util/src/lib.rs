//! linkpulse's smallest crate: what both the queue and the application need and neither owns.
//!
//! # Layout
//!
//! - [`errors`]: an error's whole cause chain as one line of text.
//! - [`redact`]: URLs in text without their query strings or credentials.
//! - [`text`]: error text PostgreSQL always accepts (no NUL, bounded, redacted).

pub mod errors;
pub mod redact;
pub mod text;
