//! The channel task: the one task behind a [`Channel`](super::Channel) that connects,
//! reconnects with backoff, and drives its connections.
//!
//! States: `Idle` (no connection; the next call connects), `Connecting` (calls queue),
//! `Ready` (calls go straight to the connection) and `Backoff` (after a failed connect:
//! calls fail fast with `Unavailable` until the next attempt is due). A connection that was
//! up and then dropped returns to `Idle` with no delay, so a restarted server is reached by
//! the very next call. A connection that received `GOAWAY` keeps running in `draining`
//! until its calls are answered, while new calls open a fresh connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

use super::ChannelConfig;
use super::connection::{ClientConnection, Reply, Request};
use crate::status::Status;
use crate::stream::inbound::InboundTx;
use crate::stream::{StreamEvent, StreamShared};
use crate::wire::Frame;

/// Commands handled per poll before the task yields.
const POLL_BUDGET: usize = 256;

/// What callers ask of the channel task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a unary call; the answer goes to `reply`.
    Call { request: Request, reply: Reply, deadline: Option<Instant> },
    /// Open a stream with this `STREAM_OPEN` frame (boxed: a stream is opened once, while
    /// the other commands come per call or per message, and all take the largest one's size);
    /// messages go to `inbound`, and `shared` is the local sender's budget.
    OpenStream { frame: Box<Frame>, inbound: InboundTx, shared: Arc<StreamShared>, deadline: Option<Instant> },
    /// A message, end, release or cancellation of an open stream.
    Stream(StreamEvent),
    /// The caller stopped waiting for call `id`.
    Cancel { id: u64 },
    /// Answer once a connection is established (or has failed).
    WaitReady { reply: oneshot::Sender<Result<(), Status>> },
}

impl Command {
    /// The call a command concerns, if any.
    fn call_id(&self) -> Option<u64> {
        match self {
            Command::Call { request, .. } => Some(request.id),
            Command::OpenStream { frame, .. } => Some(frame.call_id),
            Command::Stream(StreamEvent::Message { id, .. }) => Some(*id),
            Command::Stream(StreamEvent::End(frame)) => Some(frame.call_id),
            Command::Stream(StreamEvent::Release { id, .. } | StreamEvent::Cancel { id }) => Some(*id),
            Command::Cancel { id } => Some(*id),
            Command::WaitReady { .. } => None,
        }
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<TcpStream, Status>> + Send>>;

// One per channel, and `Ready` is where it spends its life: boxing it would only add a
// pointer chase to every poll.
#[allow(clippy::large_enum_variant)]
enum State {
    Idle,
    Connecting { connect: ConnectFuture, queued: Vec<Command> },
    Ready(ClientConnection),
    Backoff { until: Pin<Box<Sleep>>, error: Status },
}

pub(crate) struct ChannelTask {
    rx: mpsc::UnboundedReceiver<Command>,
    target: Arc<str>,
    config: Arc<ChannelConfig>,
    state: State,
    draining: Vec<ClientConnection>,
    failures: u32,
    /// Whether a connection that accepts calls is established, for the channel's owner to read.
    established: Arc<AtomicBool>,
}

impl ChannelTask {
    pub(crate) fn new(
        rx: mpsc::UnboundedReceiver<Command>,
        target: Arc<str>,
        config: Arc<ChannelConfig>,
        established: Arc<AtomicBool>,
    ) -> Self {
        ChannelTask { rx, target, config, state: State::Idle, draining: Vec::new(), failures: 0, established }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Cancel { id } | Command::Stream(StreamEvent::Cancel { id }) => return self.cancel(id),
            Command::Stream(event) => return self.route(event),
            _ => {}
        }
        match &mut self.state {
            State::Ready(conn) => apply(conn, command),
            State::Connecting { queued, .. } => queued.push(command),
            State::Backoff { error, .. } => fail(command, error.clone()),
            State::Idle => self.state = State::Connecting { connect: self.connect(), queued: vec![command] },
        }
    }

    fn cancel(&mut self, id: u64) {
        // A call in flight on a connection: that connection tells the server.
        if let State::Ready(conn) = &mut self.state
            && conn.cancel(id)
        {
            return;
        }
        if self.draining.iter_mut().any(|conn| conn.cancel(id)) {
            return;
        }
        // Still waiting for a connection: it was never sent; forget it and what followed it.
        if let State::Connecting { queued, .. } = &mut self.state {
            queued.retain(|c| c.call_id() != Some(id));
        }
    }

    /// Hands a stream event to the connection that carries the stream: the live one, or one
    /// draining after a `GOAWAY`. Only a stream still waiting for a connection has its events
    /// queued behind its opening.
    fn route(&mut self, event: StreamEvent) {
        let id = match &event {
            StreamEvent::Message { id, .. } => *id,
            StreamEvent::End(frame) => frame.call_id,
            StreamEvent::Release { id, .. } | StreamEvent::Cancel { id } => *id,
        };
        if let State::Ready(conn) = &mut self.state
            && conn.has_stream(id)
        {
            return conn.on_stream_event(event);
        }
        if let Some(conn) = self.draining.iter_mut().find(|conn| conn.has_stream(id)) {
            return conn.on_stream_event(event);
        }
        if let State::Connecting { queued, .. } = &mut self.state {
            queued.push(Command::Stream(event));
        }
        // Otherwise the stream's connection is gone, and the event with it.
    }

    fn connect(&self) -> ConnectFuture {
        let target = Arc::clone(&self.target);
        let config = Arc::clone(&self.config);
        Box::pin(async move {
            let connecting = TcpStream::connect(&*target);
            let stream = match tokio::time::timeout(config.connect_timeout, connecting).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    return Err(Status::unavailable(format!("cannot connect to {target}: {err}")));
                }
                Err(_) => {
                    let limit = config.connect_timeout;
                    return Err(Status::unavailable(format!(
                        "connecting to {target} timed out after {limit:?}"
                    )));
                }
            };
            stream
                .set_nodelay(config.tcp_nodelay)
                .map_err(|err| Status::unavailable(format!("cannot configure socket to {target}: {err}")))?;
            Ok(stream)
        })
    }

    fn enter_backoff(&mut self, error: Status) {
        self.failures = self.failures.saturating_add(1);
        let delay = backoff_delay(&self.config, self.failures);
        tracing::debug!(target = %self.target, ?delay, %error, "connection failed; backing off");
        let error = Status::unavailable(format!("{} (next attempt in {delay:?})", error.message()));
        self.state = State::Backoff { until: Box::pin(tokio::time::sleep(delay)), error };
    }

    /// Advances the connection state as far as it goes without waiting, and publishes whether
    /// it ended up established.
    fn drive(&mut self, cx: &mut Context<'_>) {
        self.advance(cx);
        let up = matches!(&self.state, State::Ready(conn) if conn.is_established() && conn.accepts_calls());
        if self.established.load(Ordering::Relaxed) != up {
            self.established.store(up, Ordering::Relaxed);
        }
    }

    fn advance(&mut self, cx: &mut Context<'_>) {
        loop {
            match &mut self.state {
                State::Idle => return,
                State::Connecting { connect, queued } => match connect.as_mut().poll(cx) {
                    Poll::Pending => return,
                    Poll::Ready(Ok(stream)) => {
                        let mut conn = ClientConnection::new(stream, &self.config, &self.target);
                        for command in queued.drain(..) {
                            apply(&mut conn, command);
                        }
                        self.state = State::Ready(conn);
                    }
                    Poll::Ready(Err(error)) => {
                        for command in queued.drain(..) {
                            fail(command, error.clone());
                        }
                        self.enter_backoff(error);
                    }
                },
                State::Ready(conn) => match conn.poll(cx) {
                    Poll::Pending => {
                        if conn.is_established() {
                            // A server that answers ends the run of failures.
                            self.failures = 0;
                        }
                        if !conn.accepts_calls() {
                            // GOAWAY: let it finish its calls aside; new calls reconnect.
                            if let State::Ready(conn) = std::mem::replace(&mut self.state, State::Idle) {
                                self.draining.push(conn);
                            }
                        }
                        return;
                    }
                    Poll::Ready(reason) => {
                        if conn.is_established() {
                            tracing::debug!(target = %self.target, %reason, "connection ended");
                            self.failures = 0;
                            self.state = State::Idle;
                        } else {
                            self.enter_backoff(reason);
                        }
                    }
                },
                State::Backoff { until, .. } => {
                    if until.as_mut().poll(cx).is_pending() {
                        return;
                    }
                    self.state = State::Idle;
                }
            }
        }
    }
}

