//! Interceptors at work on one client and one server: JWT auth with roles, a rate limit,
//! retries, a circuit breaker, tracing and Prometheus metrics.
//!
//! Run with `cargo run --example interceptors` (set `RUST_LOG=info` to see a log line for
//! every call's span). It prints what happens: a rejected token, a denied role, a limited
//! burst, a retried failure, the breaker opening and closing, a trace id seen on both sides,
//! and the metrics text, which it also serves over HTTP on a local port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rpc_core::middleware::{
    BearerToken, BreakerScope, BreakerState, CircuitBreaker, Claims, JwtAuth, Metrics, RateLimit, Retry,
    TraceContext, Tracing,
};
use rpc_core::{Channel, Code, Server, ServerContext, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The shared secret of the demo's HS256 tokens.
const SECRET: &[u8] = b"demo secret: use a real one";

/// Which item to act on.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ItemRequest {
    /// The item's name.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// What the shop answers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Item {
    /// The item's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Who asked, from the caller's token.
    #[prost(string, tag = "2")]
    pub caller: String,
    /// The trace the server saw the call in.
    #[prost(string, tag = "3")]
    pub trace_id: String,
    /// Which attempt of the call this was, for the flaky method.
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// A small shop with a flaky method and one that goes down.
#[rpc_core::service(package = "demo.v1")]
pub trait Shop {
    /// Looks an item up.
    async fn get_item(&self, ctx: &mut ServerContext, request: ItemRequest) -> Result<Item, Status>;
    /// Fails with `Unavailable` two calls out of three.
    async fn flaky(&self, ctx: &mut ServerContext, request: ItemRequest) -> Result<Item, Status>;
    /// Fails with `Unavailable` while the inventory is down.
    async fn inventory(&self, ctx: &mut ServerContext, request: ItemRequest) -> Result<Item, Status>;
    /// Restocks an item: for admins only.
    async fn restock(&self, ctx: &mut ServerContext, request: ItemRequest) -> Result<Item, Status>;
}

#[derive(Default)]
struct ShopService {
    flaky_calls: AtomicU32,
    inventory_down: Arc<AtomicBool>,
    inventory_calls: Arc<AtomicU32>,
}

fn item(ctx: &ServerContext, name: String, attempt: u32) -> Item {
    let caller =
        ctx.extensions().get::<Claims>().and_then(|c| c.subject().map(str::to_owned)).unwrap_or_default();
    let trace_id = TraceContext::current().map(|t| t.trace_id().to_string()).unwrap_or_default();
    Item { name, caller, trace_id, attempt }
}

impl Shop for ShopService {
    async fn get_item(&self, ctx: &mut ServerContext, request: ItemRequest) -> Result<Item, Status> {
        Ok(item(ctx, request.name, 1))
    }

    async fn flaky(&self, ctx: &mut ServerContext, request: ItemRequest) -> Result<Item, Status> {
        let attempt = self.flaky_calls.fetch_add(1, Ordering::SeqCst) + 1;
        if !attempt.is_multiple_of(3) {
            return Err(Status::unavailable(format!("flaky: attempt {attempt} failed")));
        }
        Ok(item(ctx, request.name, attempt))
    }

    async fn inventory(&self, ctx: &mut ServerContext, request: ItemRequest) -> Result<Item, Status> {
        self.inventory_calls.fetch_add(1, Ordering::SeqCst);
        if self.inventory_down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the inventory database is down"));
        }
        Ok(item(ctx, request.name, 1))
    }

    async fn restock(&self, ctx: &mut ServerContext, request: ItemRequest) -> Result<Item, Status> {
        Ok(item(ctx, request.name, 1))
    }
}

/// An HS256 token for `subject` with `roles`, valid for an hour.
fn token(subject: &str, roles: &[&str], secret: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default() + 3600;
    let claims = serde_json::json!({ "sub": subject, "iss": "demo", "exp": exp, "roles": roles });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
}

/// Serves `metrics` as Prometheus text on a local port, for anyone who asks (`GET /metrics`).
async fn serve_metrics(metrics: Metrics) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = metrics.render();
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    Metrics::CONTENT_TYPE,
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

/// What a plain HTTP GET of `addr` returns (the example reads its own metrics endpoint).
async fn http_get(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n").await?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await?;
    Ok(response)
}

