//! Messages from and to JSON, in protobuf's canonical JSON mapping (prost-reflect's
//! implementation of it): fields by their JSON name (`pointCount`) or their proto name
//! (`point_count`) on the way in, 64-bit integers as strings, enums by name, bytes as base64,
//! the well-known types in their special forms.
//!
//! An error says where in the message it is: `at location.latitude: invalid type: string
//! "north", expected i32`.

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

/// How messages are written as JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonOptions {
    /// Also write fields that hold their default value (`0`, `""`, `false`, empty lists),
    /// which the canonical mapping leaves out.
    pub emit_defaults: bool,
    /// Name fields as the `.proto` file does (`point_count`) rather than in lowerCamelCase
    /// (`pointCount`).
    pub proto_field_names: bool,
}

impl JsonOptions {
    fn serialize_options(&self) -> SerializeOptions {
        SerializeOptions::new()
            .skip_default_fields(!self.emit_defaults)
            .use_proto_field_name(self.proto_field_names)
    }
}

/// A message that could not be converted: where in it, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", at(.path))]
pub struct JsonError {
    /// The field it happened at, as a path (`location.latitude`, `points[2]`); empty for the
    /// message as a whole.
    pub path: String,
    /// What was wrong.
    pub message: String,
}

fn at(path: &str) -> String {
    if path.is_empty() || path == "." { String::new() } else { format!("at {path}: ") }
}

impl JsonError {
    fn from_path<E: std::fmt::Display>(err: serde_path_to_error::Error<E>) -> JsonError {
        JsonError { path: err.path().to_string(), message: err.inner().to_string() }
    }
}

/// Reads a message of type `descriptor` from JSON text, and encodes it. Unknown fields are
/// errors (they are usually typos).
pub fn encode_json(descriptor: &MessageDescriptor, json: &str) -> Result<Bytes, JsonError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let message = from_deserializer(descriptor, &mut deserializer)?;
    deserializer
        .end()
        .map_err(|err| JsonError { path: String::new(), message: format!("after the message: {err}") })?;
    Ok(Bytes::from(message.encode_to_vec()))
}

/// Reads a message of type `descriptor` from a parsed JSON value, and encodes it.
pub fn encode_value(descriptor: &MessageDescriptor, json: serde_json::Value) -> Result<Bytes, JsonError> {
    let message = from_deserializer(descriptor, json)?;
    Ok(Bytes::from(message.encode_to_vec()))
}

fn from_deserializer<'de, D>(
    descriptor: &MessageDescriptor,
    deserializer: D,
) -> Result<DynamicMessage, JsonError>
where
    D: serde::Deserializer<'de>,
    D::Error: std::fmt::Display,
{
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(deserializer, &mut track);
    DynamicMessage::deserialize_with_options(descriptor.clone(), tracked, &DeserializeOptions::new())
        .map_err(|err| JsonError::from_path(serde_path_to_error::Error::new(track.path(), err)))
}

/// Decodes a message of type `descriptor` and writes it as one line of JSON into `out`.
pub fn decode_to_json(
    descriptor: &MessageDescriptor,
    body: Bytes,
    options: &JsonOptions,
    out: &mut Vec<u8>,
) -> Result<(), JsonError> {
    let message = DynamicMessage::decode(descriptor.clone(), body).map_err(|err| JsonError {
        path: String::new(),
        message: format!("the {} does not decode: {err}", descriptor.full_name()),
    })?;
    let mut serializer = serde_json::Serializer::new(out);
    message
        .serialize_with_options(&mut serializer, &options.serialize_options())
        .map_err(|err| JsonError { path: String::new(), message: err.to_string() })
}
