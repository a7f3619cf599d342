//! The in-process and static registries, and servers registering themselves.

use std::time::Duration;

use futures_util::StreamExt;
use rpc_core::discovery::{Instance, MemoryRegistry, Registry, RegistryError, StaticRegistry, Update, Watch};
use rpc_core::server::Registration;
use tokio::net::TcpListener;

use crate::common;

const SERVICE: &str = "acme.users.v1.Users";

fn addresses(instances: &[Instance]) -> Vec<&str> {
    instances.iter().map(Instance::address).collect()
}

/// The next update of `watch`, failing the test if none comes within 10 s.
async fn next(watch: &mut Watch) -> Update {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an update within 10 s")
        .expect("the watch goes on")
        .expect("no error")
}

#[tokio::test]
async fn memory_registry_registers_discovers_and_deregisters_on_drop() {
    let registry = MemoryRegistry::new();
    let a = registry
        .register(
            Instance::new(SERVICE, "10.0.0.1:80").with_weight(5).with_version("1.2").with_tag("zone", "a"),
        )
        .await
        .expect("register a");
    let _b = registry.register(Instance::new(SERVICE, "10.0.0.2:80")).await.expect("register b");
    let _other =
        registry.register(Instance::new("other.Service", "10.0.0.3:80")).await.expect("register other");
    let found = registry.discover(SERVICE).await.expect("discover");
    assert_eq!(addresses(&found), ["10.0.0.1:80", "10.0.0.2:80"]);
    assert_eq!(found[0].weight(), 5);
    assert_eq!(found[0].version(), "1.2");
    assert_eq!(found[0].tags().get("zone").map(String::as_str), Some("a"));
    drop(a);
    assert_eq!(addresses(&registry.discover(SERVICE).await.expect("discover")), ["10.0.0.2:80"]);
    assert!(registry.discover("nobody.Here").await.expect("discover").is_empty());
}

#[tokio::test]
async fn registering_an_invalid_instance_is_refused() {
    let registry = MemoryRegistry::new();
    for instance in [Instance::new(SERVICE, "no-port"), Instance::new("", "10.0.0.1:80")] {
        let err = registry.register(instance).await.expect_err("invalid");
        assert!(matches!(err, RegistryError::Invalid(_)), "{err}");
    }
}

#[tokio::test]
async fn memory_watch_yields_the_list_then_each_change() {
    let registry = MemoryRegistry::new();
    let a = registry.register(Instance::new(SERVICE, "10.0.0.1:80")).await.expect("register");
    let mut watch = registry.watch(SERVICE).await.expect("watch");
    let first = next(&mut watch).await;
    assert_eq!(addresses(first.instances()), ["10.0.0.1:80"]);
    assert_eq!(addresses(first.added()), ["10.0.0.1:80"]);

    let b = registry.register(Instance::new(SERVICE, "10.0.0.2:80")).await.expect("register");
    let update = next(&mut watch).await;
    assert_eq!(addresses(update.added()), ["10.0.0.2:80"]);
    assert_eq!(addresses(update.instances()), ["10.0.0.1:80", "10.0.0.2:80"]);

    // Registering the same address again replaces the registration: a change, not an add.
    let a2 = registry.register(Instance::new(SERVICE, "10.0.0.1:80").with_weight(7)).await.expect("register");
    let update = next(&mut watch).await;
    assert_eq!(addresses(update.changed()), ["10.0.0.1:80"]);
    assert!(update.added().is_empty() && update.removed().is_empty());
    // The old lease no longer owns the address: dropping it removes nothing.
    drop(a);
    drop(b);
    let update = next(&mut watch).await;
    assert_eq!(addresses(update.removed()), ["10.0.0.2:80"]);
    assert_eq!(addresses(update.instances()), ["10.0.0.1:80"]);
    assert_eq!(update.instances()[0].weight(), 7);
    a2.revoke().await.expect("revoke");
    assert!(next(&mut watch).await.instances().is_empty());
}

