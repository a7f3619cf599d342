//! Discovery and balancing: three instances of one service, with weights 5, 3 and 1, register
//! in a registry; a client resolves the service by name and spreads its calls by weight; one
//! instance is stopped mid-traffic, and the client goes on with the other two.
//!
//! Run with `cargo run --example discovery` (the embedded in-process registry), or against a
//! real etcd with
//!
//! ```text
//! etcd &   # Debian's etcd-server: listens on http://127.0.0.1:2379
//! cargo run --example discovery --features etcd -- --etcd http://127.0.0.1:2379
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rpc_core::balance::Policy;
use rpc_core::discovery::{AnyRegistry, MemoryRegistry};
use rpc_core::server::Registration;
use rpc_core::{Channel, Server, ServerContext, Status};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Asks an instance who it is.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WhoRequest {}

/// An instance's name.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WhoReply {
    /// The name.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// A service whose instances say who they are.
#[rpc_core::service(package = "demo.v1")]
pub trait Where {
    /// The name of the instance that answers.
    async fn who(&self, ctx: &mut ServerContext, request: WhoRequest) -> Result<WhoReply, Status>;
}

struct Named(&'static str);

impl Where for Named {
    async fn who(&self, _ctx: &mut ServerContext, _request: WhoRequest) -> Result<WhoReply, Status> {
        Ok(WhoReply { name: self.0.to_owned() })
    }
}

/// A running instance: how to stop it, and its task.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Starts an instance named `name` with `weight`, registered in `registry`.
async fn start(registry: &AnyRegistry, name: &'static str, weight: u32) -> std::io::Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(WhereServer::new(Named(name)))
        .register(registry.clone(), Registration::new().weight(weight).tag("name", name));
    let task = tokio::spawn(server.serve_with_listener(listener, async {
        let _ = stopped.await;
    }));
    println!("started {name:<5} on {addr}, weight {weight}");
    Ok(Running { stop, task })
}

/// Makes `calls` calls and counts who answered.
async fn distribution(client: &WhereClient, calls: usize) -> Result<BTreeMap<String, usize>, Status> {
    let mut counts = BTreeMap::new();
    for _ in 0..calls {
        let reply = client.who(WhoRequest {}).await?;
        *counts.entry(reply.name).or_insert(0) += 1;
    }
    Ok(counts)
}

fn show(label: &str, counts: &BTreeMap<String, usize>) {
    let total: usize = counts.values().sum();
    let parts: Vec<String> = counts
        .iter()
        .map(|(name, n)| format!("{name} {n} ({:.0}%)", 100.0 * *n as f64 / total as f64))
        .collect();
    println!("{label}: {}", parts.join(", "));
}

/// Waits until `condition` holds, for ten seconds at most.
async fn wait_until(what: &str, condition: impl Fn() -> bool) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out waiting until {what}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The registry named on the command line: the in-process one, or etcd with `--etcd URL`.
async fn registry_from_args() -> Result<AnyRegistry, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            println!("registry: in-process (embedded)");
            Ok(AnyRegistry::new(MemoryRegistry::new()))
        }
        [flag, url] if flag == "--etcd" => etcd(url).await,
        _ => Err("usage: discovery [--etcd http://host:2379]".into()),
    }
}

#[cfg(feature = "etcd")]
async fn etcd(url: &str) -> Result<AnyRegistry, Box<dyn std::error::Error>> {
    use rpc_core::discovery::{EtcdOptions, EtcdRegistry};
    println!("registry: etcd at {url} (keys under {})", EtcdOptions::DEFAULT_PREFIX);
    Ok(AnyRegistry::new(EtcdRegistry::connect([url], EtcdOptions::new()).await?))
}

#[cfg(not(feature = "etcd"))]
async fn etcd(_url: &str) -> Result<AnyRegistry, Box<dyn std::error::Error>> {
    Err("this build has no etcd support: run with `--features etcd`".into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let registry = registry_from_args().await?;

    let alpha = start(&registry, "alpha", 5).await?;
    let beta = start(&registry, "beta", 3).await?;
    let gamma = start(&registry, "gamma", 1).await?;

    // Resolve the service by name; wait until all three have registered.
    let channel = Channel::balanced(registry.clone(), WhereClient::SERVICE_NAME)
        .policy(Policy::WeightedRoundRobin)
        .connect()
        .await?;
    wait_until("all three instances are listed", || channel.instances().len() == 3).await?;
    let client = WhereClient::new(channel.clone());
    println!("\n{} resolves to {} instances", WhereClient::SERVICE_NAME, channel.instances().len());
    show("900 calls, all three up", &distribution(&client, 900).await?);

    // Keep callers busy while beta is stopped: none of their calls may fail.
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (client, stop, served, failed) =
                (client.clone(), Arc::clone(&stop_traffic), Arc::clone(&served), Arc::clone(&failed));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.who(WhoRequest {}).await {
                        Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    // A graceful stop: beta deregisters, lets its calls finish, and exits.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let _ = beta.stop.send(());
    beta.task.await??;
    wait_until("beta is no longer listed", || channel.instances().len() == 2).await?;
    println!("\nstopped beta; the client now sees {} instances", channel.instances().len());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    stop_traffic.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await?;
    }
    let (served, failed) = (served.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("calls made by 4 callers around the stop: {served} served, {failed} failed");
    show("600 calls, beta gone", &distribution(&client, 600).await?);

    // Closing the client ends its watch of the registry before the servers go.
    drop((client, channel));
    for running in [alpha, gamma] {
        let _ = running.stop.send(());
        running.task.await??;
    }
    if failed > 0 {
        return Err(format!("{failed} calls failed while an instance stopped").into());
    }
    Ok(())
}
