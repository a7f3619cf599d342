use rpc_core::{Context, Status, StreamSender, Streaming};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {}
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {}

#[rpc_core::service]
pub trait Greeter {
    async fn many(&self, ctx: &mut Context, req: Req, out: StreamSender<Reply>) -> Result<Reply, Status>;
}

fn main() {}
