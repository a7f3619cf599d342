//! The etcd registry against a real etcd server: each test starts its own on free loopback
//! ports with a temporary data directory (the `etcd` binary comes from Debian's
//! `etcd-server`, which the test script installs; `ETCD_BIN` points elsewhere).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rpc_core::discovery::{EtcdOptions, EtcdRegistry, Instance, Registry, Update, Watch};
use rpc_core::server::Registration;
use rpc_core::{Channel, Server};
use tokio::net::TcpListener;

use crate::common::{self, Echo, TestClient, TestServer, TestService};

/// etcd's API as generated for the registry, used here as a raw client that checks what the
/// registry wrote the way any other tool would see it.
#[path = "../../src/discovery/etcd/pb.rs"]
mod pb;

/// The etcd server each test starts (shared with the tools' tests).
#[path = "../support/etcd.rs"]
mod etcd_server;
use etcd_server::{Etcd, TTL};

const SERVICE: &str = "test.v1.Test";

/// A plain etcd client, independent of the registry's.
struct Raw {
    channel: tonic::transport::Channel,
    token: Option<String>,
}

impl Raw {
    fn connect(etcd: &Etcd) -> Raw {
        let channel =
            tonic::transport::Endpoint::from_shared(etcd.endpoint()).expect("endpoint").connect_lazy();
        Raw { channel, token: None }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.parse().expect("token"));
        }
        request
    }

    fn kv(&self) -> KvClient<tonic::transport::Channel> {
        KvClient::new(self.channel.clone())
    }

    async fn get(&self, key: &str) -> RangeResponse {
        let range = RangeRequest { key: key.into(), ..RangeRequest::default() };
        self.kv().range(self.request(range)).await.expect("get").into_inner()
    }

    async fn put(&self, key: &str, value: &str) {
        let put = PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() };
        self.kv().put(self.request(put)).await.expect("put");
    }

    async fn compact(&self, revision: i64) {
        let compact = CompactionRequest { revision, physical: true };
        self.kv().compact(self.request(compact)).await.expect("compact");
    }

    /// Turns authentication on with a `root` user and a `registrar` user who may only write
    /// under `/rpc/`, and signs in as root.
    async fn enable_auth(&mut self, registrar_password: &str) {
        let mut auth = AuthClient::new(self.channel.clone());
        for (name, password) in [("root", "root-password"), ("registrar", registrar_password)] {
            let add =
                AuthUserAddRequest { name: name.into(), password: password.into(), ..Default::default() };
            auth.user_add(add).await.expect("add user");
        }
        auth.user_grant_role(AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() })
            .await
            .expect("grant root");
        auth.role_add(AuthRoleAddRequest { name: "registrar".into() }).await.expect("add role");
        let permission = pb::authpb::Permission {
            perm_type: pb::authpb::permission::Type::Readwrite.into(),
            key: b"/rpc/".to_vec(),
            range_end: b"/rpc0".to_vec(),
        };
        let grant = AuthRoleGrantPermissionRequest { name: "registrar".into(), perm: Some(permission) };
        auth.role_grant_permission(grant).await.expect("grant permission");
        auth.user_grant_role(AuthUserGrantRoleRequest { user: "registrar".into(), role: "registrar".into() })
            .await
            .expect("grant registrar");
        auth.auth_enable(AuthEnableRequest {}).await.expect("enable auth");
        let signed_in = auth
            .authenticate(AuthenticateRequest { name: "root".into(), password: "root-password".into() })
            .await
            .expect("authenticate");
        self.token = Some(signed_in.into_inner().token);
    }
}

use pb::etcdserverpb::auth_client::AuthClient;
use pb::etcdserverpb::kv_client::KvClient;
use pb::etcdserverpb::{
    AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest, AuthUserAddRequest,
    AuthUserGrantRoleRequest, AuthenticateRequest, CompactionRequest, PutRequest, RangeRequest,
    RangeResponse,
};

/// The next update of `watch`, failing the test if none comes within `limit`.
async fn next_within(watch: &mut Watch, limit: Duration) -> Update {
    tokio::time::timeout(limit, watch.next())
        .await
        .unwrap_or_else(|_| panic!("no update within {limit:?}"))
        .expect("the watch goes on")
        .expect("no error")
}

