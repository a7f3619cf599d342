//! The built-in health service over real sockets.

use std::time::Duration;

use rpc_core::health::{HealthCheckRequest, HealthClient, ServingStatus};
use rpc_core::interceptor::{ServerInterceptor, ServerNext};
use rpc_core::{Channel, Code, ServerContext, Status};

use crate::common::{self, Echo, TestClient};

fn ask(service: &str) -> HealthCheckRequest {
    HealthCheckRequest { service: service.to_owned() }
}

/// Rejects every call: the server's own interceptors must not stop health checks.
struct DenyAll;

impl ServerInterceptor for DenyAll {
    async fn intercept(&self, _ctx: &mut ServerContext, _next: ServerNext<'_>) -> Result<(), Status> {
        Err(Status::unauthenticated("no credentials"))
    }
}

#[tokio::test]
async fn every_server_answers_health_checks_for_its_services() {
    let server = common::serve_with(|b| b.interceptor(DenyAll)).await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    let health = HealthClient::new(channel.clone());
    for service in ["test.v1.Test", ""] {
        let response = health.check(ask(service)).await.expect("check");
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    let err = health.check(ask("nobody.Here")).await.expect_err("unknown service");
    assert_eq!(err.code(), Code::NotFound);
    // The interceptor still guards the application's own service.
    let err = TestClient::new(channel).echo(Echo::default()).await.expect_err("denied");
    assert_eq!(err.code(), Code::Unauthenticated);
    server.shutdown().await;
}

#[tokio::test]
async fn a_reporter_changes_the_status_and_watchers_see_each_change_until_shutdown() {
    let builder = rpc_core::Server::builder();
    let reporter = builder.health_reporter();
    reporter.set_not_serving("test.v1.Test"); // warming up: an explicit status is kept at start
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut server = common::serve_from(builder, listener).await;
    let health = HealthClient::new(Channel::connect(server.addr).await.expect("connect"));
    let mut watch = health.watch(ask("test.v1.Test")).await.expect("watch");
    let mut next = async || -> Option<ServingStatus> {
        let message = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("in time");
        message.expect("no error").map(|m| m.status())
    };
    assert_eq!(next().await, Some(ServingStatus::NotServing));
    reporter.set_serving("test.v1.Test");
    assert_eq!(next().await, Some(ServingStatus::Serving));
    let check = health.check(ask("test.v1.Test")).await.expect("check");
    assert_eq!(check.status(), ServingStatus::Serving);
    // Shutting down: the watcher hears NOT_SERVING, then the stream ends (and the shutdown
    // does not wait for it).
    server.begin_shutdown();
    assert_eq!(next().await, Some(ServingStatus::NotServing));
    assert_eq!(next().await, None);
    tokio::time::timeout(Duration::from_secs(10), server.join()).await.expect("shutdown completes");
}

#[tokio::test]
async fn watching_an_unknown_service_says_so_until_it_is_known() {
    let builder = rpc_core::Server::builder();
    let reporter = builder.health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = common::serve_from(builder, listener).await;
    let health = HealthClient::new(Channel::connect(server.addr).await.expect("connect"));
    let mut watch = health.watch(ask("later.Service")).await.expect("watch");
    let first = watch.message().await.expect("message").expect("status");
    assert_eq!(first.status(), ServingStatus::ServiceUnknown);
    reporter.set_serving("later.Service");
    let second = watch.message().await.expect("message").expect("status");
    assert_eq!(second.status(), ServingStatus::Serving);
    drop(watch);
    server.shutdown().await;
}

#[tokio::test]
async fn the_health_service_can_be_left_out() {
    let server = common::serve_with(|b| b.without_health()).await;
    let health = HealthClient::new(Channel::connect(server.addr).await.expect("connect"));
    let err = health.check(ask("")).await.expect_err("no health service");
    assert_eq!(err.code(), Code::Unimplemented);
    server.shutdown().await;
}
