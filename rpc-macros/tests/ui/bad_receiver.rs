use rpc_core::{ServerContext, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {}
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {}

#[rpc_core::service]
pub trait Greeter {
    async fn by_value(self, ctx: &mut ServerContext, req: Req) -> Result<Reply, Status>;
    async fn by_mut(&mut self, ctx: &mut ServerContext, req: Req) -> Result<Reply, Status>;
}

fn main() {}