fn check(what: &str, ok: bool) -> Result<(), String> {
    if ok { Ok(()) } else { Err(format!("unexpected outcome: {what}")) }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()),
        )
        .init();

    // ---- The server: tracing, metrics, auth with roles, and a rate limit on GetItem. ----
    let shop = ShopService::default();
    let inventory_down = Arc::clone(&shop.inventory_down);
    let inventory_calls = Arc::clone(&shop.inventory_calls);
    let metrics = Metrics::new();
    let auth = JwtAuth::hs256(SECRET)
        .issuer("demo")
        .allow("/demo.v1.Shop/GetItem", ["user", "admin"])
        .allow("/demo.v1.Shop/Flaky", ["user", "admin"])
        .allow("/demo.v1.Shop/Inventory", ["user", "admin"])
        .allow("/demo.v1.Shop/Restock", ["admin"]);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::builder()
        .interceptor(Tracing::new())
        .interceptor(metrics.clone())
        .interceptor(auth)
        .interceptor(RateLimit::per_minute(600).method("/demo.v1.Shop/GetItem", 1, 5))
        .add_service(ShopServer::new(shop));
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    println!("shop serving on {addr}\n");

    // ---- Auth: no token, a forged one, and a role that is not allowed. ----
    let anonymous = ShopClient::new(Channel::connect(addr).await?);
    let status = anonymous.get_item(ItemRequest { name: "apple".into() }).await.expect_err("no token");
    println!("no token              -> {status}");
    check("no token is Unauthenticated", status.code() == Code::Unauthenticated)?;

    let forged = token("mallory", &["admin"], b"not the secret")?;
    let forger =
        ShopClient::new(Channel::builder(addr).interceptor(BearerToken::new(forged)).connect().await?);
    let status = forger.get_item(ItemRequest { name: "apple".into() }).await.expect_err("forged token");
    println!("forged token          -> {status}");
    check("a forged token is Unauthenticated", status.code() == Code::Unauthenticated)?;

    // ---- The user's channel: tracing, metrics, retry outside a circuit breaker, a token. ----
    let breaker = CircuitBreaker::new()
        .scope(BreakerScope::Method)
        .consecutive_failures(3)
        .open_for(Duration::from_millis(500))
        .probes(1)
        .on_state_change(|key, from, to| println!("  breaker for {key}: {from:?} -> {to:?}"));
    let channel = Channel::builder(addr)
        .interceptor(Tracing::new())
        .interceptor(metrics.clone())
        .interceptor(
            Retry::new().idempotent("/demo.v1.Shop/Flaky").initial_backoff(Duration::from_millis(20)),
        )
        .interceptor(breaker.clone())
        .interceptor(BearerToken::new(token("alice", &["user"], SECRET)?))
        .connect()
        .await?;
    let alice = ShopClient::new(channel);

    let apple = alice.get_item(ItemRequest { name: "apple".into() }).await?;
    println!("alice GetItem(apple)  -> ok, the server saw caller {:?}", apple.caller);
    check("the handler got alice's claims", apple.caller == "alice")?;
    println!(
        "                         in trace {} (the server continued the client's trace)",
        apple.trace_id
    );
    check("the server saw a trace", apple.trace_id.len() == 32)?;

    let status = alice.restock(ItemRequest { name: "apple".into() }).await.expect_err("not an admin");
    println!("alice Restock(apple)  -> {status}");
    check("a user may not restock", status.code() == Code::PermissionDenied)?;

    // ---- Rate limit: GetItem allows bursts of 5 (one a second after that). ----
    let mut limited = 0;
    for _ in 0..8 {
        if let Err(status) = alice.get_item(ItemRequest { name: "pear".into() }).await {
            check("limited calls are ResourceExhausted", status.code() == Code::ResourceExhausted)?;
            limited += 1;
        }
    }
    println!("a burst of 8 GetItem  -> {} served, {limited} refused as over the rate limit", 8 - limited);
    check("the burst was limited", limited >= 3)?;

    // ---- Retry: Flaky fails two calls out of three; it is marked idempotent. ----
    let flaky = alice.flaky(ItemRequest { name: "plum".into() }).await?;
    println!("alice Flaky(plum)     -> ok on attempt {} (two failures retried with backoff)", flaky.attempt);
    check("the flaky call succeeded on its third attempt", flaky.attempt == 3)?;

    // ---- Circuit breaker: Inventory goes down, the breaker opens, then closes again. ----
    inventory_down.store(true, Ordering::SeqCst);
    for i in 1..=5 {
        let status = alice.inventory(ItemRequest { name: "fig".into() }).await.expect_err("down");
        println!("alice Inventory #{i}    -> {status}");
    }
    let reached = inventory_calls.load(Ordering::SeqCst);
    println!("  the server saw {reached} of those 5 calls: the rest failed fast");
    check("the breaker stopped calls reaching the server", reached == 3)?;
    check("the breaker is open", breaker.state("/demo.v1.Shop/Inventory") == BreakerState::Open)?;

    inventory_down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    alice.inventory(ItemRequest { name: "fig".into() }).await?;
    println!("alice Inventory #6    -> ok: the probe call succeeded after the open period");
    check("the breaker closed again", breaker.state("/demo.v1.Shop/Inventory") == BreakerState::Closed)?;

    // ---- Metrics: the text, served over HTTP. ----
    let metrics_addr = serve_metrics(metrics.clone()).await?;
    let response = http_get(metrics_addr).await?;
    check("the metrics endpoint answers", response.starts_with("HTTP/1.1 200 OK"))?;
    println!("\nmetrics served at http://{metrics_addr}/metrics; the server's request counts:");
    for line in metrics.render().lines().filter(|l| l.starts_with("rpc_server_requests_total")) {
        println!("  {line}");
    }
    println!("and its errors by code:");
    for line in metrics.render().lines().filter(|l| l.starts_with("rpc_server_errors_total")) {
        println!("  {line}");
    }
    Ok(())
}
