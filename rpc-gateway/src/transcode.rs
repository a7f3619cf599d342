//! From an HTTP request to a request message, as grpc-gateway transcodes: the body (the whole
//! message, one field of it, or nothing), then the path's variables and the query's
//! parameters set into fields named by their paths (`lo.latitude=1`). A value from the path
//! or the query is text; it is given the JSON type its field needs (a number for an `int32`,
//! `true` for a `bool`), and the canonical JSON mapping does the rest, so errors name the
//! field.

use percent_encoding::percent_decode_str;
use prost_reflect::{Kind, MessageDescriptor};
use serde_json::{Map, Value};

use crate::route::BodyMapping;

/// The request message as JSON, from the parts of an HTTP request.
///
/// `body` is the parsed body (`None` when there is none); `path` the template's variables;
/// `query` the raw query string.
pub(crate) fn request_json(
    input: &MessageDescriptor,
    mapping: &BodyMapping,
    body: Option<Value>,
    path: Vec<(String, String)>,
    query: Option<&str>,
) -> Result<Value, String> {
    let mut message = match (mapping, body) {
        (BodyMapping::Whole, Some(Value::Object(map))) => map,
        (BodyMapping::Whole, Some(other)) => {
            return Err(format!("the body must be a JSON object, not {}", kind_of(&other)));
        }
        (BodyMapping::Field(field), Some(value)) => {
            let mut map = Map::new();
            set(input, &mut map, field, value, false)?;
            map
        }
        _ => Map::new(),
    };
    for (field, value) in path {
        let value = typed(input, &field, value)?;
        set(input, &mut message, &field, value, false)?;
    }
    // Query parameters fill only what neither the body (as a whole) nor the path set.
    if *mapping != BodyMapping::Whole
        && let Some(query) = query
    {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key);
            let value = typed(input, &key, decode(value))?;
            set(input, &mut message, &key, value, true)?;
        }
    }
    Ok(Value::Object(message))
}

/// A query component, `+` as a space.
fn decode(text: &str) -> String {
    percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned()
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `text` as the JSON its field (at `path` in `input`) takes.
fn typed(input: &MessageDescriptor, path: &str, text: String) -> Result<Value, String> {
    let mut message = input.clone();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = message
            .get_field_by_name(part)
            .or_else(|| message.get_field_by_json_name(part))
            .ok_or_else(|| format!("{} has no field {part:?} (from {path:?})", message.full_name()))?;
        match field.kind() {
            Kind::Message(inner) if parts.peek().is_some() => message = inner,
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => {
                return Ok(text.parse::<i64>().map(Value::from).unwrap_or(Value::String(text)));
            }
            Kind::Float | Kind::Double => {
                return Ok(text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::String(text)));
            }
            Kind::Bool => {
                return Ok(match text.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => Value::String(text),
                });
            }
            _ => return Ok(Value::String(text)),
        }
    }
    Ok(Value::String(text))
}

/// Sets `value` at the dotted `path` in `message`, making the messages on the way. With
/// `append`, a repeated field collects every value given (`?id=1&id=2`).
fn set(
    input: &MessageDescriptor,
    message: &mut Map<String, Value>,
    path: &str,
    value: Value,
    append: bool,
) -> Result<(), String> {
    let mut descriptor = Some(input.clone());
    let mut map = message;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = descriptor
            .as_ref()
            .and_then(|d| d.get_field_by_name(part).or_else(|| d.get_field_by_json_name(part)));
        // Keys as the JSON mapping names them; an unknown name is kept, and reported by
        // the conversion with its place.
        let key = field.as_ref().map_or_else(|| part.to_owned(), |f| f.json_name().to_owned());
        if parts.peek().is_none() {
            let repeated = field.as_ref().is_some_and(|f| f.is_list());
            match map.get_mut(&key) {
                Some(Value::Array(items)) if append && repeated => items.push(value),
                _ if append && repeated => {
                    map.insert(key, Value::Array(vec![value]));
                }
                _ => {
                    map.insert(key, value);
                }
            }
            return Ok(());
        }
        descriptor = field.and_then(|f| match f.kind() {
            Kind::Message(inner) => Some(inner),
            _ => None,
        });
        let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
        map = match entry {
            Value::Object(inner) => inner,
            _ => return Err(format!("{path:?}: {part} is not a message")),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rpc_dynamic::Schema;
    use serde_json::json;

    use super::*;

    fn message(name: &str) -> MessageDescriptor {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/proto");
        let schema = Schema::from_protos(&[dir.join("route_guide.proto")], &[dir]).expect("the route guide");
        schema.pool().get_message_by_name(name).expect("the message")
    }

    #[test]
    fn path_and_query_values_take_their_fields_json_types_and_nest_by_dots() {
        let rectangle = message("routeguide.Rectangle");
        let path = vec![("lo.latitude".to_owned(), "-5".to_owned())];
        let query = Some("lo.longitude=7&hi.latitude=1&hi.longitude=%2B2");
        let value = request_json(&rectangle, &BodyMapping::None, None, path, query).expect("transcoded");
        assert_eq!(
            value,
            json!({"lo": {"latitude": -5, "longitude": 7}, "hi": {"latitude": 1, "longitude": 2}})
        );
    }

    #[test]
    fn a_body_mapped_to_one_field_leaves_the_rest_to_the_query() {
        let note = message("routeguide.RouteNote");
        let body = Some(json!({"latitude": 1, "longitude": 2}));
        let value = request_json(
            &note,
            &BodyMapping::Field("location".into()),
            body,
            Vec::new(),
            Some("message=hi+there"),
        )
        .expect("transcoded");
        assert_eq!(value, json!({"location": {"latitude": 1, "longitude": 2}, "message": "hi there"}));
    }

    #[test]
    fn a_whole_body_must_be_an_object_and_the_path_is_set_over_it() {
        let point = message("routeguide.Point");
        let path = vec![("latitude".to_owned(), "9".to_owned())];
        let value = request_json(
            &point,
            &BodyMapping::Whole,
            Some(json!({"latitude": 1, "longitude": 2})),
            path,
            None,
        )
        .expect("transcoded");
        assert_eq!(value, json!({"latitude": 9, "longitude": 2}));
        let refused = request_json(&point, &BodyMapping::Whole, Some(json!([1])), Vec::new(), None);
        assert_eq!(refused, Err("the body must be a JSON object, not an array".to_owned()));
        let unknown = request_json(&point, &BodyMapping::None, None, Vec::new(), Some("altitude=3"));
        assert!(unknown.is_err_and(|e| e.contains("altitude")));
    }
}
