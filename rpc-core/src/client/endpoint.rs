//! [`Endpoint`]: the connection to one address that a channel (or one instance of a
//! balanced channel) sends its calls over, connecting when a call needs it and again after
//! the connection drops.
//!
//! States: idle (no connection; the next call connects), connecting (calls wait), ready
//! (calls go straight to the connection) and backing off after a failed connect (calls fail
//! fast with `UNAVAILABLE`, marked refused, until the next attempt is due). A connection that
//! was up and then dropped returns to idle with no delay, so a restarted server is reached by
//! the very next call. A connection that received `GOAWAY` finishes its calls on its own
//! while new calls open a fresh one.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::ChannelConfig;
use super::conn::{ClientConn, ClientPeer};
use crate::backoff::Backoff;
use crate::conn::{ConnConfig, Connection, Shared, run};
use crate::status::Status;
use crate::transport::Address;

/// A cheap handle on the connection to one address.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    inner: Arc<EndpointInner>,
}

#[derive(Debug)]
pub(crate) struct EndpointInner {
    /// What the channel was asked to call, as given.
    target: Arc<str>,
    /// It, parsed; or why it does not parse (every call fails with that).
    address: Result<Address, Status>,
    config: Arc<ChannelConfig>,
    /// The connection calls go to now, read without a lock by every call.
    current: ArcSwapOption<ClientConn>,
    state: Mutex<State>,
    /// Woken whenever `state` changes.
    changed: Notify,
}

#[derive(Debug)]
enum State {
    Idle { failures: u32 },
    Connecting,
    Ready(Arc<ClientConn>),
    Backoff { until: Instant, error: Status, failures: u32 },
}

impl Endpoint {
    /// An endpoint for `target`; nothing happens until a call needs a connection.
    pub(crate) fn new(target: &str, config: Arc<ChannelConfig>) -> Endpoint {
        let address = target
            .parse::<Address>()
            .map_err(|err| Status::invalid_argument(err.to_string()).with_source(err));
        Endpoint {
            inner: Arc::new(EndpointInner {
                target: target.into(),
                address,
                config,
                current: ArcSwapOption::empty(),
                state: Mutex::new(State::Idle { failures: 0 }),
                changed: Notify::new(),
            }),
        }
    }

    /// The address as given.
    pub(crate) fn target(&self) -> &Arc<str> {
        &self.inner.target
    }

    /// The connection calls go to now, if one is up and taking calls.
    pub(crate) fn ready(&self) -> Option<Arc<ClientConn>> {
        let conn = self.inner.current.load_full()?;
        conn.is_usable().then_some(conn)
    }

    /// Whether a connection is established (the server answered with its preface).
    pub(crate) fn is_established(&self) -> bool {
        self.inner.current.load().as_ref().is_some_and(|conn| conn.is_established() && conn.is_usable())
    }

    /// The connection to send a call over: the current one, or a new one (waiting while it
    /// connects). Fails fast, refused, while backing off after a failed connect.
    pub(crate) async fn connection(&self) -> Result<Arc<ClientConn>, Status> {
        loop {
            if let Some(conn) = self.ready() {
                return Ok(conn);
            }
            let notified = self.inner.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(conn) = self.inner.advance()? {
                return Ok(conn);
            }
            notified.await;
        }
    }

    /// Connects now if not connected, and waits until the server has answered with its
    /// preface (or the attempt failed).
    pub(crate) async fn established(&self) -> Result<(), Status> {
        let conn = self.connection().await?;
        conn.settled().await
    }
}

