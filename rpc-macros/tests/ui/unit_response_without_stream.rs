use rpc_core::{Context, Status, StreamSender, Streaming};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {}
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {}

#[rpc_core::service]
pub trait Greeter {
    async fn nothing(&self, ctx: &mut Context, req: Req) -> Result<(), Status>;
}

fn main() {}
