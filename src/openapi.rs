//! The OpenAPI 3.1 document served at `GET /openapi.json`. Each handler documents itself (a
//! `#[utoipa::path]` beside it, its request and response types deriving `ToSchema`) and
//! `app::routes` mounts it with utoipa-axum's `routes!`, so a route's path, method and document
//! come from one place. This module holds what the routes share: the error answers (one shape,
//! `error::ErrorBody`), the three kinds of bearer credential, and the routes left out on purpose.

use std::collections::BTreeMap;

use utoipa::{
    IntoResponses, Modify, OpenApi, ToResponse,
    openapi::{
        self, Content, Ref, RefOr, Response, ResponseBuilder,
        header::Header,
        security::{Http, HttpAuthScheme, SecurityScheme},
    },
};

use crate::error::{ErrorBody, ErrorDetail};

/// The security schemes' names, as the handlers' `security(..)` name them.
pub const USER_TOKEN: &str = "userToken";
pub const API_KEY: &str = "apiKey";
pub const METRICS_TOKEN: &str = "metricsToken";

/// Routes the router serves that the document leaves out, and why: pages for people and the
/// Stripe emulator (whose API is Stripe's own, form-encoded and documented by Stripe). An entry
/// also covers the paths below it (`/admin` covers `/admin/orders/{id}`). A route in neither the
/// document nor this list fails `every_route_is_documented_or_listed`.
pub const UNDOCUMENTED_ROUTES: &[(&str, &str)] = &[
    ("/", "the demo shop's page (HTML)"),
    ("/checkout/return", "the demo shop's return page (HTML)"),
    ("/dev/mail", "the dev mailbox page (HTML; /dev/mail.json is its JSON)"),
    ("/admin", "the operator dashboard's pages and sign-in form (HTML)"),
    (
        crate::startup::EMULATOR_PATH,
        "the Stripe emulator, nested in emulator mode: Stripe's own wire format",
    ),
];

/// Whether the `UNDOCUMENTED_ROUTES` entry `listed` covers `path`: itself or a path below it.
pub fn covers(listed: &str, path: &str) -> bool {
    path.strip_prefix(listed)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Entitle",
        description = "Turns Stripe Checkout payments into credits and entitlements. Every error is \
                       `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(crate::routes::openapi::openapi_json),
    components(
        schemas(ErrorBody, ErrorDetail),
        responses(
            BadRequest,
            Unauthorized,
            PaymentRequired,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            TooManyRequests,
            InternalError,
            BadGateway,
            Unavailable
        )
    ),
    modifiers(&SecuritySchemes)
)]
struct BaseDocument;

/// The document before the routes add themselves: info, shared components, security schemes and
/// `/openapi.json` itself (which is mounted beside the others, as it serves their document).
pub fn base_document() -> openapi::OpenApi {
    BaseDocument::openapi()
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let bearer = |format: Option<&str>, description: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.bearer_format = format.map(str::to_owned);
            http.description = Some(description.to_owned());
            SecurityScheme::Http(http)
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            USER_TOKEN,
            bearer(
                Some("JWT"),
                "A user's token from the app's auth: HS256 with AUTH_JWT_SECRET, or RS256/ES256 from \
                 AUTH_JWKS_URL. In emulator mode POST /dev/token issues one.",
            ),
        );
        components.add_security_scheme(
            API_KEY,
            bearer(None, "One of ENTITLE_API_KEYS: the app's backend, on /v1/ only."),
        );
        components.add_security_scheme(
            METRICS_TOKEN,
            bearer(None, "METRICS_TOKEN, when one is set; /metrics is open otherwise."),
        );
    }
}

/// An error answer with the shared body, named after its status.
fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
    )
}

/// Declares a `ToResponse` component per error status, for handlers to list as
/// `(status = 400, response = BadRequest)`.
macro_rules! error_responses {
    ($($name:ident => $description:literal),* $(,)?) => {$(
        #[doc = $description]
        pub struct $name;

        impl<'s> ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<Response>) {
                (stringify!($name), error_response($description).build().into())
            }
        }
    )*};
}

error_responses! {
    BadRequest => "The request is invalid (its body, a field, a parameter, or a webhook's signature); nothing changed.",
    Unauthorized => "Missing or invalid bearer credential.",
    PaymentRequired => "Not enough credits (`insufficient_credits`, with `available` and `requested`); nothing was spent.",
    NotFound => "No such object, or not one of the caller's.",
    Conflict => "The request conflicts with what already stands (e.g. an idempotency key reused with other values).",
    PayloadTooLarge => "The request body is larger than allowed.",
    UnsupportedMediaType => "The body is not sent as `Content-Type: application/json`.",
    InternalError => "An internal error; logged, answered without detail.",
    BadGateway => "Stripe could not be reached or failed; try again.",
    Unavailable => "Temporarily unavailable (the database, or the request took too long); try again.",
}

/// What every route that reads a JSON body can answer besides its own: not JSON or not the
/// expected shape (400), too large (413), not sent as JSON (415).
pub struct JsonBodyErrors;

impl IntoResponses for JsonBodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        shared([
            ("400", "BadRequest"),
            ("413", "PayloadTooLarge"),
            ("415", "UnsupportedMediaType"),
        ])
    }
}

/// What every route that uses the database can answer: 500, and 503 when the database is
/// unavailable (or, as for any route, the request timed out).
pub struct DatabaseErrors;

impl IntoResponses for DatabaseErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        shared([("500", "InternalError"), ("503", "Unavailable")])
    }
}

fn shared<const N: usize>(statuses: [(&str, &str); N]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .into_iter()
        .map(|(status, name)| (status.to_owned(), RefOr::Ref(Ref::from_response_name(name))))
        .collect()
}

