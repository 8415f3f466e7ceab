//! Sign-in and sign-out. The token is typed once into a password field and never stored in the
//! browser: a right one starts a [`session`](super::session) of its role.

use axum::Form;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::SignedCookieJar;
use maud::html;
use serde::Deserialize;

use super::layout::{self, Page};
use super::session::{self, NoFields, Role, SessionForm};
use super::{PageError, Viewer, local_path, respond, see_other};
use crate::admin::{AdminState, auth};

/// `?next=` of the sign-in page: where to go once signed in.
#[derive(Debug, Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// `GET /signin`.
pub async fn form(State(state): State<AdminState>, Query(next): Query<Next>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let signed_in = session::current(&mut parts, &state).await;
    render(
        &Viewer { session: signed_in },
        &local_path(next.next.as_deref()),
        None,
        StatusCode::OK,
        &state,
    )
}

/// The sign-in page, with `error` when the last attempt failed.
fn render(viewer: &Viewer, next: &str, error: Option<String>, status: StatusCode, state: &AdminState) -> Response {
    let no_token = state.settings.admin_token.is_none() && state.settings.read_token.is_none();
    let body = html! {
        @if no_token {
            p.muted #no-token {
                "No token is configured (LINKPULSE_ADMIN_TOKEN, LINKPULSE_READ_TOKEN): nobody can sign in."
            }
        }
        form #login method="post" action="/signin" {
            input type="hidden" name="next" value=(next);
            label { "Token " input #token type="password" name="token" autocomplete="current-password" required; }
            " "
            button type="submit" { "Sign in" }
        }
        p.muted { "The admin token enables every button; the read token shows the pages only." }
    };
    let page = Page {
        title: "Sign in".to_owned(),
        error,
        ..Page::default()
    };
    respond(status, layout::page(viewer, &page, &body))
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    token: String,
    next: Option<String>,
}

/// `POST /signin`: a right token starts a session and goes on to `next`; a wrong one shows the
/// form again with the reason (401).
pub async fn sign_in(State(state): State<AdminState>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let Ok(jar) = SignedCookieJar::from_request_parts(&mut parts, &state).await;
    let request = Request::from_parts(parts, body);
    let Ok(Form(credentials)) =
        <Form<Credentials> as axum::extract::FromRequest<AdminState>>::from_request(request, &state).await
    else {
        return render(
            &Viewer { session: None },
            "/",
            Some("The sign-in form was malformed.".to_owned()),
            StatusCode::BAD_REQUEST,
            &state,
        );
    };
    let settings = &state.settings;
    let next = local_path(credentials.next.as_deref());
    let role = match auth::role_of(settings, &credentials.token) {
        Some(auth::TokenRole::Admin) => Role::Admin,
        Some(auth::TokenRole::Reader) => Role::Reader,
        None => {
            return render(
                &Viewer { session: None },
                &next,
                Some("That token is not right.".to_owned()),
                StatusCode::UNAUTHORIZED,
                &state,
            );
        }
    };
    let jar = session::start(jar, settings, role);
    (jar, see_other(&next)).into_response()
}

/// `POST /signout`: ends the session, of either role. CSRF-checked, so another site cannot sign
/// the operator out; a session that already expired signs out too (the cookie goes either way).
/// It ends this browser's session: a copy of the cookie stays valid until its own expiry, as
/// sessions are not stored server-side (rotating the admin token ends them all).
pub async fn sign_out(jar: SignedCookieJar, form: Result<SessionForm<NoFields>, PageError>) -> Response {
    match form {
        Err(refused) if refused.status() != StatusCode::UNAUTHORIZED => refused.into_response(),
        _ => (session::end(jar), see_other("/signin")).into_response(),
    }
}
