//! Form parameters checked the way Stripe checks them: every name must be one the endpoint takes
//! (nested names too, `line_items[0][price_data][bogus]`), every value must have the type the
//! parameter has, and metadata stays within Stripe's limits. An endpoint describes what it takes as
//! a `Shape`; the first problem found is answered with Stripe's error for it.

use std::collections::BTreeMap;

use super::{currencies::is_supported_currency, errors::ApiError};

/// Stripe's metadata limits, for every object that carries metadata.
const METADATA_MAX_KEYS: usize = 50;
const METADATA_KEY_MAX_CHARS: usize = 40;
const METADATA_VALUE_MAX_CHARS: usize = 500;

/// What a parameter takes.
pub enum Shape {
    Str,
    Int {
        min: i64,
    },
    Bool,
    Enum(&'static [&'static str]),
    Currency,
    Obj(&'static [(&'static str, Shape)]),
    List(&'static Shape),
    /// Free-form string keys and values, within Stripe's metadata limits.
    Metadata,
    /// A part of the API the emulator does not model: taken as sent, whatever is inside.
    Opaque,
}

/// A request's parameters, flat as sent (`line_items[0][quantity]` → `1`). An empty value counts as
/// absent, as Stripe reads `param=`.
pub struct Params {
    pairs: BTreeMap<String, String>,
}

impl Params {
    pub fn new(pairs: &[(String, String)]) -> Self {
        Self {
            pairs: pairs.iter().cloned().collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// An integer parameter, once `check` has accepted it.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|v| v.parse().ok())
    }

    pub fn flag(&self, name: &str) -> Option<bool> {
        self.get(name).and_then(|v| v.parse().ok())
    }

    /// Whether anything was sent under `prefix` (the parameter itself or anything inside it).
    pub fn has(&self, prefix: &str) -> bool {
        self.pairs
            .iter()
            .any(|(k, v)| !v.is_empty() && (k == prefix || k.starts_with(&format!("{prefix}["))))
    }

    /// The indices of a list parameter, in order (`line_items[0]…`, `line_items[1]…`).
    pub fn indices(&self, list: &str) -> Vec<usize> {
        let prefix = format!("{list}[");
        let mut indices: Vec<usize> = self
            .pairs
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix)?.split(']').next()?.parse().ok())
            .collect();
        indices.sort_unstable();
        indices.dedup();
        indices
    }

    /// The `prefix[key]=value` entries of a metadata parameter.
    pub fn metadata(&self, prefix: &str) -> serde_json::Map<String, serde_json::Value> {
        self.pairs
            .iter()
            .filter_map(|(key, value)| {
                let inner = key.strip_prefix(prefix)?.strip_prefix('[')?.strip_suffix(']')?;
                (!inner.contains('[') && !value.is_empty()).then(|| (inner.to_owned(), value.clone().into()))
            })
            .collect()
    }

    /// Refuses the first parameter `shape` does not take (unknown names first, as Stripe does),
    /// then the first value of the wrong type.
    pub fn check(&self, shape: &'static [(&'static str, Shape)]) -> Result<(), ApiError> {
        let mut leaves = Vec::new();
        for (name, value) in &self.pairs {
            let segments = split(name);
            leaves.push((resolve(shape, &segments)?, name.as_str(), value.as_str()));
        }
        for (leaf, name, value) in &leaves {
            check_value(leaf, name, value)?;
        }
        self.check_metadata_counts(&leaves)
    }

    fn check_metadata_counts(&self, leaves: &[(Leaf, &str, &str)]) -> Result<(), ApiError> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (leaf, _, value) in leaves {
            if let Leaf::MetadataEntry { object, .. } = leaf
                && !value.is_empty()
            {
                *counts.entry(object).or_default() += 1;
            }
        }
        match counts.into_iter().find(|(_, count)| *count > METADATA_MAX_KEYS) {
            Some((object, _)) => Err(ApiError::invalid_string(
                object,
                format!(
                    "Invalid {object}: You can specify up to {METADATA_MAX_KEYS} keys, with key names up to \
                     {METADATA_KEY_MAX_CHARS} characters long and values up to {METADATA_VALUE_MAX_CHARS} characters long."
                ),
            )),
            None => Ok(()),
        }
    }
}

