use rpc_core::{ServerContext, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {}
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {}

#[rpc_core::service]
pub trait Greeter {
    async fn say_hello(&self, req: Req) -> Result<Reply, Status>;
    async fn say_more(&self, ctx: &mut ServerContext, req: Req, extra: u32) -> Result<Reply, Status>;
}

fn main() {}
