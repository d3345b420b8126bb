//! `GET /openapi.json`: the OpenAPI document of every route (`crate::openapi`), serialised once
//! when the router is built, so a request only copies bytes.

use axum::{
    Extension,
    body::Bytes,
    http::header,
    response::{IntoResponse, Response},
    routing::{MethodRouter, get},
};

use crate::{openapi::Unavailable, state::AppState};

/// The serialised document, handed to the handler by the route's own layer.
#[derive(Clone)]
pub struct Document(Bytes);

/// The route, answering with `doc`.
pub fn serve(doc: &utoipa::openapi::OpenApi) -> MethodRouter<AppState> {
    let json = doc.to_json().expect("an OpenAPI document serialises to JSON");
    get(openapi_json).layer(Extension(Document(Bytes::from(json))))
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1).", body = Object),
        (status = 503, response = Unavailable),
    )
)]
pub async fn openapi_json(Extension(Document(json)): Extension<Document>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}
