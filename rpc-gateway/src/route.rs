//! Routes: which HTTP requests reach which method. Every method is served at
//! `POST /pkg.Service/Method`; a method with a `google.api.http` annotation is also served at
//! the REST paths and verbs it declares (and its `additional_bindings`).
//!
//! Path templates follow `google/api/http.proto`: literal segments, `*` (one segment), `**`
//! (the rest of the path, last only), variables `{field.path}` (one segment) and
//! `{field.path=segments}` (the segments given, e.g. `{name=shelves/*}`), and a `:verb`
//! suffix.

use std::fmt;

use percent_encoding::percent_decode_str;
use prost_reflect::{DescriptorPool, MethodDescriptor, Value};

/// The HTTP verb of a binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Put,
    Post,
    Delete,
    Patch,
    /// A `custom` binding's verb, upper case.
    Other(String),
}

impl Verb {
    pub(crate) fn matches(&self, method: &axum::http::Method) -> bool {
        match self {
            Verb::Get => method == axum::http::Method::GET,
            Verb::Put => method == axum::http::Method::PUT,
            Verb::Post => method == axum::http::Method::POST,
            Verb::Delete => method == axum::http::Method::DELETE,
            Verb::Patch => method == axum::http::Method::PATCH,
            Verb::Other(name) => method.as_str().eq_ignore_ascii_case(name),
        }
    }
}

/// How the request body maps onto the request message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyMapping {
    /// No body: the message comes from the path and the query.
    None,
    /// The body is the whole message (`body: "*"`); the path's variables are set over it.
    Whole,
    /// The body is this field (`body: "field"`); the rest from the path and the query.
    Field(String),
}

/// One segment of a path template, after its variables are flattened out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: any one segment.
    One,
    /// `**`: the rest of the path (zero or more segments).
    Rest,
}

/// A variable: the field it sets and the segments it covers, `start..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Variable {
    field: String,
    start: usize,
    end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

/// A template that does not parse, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: String,
}

impl Template {
    /// Parses `template`.
    pub(crate) fn parse(template: &str) -> Result<Template, TemplateError> {
        let fail = |reason: &str| TemplateError { template: template.to_owned(), reason: reason.to_owned() };
        let Some(rest) = template.strip_prefix('/') else {
            return Err(fail("must start with /"));
        };
        // The verb follows the last `:` that is outside any variable.
        let (path, verb) = match rest.rfind(':') {
            Some(at) if !rest[at..].contains('}') => (&rest[..at], Some(rest[at + 1..].to_owned())),
            _ => (rest, None),
        };
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut text = path;
        while !text.is_empty() {
            if let Some(inner) = text.strip_prefix('{') {
                let Some(close) = inner.find('}') else {
                    return Err(fail("a variable is not closed"));
                };
                let (field, pattern) = match inner[..close].split_once('=') {
                    Some((field, pattern)) => (field, pattern),
                    None => (&inner[..close], "*"),
                };
                if field.is_empty() {
                    return Err(fail("a variable names no field"));
                }
                let start = segments.len();
                for part in pattern.split('/') {
                    segments.push(segment(part).ok_or_else(|| fail("an empty or malformed segment"))?);
                }
                variables.push(Variable { field: field.to_owned(), start, end: segments.len() });
                text = &inner[close + 1..];
            } else {
                let end = text.find('/').unwrap_or(text.len());
                segments.push(segment(&text[..end]).ok_or_else(|| fail("an empty or malformed segment"))?);
                text = &text[end..];
            }
            match text.strip_prefix('/') {
                Some("") => return Err(fail("ends with /")),
                Some(after) => text = after,
                None if text.is_empty() => {}
                None => return Err(fail("a variable must be a whole segment")),
            }
        }
        if segments.iter().rev().skip(1).any(|s| *s == Segment::Rest) {
            return Err(fail("** may only be the last segment"));
        }
        Ok(Template { segments, variables, verb })
    }

    /// The variables' values if `path` (the URL's path, still percent-encoded) matches.
    pub(crate) fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = if path.is_empty() { Vec::new() } else { path.split('/').collect() };
        let rest = self.segments.last() == Some(&Segment::Rest);
        let fixed = if rest { self.segments.len() - 1 } else { self.segments.len() };
        if parts.len() < fixed || (!rest && parts.len() != fixed) {
            return None;
        }
        for (segment, part) in self.segments.iter().zip(&parts) {
            match segment {
                Segment::Literal(literal) if literal != part => return None,
                Segment::One if part.is_empty() => return None,
                _ => {}
            }
        }
        let values = self
            .variables
            .iter()
            .map(|variable| {
                let end =
                    if variable.end == self.segments.len() && rest { parts.len() } else { variable.end };
                let raw = parts[variable.start..end].join("/");
                (variable.field.clone(), percent_decode_str(&raw).decode_utf8_lossy().into_owned())
            })
            .collect();
        Some(values)
    }
}

