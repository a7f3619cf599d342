//! A service using every option compiles, and its generated names are as documented.

use rpc_core::{ServerContext, Status, StreamSender, Streaming};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {
    #[prost(string, tag = "1")]
    pub name: String,
}
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {}

/// A documented service.
#[rpc_core::service(package = "acme.greet.v1", name = "Greeter")]
pub trait Greetings {
    /// Says hello.
    async fn say_hello(&self, ctx: &mut ServerContext, req: Req) -> Result<Reply, Status>;
    /// Renamed on the wire.
    #[rpc(name = "Bye")]
    async fn say_goodbye(&self, ctx: &mut ServerContext, req: Req) -> Result<Reply, Status>;
    /// Raw identifiers work too.
    async fn r#type(&self, ctx: &mut ServerContext, req: Req) -> Result<Reply, Status>;
    /// Server streaming.
    async fn watch(&self, ctx: &mut ServerContext, req: Req, replies: StreamSender<Reply>) -> Result<(), Status>;
    /// Client streaming.
    async fn upload(&self, ctx: &mut ServerContext, reqs: Streaming<Req>) -> Result<Reply, Status>;
    /// Bidirectional streaming, with paths spelled out.
    async fn chat(
        &self,
        ctx: &mut rpc_core::ServerContext,
        reqs: rpc_core::Streaming<Req>,
        replies: rpc_core::StreamSender<Reply>,
    ) -> Result<(), rpc_core::Status>;
}

struct Impl;

impl Greetings for Impl {
    async fn say_hello(&self, _ctx: &mut ServerContext, _req: Req) -> Result<Reply, Status> {
        Ok(Reply {})
    }
    async fn say_goodbye(&self, _ctx: &mut ServerContext, _req: Req) -> Result<Reply, Status> {
        Err(Status::unimplemented("not yet"))
    }
    async fn r#type(&self, _ctx: &mut ServerContext, _req: Req) -> Result<Reply, Status> {
        Ok(Reply {})
    }
    async fn watch(&self, _ctx: &mut ServerContext, _req: Req, mut replies: StreamSender<Reply>) -> Result<(), Status> {
        replies.send(Reply {}).await
    }
    async fn upload(&self, _ctx: &mut ServerContext, mut reqs: Streaming<Req>) -> Result<Reply, Status> {
        while reqs.message().await?.is_some() {}
        Ok(Reply {})
    }
    async fn chat(
        &self,
        _ctx: &mut ServerContext,
        _reqs: Streaming<Req>,
        _replies: StreamSender<Reply>,
    ) -> Result<(), Status> {
        Ok(())
    }
}

/// A service with no package and no methods is allowed.
#[rpc_core::service]
trait Empty {}

fn main() {
    use rpc_core::codegen::Service;
    assert_eq!(GreetingsClient::SERVICE_NAME, "acme.greet.v1.Greeter");
    let server = GreetingsServer::new(Impl);
    let descriptor = server.descriptor();
    assert_eq!(descriptor.name, "acme.greet.v1.Greeter");
    let paths: Vec<_> = descriptor.methods.iter().map(|m| m.path).collect();
    assert_eq!(
        paths,
        [
            "/acme.greet.v1.Greeter/SayHello",
            "/acme.greet.v1.Greeter/Bye",
            "/acme.greet.v1.Greeter/Type",
            "/acme.greet.v1.Greeter/Watch",
            "/acme.greet.v1.Greeter/Upload",
            "/acme.greet.v1.Greeter/Chat",
        ]
    );
    use rpc_core::method::MethodKind;
    let kinds: Vec<_> = descriptor.methods.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds[3..],
        [MethodKind::ServerStreaming, MethodKind::ClientStreaming, MethodKind::BidiStreaming]
    );
    let _ = EmptyServer::new(EmptyImpl).descriptor();
}

struct EmptyImpl;
impl Empty for EmptyImpl {}
