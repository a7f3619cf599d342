//! A multiplexed binary RPC framework over TCP, with protobuf messages.
//!
//! Declare a service as a Rust trait with [`#[service]`](service), implement it, mount the
//! generated `FooServer` on a [`Server`], and call it through the generated `FooClient`
//! over a [`Channel`]. Many calls share one connection, answered in any
//! order; deadlines, metadata and status codes travel with every call.
//!
//! ```no_run
//! use rpc_core::{ServerContext, Server, Status, client::Channel};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! pub struct HelloRequest { #[prost(string, tag = "1")] pub name: String }
//! #[derive(Clone, PartialEq, prost::Message)]
//! pub struct HelloReply { #[prost(string, tag = "1")] pub message: String }
//!
//! /// Greets people.
//! #[rpc_core::service(package = "helloworld")]
//! pub trait Greeter {
//!     /// Says hello to `req.name`.
//!     async fn say_hello(&self, ctx: &mut ServerContext, req: HelloRequest) -> Result<HelloReply, Status>;
//! }
//!
//! struct MyGreeter;
//!
//! impl Greeter for MyGreeter {
//!     async fn say_hello(&self, _ctx: &mut ServerContext, req: HelloRequest) -> Result<HelloReply, Status> {
//!         Ok(HelloReply { message: format!("Hello {}!", req.name) })
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//! let server = Server::builder().add_service(GreeterServer::new(MyGreeter));
//! tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
//!
//! let client = GreeterClient::new(Channel::connect("127.0.0.1:50051").await?);
//! let reply = client.say_hello(HelloRequest { name: "world".into() }).await?;
//! assert_eq!(reply.message, "Hello world!");
//! # Ok(()) }
//! ```
//!
//! The wire protocol is specified in `docs/PROTOCOL.md`.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

// The services this crate declares with its own macro name it as `::rpc_core`.
extern crate self as rpc_core;

// The layers, lowest first (docs/ARCHITECTURE.md). A module imports only from the layers
// before its own; scripts/check_layers.py checks it, reading the layers from these groups.

// Layer 0: the vocabulary.
mod backoff;
pub mod codec;
mod extensions;
pub mod metadata;
pub mod method;

// Layer 1: status codes and the wire format, which carry metadata.
pub mod status;
pub(crate) mod wire;

// Layer 2: byte streams, and registries; the fuzz targets' entry points into the wire format.
pub mod discovery;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod transport;

// Layer 3: the connection core.
mod conn;

// Layer 4: interceptor traits and call contexts; the ends of a stream.
pub mod interceptor;
pub mod stream;

// Layer 5: the client; the server side of the generated code's seam.
pub mod client;
pub mod codegen;

// Layer 6: the health service, which every server mounts.
pub mod health;

// Layer 7: the server.
pub mod server;

// Layer 8: ordinary users of the layers below: balanced channels, the built-in interceptors,
// the reflection service.
pub mod balance;
pub mod middleware;
pub mod reflection;

/// Includes the code generated from `.proto` files for one package: its messages, and the
/// trait, client and server of each of its services.
///
/// ```ignore
/// // build.rs: rpc_codegen::compile_protos(&["proto/helloworld.proto"], &["proto"])?;
/// pub mod helloworld {
///     rpc_core::include_proto!("helloworld");
/// }
/// ```
///
/// A package whose messages refer to other packages needs them as sibling modules, as
/// [`include_protos!`] lays them out.
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}

/// Includes the code generated from `.proto` files for every package, as nested modules
/// named after the packages (`acme.billing.v1` becomes `acme::billing::v1`).
///
/// ```ignore
/// rpc_core::include_protos!();
/// use acme::billing::v1::{BillingClient, BillingServer};
/// ```
#[macro_export]
macro_rules! include_protos {
    () => {
        include!(concat!(env!("OUT_DIR"), "/_rpc_protos.rs"));
    };
}

