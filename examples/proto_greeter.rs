//! A service declared in a `.proto` file: the same API as one declared with `#[service]`.
//!
//! `build.rs` compiles `proto/helloworld.proto` with `rpc_codegen::compile_protos` (no
//! `protoc` needed), and `include_proto!` brings in the messages, the `Greeter` trait, the
//! `GreeterClient` and the `GreeterServer`.
//!
//! Run with `cargo run --example proto_greeter`.

use rpc_core::{Channel, Server, ServerContext, Status, StreamSender, Streaming};
use tokio::net::TcpListener;

/// The code generated from `proto/helloworld.proto`.
pub mod helloworld {
    rpc_core::include_proto!("helloworld");
}

use helloworld::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};

struct MyGreeter;

impl Greeter for MyGreeter {
    async fn say_hello(&self, _ctx: &mut ServerContext, request: HelloRequest) -> Result<HelloReply, Status> {
        Ok(HelloReply { message: format!("Hello {}!", request.name) })
    }

    async fn chat(
        &self,
        _ctx: &mut ServerContext,
        mut requests: Streaming<HelloRequest>,
        mut responses: StreamSender<HelloReply>,
    ) -> Result<(), Status> {
        while let Some(request) = requests.message().await? {
            responses.send(HelloReply { message: format!("Hello {}!", request.name) }).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder().add_service(GreeterServer::new(MyGreeter)).serve_with_listener(listener, async {
            let _ = stopped.await;
        }),
    );

    let client = GreeterClient::new(Channel::connect(addr).await?);
    let reply = client.say_hello(HelloRequest { name: "proto".into() }).await?;
    println!("SayHello(proto)          -> {:?}", reply.message);

    let (mut names, mut replies) = client.chat().await?;
    for name in ["Ann", "Bob", "Cy"] {
        names.send(HelloRequest { name: name.into() }).await?;
    }
    names.close();
    let mut greetings = Vec::new();
    while let Some(reply) = replies.message().await? {
        greetings.push(reply.message);
    }
    println!("Chat(Ann, Bob, Cy)       -> {greetings:?}");

    let _ = stop.send(());
    server.await??;
    if greetings.len() != 3 {
        return Err("expected three greetings".into());
    }
    Ok(())
}