/// Where a parameter name led in its endpoint's shape.
enum Leaf {
    Scalar(&'static Shape),
    /// An object or list sent as a whole (`metadata=` unsets it).
    Whole,
    MetadataEntry {
        object: String,
        key: String,
    },
    Opaque,
}

/// `a[b][0][c]` → `["a", "b", "0", "c"]`; `expand[]` → `["expand", ""]`.
fn split(name: &str) -> Vec<&str> {
    let (head, mut rest) = name.split_once('[').map_or((name, ""), |(h, r)| (h, r));
    let mut segments = vec![head];
    while let Some((segment, after)) = rest.split_once(']') {
        segments.push(segment);
        rest = after.strip_prefix('[').unwrap_or(after);
    }
    segments
}

/// The name as Stripe prints it: the first `depth` segments, `a[b][c]`.
fn joined(segments: &[&str], depth: usize) -> String {
    let mut name = segments[0].to_owned();
    for segment in &segments[1..depth] {
        name.push_str(&format!("[{segment}]"));
    }
    name
}

fn resolve(fields: &'static [(&'static str, Shape)], segments: &[&str]) -> Result<Leaf, ApiError> {
    let unknown = |depth: usize| ApiError::unknown(&joined(segments, depth));
    let mut shape = match fields.iter().find(|(name, _)| *name == segments[0]) {
        Some((_, shape)) => shape,
        None => return Err(unknown(1)),
    };
    let mut depth = 1;
    loop {
        let next = segments.get(depth).copied();
        match (shape, next) {
            (Shape::Opaque, _) => return Ok(Leaf::Opaque),
            (Shape::Obj(_) | Shape::List(_) | Shape::Metadata, None) => return Ok(Leaf::Whole),
            (_, None) => return Ok(Leaf::Scalar(shape)),
            (Shape::Obj(fields), Some(segment)) => match fields.iter().find(|(name, _)| *name == segment) {
                Some((_, inner)) => shape = inner,
                None => return Err(unknown(depth + 1)),
            },
            (Shape::List(item), Some(segment)) if segment.is_empty() || segment.parse::<usize>().is_ok() => {
                shape = item
            }
            (Shape::Metadata, Some(key)) if segments.len() == depth + 1 => {
                return Ok(Leaf::MetadataEntry {
                    object: joined(segments, depth),
                    key: key.to_owned(),
                });
            }
            _ => return Err(unknown(depth + 1)),
        }
        depth += 1;
    }
}

fn check_value(leaf: &Leaf, name: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Ok(());
    }
    match leaf {
        Leaf::Opaque => Ok(()),
        Leaf::Whole => Err(ApiError::refused(name, format!("Invalid object: {name}"))),
        Leaf::MetadataEntry { key, .. } if key.chars().count() > METADATA_KEY_MAX_CHARS => {
            Err(ApiError::invalid_string(
                name,
                format!(
                    "Metadata keys can have up to {METADATA_KEY_MAX_CHARS} characters, but you passed in a key with {} characters.",
                    key.chars().count()
                ),
            ))
        }
        Leaf::MetadataEntry { .. } if value.chars().count() > METADATA_VALUE_MAX_CHARS => {
            Err(ApiError::invalid_string(
                name,
                format!(
                    "Metadata values can have up to {METADATA_VALUE_MAX_CHARS} characters, but you passed in a value that is {} characters.",
                    value.chars().count()
                ),
            ))
        }
        Leaf::MetadataEntry { .. } => Ok(()),
        Leaf::Scalar(shape) => check_scalar(shape, name, value),
    }
}

