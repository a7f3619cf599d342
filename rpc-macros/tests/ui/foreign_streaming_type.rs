use rpc_core::{ServerContext, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {}
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {}

/// Not the runtime's `Streaming`.
pub struct Streaming<T>(T);

#[rpc_core::service]
pub trait Greeter {
    async fn many(&self, ctx: &mut ServerContext, req: Streaming<Req>) -> Result<Reply, Status>;
}

fn main() {}
