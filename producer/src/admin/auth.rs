//! Who may mutate: the holder of `LINKPULSE_ADMIN_TOKEN` ([`Admin`]). Who may read the API: the
//! holder of `LINKPULSE_READ_TOKEN` or of the admin token ([`Reader`], applied to every
//! `GET /api/…` by [`read_guard`]).
//!
//! A configured token is compared in constant time (`subtle`), so response timing does not reveal
//! how many leading bytes of a guess were right. No token configured means no mutation at all
//! (403) rather than an open API: the read-only calls and the probes keep working. Reads without a
//! read token are open only while the server listens on a loopback address (the default): a
//! listing of every saved URL is the owner's data once the port leaves the machine.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use linkpulse_shared::config::AdminToken;

use super::{AdminState, ApiError};

/// Checks a presented token against the configured one.
///
/// # Errors
///
/// [`ApiError::Forbidden`] when no token is configured; [`ApiError::Unauthorized`] when the
/// presented one is missing or different.
pub fn check(expected: Option<&AdminToken>, presented: Option<&str>) -> Result<(), ApiError> {
    let expected = expected.ok_or(ApiError::Forbidden)?;
    let presented = presented.ok_or(ApiError::Unauthorized)?;
    if same_token(expected, presented) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Whether `presented` is `expected`, compared in constant time.
fn same_token(expected: &AdminToken, presented: &str) -> bool {
    bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes()))
}

/// Checks a read: the read token or the admin token when either is configured and presented;
/// without a read token, anyone while the server is private (`loopback`: its configured address is
/// a loopback one and no public URL is set).
///
/// # Errors
///
/// [`ApiError::ReadUnauthorized`] when a token is needed and the presented one is missing or
/// neither; [`ApiError::ReadForbidden`] when the address is not loopback and no token at all is
/// configured (nobody could read).
pub fn check_read(
    read: Option<&AdminToken>,
    admin: Option<&AdminToken>,
    loopback: bool,
    presented: Option<&str>,
) -> Result<(), ApiError> {
    if read.is_none() && loopback {
        return Ok(());
    }
    if read.is_none() && admin.is_none() {
        return Err(ApiError::ReadForbidden);
    }
    let presented = presented.ok_or(ApiError::ReadUnauthorized)?;
    // Both compared whatever the first gives, so timing does not tell which token matched.
    let by_read = read.is_some_and(|t| same_token(t, presented));
    let by_admin = admin.is_some_and(|t| same_token(t, presented));
    if by_read | by_admin {
        Ok(())
    } else {
        Err(ApiError::ReadUnauthorized)
    }
}

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Extractor that admits only requests carrying the admin token as a bearer token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AdminState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, ApiError> {
        check(state.settings.admin_token.as_ref(), bearer(parts))?;
        Ok(Self)
    }
}

/// Whether the server counts as private for reads: it listens on a loopback address and no public
/// URL is configured. A reverse proxy on the same host forwards the world's requests from
/// loopback, and `LINKPULSE_PUBLIC_URL` is how an operator says one does.
fn reads_open_address(settings: &linkpulse_shared::config::Settings) -> bool {
    settings.admin_addr.ip().is_loopback() && settings.public_url.is_none()
}

/// Whether anyone may read (API and dashboard pages) without a token: no read token is set and
/// the server is private ([`reads_open_address`]).
pub fn reads_open(settings: &linkpulse_shared::config::Settings) -> bool {
    settings.read_token.is_none() && reads_open_address(settings)
}

/// Which token `presented` is, compared with both in constant time whichever matches (so timing
/// does not tell which one it was): the admin token wins when both are the same.
pub fn role_of(settings: &linkpulse_shared::config::Settings, presented: &str) -> Option<TokenRole> {
    let admin = settings.admin_token.as_ref().is_some_and(|t| same_token(t, presented));
    let read = settings.read_token.as_ref().is_some_and(|t| same_token(t, presented));
    if admin {
        Some(TokenRole::Admin)
    } else if read {
        Some(TokenRole::Reader)
    } else {
        None
    }
}