async fn next(watch: &mut Watch) -> Update {
    next_within(watch, Duration::from_secs(20)).await
}

fn addresses(instances: &[Instance]) -> Vec<&str> {
    instances.iter().map(Instance::address).collect()
}

#[tokio::test]
async fn registrations_are_keys_under_the_documented_layout_and_go_with_their_lease() {
    let etcd = Etcd::start().await;
    let registry = etcd.registry().await;
    let lease = registry
        .register(Instance::new(SERVICE, "10.0.0.1:80").with_weight(5).with_tag("zone", "a"))
        .await
        .expect("register");
    let found = registry.discover(SERVICE).await.expect("discover");
    assert_eq!(addresses(&found), ["10.0.0.1:80"]);
    assert_eq!(found[0].weight(), 5);

    // The raw key, as any other tool would see it.
    let raw = Raw::connect(&etcd);
    let got = raw.get("/rpc/services/test.v1.Test/10.0.0.1:80").await;
    let kv = got.kvs.first().expect("the key exists");
    assert_ne!(kv.lease, 0, "the key is attached to a lease");
    let value: serde_json::Value = serde_json::from_slice(&kv.value).expect("JSON");
    assert_eq!(value["address"], "10.0.0.1:80");
    assert_eq!(value["weight"], 5);
    assert_eq!(value["tags"]["zone"], "a");

    lease.revoke().await.expect("revoke");
    assert!(registry.discover(SERVICE).await.expect("discover").is_empty());
}

#[tokio::test]
async fn the_watch_delivers_registrations_and_departures() {
    let etcd = Etcd::start().await;
    let registry = etcd.registry().await;
    let mut watch = registry.watch(SERVICE).await.expect("watch");
    assert!(next(&mut watch).await.instances().is_empty());
    let a = registry.register(Instance::new(SERVICE, "10.0.0.1:80")).await.expect("register");
    assert_eq!(addresses(next(&mut watch).await.added()), ["10.0.0.1:80"]);
    let b = registry.register(Instance::new(SERVICE, "10.0.0.2:80")).await.expect("register");
    let update = next(&mut watch).await;
    assert_eq!(addresses(update.instances()), ["10.0.0.1:80", "10.0.0.2:80"]);
    // Other services' keys are not this watch's business (nor is a service whose name merely
    // starts with this one's).
    let _other = registry.register(Instance::new("test.v1.TestPlus", "10.0.0.3:80")).await.expect("register");
    drop(a);
    let update = next(&mut watch).await;
    assert_eq!(addresses(update.removed()), ["10.0.0.1:80"]);
    assert_eq!(addresses(update.instances()), ["10.0.0.2:80"]);
    b.revoke().await.expect("revoke");
    assert!(next(&mut watch).await.instances().is_empty());
}

#[tokio::test]
async fn a_killed_instance_expires_within_its_ttl() {
    let etcd = Etcd::start().await;
    let registry = etcd.registry().await;
    let mut watch = registry.watch(SERVICE).await.expect("watch");
    assert!(next(&mut watch).await.instances().is_empty());
    // The instance's process: a runtime of its own, with its own connection to etcd.
    let process =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let endpoint = etcd.endpoint();
    let lease = process
        .spawn(async move {
            let registry = EtcdRegistry::connect([endpoint], EtcdOptions::new().ttl(TTL)).await?;
            registry.register(Instance::new(SERVICE, "10.0.0.9:80")).await
        })
        .await
        .expect("task")
        .expect("register");
    assert_eq!(addresses(next(&mut watch).await.added()), ["10.0.0.9:80"]);
    // Alive well past its TTL while its keep-alives run.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(registry.discover(SERVICE).await.expect("discover").len(), 1);

    // Killed: no goodbye, the keep-alives stop with the process.
    std::mem::forget(lease);
    let killed = tokio::time::Instant::now();
    process.shutdown_background();
    let update = next_within(&mut watch, TTL + Duration::from_secs(5)).await;
    assert_eq!(addresses(update.removed()), ["10.0.0.9:80"]);
    eprintln!("expired {:?} after the kill (TTL {TTL:?})", killed.elapsed());
}

