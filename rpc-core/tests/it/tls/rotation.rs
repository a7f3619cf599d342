//! Certificate rotation without a restart: reloads by hand and by watching files, on both
//! sides, with calls in flight on the connections made before and after.

use std::path::Path;
use std::sync::atomic::Ordering;

use rpc_core::transport::tls::TlsConnector;

use super::*;
use crate::common::{Sleep, eventually};

/// A channel of its own, so a connection and a handshake of its own, through `connector`.
async fn connect_with(target: &str, connector: &TlsConnector) -> Result<TestClient, Status> {
    let builder = Channel::builder(target).tls(connector.clone()).connect_timeout(Duration::from_secs(5));
    Ok(TestClient::new(builder.connect().await?))
}

/// Starts a call that runs until after the test has changed something, and waits until the
/// server is running it.
async fn call_in_flight(
    client: &TestClient,
    server: &Running,
    id: u64,
) -> tokio::task::JoinHandle<Result<Sleep, Status>> {
    let started = server.probe.started.load(Ordering::SeqCst);
    let client = client.clone();
    let call = tokio::spawn(async move { client.sleep(Sleep { id, millis: 300 }).await });
    eventually("the server runs the call", || server.probe.started.load(Ordering::SeqCst) > started).await;
    call
}

#[tokio::test]
async fn a_reloaded_server_identity_is_used_by_new_connections_while_open_ones_keep_theirs() {
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let acceptor = ServerTlsConfig::new(old_ca.server().identity()).build().expect("acceptor");
    let served = acceptor.clone();
    let server = serve_with(move |b| b.tls(served)).await;
    let target = server.addr.to_string();

    let before = connect(target.clone(), client_config(&old_ca)).await.expect("a client of the old CA");
    echo(&before, "x").await.expect("echo");
    let old_call = call_in_flight(&before, &server, 1).await;

    acceptor.reload(&ServerTlsConfig::new(new_ca.server().identity())).expect("reload");

    // New handshakes get the new certificate: a client trusting only the old CA refuses it.
    let status = first_failure(target.clone(), client_config(&old_ca)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("UnknownIssuer"), "{status}");
    let after = connect(target.clone(), client_config(&new_ca)).await.expect("a client of the new CA");
    let new_call = call_in_flight(&after, &server, 2).await;

    // The connection made before keeps its session: its call in flight ends well, and it
    // takes new calls, alongside the connection made after.
    assert_eq!(old_call.await.expect("task").expect("the old connection's call").id, 1);
    assert_eq!(new_call.await.expect("task").expect("the new connection's call").id, 2);
    assert_eq!(echo(&before, "old").await.expect("the old connection still serves"), "old");
    assert_eq!(echo(&after, "new").await.expect("the new connection serves"), "new");
    server.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_reload_that_fails_keeps_the_previous_material_and_says_why() {
    let (logged, _guard) = Logged::capture();
    let (ca, other) = (Ca::new("test CA"), Ca::new("another CA"));
    let acceptor = ServerTlsConfig::new(ca.server().identity()).build().expect("acceptor");
    let served = acceptor.clone();
    let server = serve_with(move |b| b.tls(served)).await;
    let target = server.addr.to_string();

    let (a, b) = (other.server(), other.server());
    let mismatched = Identity::from_pem(&a.cert_pem, &b.key_pem).expect("parses");
    let err = acceptor.reload(&ServerTlsConfig::new(mismatched)).expect_err("a key of another certificate");
    assert!(err.to_string().to_lowercase().contains("key"), "{err}");
    assert!(logged.has("TLS reload failed: keeping the previous certificates", &err.to_string()));

    let client = connect(target.clone(), client_config(&ca)).await.expect("the previous certificate");
    echo(&client, "x").await.expect("echo");
    let status = first_failure(target, client_config(&other)).await;
    assert!(status.message().contains("UnknownIssuer"), "the failed material is not served: {status}");
    server.shutdown().await;
}

/// Writes `contents` to `path` the way certificate tools should: a complete new file renamed
/// over the old one.
fn replace_file(path: &Path, contents: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).expect("write");
    std::fs::rename(&next, path).expect("rename");
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("rpc-tls-{name}-{}-{}", std::process::id(), fastrand_suffix()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

// A current-thread runtime: the test's writes and the watcher's reads take turns, so the
// watcher never sees a file mid-write other than the one the test leaves half-written.
#[tokio::test(flavor = "current_thread")]
async fn a_watched_server_certificate_file_is_reloaded_when_it_changes_and_a_half_written_one_is_not() {
    let (logged, _guard) = Logged::capture();
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let dir = scratch_dir("watch");
    // The certificate and its key in one file, so that one write changes both.
    let path = dir.join("server.pem");
    let pem = |leaf: &Leaf| format!("{}{}", leaf.cert_pem, leaf.key_pem);
    replace_file(&path, &pem(&old_ca.server()));
    let load = {
        let path = path.clone();
        move || Ok(ServerTlsConfig::new(Identity::from_pem_files(&path, &path)?))
    };
    let acceptor = load().expect("config").build().expect("acceptor");
    let mut watcher = acceptor.watch_files([&path], Duration::from_millis(10), load);
    let served = acceptor.clone();
    let server = serve_with(move |b| b.tls(served)).await;
    let target = server.addr.to_string();
    let before = connect(target.clone(), client_config(&old_ca)).await.expect("before");
    echo(&before, "x").await.expect("echo");

    // A certificate tool caught half-way through writing the new file.
    let new_leaf = new_ca.server();
    std::fs::write(&path, &new_leaf.cert_pem[..new_leaf.cert_pem.len() / 2]).expect("write");
    let err = watcher.next_reload().await.expect_err("half a certificate does not load");
    assert!(matches!(*err, TlsError::Pem(_) | TlsError::NoCertificate), "{err}");
    assert!(logged.has("TLS reload failed: keeping the previous certificates", &err.to_string()));
    let still_old = connect(target.clone(), client_config(&old_ca)).await.expect("the old certificate stays");
    echo(&still_old, "x").await.expect("echo");

    // The complete file: new handshakes get the new certificate; the open connection goes on.
    replace_file(&path, &pem(&new_leaf));
    watcher.next_reload().await.expect("the complete file loads");
    let after = connect(target.clone(), client_config(&new_ca)).await.expect("the new certificate");
    echo(&after, "x").await.expect("echo");
    let status = first_failure(target, client_config(&old_ca)).await;
    assert!(status.message().contains("UnknownIssuer"), "{status}");
    echo(&before, "x").await.expect("the connection made before still serves");
    assert!(matches!(watcher.last_reload(), Some(Ok(()))));

    drop(watcher);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "current_thread")]
async fn a_ca_revoked_by_rotation_turns_away_new_connections_and_a_reloaded_client_identity_gets_in() {
    let (logged, _guard) = Logged::capture();
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let server_leaf = old_ca.server();
    let acceptor = ServerTlsConfig::new(server_leaf.identity())
        .client_ca_root(old_ca.certificate())
        .build()
        .expect("acceptor");
    let seen = SeenTls::default();
    let (served, interceptor) = (acceptor.clone(), seen.clone());
    let server = serve_with(move |b| b.tls(served).interceptor(interceptor)).await;
    let target = server.addr.to_string();

    let old_client = old_ca.client("billing.clients.internal");
    let connector = client_config(&old_ca).identity(old_client.identity()).build().expect("connector");
    let before = connect_with(&target, &connector).await.expect("a client of the old CA");
    echo(&before, "x").await.expect("echo");
    let old_call = call_in_flight(&before, &server, 1).await;

    // The server stops trusting client certificates from the old CA.
    let rotated = ServerTlsConfig::new(server_leaf.identity()).client_ca_root(new_ca.certificate());
    acceptor.reload(&rotated).expect("reload");
    let status = match connect_with(&target, &connector).await {
        Ok(client) => echo(&client, "x").await.expect_err("a certificate of a revoked CA"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("UnknownCA"), "the client is told its CA is unknown: {status}");
    logged.wait_for("TLS handshake failed", "UnknownIssuer").await;

    // The connection made before keeps its session until it closes.
    assert_eq!(old_call.await.expect("task").expect("the call in flight").id, 1);
    echo(&before, "x").await.expect("the open connection still serves");

    // The client rotates to a certificate from the new CA: its new connections get in.
    let new_client = new_ca.client("billing.clients.internal");
    connector.reload(&client_config(&old_ca).identity(new_client.identity())).expect("client reload");
    let after = connect_with(&target, &connector).await.expect("a client of the new CA");
    echo(&after, "x").await.expect("echo");
    assert_eq!(seen.last().expect("TLS info").peer_certificates()[0], new_client.der);

    // A client reload that fails keeps the identity the connector has.
    let err = connector.reload(&ClientTlsConfig::new()).expect_err("no CA");
    assert!(matches!(err, TlsError::NoTrustedRoots));
    let again = connect_with(&target, &connector).await.expect("still the new identity");
    echo(&again, "x").await.expect("echo");
    assert_eq!(seen.last().expect("TLS info").peer_certificates()[0], new_client.der);
    server.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_watched_client_ca_bundle_follows_the_servers_new_ca() {
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let acceptor = ServerTlsConfig::new(old_ca.server().identity()).build().expect("acceptor");
    let served = acceptor.clone();
    let server = serve_with(move |b| b.tls(served)).await;
    let target = server.addr.to_string();

    let dir = scratch_dir("bundle");
    let bundle = dir.join("ca.pem");
    replace_file(&bundle, &old_ca.issuer.pem());
    let load = {
        let bundle = bundle.clone();
        move || Ok(ClientTlsConfig::new().ca_certificate(Certificate::from_pem_file(&bundle)?))
    };
    let connector = load().expect("config").build().expect("connector");
    let mut watcher = connector.watch_files([&bundle], Duration::from_millis(10), load);
    let before = connect_with(&target, &connector).await.expect("before");

    // The server moves to the new CA; the client's bundle trusts both for the changeover,
    // then the new one only.
    replace_file(&bundle, &format!("{}{}", old_ca.issuer.pem(), new_ca.issuer.pem()));
    watcher.next_reload().await.expect("both CAs");
    acceptor.reload(&ServerTlsConfig::new(new_ca.server().identity())).expect("server reload");
    let during = connect_with(&target, &connector).await.expect("the server's new certificate is trusted");
    echo(&during, "x").await.expect("echo");
    replace_file(&bundle, &new_ca.issuer.pem());
    watcher.next_reload().await.expect("the new CA only");
    let after = connect_with(&target, &connector).await.expect("after");
    echo(&after, "x").await.expect("echo");
    echo(&before, "x").await.expect("the first connection still serves");

    drop(watcher);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "current_thread")]
async fn a_watched_certificate_whose_key_has_not_been_replaced_yet_is_refused_until_it_is() {
    let ca = Ca::new("test CA");
    let dir = scratch_dir("pair");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let first = ca.server();
    replace_file(&cert, &first.cert_pem);
    replace_file(&key, &first.key_pem);
    let load = {
        let (cert, key) = (cert.clone(), key.clone());
        move || Ok(ServerTlsConfig::new(Identity::from_pem_files(&cert, &key)?))
    };
    let acceptor = load().expect("config").build().expect("acceptor");
    let mut watcher = acceptor.watch_files([&cert, &key], Duration::from_millis(10), load);
    let served = acceptor.clone();
    let server = serve_with(move |b| b.tls(served)).await;
    let target = server.addr.to_string();

    // The renewal writes the certificate first: until the key follows, the pair does not
    // match, and the server keeps the old pair.
    let second = ca.server();
    replace_file(&cert, &second.cert_pem);
    let err = watcher.next_reload().await.expect_err("a certificate without its key");
    assert!(err.to_string().to_lowercase().contains("key"), "{err}");
    let client = connect(target.clone(), client_config(&ca)).await.expect("the old pair still serves");
    echo(&client, "x").await.expect("echo");
    replace_file(&key, &second.key_pem);
    watcher.next_reload().await.expect("the matching key arrived");
    let client = connect(target, client_config(&ca)).await.expect("the new pair serves");
    echo(&client, "x").await.expect("echo");

    drop(watcher);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
