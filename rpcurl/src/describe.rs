//! `describe`: services, methods, messages and enums written back as `.proto` text, with
//! their comments, and full type names so that every type can be described in turn.

use std::fmt::Write as _;

use rpc_dynamic::Schema;
use rpc_dynamic::prost_reflect::{
    Cardinality, EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ServiceDescriptor,
};

use crate::Failure;

/// The service part of a symbol, to resolve in a registry: `pkg.Service` of
/// `pkg.Service/Method`; the symbol itself otherwise.
pub(crate) fn service_part(symbol: &str) -> &str {
    symbol.trim_start_matches('/').split('/').next().unwrap_or(symbol)
}

/// Every service of the schema.
pub(crate) fn all_services(schema: &Schema) -> String {
    let texts: Vec<String> = schema.services().map(|service| service_text(&service)).collect();
    texts.join("\n")
}

/// One symbol: a service, a method (`pkg.Service/Method` or `pkg.Service.Method`), a
/// message or an enum.
pub(crate) fn symbol(schema: &Schema, symbol: &str) -> Result<String, Failure> {
    let pool = schema.pool();
    let name = symbol.trim_start_matches(['/', '.']);
    if let Some(service) = pool.get_service_by_name(name) {
        return Ok(service_text(&service));
    }
    if let Some(message) = pool.get_message_by_name(name) {
        return Ok(message_text(&message));
    }
    if let Some(enumeration) = pool.get_enum_by_name(name) {
        return Ok(enum_text(&enumeration));
    }
    if (name.contains('/') || name.contains('.'))
        && let Ok(method) = schema.method(name)
    {
        let descriptor = method.descriptor();
        let mut text = String::new();
        comments(&mut text, &descriptor.parent_file(), descriptor.path(), "");
        text.push_str(&rpc_line(descriptor));
        return Ok(text);
    }
    Err(Failure::Local(format!("the schema has no service, method, message or enum named {name}")))
}

fn service_text(service: &ServiceDescriptor) -> String {
    let mut text = String::new();
    let file = service.parent_file();
    comments(&mut text, &file, service.path(), "");
    let _ = writeln!(text, "service {} {{", service.full_name());
    for method in service.methods() {
        comments(&mut text, &file, method.path(), "  ");
        let _ = writeln!(text, "  {}", rpc_line(&method));
    }
    text.push('}');
    text
}

fn rpc_line(method: &MethodDescriptor) -> String {
    let stream = |yes: bool| if yes { "stream " } else { "" };
    format!(
        "rpc {}({}{}) returns ({}{});",
        method.name(),
        stream(method.is_client_streaming()),
        method.input().full_name(),
        stream(method.is_server_streaming()),
        method.output().full_name()
    )
}

fn message_text(message: &MessageDescriptor) -> String {
    let mut text = String::new();
    let file = message.parent_file();
    comments(&mut text, &file, message.path(), "");
    let _ = writeln!(text, "message {} {{", message.full_name());
    for field in message.fields() {
        comments(&mut text, &file, field.path(), "  ");
        let oneof = field.containing_oneof().filter(|oneof| !oneof.is_synthetic());
        let oneof = oneof.map(|o| format!(" // oneof {}", o.name())).unwrap_or_default();
        let _ = writeln!(text, "  {} {} = {};{oneof}", field_type(&field), field.name(), field.number());
    }
    text.push('}');
    text
}

fn field_type(field: &FieldDescriptor) -> String {
    if field.is_map()
        && let Kind::Message(entry) = field.kind()
    {
        let key = kind_name(&entry.map_entry_key_field().kind());
        let value = kind_name(&entry.map_entry_value_field().kind());
        return format!("map<{key}, {value}>");
    }
    let label = match field.cardinality() {
        Cardinality::Repeated => "repeated ",
        Cardinality::Optional if field.supports_presence() && !matches!(field.kind(), Kind::Message(_)) => {
            "optional "
        }
        Cardinality::Required => "required ",
        Cardinality::Optional => "",
    };
    format!("{label}{}", kind_name(&field.kind()))
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(message) => message.full_name().to_owned(),
        Kind::Enum(enumeration) => enumeration.full_name().to_owned(),
    }
}

fn enum_text(enumeration: &EnumDescriptor) -> String {
    let mut text = String::new();
    let file = enumeration.parent_file();
    comments(&mut text, &file, enumeration.path(), "");
    let _ = writeln!(text, "enum {} {{", enumeration.full_name());
    for value in enumeration.values() {
        comments(&mut text, &file, value.path(), "  ");
        let _ = writeln!(text, "  {} = {};", value.name(), value.number());
    }
    text.push('}');
    text
}

/// The leading comments of the element at `path` in `file`, as `//` lines.
fn comments(text: &mut String, file: &FileDescriptor, path: &[i32], indent: &str) {
    let Some(info) = &file.file_descriptor_proto().source_code_info else { return };
    let Some(location) = info.location.iter().find(|location| location.path == path) else { return };
    let Some(leading) = &location.leading_comments else { return };
    for line in leading.trim_end().lines() {
        let line = line.strip_prefix(' ').unwrap_or(line);
        let _ = writeln!(text, "{indent}// {line}");
    }
}
