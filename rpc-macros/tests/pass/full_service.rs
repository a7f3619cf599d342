//! A service using every option compiles, and its generated names are as documented.

use rpc_core::{Context, Status};

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
    async fn say_hello(&self, ctx: &mut Context, req: Req) -> Result<Reply, Status>;
    /// Renamed on the wire.
    #[rpc(name = "Bye")]
    async fn say_goodbye(&self, ctx: &mut Context, req: Req) -> Result<Reply, Status>;
    /// Raw identifiers work too.
    async fn r#type(&self, ctx: &mut Context, req: Req) -> Result<Reply, Status>;
}

struct Impl;

impl Greetings for Impl {
    async fn say_hello(&self, _ctx: &mut Context, _req: Req) -> Result<Reply, Status> {
        Ok(Reply {})
    }
    async fn say_goodbye(&self, _ctx: &mut Context, _req: Req) -> Result<Reply, Status> {
        Err(Status::unimplemented("not yet"))
    }
    async fn r#type(&self, _ctx: &mut Context, _req: Req) -> Result<Reply, Status> {
        Ok(Reply {})
    }
}

/// A service with no package and no methods is allowed.
#[rpc_core::service]
trait Empty {}

fn main() {
    use rpc_core::server::Service;
    assert_eq!(GreetingsClient::SERVICE_NAME, "acme.greet.v1.Greeter");
    let server = GreetingsServer::new(Impl);
    let descriptor = server.descriptor();
    assert_eq!(descriptor.name, "acme.greet.v1.Greeter");
    let paths: Vec<_> = descriptor.methods.iter().map(|m| m.path).collect();
    assert_eq!(paths, ["/acme.greet.v1.Greeter/SayHello", "/acme.greet.v1.Greeter/Bye", "/acme.greet.v1.Greeter/Type"]);
    let _ = EmptyServer::new(EmptyImpl).descriptor();
}

struct EmptyImpl;
impl Empty for EmptyImpl {}
