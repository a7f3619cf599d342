//! Health checking: the `grpc.health.v1.Health` service, built with the framework itself.
//!
//! Every server mounts it by default (see
//! [`ServerBuilder::health_reporter`](crate::server::ServerBuilder::health_reporter)): each
//! mounted service, and the server as a whole (the empty name `""`), is `SERVING` from the
//! start of [serving](crate::server::ServerBuilder::serve_with_listener) and `NOT_SERVING`
//! from the start of its shutdown. A [`HealthReporter`] changes a service's status at any
//! time, for example while a dependency is down. Its calls bypass the server's interceptors:
//! health checks come from infrastructure, which holds no credentials.
//!
//! The methods and messages are those of gRPC's health-checking protocol, so the wire names
//! match (`/grpc.health.v1.Health/Check` and `/grpc.health.v1.Health/Watch`):
//!
//! - `Check`: the service's status now, or `NOT_FOUND` for a service the server does not
//!   know;
//! - `Watch`: a stream of the service's status, sent at once and then on every change
//!   (`SERVICE_UNKNOWN` while the server does not know it); it ends when the server shuts down.
//!
//! A [balanced channel](crate::Channel::balanced) with
//! [`health_check`](crate::balance::BalancedBuilder::health_check) asks each instance
//! regularly and leaves out those that do not serve.
//!
//! ```no_run
//! use rpc_core::Channel;
//! use rpc_core::health::{HealthCheckRequest, HealthClient, ServingStatus};
//!
//! # async fn run() -> Result<(), rpc_core::Status> {
//! let health = HealthClient::new(Channel::connect("127.0.0.1:50051").await?);
//! let response = health.check(HealthCheckRequest { service: "helloworld.Greeter".into() }).await?;
//! assert_eq!(response.status(), ServingStatus::Serving);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::{ServerContext, Status, StreamSender};

/// A health check's question: the service asked about (empty for the whole server).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct HealthCheckRequest {
    /// The service's full name, such as `helloworld.Greeter`; empty for the server.
    #[prost(string, tag = "1")]
    pub service: String,
}

/// A health check's answer.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct HealthCheckResponse {
    /// The service's status, a [`ServingStatus`].
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

/// Whether a service serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    /// Not known.
    Unknown = 0,
    /// Serving: calls may be sent.
    Serving = 1,
    /// Not serving: calls should go elsewhere.
    NotServing = 2,
    /// The server does not know the service (only sent by `Watch`).
    ServiceUnknown = 3,
}

/// The health-checking service, as gRPC's health protocol defines it.
#[crate::service(package = "grpc.health.v1")]
pub trait Health {
    /// The status of `request.service` now; `NOT_FOUND` if the server does not know it.
    async fn check(
        &self,
        ctx: &mut ServerContext,
        request: HealthCheckRequest,
    ) -> Result<HealthCheckResponse, Status>;

    /// The status of `request.service`, at once and then at every change, until the call is
    /// cancelled or the server shuts down.
    async fn watch(
        &self,
        ctx: &mut ServerContext,
        request: HealthCheckRequest,
        responses: StreamSender<HealthCheckResponse>,
    ) -> Result<(), Status>;
}

/// The statuses a server's health service reports, to change at run time. Clones share them.
///
/// ```no_run
/// use rpc_core::Server;
///
/// let server = Server::builder();
/// let health = server.health_reporter();
/// // Later, when the database is down:
/// health.set_not_serving("acme.users.v1.Users");
/// ```
#[derive(Debug, Clone)]
pub struct HealthReporter {
    state: Arc<watch::Sender<Statuses>>,
}

#[derive(Debug, Default, Clone)]
struct Statuses {
    by_service: HashMap<String, ServingStatus>,
    /// The server is shutting down: watches end after telling their watcher.
    closed: bool,
}

impl HealthReporter {
    /// A reporter with no statuses.
    pub fn new() -> HealthReporter {
        HealthReporter { state: Arc::new(watch::Sender::new(Statuses::default())) }
    }

