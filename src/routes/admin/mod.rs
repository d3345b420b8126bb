//! `/admin`, the operator dashboard: server-rendered HTML over the `admin` read models, behind
//! `ADMIN_TOKEN` (see `auth`).

mod auth;
mod chart;
mod html;
mod pages;

use axum::{
    Router, middleware,
    routing::{get, post},
};

use crate::state::AppState;

/// The dashboard's routes, to merge into the app's router.
pub fn router(state: AppState) -> Router<AppState> {
    let behind_sign_in = Router::new()
        .route("/admin", get(pages::overview))
        .route("/admin/search", get(pages::search_page))
        .route("/admin/orders/{id}", get(pages::order_page))
        .route("/admin/user", get(pages::user_page_handler))
        .route("/admin/logout", post(auth::logout))
        .route_layer(middleware::from_fn_with_state(state, auth::require_admin));
    Router::new()
        .route("/admin/login", get(auth::login_form).post(auth::login))
        .merge(behind_sign_in)
}