impl Future for ChannelTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut budget = POLL_BUDGET;
        loop {
            if budget == 0 {
                cx.waker().wake_by_ref();
                break;
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(command)) => this.handle(command),
                // Every Channel handle is gone, and with them every caller.
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => break,
            }
            budget -= 1;
        }
        this.drive(cx);
        this.draining.retain_mut(|conn| conn.poll(cx).is_pending());
        Poll::Pending
    }
}

/// Hands a command to a live connection.
fn apply(conn: &mut ClientConnection, command: Command) {
    match command {
        Command::Call { request, reply, deadline } => conn.start_call(request, reply, deadline),
        Command::OpenStream { frame, inbound, shared, deadline } => {
            conn.open_stream(frame, inbound, shared, deadline)
        }
        Command::Stream(event) => conn.on_stream_event(event),
        Command::WaitReady { reply } => conn.when_established(reply),
        Command::Cancel { id } => {
            conn.cancel(id);
        }
    }
}

/// Answers a command that cannot be served. The call was never sent, so its status says so
/// ([`Status::is_refused`]): it is safe to send it again, here or elsewhere.
fn fail(command: Command, error: Status) {
    let error = error.refused();
    match command {
        Command::Call { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Command::OpenStream { inbound, shared, .. } => {
            inbound.end(Err(error.clone()));
            shared.close(error);
        }
        Command::WaitReady { reply } => {
            let _ = reply.send(Err(error));
        }
        Command::Stream(_) | Command::Cancel { .. } => {}
    }
}

/// Exponential backoff: `initial * 2^(failures-1)`, capped, with ±20% jitter so that many
/// clients of one restarted server do not reconnect in lockstep.
fn backoff_delay(config: &ChannelConfig, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = config.backoff_initial.saturating_mul(1 << exp).min(config.backoff_max);
    base.mul_f64(0.8 + 0.4 * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = ChannelConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ..ChannelConfig::default()
        };
        let first = backoff_delay(&config, 1);
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120), "{first:?}");
        let third = backoff_delay(&config, 3);
        assert!(third >= Duration::from_millis(320) && third <= Duration::from_millis(480), "{third:?}");
        for failures in [10, 1000, u32::MAX] {
            assert!(backoff_delay(&config, failures) <= Duration::from_millis(2400));
        }
    }
}
