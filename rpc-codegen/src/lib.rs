//! The one code generator of the framework, and the service model it works from.
//!
//! Two front ends produce a [`Service`] model: the `#[service]` attribute (in `rpc-macros`),
//! which reads a Rust trait, and the `.proto` front end, which reads protobuf service
//! definitions. Both hand the model to [`generate`], so a service declared either way has
//! the same API: the service trait, a `{Name}Client` stub and a `{Name}Server<T>` dispatch.
//!
//! ```
//! use quote::{format_ident, quote};
//! use rpc_codegen::{Method, Service, generate};
//!
//! let mut service = Service::new(format_ident!("Greeter"), "helloworld");
//! service.methods.push(Method {
//!     name: format_ident!("say_hello"),
//!     wire_name: "SayHello".into(),
//!     input: quote!(HelloRequest),
//!     output: quote!(HelloReply),
//!     client_streaming: false,
//!     server_streaming: false,
//!     docs: vec![" Says hello.".into()],
//!     inline: false,
//! });
//! assert_eq!(service.method_path(&service.methods[0]), "/helloworld.Greeter/SayHello");
//! let code = generate(&service).to_string();
//! assert!(code.contains("GreeterClient") && code.contains("GreeterServer"));
//! ```

mod generate;
mod model;
pub mod naming;
#[cfg(feature = "proto")]
pub mod proto;

#[cfg(feature = "proto")]
pub use proto::compile_protos;

pub use generate::generate;
pub use model::{Method, Service};
