//! Graceful shutdown: stop accepting, tell clients, let calls finish, bounded by a grace
//! period.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rpc_core::{Channel, Code};
use tokio::net::TcpStream;

use crate::common::{self, Echo, Sleep, TestClient, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_an_in_flight_call_finish_and_refuses_new_connections() {
    let mut server = common::serve().await;
    let addr = server.addr;
    let client = TestClient::new(Channel::connect(addr).await.expect("connect"));
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(Sleep { id: 1, millis: 1_500 }).await }
    });
    eventually("the call is running", || server.probe.started.load(Ordering::SeqCst) == 1).await;

    server.begin_shutdown();
    // The listener closes at once: new connections are refused while the call still runs.
    let mut refused = false;
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "new connections are still accepted during shutdown");

    let reply = in_flight.await.expect("task").expect("the in-flight call completes");
    assert_eq!(reply.id, 1);
    server.join().await;
    assert_eq!(server_abandoned(&client).await, Code::Unavailable);
}

/// What a call on the channel gets once the server is gone.
async fn server_abandoned(client: &TestClient) -> Code {
    client.echo(Echo::default()).await.expect_err("server is gone").code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_goaway_new_calls_do_not_use_the_draining_connection() {
    let mut server = common::serve().await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(Sleep { id: 1, millis: 1_000 }).await }
    });
    eventually("the call is running", || server.probe.started.load(Ordering::SeqCst) == 1).await;
    server.begin_shutdown();
    // Wait until the GOAWAY has reached the client: new calls then need a new connection,
    // which the closed listener refuses.
    let mut code = Code::Ok;
    for _ in 0..200 {
        match client.echo(Echo::default()).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(status) => {
                code = status.code();
                break;
            }
        }
    }
    assert_eq!(code, Code::Unavailable);
    in_flight.await.expect("task").expect("the in-flight call still completes");
    server.join().await;
}

#[tokio::test]
async fn an_idle_connection_drains_without_waiting_for_the_grace_period() {
    let mut server = common::serve_with(|b| b.shutdown_grace(Duration::from_secs(120))).await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    client.echo(Echo::default()).await.expect("call");
    server.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(30), server.join())
        .await
        .expect("an idle client's connection closes once it acknowledged the GOAWAY");
}

#[tokio::test]
async fn busy_connections_are_closed_when_the_grace_period_ends() {
    let mut server = common::serve_with(|b| b.shutdown_grace(Duration::from_millis(200))).await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(Sleep { id: 1, millis: 60_000 }).await }
    });
    eventually("the call is running", || server.probe.started.load(Ordering::SeqCst) == 1).await;
    let probe = std::sync::Arc::clone(&server.probe);
    server.begin_shutdown();
    server.join().await;
    let status = in_flight.await.expect("task").expect_err("cut off");
    assert_eq!(status.code(), Code::Unavailable);
    eventually("the handler is stopped", || probe.abandoned() == 1).await;
}

#[cfg(unix)]
#[tokio::test]
async fn shutdown_signal_drains_the_server_on_sigterm() {
    // Installed before the signal is sent: the SIGTERM goes to this handler, not the default.
    let signal = rpc_core::server::shutdown_signal();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = common::TestServer::new(common::TestService::default());
    let server =
        tokio::spawn(rpc_core::Server::builder().add_service(service).serve_with_listener(listener, signal));
    let client = TestClient::new(Channel::connect(addr).await.expect("connect"));
    client.echo(Echo::default()).await.expect("serving");

    let sent = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    server.await.expect("server task").expect("the server stopped cleanly");
    assert_eq!(server_abandoned(&client).await, Code::Unavailable);
}