/// The README's examples, compiled as doctests so they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// Not part of the API: the wire format and the route table, for this crate's own tests and
/// benchmarks, which speak raw frames and time the lookup. May change in any release.
#[doc(hidden)]
pub mod internals {
    pub use crate::server::routes::DispatchTable;

    /// The frames of the wire protocol and their codec (docs/PROTOCOL.md).
    pub mod wire {
        pub use crate::wire::*;
    }
}

/// The prost this crate is built on, for messages and generated code: deriving with
/// `#[derive(rpc_core::prost::Message)]` (or depending on the same major version of `prost`)
/// keeps your messages and the runtime on one version. Code generated from `.proto` files
/// uses this path, so it needs no `prost` dependency of its own.
pub use prost;

pub use client::Channel;
pub use extensions::Extensions;
pub use interceptor::ServerContext;
pub use metadata::Metadata;
pub use server::Server;
pub use status::{Code, Status};
pub use stream::{StreamResponse, StreamSender, Streaming};

/// Turns a trait into an RPC service: a client stub, server dispatch and the service name.
///
/// ```
/// use rpc_core::{ServerContext, Status};
/// # #[derive(Clone, PartialEq, prost::Message)] pub struct GetUser { #[prost(uint64, tag = "1")] pub id: u64 }
/// # #[derive(Clone, PartialEq, prost::Message)] pub struct User { #[prost(string, tag = "1")] pub name: String }
///
/// /// User accounts.
/// #[rpc_core::service(package = "acme.users.v1")]
/// pub trait Users {
///     /// Looks a user up by id.
///     async fn get_user(&self, ctx: &mut ServerContext, req: GetUser) -> Result<User, Status>;
/// }
///
/// assert_eq!(UsersClient::SERVICE_NAME, "acme.users.v1.Users");
/// ```
///
/// The trait contains only `async fn`s, each of one of four shapes, where `In` and `Out` are
/// protobuf messages (`prost::Message + Default`):
///
/// | kind | declaration |
/// |---|---|
/// | unary | `async fn f(&self, ctx: &mut ServerContext, request: In) -> Result<Out, Status>` |
/// | server streaming | `async fn f(&self, ctx: &mut ServerContext, request: In, responses: StreamSender<Out>) -> Result<(), Status>` |
/// | client streaming | `async fn f(&self, ctx: &mut ServerContext, requests: Streaming<In>) -> Result<Out, Status>` |
/// | bidirectional | `async fn f(&self, ctx: &mut ServerContext, requests: Streaming<In>, responses: StreamSender<Out>) -> Result<(), Status>` |
///
/// A handler with a [`StreamSender`] sends its messages with `responses.send(msg).await?` and
/// ends the stream by returning: `Ok(())`, or the `Status` that the client receives after the
/// messages already sent. A [`Streaming`] argument is read with `requests.message().await?`
/// until it yields `None`.
///
/// For a trait `Foo` it generates:
///
/// - the trait itself, with `Send` futures and `Send + Sync + 'static` as supertraits;
/// - `FooClient`, wrapping a [`Channel`], with one method per RPC returning a call to await
///   (optionally after setting a timeout or metadata): a [`UnaryCall`](client::UnaryCall)
///   yielding the response, or a [`StreamingCall`](client::StreamingCall) yielding a
///   [`Streaming`] of responses (server streaming), a [`StreamSender`] and a
///   [`StreamResponse`] (client streaming), or a `StreamSender` and a `Streaming`
///   (bidirectional);
/// - `FooServer<T: Foo>`, a [`Service`](codegen::Service) to mount on a [`Server`];
/// - `SERVICE_NAME` on both, the full name `package.Foo`.
///
/// Options: `package = "a.b"` prefixes the service name; `name = "Other"` changes the name
/// used on the wire. On a method, `#[rpc(name = "Other")]` changes the method's wire name,
/// which by default is the Rust name in `UpperCamelCase` (`say_hello` → `SayHello`), as
/// protobuf service definitions spell them.
pub use rpc_macros::service;
