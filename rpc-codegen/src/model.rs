//! The service model: everything the generator needs to know about a service, and nothing
//! about where it came from (a Rust trait or a `.proto` file).

use proc_macro2::{Ident, TokenStream};
use quote::quote;

/// A service: a named set of methods under a package.
#[derive(Debug, Clone)]
pub struct Service {
    /// The Rust name of the service trait, e.g. `Greeter`. The client and server types are
    /// named after it (`GreeterClient`, `GreeterServer`).
    pub name: Ident,
    /// The protobuf package, e.g. `helloworld`; empty for none.
    pub package: String,
    /// The service's name on the wire, without the package, e.g. `Greeter`.
    pub wire_name: String,
    /// Documentation lines, each as it would appear in a `#[doc = "..."]` attribute.
    pub docs: Vec<String>,
    /// The methods, in declaration order.
    pub methods: Vec<Method>,
    /// The visibility of the generated items, e.g. `pub`.
    pub vis: TokenStream,
    /// The path of the runtime crate, `::rpc_core` unless renamed.
    pub runtime: TokenStream,
    /// The path of the message codec, `::rpc_core::codec::ProstCodec` by default.
    pub codec: TokenStream,
    /// Whether to emit the client stub.
    pub emit_client: bool,
    /// Whether to emit the server dispatch.
    pub emit_server: bool,
    /// An expression of type `&'static [u8]`: the encoded `google.protobuf.FileDescriptorSet`
    /// holding the service's file and its imports, which the generated server hands to the
    /// reflection service. `None` (the default) for a service with no protobuf schema, such
    /// as one declared as a Rust trait.
    pub file_descriptor_set: Option<TokenStream>,
}

/// One method of a service.
#[derive(Debug, Clone)]
pub struct Method {
    /// The Rust name, in `snake_case`, e.g. `say_hello`.
    pub name: Ident,
    /// The name on the wire, e.g. `SayHello`.
    pub wire_name: String,
    /// The request message type.
    pub input: TokenStream,
    /// The response message type.
    pub output: TokenStream,
    /// Whether the client sends a stream of requests.
    pub client_streaming: bool,
    /// Whether the server sends a stream of responses.
    pub server_streaming: bool,
    /// Documentation lines.
    pub docs: Vec<String>,
    /// A unary method answered on the connection's task when its handler does not wait
    /// (`#[rpc(inline)]`), instead of in a task of its own: cheaper, but a handler that
    /// computes for long there holds up every call on its connection.
    pub inline: bool,
}

impl Service {
    /// A public service with no methods, using `::rpc_core` and its prost codec.
    pub fn new(name: Ident, package: impl Into<String>) -> Service {
        let wire_name = name.to_string().trim_start_matches("r#").to_owned();
        Service {
            name,
            package: package.into(),
            wire_name,
            docs: Vec::new(),
            methods: Vec::new(),
            vis: quote!(pub),
            runtime: quote!(::rpc_core),
            codec: quote!(::rpc_core::codec::ProstCodec),
            emit_client: true,
            emit_server: true,
            file_descriptor_set: None,
        }
    }

    /// The full name, `package.Service`, or just `Service` without a package.
    pub fn full_name(&self) -> String {
        if self.package.is_empty() {
            self.wire_name.clone()
        } else {
            format!("{}.{}", self.package, self.wire_name)
        }
    }

    /// The full name of a method on the wire: `/package.Service/Method`.
    pub fn method_path(&self, method: &Method) -> String {
        format!("/{}/{}", self.full_name(), method.wire_name)
    }
}

impl Method {
    /// Whether requests or responses are streamed.
    pub fn is_streaming(&self) -> bool {
        self.client_streaming || self.server_streaming
    }
}
