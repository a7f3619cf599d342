use rpc_core::{ServerContext, Status, StreamSender, Streaming};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {}
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {}

#[rpc_core::service]
pub trait Greeter {
    async fn many(&self, ctx: &mut ServerContext, req: Streaming) -> Result<Reply, Status>;
}

fn main() {}
