//! Renamed imports and a `Result` alias are accepted: what counts is the type, not its name.

use rpc_core::{ServerContext, Status as Failure};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {}
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {}

type Result<T> = std::result::Result<T, Failure>;

#[rpc_core::service]
pub trait Aliased {
    async fn short(&self, ctx: &mut ServerContext, req: Req) -> Result<Reply>;
    async fn long(&self, ctx: &mut ServerContext, req: Req) -> std::result::Result<Reply, Failure>;
}

struct Impl;

impl Aliased for Impl {
    async fn short(&self, _ctx: &mut ServerContext, _req: Req) -> Result<Reply> {
        Ok(Reply {})
    }
    async fn long(&self, _ctx: &mut ServerContext, _req: Req) -> Result<Reply> {
        Err(Failure::not_found("nothing"))
    }
}

fn main() {
    let _ = AliasedServer::new(Impl);
}