fn check_scalar(shape: &Shape, name: &str, value: &str) -> Result<(), ApiError> {
    match shape {
        Shape::Int { min } => {
            let number: i64 = value.parse().map_err(|_| ApiError::not_an_integer(name, value))?;
            if number < *min {
                return Err(ApiError::integer_out_of_range(
                    name,
                    format!("This value must be greater than or equal to {min}."),
                ));
            }
            Ok(())
        }
        Shape::Bool if value == "true" || value == "false" => Ok(()),
        Shape::Bool => Err(ApiError::not_a_boolean(name, value)),
        Shape::Enum(values) if values.contains(&value) => Ok(()),
        Shape::Enum(values) => Err(ApiError::invalid_string(
            name,
            format!("Invalid {name}: must be one of {}", one_of(values)),
        )),
        Shape::Currency if is_supported_currency(&value.to_ascii_lowercase()) => Ok(()),
        Shape::Currency => Err(ApiError::invalid_string(
            name,
            format!(
                "Invalid currency: {value}. Stripe currently supports these currencies: {}",
                super::currencies::SUPPORTED.join(", ")
            ),
        )),
        Shape::Str | Shape::Obj(_) | Shape::List(_) | Shape::Metadata | Shape::Opaque => Ok(()),
    }
}

/// `a, b, or c`, as Stripe lists the values an enum takes.
fn one_of(values: &[&str]) -> String {
    match values {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [first, second] => format!("{first} or {second}"),
        [rest @ .., last] => format!("{}, or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ITEM: Shape = Shape::Obj(&[("price", Shape::Str), ("quantity", Shape::Int { min: 0 })]);
    const SHAPE: &[(&str, Shape)] = &[
        ("mode", Shape::Enum(&["payment", "setup", "subscription"])),
        ("line_items", Shape::List(&ITEM)),
        ("metadata", Shape::Metadata),
        ("expand", Shape::List(&Shape::Str)),
    ];

    fn check(pairs: &[(&str, &str)]) -> Result<(), ApiError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Params::new(&pairs).check(SHAPE)
    }

    fn refusal(pairs: &[(&str, &str)]) -> (Option<&'static str>, String) {
        let err = check(pairs).unwrap_err();
        (err.code, err.param.unwrap_or_default())
    }

    #[test]
    fn names_are_checked_at_every_depth_and_the_unknown_one_is_named() {
        assert!(check(&[("mode", "payment"), ("line_items[0][quantity]", "2"), ("expand[]", "x")]).is_ok());
        assert_eq!(refusal(&[("foo", "1")]), (Some("parameter_unknown"), "foo".into()));
        assert_eq!(
            refusal(&[("line_items[0][bogus]", "1")]),
            (Some("parameter_unknown"), "line_items[0][bogus]".into())
        );
        assert_eq!(
            refusal(&[("line_items[x][price]", "p")]),
            (Some("parameter_unknown"), "line_items[x]".into())
        );
    }

    #[test]
    fn values_must_have_their_parameters_type() {
        assert_eq!(
            refusal(&[("line_items[0][quantity]", "1.5")]),
            (Some("parameter_invalid_integer"), "line_items[0][quantity]".into())
        );
        let err = check(&[("mode", "pay")]).unwrap_err();
        assert_eq!(
            err.message,
            "Invalid mode: must be one of payment, setup, or subscription"
        );
    }

    #[test]
    fn metadata_is_free_form_within_stripes_limits() {
        assert!(check(&[("metadata[anything_at_all]", "v")]).is_ok());
        let long_key = format!("metadata[{}]", "k".repeat(41));
        assert_eq!(refusal(&[(&long_key, "v")]).1, long_key);
        let long_value = "v".repeat(501);
        assert_eq!(refusal(&[("metadata[k]", &long_value)]).1, "metadata[k]");
        let keys: Vec<(String, String)> = (0..51).map(|i| (format!("metadata[k{i}]"), "v".into())).collect();
        let err = Params::new(&keys).check(SHAPE).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("metadata"));
    }
}
