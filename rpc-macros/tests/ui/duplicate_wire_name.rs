use rpc_core::{ServerContext, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {}
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {}

#[rpc_core::service]
pub trait Greeter {
    #[rpc(name = "Hello")]
    async fn say_hello(&self, ctx: &mut ServerContext, req: Req) -> Result<Reply, Status>;
    #[rpc(name = "Hello")]
    async fn say_hi(&self, ctx: &mut ServerContext, req: Req) -> Result<Reply, Status>;
}

fn main() {}
