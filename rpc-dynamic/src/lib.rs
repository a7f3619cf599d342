//! Calls to methods known only at run time, for tools such as `rpcurl` and the HTTP gateway:
//! the schema of a server's services, from its [reflection service](rpc_core::reflection)
//! or from `.proto` files (parsed by protox: no `protoc`); their messages from and to JSON,
//! in protobuf's canonical JSON mapping (prost-reflect's); and the channel to a target
//! named by a string (an address, or a service in a registry).
//!
//! ```no_run
//! use rpc_dynamic::{JsonOptions, Schema, Target};
//!
//! # async fn run() -> Result<(), rpc_dynamic::Error> {
//! let target: Target = "127.0.0.1:50051".parse()?;
//! let channel = target.connect("routeguide.RouteGuide", &Default::default()).await?;
//! let schema = Schema::from_reflection(&channel, &["routeguide.RouteGuide"], &Default::default()).await?;
//! let method = schema.method("routeguide.RouteGuide/GetFeature")?;
//! let request = method.request_from_json(r#"{"latitude": 409146138, "longitude": -746188906}"#)?;
//! let answer = channel.unary::<_, _, rpc_core::codec::BytesCodec>(method.path(), request).await?;
//! println!("{}", method.response_to_json(answer, &JsonOptions::default())?);
//! # Ok(()) }
//! ```

mod builtin;
mod error;
pub mod json;
mod schema;
mod target;

pub use error::Error;
pub use json::{JsonError, JsonOptions};
pub use schema::{Method, Schema};
pub use target::{ChannelOptions, Target};

/// Re-exported: the descriptors a [`Schema`] hands out are prost-reflect's.
pub use prost_reflect;