#[tokio::test]
async fn a_registration_expires_within_its_ttl_when_heartbeats_stop() {
    let ttl = Duration::from_millis(300);
    let registry = MemoryRegistry::with_ttl(ttl);
    // The instance lives in a runtime of its own: shutting it down stops the heartbeat task
    // without deregistering, as a crashed process would.
    let instance_runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let lease = {
        let registry = registry.clone();
        instance_runtime
            .spawn(async move { registry.register(Instance::new(SERVICE, "10.0.0.9:80")).await })
            .await
            .expect("task")
            .expect("register")
    };
    let survivor = registry.register(Instance::new(SERVICE, "10.0.0.1:80")).await.expect("register");
    let mut watch = registry.watch(SERVICE).await.expect("watch");
    assert_eq!(next(&mut watch).await.instances().len(), 2);

    // While heartbeats run, the registration outlives its TTL many times over.
    tokio::time::sleep(ttl * 3).await;
    assert_eq!(registry.discover(SERVICE).await.expect("discover").len(), 2);

    std::mem::forget(lease);
    let died = tokio::time::Instant::now();
    instance_runtime.shutdown_background();
    let update = next(&mut watch).await;
    assert_eq!(addresses(update.removed()), ["10.0.0.9:80"]);
    // Expired within the TTL of the last heartbeat (with room for a busy machine).
    assert!(died.elapsed() <= ttl * 4, "expiry took {:?}", died.elapsed());
    assert_eq!(addresses(&registry.discover(SERVICE).await.expect("discover")), ["10.0.0.1:80"]);
    drop(survivor);
}

#[tokio::test]
async fn static_registry_lists_fixed_instances_and_cannot_register() {
    let registry = StaticRegistry::new()
        .with(SERVICE, "10.0.0.2:80")
        .with(SERVICE, "10.0.0.1:80")
        .with_instance(Instance::new(SERVICE, "10.0.0.2:80").with_weight(3));
    let found = registry.discover(SERVICE).await.expect("discover");
    assert_eq!(addresses(&found), ["10.0.0.1:80", "10.0.0.2:80"]);
    assert_eq!(found[1].weight(), 3, "a later entry for an address replaces the earlier");
    let mut watch = registry.watch(SERVICE).await.expect("watch");
    assert_eq!(next(&mut watch).await.instances().len(), 2);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), watch.next()).await.is_err(),
        "a static list never changes, and its watch never ends"
    );
    let err = registry.register(Instance::new(SERVICE, "10.0.0.3:80")).await.expect_err("static");
    assert!(matches!(err, RegistryError::Unsupported(_)), "{err}");
}

#[tokio::test]
async fn a_server_registers_on_start_and_deregisters_when_it_shuts_down() {
    let registry = MemoryRegistry::new();
    let mut watch = registry.watch("test.v1.Test").await.expect("watch");
    assert!(next(&mut watch).await.instances().is_empty());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = common::serve_on(listener, |b| {
        b.register(registry.clone(), Registration::new().weight(42).version("9.9").tag("zone", "z1"))
    })
    .await;
    let update = next(&mut watch).await;
    let registered = &update.added()[0];
    assert_eq!(registered.address(), addr.to_string());
    assert_eq!((registered.weight(), registered.version()), (42, "9.9"));
    assert_eq!(registered.tags().get("zone").map(String::as_str), Some("z1"));
    // Only the application's services: not the built-in health service.
    assert!(registry.discover("grpc.health.v1.Health").await.expect("discover").is_empty());
    server.shutdown().await;
    assert_eq!(addresses(next(&mut watch).await.removed()), [addr.to_string()]);
}

#[tokio::test]
async fn a_server_listening_on_an_unspecified_address_needs_an_address_to_register() {
    let registry = MemoryRegistry::new();
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let server = rpc_core::Server::builder().register(registry.clone(), Registration::new());
    let err = server.serve_with_listener(listener, std::future::pending()).await.expect_err("no address");
    assert!(err.to_string().contains("Registration::address"), "{err}");

    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = common::serve_on(listener, |b| {
        b.register(registry.clone(), Registration::new().address(format!("127.0.0.1:{port}")))
    })
    .await;
    common::eventually("registered", || {
        futures_util::FutureExt::now_or_never(registry.discover("test.v1.Test"))
            .and_then(Result::ok)
            .is_some_and(|found| found.len() == 1)
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_registers_only_the_services_it_is_told_to() {
    let registry = MemoryRegistry::new();
    let server =
        common::serve_with(|b| b.register(registry.clone(), Registration::new().services(["alias.Name"])))
            .await;
    common::eventually("registered", || {
        futures_util::FutureExt::now_or_never(registry.discover("alias.Name"))
            .and_then(Result::ok)
            .is_some_and(|found| found.len() == 1)
    })
    .await;
    assert!(registry.discover("test.v1.Test").await.expect("discover").is_empty());
    server.shutdown().await;
}
