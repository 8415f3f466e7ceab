//! Dashboard sessions: signing in with a token issues a signed, expiring session cookie; every
//! form carries the session's CSRF token.
//!
//! The cookie never holds a token: it holds the session's role, its expiry and a random CSRF
//! value, signed (HMAC-SHA256, `axum-extra`'s signed jar) with a key derived from
//! `LINKPULSE_SESSION_KEY` (or a random per-process key) *and* the configured tokens, so rotating
//! the admin token ends every session signed in with the old one. It is `HttpOnly` (scripts cannot
//! read it), `SameSite=Strict` (other sites' requests do not carry it) and `Secure` when the
//! public URL is https. The expiry is inside the signed value, so an old cookie a browser kept (or
//! someone copied) stops working at its time whatever its `Max-Age` said.
//!
//! SameSite alone is not CSRF protection enough (a sibling subdomain is "same site"), so every
//! form posts the session's CSRF value and [`CsrfForm`] compares it in constant time; the router's
//! origin check ([`crate::admin::host_guard`]) refuses cross-origin posts before that.

use std::time::Duration;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum_extra::extract::cookie::{Cookie, Key, SameSite, SignedCookieJar};
use chrono::Utc;
use serde::de::DeserializeOwned;
use sha2::Digest;
use subtle::ConstantTimeEq;

use linkpulse_shared::config::{ExposeSecret, Settings};

use super::PageError;
use crate::admin::AdminState;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "linkpulse_session";
/// The form field carrying the CSRF value.
pub const CSRF_FIELD: &str = "csrf";

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Signed in with the admin token: every button.
    Admin,
    /// Signed in with the read token: the pages only.
    Reader,
}

/// A valid (signed, unexpired) session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// What it may do.
    pub role: Role,
    /// Unix seconds after which it is refused.
    pub expires: i64,
    /// The value every form of this session posts in [`CSRF_FIELD`].
    pub csrf: String,
}

impl Session {
    /// A new session of `role` lasting `ttl`, with a fresh random CSRF value.
    fn new(role: Role, ttl: Duration) -> Self {
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
        Self {
            role,
            expires: Utc::now().timestamp().saturating_add(ttl),
            csrf: hex::encode(rand::random::<[u8; 16]>()),
        }
    }

    /// The cookie value (signed by the jar): `role.expires.csrf`.
    fn encode(&self) -> String {
        let role = match self.role {
            Role::Admin => "admin",
            Role::Reader => "read",
        };
        format!("{role}.{}.{}", self.expires, self.csrf)
    }

    /// A verified cookie value back into a session, `None` when malformed or expired.
    fn decode(value: &str, now: i64) -> Option<Self> {
        let mut parts = value.splitn(3, '.');
        let role = match parts.next()? {
            "admin" => Role::Admin,
            "read" => Role::Reader,
            _ => return None,
        };
        let expires: i64 = parts.next()?.parse().ok()?;
        let csrf = parts.next()?.to_owned();
        (expires > now && csrf.len() == 32).then_some(Self { role, expires, csrf })
    }

