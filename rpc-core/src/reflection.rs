//! Server reflection: what a server serves, and the protobuf schema of what it serves, for
//! tools that call methods they were not compiled with (`rpcurl`, the HTTP gateway).
//!
//! Mount it with [`ServerBuilder::reflection`]. The service, `rpc.reflection.v1.Reflection`
//! (its `.proto` is `rpc-core/proto/rpc/reflection/v1/reflection.proto`), has two unary
//! methods:
//!
//! - `ListServices`: every mounted service with its methods and their shapes, and whether
//!   its schema is known;
//! - `FileDescriptors`: the protobuf files that define the symbols asked for (services,
//!   methods, messages, enums), each after the files it imports; all of them when none is
//!   asked for. The answer is encoded like a `google.protobuf.FileDescriptorSet`.
//!
//! A service generated from a `.proto` file carries the encoded descriptors of its file and
//! its imports (the `.proto` front end of `rpc-codegen` embeds them), so its schema is
//! served. A service declared as a Rust trait with `#[service]` has no protobuf schema to
//! give: it is listed by name and methods only, and tools are given its schema as a `.proto`
//! file.
//!
//! It is two unary calls rather than gRPC's `grpc.reflection.v1` (one bidirectional stream of
//! questions): a tool asks for the services once and for one service's files once, and a
//! unary call is simpler for every client of the protocol to make. Its calls go through the
//! server's interceptors like any service's (a schema may be worth protecting), unlike the
//! health service's.
//!
//! ```no_run
//! use rpc_core::reflection::{ListServicesRequest, ReflectionClient};
//! use rpc_core::{Channel, Server};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Serve: `.reflection()` mounts it.
//! let server = Server::builder() /* .add_service(...) */ .reflection();
//! tokio::spawn(server.serve("127.0.0.1:50051"));
//!
//! // Ask.
//! let reflection = ReflectionClient::new(Channel::connect("127.0.0.1:50051").await?);
//! for service in reflection.list_services(ListServicesRequest {}).await?.services {
//!     println!("{} ({} methods)", service.name, service.methods.len());
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::codegen::Service;
use crate::method::MethodKind;
use crate::server::ServerBuilder;
use crate::{ServerContext, Status};

/// Asks for the list of services.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ListServicesRequest {}

/// The services a server mounts, in the order they were mounted.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ListServicesResponse {
    /// The services.
    #[prost(message, repeated, tag = "1")]
    pub services: Vec<ServiceInfo>,
}

/// A service and its methods.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ServiceInfo {
    /// The full name, such as `routeguide.RouteGuide`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The methods, in declaration order.
    #[prost(message, repeated, tag = "2")]
    pub methods: Vec<MethodInfo>,
    /// Whether `FileDescriptors` knows the service's schema: true for services generated
    /// from `.proto` files, false for those declared as Rust traits.
    #[prost(bool, tag = "3")]
    pub has_descriptor: bool,
}

/// A method and its shape.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MethodInfo {
    /// The name within the service, such as `GetFeature`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Whether the client sends a stream of requests.
    #[prost(bool, tag = "2")]
    pub client_streaming: bool,
    /// Whether the server sends a stream of responses.
    #[prost(bool, tag = "3")]
    pub server_streaming: bool,
}

impl MethodInfo {
    /// The method's call shape.
    pub fn kind(&self) -> MethodKind {
        match (self.client_streaming, self.server_streaming) {
            (false, false) => MethodKind::Unary,
            (false, true) => MethodKind::ServerStreaming,
            (true, false) => MethodKind::ClientStreaming,
            (true, true) => MethodKind::BidiStreaming,
        }
    }
}

/// Asks for the files defining some symbols.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FileDescriptorsRequest {
    /// Full names of services, methods (`pkg.Service.Method`), messages or enums; none for
    /// every file the server knows.
    #[prost(string, repeated, tag = "1")]
    pub symbols: Vec<String>,
}

/// Files, each after the files it imports: encoded like a
/// `google.protobuf.FileDescriptorSet`, so the body decodes as one.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FileDescriptorsResponse {
    /// Encoded `google.protobuf.FileDescriptorProto`s.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub file: Vec<Bytes>,
}

/// The reflection service.
#[crate::service(package = "rpc.reflection.v1")]
pub trait Reflection {
    /// Every service the server mounts, with its methods.
    #[rpc(inline)]
    async fn list_services(
        &self,
        ctx: &mut ServerContext,
        request: ListServicesRequest,
    ) -> Result<ListServicesResponse, Status>;

    /// The files that define the symbols asked for, with every file they import.
    #[rpc(inline)]
    async fn file_descriptors(
        &self,
        ctx: &mut ServerContext,
        request: FileDescriptorsRequest,
    ) -> Result<FileDescriptorsResponse, Status>;
}

impl ServerBuilder {
    /// Mounts the [reflection service](crate::reflection), which lists the services the
    /// server mounts (all of them, whenever they were added) and serves the schema of those
    /// generated from `.proto` files.
    ///
    /// # Panics
    /// If it is already mounted.
    pub fn reflection(self) -> ServerBuilder {
        let catalog = Arc::new(OnceLock::new());
        let service = ReflectionService { catalog: Arc::clone(&catalog) };
        self.add_service(ReflectionServer::new(service)).on_serve(move |services| {
            let _ = catalog.set(Catalog::new(services));
        })
    }
}

