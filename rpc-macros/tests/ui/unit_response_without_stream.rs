use rpc_core::{ServerContext, Status, StreamSender, Streaming};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {}
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {}

#[rpc_core::service]
pub trait Greeter {
    async fn nothing(&self, ctx: &mut ServerContext, req: Req) -> Result<(), Status>;
}

fn main() {}
