//! Integration tests over real loopback sockets, one module per area.

// Test helpers are `pub` for the modules of this crate, which nothing else links.
#![allow(unreachable_pub)]

mod bad_input;
mod common;
mod concurrency;
mod deadline;
mod golden;
mod interceptors;
mod limits;
mod raw;
mod reconnect;
mod shutdown;
mod streams;
mod unary;
