//! Interceptors: code that runs around every call, on the server and on the client.
//!
//! An interceptor is an ordinary async function around the rest of its chain: it sees the
//! call's method, metadata, deadline and peer; it may change the metadata; it may reject the
//! call with a [`Status`](crate::Status) before the handler runs (or before the call is sent);
//! it awaits `next` to continue; and it sees the outcome after. Chains run in registration
//! order, the first registered outermost:
//!
//! - on a server, [`ServerBuilder::interceptor`](crate::server::ServerBuilder::interceptor)
//!   for every service, then those given with
//!   [`add_service_with`](crate::server::ServerBuilder::add_service_with) for one service;
//! - on a client, [`ChannelBuilder::interceptor`](crate::client::ChannelBuilder::interceptor)
//!   for every call made through the channel.
//!
//! They apply to unary and streaming calls alike; around a stream, `next` completes when the
//! stream has ended. A channel or server without interceptors pays nothing for the mechanism.
//!
//! The built-in interceptors are in [`middleware`](crate::middleware).

mod client;
mod context;
mod server;

pub use client::{ClientChain, ClientContext, ClientInterceptor, ClientNext};
pub(crate) use client::{ClientEndpoint, DynClientInterceptor};
pub use context::ServerContext;
pub(crate) use server::{DynServerInterceptor, run_chain};
pub use server::{ServerChain, ServerInterceptor, ServerNext};