/// The [`Reflection`] implementation over what the server mounts.
#[derive(Debug, Clone)]
struct ReflectionService {
    /// Filled when the server starts serving.
    catalog: Arc<OnceLock<Catalog>>,
}

impl ReflectionService {
    fn catalog(&self) -> Result<&Catalog, Status> {
        self.catalog.get().ok_or_else(|| Status::unavailable("the server is not serving yet"))
    }
}

impl Reflection for ReflectionService {
    async fn list_services(
        &self,
        _ctx: &mut ServerContext,
        _request: ListServicesRequest,
    ) -> Result<ListServicesResponse, Status> {
        Ok(self.catalog()?.services.clone())
    }

    async fn file_descriptors(
        &self,
        _ctx: &mut ServerContext,
        request: FileDescriptorsRequest,
    ) -> Result<FileDescriptorsResponse, Status> {
        self.catalog()?.files_for(&request.symbols)
    }
}

/// What reflection answers from: the services, and every file their descriptors hold.
#[derive(Debug, Default)]
struct Catalog {
    services: ListServicesResponse,
    /// Files in the order first met.
    files: Vec<File>,
    by_name: HashMap<String, usize>,
    /// Full names of services, methods, messages and enums, to the file defining them.
    by_symbol: HashMap<String, usize>,
}

/// One protobuf file: its encoding, and the names of the files it imports.
#[derive(Debug)]
struct File {
    encoded: Bytes,
    dependencies: Vec<String>,
}

impl Catalog {
    fn new(services: &[Arc<dyn Service>]) -> Catalog {
        let mut catalog = Catalog::default();
        for service in services {
            let descriptor = service.descriptor();
            let set = service.file_descriptor_set();
            if let Some(set) = set {
                catalog.add_set(descriptor.name, set);
            }
            let methods = descriptor
                .methods
                .iter()
                .map(|method| MethodInfo {
                    name: method.name.to_owned(),
                    client_streaming: matches!(
                        method.kind,
                        MethodKind::ClientStreaming | MethodKind::BidiStreaming
                    ),
                    server_streaming: matches!(
                        method.kind,
                        MethodKind::ServerStreaming | MethodKind::BidiStreaming
                    ),
                })
                .collect();
            catalog.services.services.push(ServiceInfo {
                name: descriptor.name.to_owned(),
                methods,
                has_descriptor: catalog.by_symbol.contains_key(descriptor.name),
            });
        }
        catalog
    }

    /// Adds the files of an encoded `FileDescriptorSet` that are not known yet. A set that
    /// does not decode (generated code of another version, say) is left out, with a warning.
    fn add_set(&mut self, service: &str, set: &'static [u8]) {
        let files = match <FileSet as prost::Message>::decode(Bytes::from_static(set)) {
            Ok(files) => files.file,
            Err(err) => {
                tracing::warn!(service, %err, "the service's file descriptors do not decode; reflection leaves them out");
                return;
            }
        };
        for encoded in files {
            let header = match <FileHeader as prost::Message>::decode(encoded.clone()) {
                Ok(header) => header,
                Err(err) => {
                    tracing::warn!(service, %err, "a file descriptor does not decode; reflection leaves it out");
                    continue;
                }
            };
            if self.by_name.contains_key(&header.name) {
                continue;
            }
            let index = self.files.len();
            for symbol in header.symbols() {
                self.by_symbol.entry(symbol).or_insert(index);
            }
            self.by_name.insert(header.name, index);
            self.files.push(File { encoded, dependencies: header.dependency });
        }
    }

