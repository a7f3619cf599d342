//! Interceptors: code that runs around every call, on the server and on the client.
//!
//! The two sides look the same:
//!
//! | | server | client |
//! |---|---|---|
//! | the trait | [`ServerInterceptor`] | [`ClientInterceptor`] |
//! | what it knows of the call | [`ServerContext`] (the handler's too) | [`ClientContext`] |
//! | the rest of the chain | [`ServerNext`] | [`ClientNext`] |
//! | a list of them | [`ServerChain`] | [`ClientChain`] |
//!
//! An interceptor is an ordinary `async fn` around the rest of its chain: it sees the call's
//! method, metadata, deadline and peer (or target); it may change the metadata; it may reject
//! the call with a [`Status`](crate::Status) before the handler runs (or before the call is
//! sent); it runs `next` to continue, and sees the outcome after, whatever ended the call
//! (see [`Run`]). For a unary call it can also read the request and the response, and on a
//! server replace them ([`AnyMessage`]).
//!
//! ```
//! use rpc_core::interceptor::{ClientContext, ClientInterceptor, ClientNext};
//! use rpc_core::interceptor::{ServerInterceptor, ServerNext};
//! use rpc_core::{ServerContext, Status};
//!
//! struct Log;
//!
//! impl ServerInterceptor for Log {
//!     async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
//!         let outcome = next.run(ctx).await;
//!         tracing::info!(method = ctx.method(), ?outcome, "served");
//!         outcome
//!     }
//! }
//!
//! impl ClientInterceptor for Log {
//!     async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
//!         let outcome = next.run(ctx).await;
//!         tracing::info!(method = ctx.method(), ?outcome, "called");
//!         outcome
//!     }
//! }
//! ```
//!
//! Chains run in the order interceptors were added, the first added outermost:
//!
//! - on a server, [`ServerBuilder::interceptor`](crate::server::ServerBuilder::interceptor)
//!   for every service, then those given with
//!   [`add_service_with`](crate::server::ServerBuilder::add_service_with) for one service;
//! - on a client, [`ChannelBuilder::interceptor`](crate::client::ChannelBuilder::interceptor)
//!   for every call made through the channel, then those of a client
//!   ([`Channel::with_interceptor`](crate::Channel::with_interceptor): a channel sharing the
//!   connection, for one `FooClient`), then those of the call itself (`.interceptor(..)` on
//!   the call, before awaiting it).
//!
//! They apply to unary and streaming calls alike; around a stream, `next` completes when the
//! stream has ended. A channel or server without interceptors pays nothing for the mechanism.
//!
//! The built-in interceptors are in [`middleware`](crate::middleware).

mod client;
mod context;
mod guard;
mod message;
mod run;
mod server;

pub use client::{ClientChain, ClientContext, ClientInterceptor, ClientNext};
pub(crate) use client::{ClientEndpoint, DynClientInterceptor};
pub use context::ServerContext;
pub use guard::INTERCEPTOR_GRACE;
pub(crate) use guard::{CancelSignal, Guarded, panic_message};
pub use message::AnyMessage;
pub use run::{OnEnd, Run};
pub(crate) use server::{DynServerInterceptor, HandlerEndpoint, run_chain};
pub use server::{ServerChain, ServerInterceptor, ServerNext};
