//! Who gets through to `/admin`: `ADMIN_TOKEN` as `Authorization: Bearer`, or the cookie the
//! sign-in form sets (an HMAC of an expiry, see `admin::access`). A post that relies on the
//! cookie must come from our own pages (its `Origin` is this host): the cookie is also
//! `SameSite=Strict`, and the check holds where a browser ignores that.

use axum::{
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};

use super::html::{Chrome, esc, page};
use crate::{
    admin::access::{AdminAccess, AdminKey, SESSION_SECS},
    state::AppState,
};

const COOKIE: &str = "entitle_admin";

/// How the request got in, for pages that show a sign-out button.
#[derive(Clone, Copy)]
pub struct Signed(pub Chrome);

/// Lets a request through to the dashboard's pages, or answers it: 403 when the dashboard is
/// closed or a cookie post comes from elsewhere, 401 with the sign-in form otherwise.
pub async fn require_admin(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // A browser never sends a bearer on its own, so a cross-site request cannot carry one: only
    // the other ways in need the origin check.
    let (chrome, by_bearer) = match AdminAccess::from_config(&state.config) {
        AdminAccess::Closed => return closed(),
        AdminAccess::Open => (Chrome::Open, false),
        AdminAccess::Token(key) => {
            let headers = request.headers();
            if bearer(headers).is_some_and(|token| key.matches(token)) {
                (Chrome::Open, true)
            } else if session(headers).is_some_and(|value| key.accepts_session(value, now())) {
                (Chrome::SignedIn, false)
            } else {
                return login_page(StatusCode::UNAUTHORIZED, "Sign in with the admin token.");
            }
        }
    };
    if !by_bearer && !is_safe(request.method()) && !same_origin(request.headers()) {
        return cross_site();
    }
    request.extensions_mut().insert(Signed(chrome));
    next.run(request).await
}

/// `GET /admin/login`.
pub async fn login_form(State(state): State<AppState>) -> Response {
    match AdminAccess::from_config(&state.config) {
        AdminAccess::Closed => closed(),
        AdminAccess::Open => Redirect::to("/admin").into_response(),
        AdminAccess::Token(_) => login_page(StatusCode::OK, "Sign in with the admin token."),
    }
}

/// `POST /admin/login` with the form's `token`: the session cookie, or 401 and the form again.
pub async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let key = match AdminAccess::from_config(&state.config) {
        AdminAccess::Closed => return closed(),
        AdminAccess::Open => return Redirect::to("/admin").into_response(),
        AdminAccess::Token(key) => key,
    };
    // A sign-in posted from another site would sign the victim in to the attacker's choice.
    if !same_origin(&headers) {
        return cross_site();
    }
    let token = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if !key.matches(token.trim()) {
        return login_page(StatusCode::UNAUTHORIZED, "That is not the admin token.");
    }
    let cookie = session_cookie(&key, &headers);
    let mut response = Redirect::to("/admin").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

/// `POST /admin/logout` (behind `require_admin`, so only from our own pages).
pub async fn logout() -> Response {
    let mut response = Redirect::to("/admin/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!("{COOKIE}=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict"))
            .expect("a fixed cookie is a valid header"),
    );
    response
}

fn session_cookie(key: &AdminKey, headers: &HeaderMap) -> HeaderValue {
    let value = key.session(now() + SESSION_SECS);
    // Secure whenever the browser reached us over https (directly or through a proxy that says
    // so); on plain http a Secure cookie would never come back.
    let secure = match is_https(headers) {
        true => "; Secure",
        false => "",
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/admin; Max-Age={SESSION_SECS}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("digits, a dot and hex are a valid header")
}

fn is_https(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("x-forwarded-proto").is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
        || header("origin").is_some_and(|origin| origin.starts_with("https://"))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

/// Whether `Origin` names the host the request was sent to. Missing or `null` is refused: every
/// browser sends it on a form post.
fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let (Some(origin), Some(host)) = (header(header::ORIGIN), header(header::HOST)) else {
        return false;
    };
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .is_some_and(|origin_host| origin_host.eq_ignore_ascii_case(host))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn session(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| cookie.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        r#"<div class="login"><h1>Entitle admin</h1><p id="login-message">{}</p>
<form method="post" action="/admin/login"><label for="token">Admin token (<code>ADMIN_TOKEN</code>)</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<button id="sign-in" type="submit">Sign in</button></form></div>"#,
        esc(message)
    );
    page(status, "Sign in", Chrome::Bare, "", &body)
}

fn closed() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Closed",
        Chrome::Bare,
        "",
        "<div class=\"login\"><h1>The dashboard is closed</h1><p>This service runs with a real Stripe key and \
         <code>ADMIN_TOKEN</code> is not set. Set it (at least 32 characters) to open <code>/admin</code>.</p></div>",
    )
}

fn cross_site() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Refused",
        Chrome::Bare,
        "",
        "<div class=\"login\"><h1>Refused</h1><p>This form was not sent from the dashboard's own pages \
         (its <code>Origin</code> is missing or another site's).</p></div>",
    )
}
