//! What client and server both know about a method: its shape and its names on the wire.
//!
//! Generated code describes each service with a static [`ServiceDescriptor`]; the server
//! routes by it, interceptors see a call's [`MethodKind`], and method patterns select
//! methods by name (the idempotent ones, for retries and failover).

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
}
