//! An HTTP/JSON gateway in front of services: browsers, shells and other languages call
//! them with JSON over HTTP, as grpc-gateway or Envoy's transcoder let them call gRPC
//! services.
//!
//! - **Routes**: every method at `POST /pkg.Service/Method`, and the REST paths and verbs
//!   its `google.api.http` annotation declares, with path variables, query parameters and
//!   the body mapped onto the request as grpc-gateway maps them.
//! - **Upstreams**: a channel per service, balanced over the instances a registry lists
//!   (in-process, static or etcd), so the gateway scales out like any other client.
//! - **The edge**: the framework's own interceptors run around every call: metrics (served
//!   at `GET /metrics`), tracing (`traceparent` in from HTTP and onward to the service),
//!   and whatever is added: JWT auth with access rules, rate limits.
//! - **Answers**: JSON in protobuf's canonical mapping; streams as newline-delimited JSON
//!   or server-sent events; statuses as grpc-gateway's HTTP codes with a JSON body; `400`
//!   with the reason for malformed JSON, fields that do not fit, and bodies over the limit.
//!
//! ```no_run
//! use rpc_core::Channel;
//! use rpc_core::middleware::RateLimit;
//! use rpc_dynamic::Schema;
//! use rpc_gateway::Gateway;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let schema = Schema::from_protos(&["route_guide.proto"], &["proto"])?;
//! let channel = Channel::builder("127.0.0.1:50051").connect().await?;
//! let gateway = Gateway::builder(schema)
//!     .upstream("routeguide.RouteGuide", channel)
//!     .interceptor(RateLimit::per_second(100))
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! gateway.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! The `rpc-gateway` binary runs one from a [configuration file](Config).

mod config;
mod gateway;
mod route;
mod status;
mod transcode;

pub use config::{AllowRule, AuthConfig, Config, RateLimitConfig, Upstream, UpstreamTls};
pub use gateway::{DEFAULT_MAX_BODY_BYTES, Gateway, GatewayBuilder};
pub use route::TemplateError;
pub use status::{error_json, http_status};

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration does not hold together: a file that does not parse, a service the
    /// schema lacks, a bad path template.
    #[error("configuration: {0}")]
    Config(String),
    /// An upstream could not be reached, or would not give its schema.
    #[error("upstream: {0}")]
    Upstream(String),
}
