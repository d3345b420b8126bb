//! `GET /v1/events` with every filter Stripe documents: `type` (a `*` wildcard at the end, as in
//! `checkout.session.*`) or `types[]` (up to 20, not both), `created` (exact, or `[gt]`, `[gte]`,
//! `[lt]`, `[lte]`), `delivery_success`, and cursor pagination (`limit` 1 to 100, default 10;
//! `starting_after` / `ending_before`). Newest first, in Stripe's list shape.

use axum::{
    Json,
    extract::{Query, State},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    StripeEmulator,
    errors::ApiError,
    params::{Params, Shape},
};

pub(super) const DEFAULT_LIMIT: i64 = 10;
pub(super) const MAX_LIMIT: i64 = 100;
const MAX_TYPES: usize = 20;

const CREATED_RANGE: Shape = Shape::Obj(&[
    ("gt", Shape::Int { min: 0 }),
    ("gte", Shape::Int { min: 0 }),
    ("lt", Shape::Int { min: 0 }),
    ("lte", Shape::Int { min: 0 }),
]);
const LIST_EVENTS: &[(&str, Shape)] = &[
    ("created", CREATED_RANGE),
    ("delivery_success", Shape::Bool),
    ("ending_before", Shape::Str),
    ("expand", Shape::List(&Shape::Str)),
    ("limit", Shape::Int { min: 1 }),
    ("starting_after", Shape::Str),
    ("type", Shape::Str),
    ("types", Shape::List(&Shape::Str)),
];

/// The filters of one list request, read and checked.
struct Filter {
    types: Vec<String>,
    created: Vec<(&'static str, i64)>,
    delivery_success: Option<bool>,
}

impl Filter {
    fn read(pairs: &[(String, String)]) -> Result<(Self, Params), ApiError> {
        // `created=<t>` is the exact second; the shape takes the range form, so it is read apart.
        let exact = pairs.iter().find(|(k, v)| k == "created" && !v.is_empty());
        let rest: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != "created").cloned().collect();
        let params = Params::new(&rest);
        params.check(LIST_EVENTS)?;
        let mut created = Vec::new();
        if let Some((_, value)) = exact {
            let at = value.parse().map_err(|_| ApiError::not_an_integer("created", value))?;
            created.push(("eq", at));
        }
        for bound in ["gt", "gte", "lt", "lte"] {
            if let Some(at) = params.int(&format!("created[{bound}]")) {
                created.push((bound, at));
            }
        }
        let types: Vec<String> = rest
            .iter()
            .filter(|(k, v)| k.starts_with("types[") && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect();
        if params.get("type").is_some() && !types.is_empty() {
            return Err(ApiError::exclusive("type", "types"));
        }
        if types.len() > MAX_TYPES {
            return Err(ApiError::refused(
                "types",
                format!("You may pass up to {MAX_TYPES} event types."),
            ));
        }
        let filter = Self {
            types: params.get("type").map_or(types, |t| vec![t.to_owned()]),
            created,
            delivery_success: params.flag("delivery_success"),
        };
        Ok((filter, params))
    }

    fn matches(&self, event: &Value) -> bool {
        let event_type = event["type"].as_str().unwrap_or_default();
        let created = event["created"].as_i64().unwrap_or_default();
        let type_matches = self.types.is_empty()
            || self.types.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => event_type.starts_with(prefix),
                None => event_type == t,
            });
        let created_matches = self.created.iter().all(|(bound, at)| match *bound {
            "eq" => created == *at,
            "gt" => created > *at,
            "gte" => created >= *at,
            "lt" => created < *at,
            _ => created <= *at,
        });
        let delivered = event["pending_webhooks"].as_i64() == Some(0);
        type_matches && created_matches && self.delivery_success.is_none_or(|wanted| wanted == delivered)
    }
}

pub async fn list_events(
    State(emulator): State<StripeEmulator>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    emulator.record("GET", "/v1/events", &pairs, None);
    match list(&emulator, &pairs) {
        Ok(page) => Json(page).into_response(),
        Err(err) => err.into_response(),
    }
}

fn list(emulator: &StripeEmulator, pairs: &[(String, String)]) -> Result<Value, ApiError> {
    let (filter, params) = Filter::read(pairs)?;
    let limit = params.int("limit").unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(ApiError::integer_out_of_range(
            "limit",
            format!("This value must be less than or equal to {MAX_LIMIT}."),
        ));
    }
    let limit = limit as usize;

    // Newest first, as Stripe lists; events are recorded oldest first, so within one second the
    // later recorded comes first (the sort is stable).
    let mut events: Vec<Value> = emulator.events().into_iter().rev().collect();
    events.sort_by_key(|e| std::cmp::Reverse(e["created"].as_i64().unwrap_or_default()));
    let position = |cursor: &str, param: &str| {
        events
            .iter()
            .position(|e| e["id"] == cursor)
            .ok_or_else(|| ApiError::resource_missing("event", cursor, param))
    };

    // A cursor is a place in the whole list, whether or not the filters keep it.
    let (data, has_more) = match (params.get("starting_after"), params.get("ending_before")) {
        (Some(_), Some(_)) => return Err(ApiError::exclusive("starting_after", "ending_before")),
        (Some(after), None) => {
            let start = position(after, "starting_after")? + 1;
            page_after(&events[start..], &filter, limit)
        }
        (None, Some(before)) => {
            let end = position(before, "ending_before")?;
            let newer: Vec<&Value> = events[..end].iter().filter(|e| filter.matches(e)).collect();
            let skip = newer.len().saturating_sub(limit);
            (newer[skip..].iter().map(|e| (*e).clone()).collect(), skip > 0)
        }
        (None, None) => page_after(&events, &filter, limit),
    };
    Ok(json!({ "object": "list", "data": data, "has_more": has_more, "url": "/v1/events" }))
}

fn page_after(events: &[Value], filter: &Filter, limit: usize) -> (Vec<Value>, bool) {
    let mut matching = events.iter().filter(|e| filter.matches(e));
    let page: Vec<Value> = matching.by_ref().take(limit).cloned().collect();
    let has_more = matching.next().is_some();
    (page, has_more)
}