/// What a presented token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRole {
    /// The admin token: everything.
    Admin,
    /// The read token: reads only.
    Reader,
}

/// Extractor that admits only requests that may read the API (see [`check_read`]).
#[derive(Debug, Clone, Copy)]
pub struct Reader;

impl FromRequestParts<AdminState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, ApiError> {
        let settings = &state.settings;
        check_read(
            settings.read_token.as_ref(),
            settings.admin_token.as_ref(),
            reads_open_address(settings),
            bearer(parts),
        )?;
        Ok(Self)
    }
}

/// Paths under `/api/` that every client may read: the API's own description.
const OPEN_API_PATHS: [&str; 1] = ["/api/openapi.json"];

/// Middleware of the whole admin router: every `GET` (and `HEAD`) of `/api/…` passes [`Reader`]
/// first, so a read route added later is covered without remembering to (the probes, metrics and
/// dashboard are outside `/api/`; mutations check [`Admin`] themselves).
pub async fn read_guard(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let is_read = request.method() == Method::GET || request.method() == Method::HEAD;
    if is_read && path.starts_with("/api/") && !OPEN_API_PATHS.contains(&path) {
        let (mut parts, body) = request.into_parts();
        if let Err(refused) = Reader::from_request_parts(&mut parts, &state).await {
            return refused.into_response();
        }
        return next.run(Request::from_parts(parts, body)).await;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_token_refuses_every_presented_token() {
        assert!(matches!(check(None, Some("anything")), Err(ApiError::Forbidden)));
        assert!(matches!(check(None, None), Err(ApiError::Forbidden)));
    }

    #[test]
    fn wrong_missing_or_prefixed_tokens_are_unauthorized() {
        let token = AdminToken::new("s3cret");
        assert!(matches!(check(Some(&token), None), Err(ApiError::Unauthorized)));
        assert!(matches!(
            check(Some(&token), Some("s3cre")),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            check(Some(&token), Some("s3cret!")),
            Err(ApiError::Unauthorized)
        ));
        assert!(check(Some(&token), Some("s3cret")).is_ok());
    }

    #[test]
    fn reads_are_open_on_loopback_without_a_read_token_and_need_one_elsewhere() {
        let read = AdminToken::new("r3ad");
        let admin = AdminToken::new("adm1n");
        // Loopback, no read token: open, whatever is presented.
        assert!(check_read(None, Some(&admin), true, None).is_ok());
        assert!(check_read(None, None, true, Some("junk")).is_ok());
        // A read token is always required once set, loopback or not; the admin token reads too.
        for loopback in [true, false] {
            assert!(matches!(
                check_read(Some(&read), Some(&admin), loopback, None),
                Err(ApiError::ReadUnauthorized)
            ));
            assert!(matches!(
                check_read(Some(&read), Some(&admin), loopback, Some("r3a")),
                Err(ApiError::ReadUnauthorized)
            ));
            assert!(check_read(Some(&read), Some(&admin), loopback, Some("r3ad")).is_ok());
            assert!(check_read(Some(&read), Some(&admin), loopback, Some("adm1n")).is_ok());
            assert!(check_read(Some(&read), None, loopback, Some("r3ad")).is_ok());
        }
        // Not loopback, no read token: the admin token reads; with no token at all nobody does.
        assert!(check_read(None, Some(&admin), false, Some("adm1n")).is_ok());
        assert!(matches!(
            check_read(None, Some(&admin), false, None),
            Err(ApiError::ReadUnauthorized)
        ));
        assert!(matches!(
            check_read(None, None, false, Some("x")),
            Err(ApiError::ReadForbidden)
        ));
    }

    #[test]
    fn bearer_reads_the_token_case_insensitively() {
        let request = axum::http::Request::builder()
            .header(AUTHORIZATION, "bearer abc")
            .body(())
            .unwrap_or_default();
        let (parts, ()) = request.into_parts();
        assert_eq!(bearer(&parts), Some("abc"));
    }
}
