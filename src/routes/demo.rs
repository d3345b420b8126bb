//! The demo shop: one static page (no build step) that is both the plan picker at `/` and the
//! return page at `/checkout/return`, talking to the public API like any frontend would.

use axum::response::Html;

const DEMO_PAGE: &str = include_str!("../../static/index.html");

pub async fn demo_page() -> Html<&'static str> {
    Html(DEMO_PAGE)
}
