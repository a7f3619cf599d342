//! Quickstart: declare a service as a trait, serve it, find it, call it, shut down.
//!
//! Run with `cargo run --example quickstart`. It starts a server on a free local port that
//! registers itself in the embedded in-process registry, resolves the service by name from a
//! client, makes a few calls over one connection (one of them failing with a status on
//! purpose), prints what came back, shuts the server down gracefully (deregistering it) and
//! exits 0.
//!
//! With `-- --serve 127.0.0.1:50051` it only serves the greeter, with reflection, until
//! Ctrl-C: for `rpcurl` to talk to (the greeter is declared as a Rust trait, so tools get
//! its schema from `proto/helloworld.proto`, which declares the same messages and names).

use std::future::IntoFuture;
use std::time::Duration;

use rpc_core::discovery::{MemoryRegistry, Registry};
use rpc_core::server::Registration;
use rpc_core::{Channel, Code, Server, ServerContext, Status};
use tokio::net::TcpListener;

/// The request: who to greet.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// The name to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// The reply: the greeting.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// The greeting.
    #[prost(string, tag = "1")]
    pub message: String,
}

/// Greets people.
#[rpc_core::service(package = "helloworld")]
pub trait Greeter {
    /// Says hello to `request.name`; an empty name is an `InvalidArgument`.
    async fn say_hello(&self, ctx: &mut ServerContext, request: HelloRequest) -> Result<HelloReply, Status>;
}

/// Our implementation of the service.
struct FriendlyGreeter;

impl Greeter for FriendlyGreeter {
    async fn say_hello(&self, ctx: &mut ServerContext, request: HelloRequest) -> Result<HelloReply, Status> {
        if request.name.is_empty() {
            return Err(Status::invalid_argument("name must not be empty"));
        }
        let lang = ctx.metadata().get_str("accept-language").unwrap_or("en");
        let greeting = if lang.starts_with("fr") { "Bonjour" } else { "Hello" };
        ctx.response_metadata_mut().insert("x-greeter", "friendly");
        Ok(HelloReply { message: format!("{greeting}, {}!", request.name) })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    if let Some(addr) = examples::serve_flag("quickstart")? {
        let server = Server::builder().add_service(GreeterServer::new(FriendlyGreeter));
        return Ok(examples::serve_until_ctrl_c(server, &addr, "greeter").await?);
    }

    // The registry where services find each other; here, the embedded in-process one.
    let registry = MemoryRegistry::new();

    // Serve on a free port, registered in the registry; the oneshot is our shutdown signal.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(GreeterServer::new(FriendlyGreeter))
        .register(registry.clone(), Registration::new());
    let server = tokio::spawn(server.serve_with_listener(listener, async {
        let _ = stopped.await;
    }));
    println!("server listening on {addr}");

    // Find the service by name (waiting for it to register), then call it: one channel, one
    // connection to the instance, every call below multiplexed over it.
    let channel = Channel::balanced(registry.clone(), GreeterClient::SERVICE_NAME).connect().await?;
    let client = GreeterClient::new(channel);
    let instances = registry.discover(GreeterClient::SERVICE_NAME).await?;
    let found: Vec<&str> = instances.iter().map(|i| i.address()).collect();
    println!("resolved {} -> {found:?}", GreeterClient::SERVICE_NAME);

    let reply = client.say_hello(HelloRequest { name: "world".into() }).await?;
    println!("say_hello(world)        -> {:?}", reply.message);

    let response = client
        .say_hello(HelloRequest { name: "monde".into() })
        .metadata("accept-language", "fr")
        .timeout(Duration::from_secs(1))
        .full()
        .await?;
    println!(
        "say_hello(monde, fr)    -> {:?} (x-greeter: {:?})",
        response.get_ref().message,
        response.metadata().get_str("x-greeter").unwrap_or_default()
    );

    // Ten calls in flight at once on the same connection.
    let names: Vec<String> = (1..=10).map(|i| format!("caller-{i}")).collect();
    let calls = names.iter().map(|name| client.say_hello(HelloRequest { name: name.clone() }).into_future());
    let replies = futures_util::future::join_all(calls).await;
    let ok = replies.iter().filter(|r| r.is_ok()).count();
    println!("10 concurrent calls     -> {ok} ok");

    // A call that fails with a status chosen by the handler.
    match client.say_hello(HelloRequest { name: String::new() }).await {
        Err(status) if status.code() == Code::InvalidArgument => {
            println!("say_hello(\"\")           -> error {status}");
        }
        other => return Err(format!("expected InvalidArgument, got {other:?}").into()),
    }

    // Graceful shutdown: the server deregisters, in-flight calls finish, then it returns.
    let _ = stop.send(());
    server.await??;
    let left = registry.discover(GreeterClient::SERVICE_NAME).await?.len();
    println!("server shut down cleanly ({left} instances left registered)");
    if ok != 10 {
        return Err(format!("{} of 10 concurrent calls failed", 10 - ok).into());
    }
    Ok(())
}