#[tokio::test]
async fn registrations_and_watches_survive_an_etcd_restart() {
    let mut etcd = Etcd::start().await;
    let registry = etcd.registry().await;
    let _kept = registry.register(Instance::new(SERVICE, "10.0.0.1:80")).await.expect("register");
    let mut watch = registry.watch(SERVICE).await.expect("watch");
    assert_eq!(next(&mut watch).await.instances().len(), 1);

    etcd.restart(false).await;
    // The watch resumes: a registration made after the restart reaches it.
    let _new =
        registry.register(Instance::new(SERVICE, "10.0.0.2:80")).await.expect("register after restart");
    let update = next(&mut watch).await;
    assert_eq!(addresses(update.instances()), ["10.0.0.1:80", "10.0.0.2:80"]);
    // And the first registration is still kept alive, well past its TTL.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(registry.discover(SERVICE).await.expect("discover").len(), 2);
}

#[tokio::test]
async fn an_instance_registers_again_when_etcd_comes_back_without_its_data() {
    let mut etcd = Etcd::start().await;
    let registry = etcd.registry().await;
    let _lease = registry.register(Instance::new(SERVICE, "10.0.0.1:80")).await.expect("register");
    let mut watch = registry.watch(SERVICE).await.expect("watch");
    assert_eq!(next(&mut watch).await.instances().len(), 1);

    etcd.restart(true).await;
    // The lease keeper finds its lease gone and registers again; the watch, whose history is
    // gone too, lists again and follows on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = registry.discover(SERVICE).await.expect("discover");
        if addresses(&found) == ["10.0.0.1:80"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the instance did not register again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _other = registry.register(Instance::new(SERVICE, "10.0.0.2:80")).await.expect("register");
    loop {
        let update = next(&mut watch).await;
        if addresses(update.instances()) == ["10.0.0.1:80", "10.0.0.2:80"] {
            break;
        }
    }
}

#[tokio::test]
async fn a_balanced_client_finds_servers_through_etcd() {
    let etcd = Etcd::start().await;
    let mut servers = Vec::new();
    for _ in 0..2 {
        let registry = etcd.registry().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = Server::builder()
            .add_service(TestServer::new(TestService::default()))
            .register(registry, Registration::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(server.serve_with_listener(listener, async {
            let _ = stopped.await;
        }));
        servers.push((stop, handle));
    }
    let channel = Channel::balanced(etcd.registry().await, SERVICE).connect().await.expect("connect");
    common::eventually("both servers are listed", || channel.instances().len() == 2).await;
    let client = TestClient::new(channel.clone());
    for _ in 0..10 {
        client.echo(Echo::default()).await.expect("call");
    }
    // A server shutting down deregisters from etcd; the channel follows.
    let (stop, handle) = servers.pop().expect("a server");
    let _ = stop.send(());
    handle.await.expect("task").expect("server");
    common::eventually("one server is left", || channel.instances().len() == 1).await;
    for _ in 0..10 {
        client.echo(Echo::default()).await.expect("call");
    }
}

/// A TCP proxy in front of etcd whose connections can be cut: a network failure between
/// one client and etcd, with etcd itself up.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (cut, connections) = (Arc::clone(&cut), Arc::clone(&connections));
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is reset
                    }
                    let relay = tokio::spawn(async move {
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().expect("lock").push(relay.abort_handle());
                }
            })
        };
        Proxy { port, cut, connections, accept }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes every connection through the proxy, and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().expect("lock").drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Waits until the watch's list is `expected`, failing the test after 20 s.
async fn until_listed(watch: &mut Watch, expected: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let update = next_within(watch, remaining).await;
        if addresses(update.instances()) == expected {
            return;
        }
    }
}

#[tokio::test]
async fn a_watch_catches_up_on_what_changed_while_it_was_cut_off() {
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.client_port).await;
    let writer = etcd.registry().await;
    let watcher = EtcdRegistry::connect([proxy.endpoint()], EtcdOptions::new()).await.expect("client");
    let leaving = writer.register(Instance::new(SERVICE, "10.0.0.1:80")).await.expect("register");
    let mut watch = watcher.watch(SERVICE).await.expect("watch");
    until_listed(&mut watch, &["10.0.0.1:80"]).await;

    proxy.cut();
    // While the watcher is cut off: one instance leaves, another arrives.
    leaving.revoke().await.expect("revoke");
    let _arrived = writer.register(Instance::new(SERVICE, "10.0.0.2:80")).await.expect("register");
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    // Resumed from its last revision, the watch sees both changes.
    until_listed(&mut watch, &["10.0.0.2:80"]).await;
}

