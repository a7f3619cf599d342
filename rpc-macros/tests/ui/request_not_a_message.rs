use rpc_core::{ServerContext, Status};

/// Not a prost message: no `#[derive(prost::Message)]`.
#[derive(Debug, Clone, Default)]
pub struct Req {
    pub name: String,
}
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {}

#[rpc_core::service]
pub trait Greeter {
    async fn say_hello(&self, ctx: &mut ServerContext, req: Req) -> Result<Reply, Status>;
}

fn main() {}
