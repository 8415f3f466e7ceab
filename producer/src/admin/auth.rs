//! Who may mutate: the holder of `LINKPULSE_ADMIN_TOKEN`.
//!
//! A configured token is compared in constant time (`subtle`), so response timing does not reveal
//! how many leading bytes of a guess were right. No token configured means no mutation at all
//! (403) rather than an open API: the read-only calls and the probes keep working.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
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
    if bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
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
    fn bearer_reads_the_token_case_insensitively() {
        let request = axum::http::Request::builder()
            .header(AUTHORIZATION, "bearer abc")
            .body(())
            .unwrap_or_default();
        let (parts, ()) = request.into_parts();
        assert_eq!(bearer(&parts), Some("abc"));
    }
}