    /// The files defining `symbols` (all files if there are none), each after its imports.
    fn files_for(&self, symbols: &[String]) -> Result<FileDescriptorsResponse, Status> {
        let roots: Vec<usize> = if symbols.is_empty() {
            (0..self.files.len()).collect()
        } else {
            symbols
                .iter()
                .map(|symbol| {
                    let symbol = symbol.strip_prefix('.').unwrap_or(symbol);
                    self.by_symbol.get(symbol).copied().ok_or_else(|| {
                        Status::not_found(format!("no file known to this server defines {symbol:?}"))
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let mut seen = HashSet::new();
        let mut order = Vec::new();
        for root in roots {
            self.visit(root, &mut seen, &mut order);
        }
        Ok(FileDescriptorsResponse {
            file: order.into_iter().map(|i| self.files[i].encoded.clone()).collect(),
        })
    }

    /// Appends `index` to `order` after the files it imports (depth first; imports form no
    /// cycles in valid protobuf, and `seen` stops one anyway). An import the server does not
    /// know is left out: the tool that asked will say which.
    fn visit(&self, index: usize, seen: &mut HashSet<usize>, order: &mut Vec<usize>) {
        if !seen.insert(index) {
            return;
        }
        for dependency in &self.files[index].dependencies {
            if let Some(&dep) = self.by_name.get(dependency) {
                self.visit(dep, seen, order);
            }
        }
        order.push(index);
    }
}

/// A `google.protobuf.FileDescriptorSet`, its files kept encoded.
#[derive(Clone, PartialEq, prost::Message)]
struct FileSet {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file: Vec<Bytes>,
}

/// The parts of a `google.protobuf.FileDescriptorProto` that name things (the rest is
/// skipped when decoding).
#[derive(Clone, PartialEq, prost::Message)]
struct FileHeader {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    package: String,
    #[prost(string, repeated, tag = "3")]
    dependency: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    message_type: Vec<MessageNames>,
    #[prost(message, repeated, tag = "5")]
    enum_type: Vec<Named>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<ServiceNames>,
}

/// A `DescriptorProto`'s name and nested types.
#[derive(Clone, PartialEq, prost::Message)]
struct MessageNames {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "3")]
    nested_type: Vec<MessageNames>,
    #[prost(message, repeated, tag = "4")]
    enum_type: Vec<Named>,
}

/// A `ServiceDescriptorProto`'s name and methods.
#[derive(Clone, PartialEq, prost::Message)]
struct ServiceNames {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    method: Vec<Named>,
}

/// Anything with a name in field 1 (an enum, a method).
#[derive(Clone, PartialEq, prost::Message)]
struct Named {
    #[prost(string, tag = "1")]
    name: String,
}

impl FileHeader {
    /// The full names the file defines.
    fn symbols(&self) -> Vec<String> {
        let prefix = if self.package.is_empty() { String::new() } else { format!("{}.", self.package) };
        let mut symbols = Vec::new();
        for service in &self.service {
            let name = format!("{prefix}{}", service.name);
            symbols.extend(service.method.iter().map(|method| format!("{name}.{}", method.name)));
            symbols.push(name);
        }
        symbols.extend(self.enum_type.iter().map(|e| format!("{prefix}{}", e.name)));
        let mut messages: Vec<(String, &MessageNames)> =
            self.message_type.iter().map(|m| (format!("{prefix}{}", m.name), m)).collect();
        while let Some((name, message)) = messages.pop() {
            symbols.extend(message.enum_type.iter().map(|e| format!("{name}.{}", e.name)));
            messages.extend(message.nested_type.iter().map(|n| (format!("{name}.{}", n.name), n)));
            symbols.push(name);
        }
        symbols
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded<M: prost::Message>(message: &M) -> Bytes {
        Bytes::from(message.encode_to_vec())
    }

    /// A set of three files: `b.proto` imports `a.proto`; `c.proto` stands alone.
    fn set() -> &'static [u8] {
        let a = FileHeader {
            name: "a.proto".into(),
            package: "pkg".into(),
            dependency: vec![],
            message_type: vec![MessageNames {
                name: "Outer".into(),
                nested_type: vec![MessageNames { name: "Inner".into(), ..Default::default() }],
                enum_type: vec![Named { name: "Kind".into() }],
            }],
            enum_type: vec![],
            service: vec![],
        };
        let b = FileHeader {
            name: "b.proto".into(),
            package: "pkg".into(),
            dependency: vec!["a.proto".into()],
            message_type: vec![],
            enum_type: vec![Named { name: "Color".into() }],
            service: vec![ServiceNames { name: "Svc".into(), method: vec![Named { name: "Get".into() }] }],
        };
        let c = FileHeader { name: "c.proto".into(), ..Default::default() };
        let set = FileSet { file: vec![encoded(&b), encoded(&a), encoded(&c)] };
        Box::leak(set.encode_to_vec().into_boxed_slice())
    }

    fn names(response: &FileDescriptorsResponse) -> Vec<String> {
        response
            .file
            .iter()
            .map(|file| <FileHeader as prost::Message>::decode(file.clone()).expect("decodes").name)
            .collect()
    }

    use prost::Message as _;

    #[test]
    fn a_symbol_brings_its_file_after_the_files_it_imports() {
        let mut catalog = Catalog::default();
        catalog.add_set("pkg.Svc", set());
        for symbol in ["pkg.Svc", "pkg.Svc.Get", "pkg.Color", ".pkg.Svc"] {
            let files = catalog.files_for(&[symbol.into()]).expect("known");
            assert_eq!(names(&files), ["a.proto", "b.proto"], "{symbol}");
        }
        for symbol in ["pkg.Outer", "pkg.Outer.Inner", "pkg.Outer.Kind"] {
            assert_eq!(names(&catalog.files_for(&[symbol.into()]).expect("known")), ["a.proto"], "{symbol}");
        }
        assert_eq!(names(&catalog.files_for(&[]).expect("all")), ["a.proto", "b.proto", "c.proto"]);
        let unknown = catalog.files_for(&["pkg.Nope".into()]).expect_err("unknown");
        assert_eq!(unknown.code(), crate::Code::NotFound);
        assert!(unknown.message().contains("pkg.Nope"));
    }

    #[test]
    fn a_set_that_does_not_decode_is_left_out() {
        let mut catalog = Catalog::default();
        catalog.add_set("x.Y", b"\x0a\xff");
        assert!(catalog.files.is_empty());
    }
}
