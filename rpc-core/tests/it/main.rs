//! Integration tests over real loopback sockets, one module per area.

// Test helpers are `pub` for the modules of this crate, which nothing else links.
#![allow(unreachable_pub)]

mod bad_input;
mod balance;
#[cfg(feature = "jwt")]
mod builtin_auth;
mod builtin_breaker;
mod builtin_deadline;
#[cfg(feature = "metrics")]
mod builtin_metrics;
mod builtin_rate_limit;
mod builtin_retry;
mod builtin_tracing;
mod common;
mod concurrency;
mod deadline;
mod discovery;
#[cfg(feature = "etcd")]
mod etcd;
mod golden;
mod health;
mod hostile;
mod interceptors;
mod limits;
mod raw;
mod reconnect;
mod reflection;
mod rules;
mod shutdown;
mod streams;
#[cfg(feature = "tls")]
mod tls;
mod transports;
mod unary;
