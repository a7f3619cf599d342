use rpc_core::{ServerContext, Status, Streaming};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {}
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {}

/// Server streaming written the tonic way: a stream returned.
#[rpc_core::service]
pub trait Greeter {
    async fn watch(&self, ctx: &mut ServerContext, req: Req) -> Result<Streaming<Reply>, Status>;
}

fn main() {}