impl EndpointInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the state on as far as it goes without waiting: the connection, if one is
    /// ready; an error while backing off; otherwise a connect is under way.
    fn advance(self: &Arc<Self>) -> Result<Option<Arc<ClientConn>>, Status> {
        let address = match &self.address {
            Ok(address) => address.clone(),
            Err(status) => return Err(status.clone()),
        };
        let mut state = self.lock();
        loop {
            match &*state {
                State::Ready(conn) if conn.is_usable() => return Ok(Some(Arc::clone(conn))),
                State::Ready(_) => *state = State::Idle { failures: 0 },
                State::Connecting => return Ok(None),
                State::Backoff { until, error, failures } => {
                    if Instant::now() < *until {
                        return Err(error.clone().refused());
                    }
                    *state = State::Idle { failures: *failures };
                }
                State::Idle { failures } => {
                    let failures = *failures;
                    *state = State::Connecting;
                    tokio::spawn(Arc::clone(self).connect(address, failures));
                    return Ok(None);
                }
            }
        }
    }

    /// One connection attempt; its outcome becomes the state.
    async fn connect(self: Arc<Self>, address: Address, failures: u32) {
        let config = &self.config;
        let limit = config.connect_timeout;
        let io = match tokio::time::timeout(limit, config.connector.connect(&address)).await {
            Ok(Ok(io)) => io,
            Ok(Err(err)) => {
                let error =
                    Status::unavailable(format!("cannot connect to {}: {err}", self.target)).with_source(err);
                return self.failed(error, failures);
            }
            Err(_) => {
                let error =
                    Status::unavailable(format!("connecting to {} timed out after {limit:?}", self.target));
                return self.failed(error, failures);
            }
        };
        let shared = Shared::new(config.stream_window, config.connection_window, None);
        let conn = ClientConn::new(Arc::clone(&shared));
        let conn_config = ConnConfig {
            max_frame_size: config.max_frame_size,
            max_header_size: config.max_header_size,
            max_concurrent_calls: None,
            stream_accepts: false,
            stream_window: config.stream_window,
            connection_window: config.connection_window,
            handshake_timeout: limit,
            keepalive: config.keepalive_interval.map(|interval| (interval, config.keepalive_timeout)),
            timeouts: config.timeouts,
        };
        let peer = ClientPeer::new(Arc::clone(&conn), Arc::downgrade(&self), Arc::clone(&self.target), limit);
        let driver = Connection::new(io, &conn_config, shared, peer);
        {
            let mut state = self.lock();
            *state = State::Ready(Arc::clone(&conn));
            self.current.store(Some(Arc::clone(&conn)));
        }
        self.changed.notify_waiters();
        let target = Arc::clone(&self.target);
        // Failures before the server answered keep counting, for the backoff.
        let weak = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(async move {
            let ended = run(driver).await;
            tracing::debug!(%target, ?ended, "connection ended");
            if let Some(endpoint) = weak.upgrade() {
                endpoint.ended(&conn, failures);
            }
        });
    }

    fn failed(&self, error: Status, failures: u32) {
        let failures = failures.saturating_add(1);
        let backoff =
            Backoff::doubling(self.config.backoff_initial, self.config.backoff_max, RECONNECT_JITTER);
        let delay = backoff.delay(failures);
        tracing::debug!(target = %self.target, ?delay, %error, "connection failed; backing off");
        let message = format!("{} (next attempt in {delay:?})", error.message());
        let error = error.with_message(message);
        *self.lock() = State::Backoff { until: Instant::now() + delay, error, failures };
        self.changed.notify_waiters();
    }

    /// A connection stopped taking calls (`GOAWAY`, or it ended): new calls go elsewhere.
    pub(crate) fn connection_gone(&self, conn: &Arc<ClientConn>) {
        let mut state = self.lock();
        if let State::Ready(current) = &*state
            && Arc::ptr_eq(current, conn)
        {
            *state = State::Idle { failures: 0 };
            self.current.store(None);
            drop(state);
            self.changed.notify_waiters();
        }
    }

    /// A connection's driver ended: if the server never answered, that counts as a failed
    /// attempt (backing off); otherwise the next call reconnects at once.
    fn ended(&self, conn: &Arc<ClientConn>, failures: u32) {
        let state = self.lock();
        if !matches!(&*state, State::Ready(current) if Arc::ptr_eq(current, conn)) {
            // Already replaced (after a GOAWAY, or by a new attempt).
            return;
        }
        drop(state);
        if conn.is_established() {
            self.connection_gone(conn);
            return;
        }
        self.current.store(None);
        let status =
            conn.shared.lock().closed.clone().unwrap_or_else(|| Status::unavailable("the connection closed"));
        self.failed(status, failures);
    }
}

impl Drop for EndpointInner {
    /// Every handle is gone: the connection finishes the calls still on it, then closes.
    fn drop(&mut self) {
        if let Some(conn) = self.current.load_full() {
            conn.shared.stop_accepting();
            conn.shared.wake_driver();
        }
    }
}

/// How much of a reconnection delay is taken off at random, so that the clients of a
/// restarted server do not all come back at once.
const RECONNECT_JITTER: f64 = 0.2;