#[tokio::test]
async fn a_watch_whose_history_was_compacted_while_cut_off_lists_again() {
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.client_port).await;
    let writer = etcd.registry().await;
    let watcher = EtcdRegistry::connect([proxy.endpoint()], EtcdOptions::new()).await.expect("client");
    let leaving = writer.register(Instance::new(SERVICE, "10.0.0.1:80")).await.expect("register");
    let mut watch = watcher.watch(SERVICE).await.expect("watch");
    until_listed(&mut watch, &["10.0.0.1:80"]).await;

    proxy.cut();
    leaving.revoke().await.expect("revoke");
    let _arrived = writer.register(Instance::new(SERVICE, "10.0.0.2:80")).await.expect("register");
    // The history the watch would resume from is compacted away.
    let raw = Raw::connect(&etcd);
    let revision = raw.get("any").await.header.expect("header").revision;
    raw.compact(revision).await;
    proxy.restore();
    until_listed(&mut watch, &["10.0.0.2:80"]).await;
}

#[tokio::test]
async fn deregistering_leaves_a_newer_registration_of_the_same_address_alone() {
    let etcd = Etcd::start().await;
    let registry = etcd.registry().await;
    let old =
        registry.register(Instance::new(SERVICE, "10.0.0.1:80").with_version("old")).await.expect("old");
    // The instance restarted and registered again before the old process said goodbye.
    let _new =
        registry.register(Instance::new(SERVICE, "10.0.0.1:80").with_version("new")).await.expect("new");
    old.revoke().await.expect("revoke the old one");
    let found = registry.discover(SERVICE).await.expect("discover");
    assert_eq!(found.len(), 1, "the new registration survives");
    assert_eq!(found[0].version(), "new");
    // And stays: its lease is kept alive well past the TTL.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(registry.discover(SERVICE).await.expect("discover").len(), 1);
}

#[tokio::test]
async fn keys_written_by_other_tools_may_leave_out_what_the_key_says() {
    let etcd = Etcd::start().await;
    let raw = Raw::connect(&etcd);
    raw.put("/rpc/services/test.v1.Test/10.0.0.5:80", r#"{"version":"2.0"}"#).await;
    raw.put("/rpc/services/test.v1.Test/garbage", "not json").await;
    let found = etcd.registry().await.discover(SERVICE).await.expect("discover");
    assert_eq!(addresses(&found), ["10.0.0.5:80"]);
    assert_eq!((found[0].service(), found[0].weight(), found[0].version()), (SERVICE, 100, "2.0"));
}

#[tokio::test]
async fn a_registry_signs_in_to_an_etcd_that_requires_it() {
    let etcd = Etcd::start().await;
    let mut raw = Raw::connect(&etcd);
    raw.enable_auth("registrar-password").await;

    let anonymous = etcd.registry().await;
    let refused = anonymous.discover(SERVICE).await.expect_err("etcd requires a user");
    assert!(refused.to_string().contains("user name is empty"), "{refused}");
    let wrong = EtcdRegistry::connect([etcd.endpoint()], EtcdOptions::new().user("registrar", "nope")).await;
    let wrong = wrong.expect_err("a wrong password fails the connection");
    assert!(wrong.to_string().contains("authentication failed"), "{wrong}");

    let options = EtcdOptions::new().ttl(TTL).user("registrar", "registrar-password");
    let registry = EtcdRegistry::connect([etcd.endpoint()], options).await.expect("sign in");
    let lease = registry.register(Instance::new(SERVICE, "10.0.0.9:80")).await.expect("register");
    let mut watch = registry.watch(SERVICE).await.expect("watch");
    until_listed(&mut watch, &["10.0.0.9:80"]).await;
    // The registration is kept alive (its renewals authenticated too) well past its TTL.
    tokio::time::sleep(TTL * 2).await;
    let got = raw.get("/rpc/services/test.v1.Test/10.0.0.9:80").await;
    assert_eq!(got.kvs.len(), 1, "still registered");
    lease.revoke().await.expect("revoke");
    until_listed(&mut watch, &[]).await;
}