fn segment(text: &str) -> Option<Segment> {
    match text {
        "" => None,
        literal if literal.contains(['{', '}', '=']) => None,
        "*" => Some(Segment::One),
        "**" => Some(Segment::Rest),
        literal => Some(Segment::Literal(literal.to_owned())),
    }
}

/// One HTTP binding of a method: verb, path template, body mapping.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    pub(crate) verb: Verb,
    pub(crate) template: Template,
    pub(crate) body: BodyMapping,
    /// The text of the template, for messages.
    pub(crate) pattern: String,
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match &self.verb {
            Verb::Get => "GET",
            Verb::Put => "PUT",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
            Verb::Patch => "PATCH",
            Verb::Other(name) => name,
        };
        write!(f, "{verb} {}", self.pattern)
    }
}

/// The bindings a method's `google.api.http` option declares (none without one).
pub(crate) fn bindings(
    pool: &DescriptorPool,
    method: &MethodDescriptor,
) -> Result<Vec<Binding>, TemplateError> {
    let Some(extension) = pool.get_extension_by_name("google.api.http") else {
        return Ok(Vec::new());
    };
    let options = method.options();
    if !options.has_extension(&extension) {
        return Ok(Vec::new());
    }
    let Value::Message(rule) = options.get_extension(&extension).into_owned() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    collect(&rule, &mut out)?;
    if let Some(Value::List(more)) = rule.get_field_by_name("additional_bindings").map(|v| v.into_owned()) {
        for rule in more {
            if let Value::Message(rule) = rule {
                collect(&rule, &mut out)?;
            }
        }
    }
    Ok(out)
}

fn collect(rule: &prost_reflect::DynamicMessage, out: &mut Vec<Binding>) -> Result<(), TemplateError> {
    let text = |name: &str| match rule.get_field_by_name(name).map(|v| v.into_owned()) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    let verbs = [
        ("get", Verb::Get),
        ("put", Verb::Put),
        ("post", Verb::Post),
        ("delete", Verb::Delete),
        ("patch", Verb::Patch),
    ];
    let mut found = verbs.into_iter().find_map(|(name, verb)| text(name).map(|path| (verb, path)));
    if found.is_none()
        && let Some(Value::Message(custom)) = rule.get_field_by_name("custom").map(|v| v.into_owned())
        && let (Some(Value::String(kind)), Some(Value::String(path))) = (
            custom.get_field_by_name("kind").map(|v| v.into_owned()),
            custom.get_field_by_name("path").map(|v| v.into_owned()),
        )
        && !path.is_empty()
    {
        found = Some((Verb::Other(kind.to_ascii_uppercase()), path));
    }
    let Some((verb, pattern)) = found else {
        return Ok(());
    };
    let body = match text("body").as_deref() {
        None => BodyMapping::None,
        Some("*") => BodyMapping::Whole,
        Some(field) => BodyMapping::Field(field.to_owned()),
    };
    out.push(Binding { verb, template: Template::parse(&pattern)?, body, pattern });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(template).expect("parses").matches(path)
    }

    #[test]
    fn variables_take_one_segment_or_the_segments_they_name() {
        assert_eq!(
            vars("/v1/features/{latitude}/{longitude}", "/v1/features/1/-2"),
            Some(vec![("latitude".into(), "1".into()), ("longitude".into(), "-2".into())])
        );
        assert_eq!(vars("/v1/features/{latitude}/{longitude}", "/v1/features/1"), None);
        assert_eq!(
            vars("/v1/{name=shelves/*/books/*}", "/v1/shelves/a/books/b%20c"),
            Some(vec![("name".into(), "shelves/a/books/b c".into())])
        );
        assert_eq!(vars("/v1/{name=shelves/*}", "/v1/racks/a"), None);
        assert_eq!(vars("/files/{path=**}", "/files/a/b/c"), Some(vec![("path".into(), "a/b/c".into())]));
    }

    #[test]
    fn a_verb_suffix_must_be_present() {
        assert_eq!(vars("/v1/{name}:cancel", "/v1/op1:cancel"), Some(vec![("name".into(), "op1".into())]));
        assert_eq!(vars("/v1/{name}:cancel", "/v1/op1"), None);
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in ["v1/x", "/v1/{x", "/v1/{=a}", "/v1/**/x", "/v1/a{x}", "/v1//x", "/v1/"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