    /// Whether this session may press buttons.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// The signing key of sessions: from `LINKPULSE_SESSION_KEY` when set (shared by every replica),
/// else random for this process; either way mixed with the configured tokens, so a token rotation
/// ends the sessions it opened.
pub fn signing_key(settings: &Settings) -> Key {
    let mut hash = sha2::Sha512::new();
    match &settings.session_key {
        Some(key) => hash.update(key.expose_secret().as_bytes()),
        None => hash.update(rand::random::<[u8; 64]>()),
    }
    for token in [&settings.admin_token, &settings.read_token] {
        hash.update([0_u8]);
        if let Some(token) = token {
            hash.update(token.expose().as_bytes());
        }
    }
    Key::from(hash.finalize().as_slice())
}

impl FromRef<AdminState> for Key {
    fn from_ref(state: &AdminState) -> Self {
        state.session_key.clone()
    }
}

/// The request's session, if it carries a valid one.
pub async fn current(parts: &mut Parts, state: &AdminState) -> Option<Session> {
    let jar = SignedCookieJar::<Key>::from_request_parts(parts, state).await.ok()?;
    let cookie = jar.get(COOKIE_NAME)?;
    Session::decode(cookie.value(), Utc::now().timestamp())
}

/// Adds a fresh session cookie of `role` to `jar`.
pub fn start(jar: SignedCookieJar, settings: &Settings, role: Role) -> SignedCookieJar {
    let session = Session::new(role, settings.session_ttl);
    let max_age = time_duration(settings.session_ttl);
    let cookie = Cookie::build((COOKIE_NAME, session.encode()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure(settings))
        .max_age(max_age);
    jar.add(cookie)
}

/// `jar` with the session cookie removed.
pub fn end(jar: SignedCookieJar) -> SignedCookieJar {
    jar.remove(Cookie::build(COOKIE_NAME).path("/"))
}

/// Whether cookies must be `Secure`: the public URL is https.
fn secure(settings: &Settings) -> bool {
    settings.public_url.as_ref().is_some_and(|u| u.scheme() == "https")
}

/// A std duration as the cookie crate's.
fn time_duration(d: Duration) -> time::Duration {
    time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

/// A form with nothing but its CSRF value (a button).
#[derive(Debug, serde::Deserialize)]
pub struct NoFields {}

/// A form post of a signed-in session (any role) carrying its session's CSRF value. Refused with
/// an HTML page: 401 without a session (or an expired one), 403 for a missing or wrong CSRF value,
/// 400 for a malformed body.
#[derive(Debug)]
pub struct SessionForm<T> {
    /// The session.
    pub session: Session,
    /// The form's other fields.
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AdminState> for SessionForm<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &AdminState) -> Result<Self, PageError> {
        let (mut parts, body) = request.into_parts();
        let session = current(&mut parts, state).await.ok_or_else(|| {
            PageError::unauthorized("Your session has expired or you are not signed in: sign in again.")
        })?;
        let bytes = axum::body::to_bytes(body, crate::admin::MAX_BODY_BYTES)
            .await
            .map_err(|_| PageError::bad_request("The form could not be read."))?;
        let presented = url::form_urlencoded::parse(&bytes)
            .find(|(key, _)| key == CSRF_FIELD)
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        if !bool::from(presented.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return Err(PageError::forbidden(
                "The form's security token is missing or stale (it was opened in another session): reload the page and try again.",
            ));
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| PageError::bad_request(format!("The form is malformed: {e}.")))?;
        Ok(Self { session, form })
    }
}

/// A [`SessionForm`] of a session signed in with the admin token: the only way a dashboard button
/// changes anything. A read-only session's post is refused (403).
#[derive(Debug)]
pub struct CsrfForm<T> {
    /// The admin's session.
    pub session: Session,
    /// The form's other fields.
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AdminState> for CsrfForm<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &AdminState) -> Result<Self, PageError> {
        let SessionForm { session, form } = SessionForm::from_request(request, state).await?;
        if !session.is_admin() {
            return Err(PageError::forbidden(
                "This session is read-only: sign in with the admin token to change anything.",
            ));
        }
        Ok(Self { session, form })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_round_trips_and_expires() {
        let session = Session::new(Role::Admin, Duration::from_secs(60));
        let now = Utc::now().timestamp();
        assert_eq!(Session::decode(&session.encode(), now), Some(session.clone()));
        assert_eq!(Session::decode(&session.encode(), session.expires), None);
        assert_eq!(Session::decode("root.99999999999.abc", now), None);
        assert_eq!(Session::decode("admin.x.0123456789abcdef0123456789abcdef", now), None);
    }

    #[test]
    fn the_key_changes_with_the_admin_token() {
        let mut settings = Settings::defaults("postgres://x");
        settings.session_key = Some("k".repeat(40).into());
        settings.admin_token = Some(linkpulse_shared::config::AdminToken::new("one"));
        let first = signing_key(&settings);
        assert_eq!(first.master(), signing_key(&settings).master());
        settings.admin_token = Some(linkpulse_shared::config::AdminToken::new("two"));
        assert_ne!(first.master(), signing_key(&settings).master());
    }
}