/// 429 also says when to come back.
pub struct TooManyRequests;

impl<'s> ToResponse<'s> for TooManyRequests {
    fn response() -> (&'s str, RefOr<Response>) {
        let retry_after = Header::new(
            openapi::ObjectBuilder::new()
                .schema_type(openapi::Type::Integer)
                .minimum(Some(0)),
        );
        let response = error_response("A limit was reached; ask again after `Retry-After` seconds.")
            .header("Retry-After", retry_after)
            .build();
        ("TooManyRequests", response.into())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::UNDOCUMENTED_ROUTES;
    use crate::app::routes;

    /// The paths the router serves. axum has no way to list them, but its `Debug` output names each
    /// one (`RouteId(3): "/plans"`); if that changes, the sanity check below fails loudly rather
    /// than the test passing on nothing.
    fn served_paths(router: &axum::Router<crate::state::AppState>) -> BTreeSet<String> {
        let debug = format!("{router:?}");
        let paths: BTreeSet<String> = debug
            .split("RouteId(")
            .skip(1)
            .filter_map(|rest| rest.split_once("): \"").map(|(_, path)| path))
            .filter_map(|rest| rest.split_once('"').map(|(path, _)| path.to_owned()))
            .filter(|path| !path.contains("__private__axum"))
            .collect();
        assert!(
            paths.contains("/healthz") && paths.contains("/v1/check"),
            "could not read the routes from the router's Debug output: {paths:?}"
        );
        paths
    }

    fn document(emulator: bool) -> Value {
        serde_json::to_value(routes(emulator).1).unwrap()
    }

    /// Served paths neither documented nor listed, and documented paths not served.
    fn unaccounted_paths(router: &axum::Router<crate::state::AppState>, doc: &utoipa::openapi::OpenApi) -> Vec<String> {
        let served = served_paths(router);
        let documented: BTreeSet<String> = doc.paths.paths.keys().cloned().collect();
        let listed = |path: &str| {
            UNDOCUMENTED_ROUTES
                .iter()
                .any(|(listed, _)| super::covers(listed, path))
        };
        let undocumented = served
            .iter()
            .filter(|path| !documented.contains(*path) && !listed(path));
        let unserved = documented.iter().filter(|path| !served.contains(*path));
        let both = documented.iter().filter(|path| listed(path));
        undocumented.chain(unserved).chain(both).cloned().collect()
    }

    #[test]
    fn every_route_is_documented_or_listed() {
        for emulator in [false, true] {
            let (router, doc) = routes(emulator);
            assert_eq!(
                unaccounted_paths(&router, &doc),
                Vec::<String>::new(),
                "mount each route with `routes!` and give its handler a #[utoipa::path], or list it in \
                 openapi::UNDOCUMENTED_ROUTES (and never both)"
            );
        }
    }

    #[test]
    fn a_route_mounted_without_its_document_is_caught() {
        let (router, doc) = routes(true);
        let router = router.route("/undocumented", axum::routing::get(|| async {}));
        assert_eq!(unaccounted_paths(&router, &doc), ["/undocumented"]);
    }

    #[test]
    fn a_listed_route_covers_the_paths_below_it_only() {
        assert!(super::covers("/stripe-emulator", "/stripe-emulator"));
        assert!(super::covers(
            "/stripe-emulator",
            "/stripe-emulator/v1/checkout/sessions"
        ));
        assert!(!super::covers("/stripe-emulator", "/stripe-emulatorx"));
        assert!(!super::covers("/dev/mail", "/dev/mail.json"));
    }

    #[test]
    fn the_dev_routes_are_documented_only_where_they_are_served() {
        let paths = |doc: &Value| {
            doc["paths"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<BTreeSet<_>>()
        };
        let real = paths(&document(false));
        let emulated = paths(&document(true));
        assert!(!real.iter().any(|path| path.starts_with("/dev/")), "{real:?}");
        for dev in ["/dev/token", "/dev/credits", "/dev/credits/use", "/dev/mail.json"] {
            assert!(emulated.contains(dev), "{dev} missing from {emulated:?}");
        }
    }

    #[test]
    fn every_error_answer_has_the_shared_error_shape() {
        let doc = document(true);
        assert_eq!(doc["openapi"], "3.1.0");
        let error = &doc["components"]["schemas"]["ErrorBody"];
        assert_eq!(error["required"], serde_json::json!(["error"]), "{error}");
        let detail = &doc["components"]["schemas"]["ErrorDetail"];
        assert_eq!(detail["required"], serde_json::json!(["code", "message"]), "{detail}");
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                assert!(
                    responses.contains_key("503"),
                    "{method} {path}: every route can time out"
                );
                for (status, response) in responses {
                    if status.starts_with('2') {
                        continue;
                    }
                    let name = response["$ref"]
                        .as_str()
                        .unwrap_or_default()
                        .rsplit('/')
                        .next()
                        .unwrap();
                    let shared = &doc["components"]["responses"][name];
                    assert_eq!(
                        shared["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                        "{method} {path} {status}: {response}"
                    );
                }
            }
        }
    }

    #[test]
    fn each_credential_has_its_scheme() {
        let doc = document(true);
        let schemes = &doc["components"]["securitySchemes"];
        for name in [super::USER_TOKEN, super::API_KEY, super::METRICS_TOKEN] {
            assert_eq!(schemes[name]["scheme"], "bearer", "{name}: {schemes}");
        }
        assert_eq!(
            doc["paths"]["/v1/check"]["post"]["security"],
            serde_json::json!([{ "apiKey": [] }])
        );
        assert_eq!(
            doc["paths"]["/entitlements"]["get"]["security"],
            serde_json::json!([{ "userToken": [] }])
        );
    }
}
