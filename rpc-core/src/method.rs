//! What client and server both know about a method: its shape and its names on the wire.
//!
//! Generated code describes each service with a static [`ServiceDescriptor`]; the server
//! routes by it, interceptors see a call's [`MethodKind`], and method patterns select
//! methods by name (the idempotent ones, for retries and failover). A client names the
//! method it calls with a [`MethodName`]: a `&'static str` in generated code, or a name
//! known only at run time (a command-line client, a gateway).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// The shape of a method's call: how many messages go each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams both ways.
    BidiStreaming,
}

impl MethodKind {
    /// Whether calls of this kind are streams on the wire (`STREAM_OPEN`), rather than one
    /// `REQUEST` and one `RESPONSE`.
    pub fn is_streaming(self) -> bool {
        self != MethodKind::Unary
    }
}

/// A method of a service, as routed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodDescriptor {
    /// The method's name within its service, e.g. `SayHello`.
    pub name: &'static str,
    /// The full name sent on the wire, e.g. `/helloworld.Greeter/SayHello`.
    pub path: &'static str,
    /// Its call shape.
    pub kind: MethodKind,
}

/// A service's name and methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceDescriptor {
    /// The full service name, e.g. `helloworld.Greeter`.
    pub name: &'static str,
    /// The methods, in declaration order; a method's index is its position here.
    pub methods: &'static [MethodDescriptor],
}

/// The full name of the method a client calls, `/package.Service/Method`: a static string
/// (what generated clients pass, free to copy), or a name made at run time and shared by
/// every call made with it (cloning it is one reference-count increment).
///
/// ```
/// use rpc_core::method::MethodName;
///
/// let generated = MethodName::from("/helloworld.Greeter/SayHello");
/// let at_run_time = MethodName::from(format!("/{}/{}", "helloworld.Greeter", "SayHello"));
/// assert_eq!(generated, at_run_time);
/// assert_eq!(at_run_time.as_str(), "/helloworld.Greeter/SayHello");
/// ```
#[derive(Clone)]
pub struct MethodName(Name);

#[derive(Clone)]
enum Name {
    Static(&'static str),
    Shared(Arc<SharedName>),
}

/// A name made at run time: its text, and the same bytes as the frame header carries them.
struct SharedName {
    text: Box<str>,
    wire: Bytes,
}

impl MethodName {
    /// A name from a static string, as generated code passes it.
    pub const fn from_static(name: &'static str) -> MethodName {
        MethodName(Name::Static(name))
    }

    /// The full name.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Name::Static(name) => name,
            Name::Shared(shared) => &shared.text,
        }
    }

    /// The name as the `METHOD` header field carries it (no copy of the text).
    pub(crate) fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Name::Static(name) => Bytes::from_static(name.as_bytes()),
            Name::Shared(shared) => shared.wire.clone(),
        }
    }
}

impl From<&'static str> for MethodName {
    fn from(name: &'static str) -> MethodName {
        MethodName::from_static(name)
    }
}

impl From<String> for MethodName {
    fn from(name: String) -> MethodName {
        let wire = Bytes::copy_from_slice(name.as_bytes());
        MethodName(Name::Shared(Arc::new(SharedName { text: name.into_boxed_str(), wire })))
    }
}

impl From<&MethodName> for MethodName {
    fn from(name: &MethodName) -> MethodName {
        name.clone()
    }
}

impl PartialEq for MethodName {
    fn eq(&self, other: &MethodName) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for MethodName {}

impl std::hash::Hash for MethodName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for MethodName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// A set of methods given by name: full names (`/acme.users.v1.Users/GetUser`), or every
/// method of a service (`/acme.users.v1.Users/*`), or all of them.
#[derive(Debug, Clone, Default)]
pub(crate) struct MethodPatterns {
    pub(crate) all: bool,
    methods: Vec<Box<str>>,
    prefixes: Vec<Box<str>>,
}

impl MethodPatterns {
    /// Adds a full method name, or a prefix ending in `*`.
    pub(crate) fn add(&mut self, pattern: String) {
        match pattern.strip_suffix('*') {
            Some(prefix) => self.prefixes.push(prefix.into()),
            None => self.methods.push(pattern.into()),
        }
    }

    /// Whether `method` (a full name) is in the set.
    pub(crate) fn matches(&self, method: &str) -> bool {
        self.all
            || self.methods.iter().any(|m| **m == *method)
            || self.prefixes.iter().any(|p| method.starts_with(&**p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_full_names_and_service_prefixes() {
        let mut set = MethodPatterns::default();
        set.add("/a.B/Get".into());
        set.add("/a.C/*".into());
        assert!(set.matches("/a.B/Get"));
        assert!(!set.matches("/a.B/Put"));
        assert!(set.matches("/a.C/Anything"));
        set.all = true;
        assert!(set.matches("/x.Y/Z"));
    }

    #[test]
    fn names_made_at_run_time_share_their_wire_bytes() {
        let name = MethodName::from(String::from("/a.B/Get"));
        let (first, second) = (name.to_bytes(), name.clone().to_bytes());
        assert_eq!(first.as_ptr(), second.as_ptr(), "no copy per call");
        assert_eq!(&first[..], b"/a.B/Get");
        assert_eq!(MethodName::from_static("/a.B/Get").to_bytes(), first);
    }
}