    /// Sets `service` (a full name, or `""` for the server) to `SERVING`.
    pub fn set_serving(&self, service: impl Into<String>) {
        self.set_status(service, ServingStatus::Serving);
    }

    /// Sets `service` (a full name, or `""` for the server) to `NOT_SERVING`.
    pub fn set_not_serving(&self, service: impl Into<String>) {
        self.set_status(service, ServingStatus::NotServing);
    }

    /// Sets the status of `service` (a full name, or `""` for the server).
    pub fn set_status(&self, service: impl Into<String>, status: ServingStatus) {
        let service = service.into();
        self.state.send_if_modified(|statuses| statuses.by_service.insert(service, status) != Some(status));
    }

    /// Forgets `service`: checks then answer `NOT_FOUND`.
    pub fn clear(&self, service: &str) {
        self.state.send_if_modified(|statuses| statuses.by_service.remove(service).is_some());
    }

    /// The status of `service`, if it has one.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.state.borrow().by_service.get(service).copied()
    }

    /// Sets `service` to `SERVING` unless it already has a status.
    pub(crate) fn set_serving_unless_set(&self, service: &str) {
        self.state.send_if_modified(|statuses| {
            if statuses.by_service.contains_key(service) {
                return false;
            }
            statuses.by_service.insert(service.to_owned(), ServingStatus::Serving);
            true
        });
    }

    /// Sets every service to `NOT_SERVING` and ends the watches: the server is shutting down.
    pub(crate) fn shut_down(&self) {
        self.state.send_modify(|statuses| {
            statuses.by_service.values_mut().for_each(|status| *status = ServingStatus::NotServing);
            statuses.closed = true;
        });
    }
}

impl Default for HealthReporter {
    fn default() -> Self {
        HealthReporter::new()
    }
}

/// The [`Health`] implementation over a [`HealthReporter`]'s statuses. Servers mount one by
/// default; mount one yourself (with `HealthServer::new`) to put it behind interceptors.
#[derive(Debug, Clone)]
pub struct HealthService {
    reporter: HealthReporter,
}

impl HealthService {
    /// The health service reporting `reporter`'s statuses.
    pub fn new(reporter: HealthReporter) -> HealthService {
        HealthService { reporter }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

impl Health for HealthService {
    async fn check(
        &self,
        _ctx: &mut ServerContext,
        request: HealthCheckRequest,
    ) -> Result<HealthCheckResponse, Status> {
        match self.reporter.status(&request.service) {
            Some(status) => Ok(response(status)),
            None => Err(Status::not_found(format!("unknown service {:?}", request.service))),
        }
    }

    async fn watch(
        &self,
        _ctx: &mut ServerContext,
        request: HealthCheckRequest,
        mut responses: StreamSender<HealthCheckResponse>,
    ) -> Result<(), Status> {
        let mut statuses = self.reporter.state.subscribe();
        let mut last = None;
        loop {
            let (status, closed) = {
                let now = statuses.borrow_and_update();
                let status =
                    now.by_service.get(&request.service).copied().unwrap_or(ServingStatus::ServiceUnknown);
                (status, now.closed)
            };
            if last != Some(status) {
                responses.send(response(status)).await?;
                last = Some(status);
            }
            if closed || statuses.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_set_kept_and_cleared() {
        let reporter = HealthReporter::new();
        assert_eq!(reporter.status("a.B"), None);
        reporter.set_serving_unless_set("a.B");
        assert_eq!(reporter.status("a.B"), Some(ServingStatus::Serving));
        reporter.set_not_serving("a.B");
        reporter.set_serving_unless_set("a.B");
        assert_eq!(reporter.status("a.B"), Some(ServingStatus::NotServing), "an explicit status is kept");
        reporter.clear("a.B");
        assert_eq!(reporter.status("a.B"), None);
        reporter.set_serving("");
        reporter.shut_down();
        assert_eq!(reporter.status(""), Some(ServingStatus::NotServing));
    }

    #[test]
    fn the_service_has_grpc_health_wire_names() {
        assert_eq!(HealthClient::SERVICE_NAME, "grpc.health.v1.Health");
    }
}
