//! Every name a trait may legally use compiles, and calls reach the right method over a
//! socket: a service named `T` (the server's type parameter), messages named like prelude
//! types, methods named like the client's own (`new`, `channel`) and like the methods of
//! `Clone`, `Debug`, `Default`, `Future`, `IntoFuture` and `Into`, and keywords.
//!
//! On the client, a method named like one of the client's own or of a trait every client
//! has gets a trailing underscore (`clone_`); the trait keeps the name as written.

mod messages {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Result {
        #[prost(int32, tag = "1")]
        pub n: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Option {
        #[prost(int32, tag = "1")]
        pub n: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct String {
        #[prost(int32, tag = "1")]
        pub n: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Box {
        #[prost(int32, tag = "1")]
        pub n: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub n: i32,
    }
}

use messages::{Box, Option, Result, String};
use rpc_core::{ServerContext, Status, StreamSender};

/// The return type's alias must end in `Result`: here `Result` is a message.
type RpcResult<M> = std::result::Result<M, Status>;

#[rpc_core::service]
pub trait T {
    async fn clone(&self, ctx: &mut ServerContext, request: Result) -> RpcResult<Option>;
    async fn fmt(&self, ctx: &mut ServerContext, request: String) -> RpcResult<Box>;
    async fn default(&self, ctx: &mut ServerContext, request: messages::Status) -> RpcResult<Result>;
    async fn poll(&self, ctx: &mut ServerContext, request: Result) -> RpcResult<Result>;
    async fn into_future(&self, ctx: &mut ServerContext, request: Result) -> RpcResult<Result>;
    async fn into(&self, ctx: &mut ServerContext, request: Result) -> RpcResult<Result>;
    async fn new(&self, ctx: &mut ServerContext, request: Result) -> RpcResult<Result>;
    async fn channel(&self, ctx: &mut ServerContext, request: Result) -> RpcResult<Result>;
    async fn r#type(&self, ctx: &mut ServerContext, request: Result) -> RpcResult<Result>;
    async fn r#match(&self, ctx: &mut ServerContext, request: Result) -> RpcResult<Result>;
    async fn watch(&self, ctx: &mut ServerContext, request: Result, out: StreamSender<Option>) -> RpcResult<()>;
}

struct Impl;

impl T for Impl {
    async fn clone(&self, _ctx: &mut ServerContext, request: Result) -> RpcResult<Option> {
        Ok(Option { n: request.n })
    }
    async fn fmt(&self, _ctx: &mut ServerContext, request: String) -> RpcResult<Box> {
        Ok(Box { n: request.n })
    }
    async fn default(&self, _ctx: &mut ServerContext, request: messages::Status) -> RpcResult<Result> {
        Ok(Result { n: request.n })
    }
    async fn poll(&self, _ctx: &mut ServerContext, request: Result) -> RpcResult<Result> {
        Ok(Result { n: request.n + 1 })
    }
    async fn into_future(&self, _ctx: &mut ServerContext, request: Result) -> RpcResult<Result> {
        Ok(Result { n: request.n + 2 })
    }
    async fn into(&self, _ctx: &mut ServerContext, request: Result) -> RpcResult<Result> {
        Ok(Result { n: request.n + 3 })
    }
    async fn new(&self, _ctx: &mut ServerContext, request: Result) -> RpcResult<Result> {
        Ok(Result { n: request.n + 4 })
    }
    async fn channel(&self, _ctx: &mut ServerContext, request: Result) -> RpcResult<Result> {
        Ok(Result { n: request.n + 5 })
    }
    async fn r#type(&self, _ctx: &mut ServerContext, request: Result) -> RpcResult<Result> {
        Ok(Result { n: request.n + 6 })
    }
    async fn r#match(&self, _ctx: &mut ServerContext, request: Result) -> RpcResult<Result> {
        Ok(Result { n: request.n + 7 })
    }
    async fn watch(&self, _ctx: &mut ServerContext, request: Result, mut out: StreamSender<Option>) -> RpcResult<()> {
        out.send(Option { n: request.n }).await
    }
}

#[tokio::main]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = rpc_core::Server::builder().add_service(TServer::new(Impl));
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));

    let client = TClient::new(rpc_core::Channel::connect(addr).await.expect("connect"));
    let copy = client.clone();
    assert!(format!("{copy:?}").contains("TClient"));
    assert_eq!(client.channel().target(), copy.channel().target());

    assert_eq!(client.clone_(Result { n: 1 }).await.expect("clone"), Option { n: 1 });
    assert_eq!(client.fmt_(String { n: 2 }).await.expect("fmt"), Box { n: 2 });
    assert_eq!(client.default(messages::Status { n: 3 }).await.expect("default"), Result { n: 3 });
    assert_eq!(client.poll(Result { n: 0 }).await.expect("poll").n, 1);
    assert_eq!(client.into_future(Result { n: 0 }).await.expect("into_future").n, 2);
    assert_eq!(client.into_(Result { n: 0 }).await.expect("into").n, 3);
    assert_eq!(client.new_(Result { n: 0 }).await.expect("new").n, 4);
    assert_eq!(client.channel_(Result { n: 0 }).await.expect("channel").n, 5);
    assert_eq!(client.r#type(Result { n: 0 }).await.expect("type").n, 6);
    assert_eq!(client.r#match(Result { n: 0 }).await.expect("match").n, 7);
    let mut watched = client.watch(Result { n: 8 }).await.expect("watch");
    assert_eq!(watched.message().await.expect("message"), Some(Option { n: 8 }));
}
