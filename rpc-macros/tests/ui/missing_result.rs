use rpc_core::{ServerContext, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {}
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {}

#[rpc_core::service]
pub trait Greeter {
    async fn no_return(&self, ctx: &mut ServerContext, req: Req);
    async fn plain_return(&self, ctx: &mut ServerContext, req: Req) -> Reply;
}

fn main() {}
