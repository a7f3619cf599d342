//! The server's side of a connection: the [`Peer`] that starts calls on their handlers,
//! refuses what it cannot take, and drains on shutdown.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context as TaskContext;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::AbortHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::ServerConfig;
use super::routes::Routes;
use crate::codegen::{Payload, ServerCall};
use crate::conn::{
    ConnConfig, Connection, Ended, InputBudget, Note, Peer, Shared, State, StreamCore, Timeouts,
    alarm_status, run, status_frame,
};
use crate::interceptor::{CancelSignal, ServerContext};
use crate::method::MethodKind;
use crate::status::Status;
use crate::transport::{Io, PeerAddr, TlsInfo};
use crate::wire::{CallMap, Frame, FrameKind, MAX_TIMEOUT, WireError};

/// Past this many unwritten bytes the connection stops reading requests until the client
/// has read its answers: a client that sends but never reads cannot make the server buffer
/// without bound.
pub(crate) const WRITE_HIGH_WATER: usize = 4 * 1024 * 1024;

/// The body of the `PING` sent after a shutdown `GOAWAY`: its `PONG` proves the client has
/// read the `GOAWAY`, so no request of its can still be on the way.
pub(crate) const DRAIN_PING: [u8; 8] = *b"draining";

/// What is known of an accepted connection when the connection core takes it over.
pub(crate) struct Accepted {
    pub(crate) peer: PeerAddr,
    /// What the TLS handshake established, on a TLS connection.
    pub(crate) tls: Option<Arc<TlsInfo>>,
    /// How long the client still has to send its preface (the preface timeout, less what a
    /// TLS handshake took of it).
    pub(crate) preface_timeout: Duration,
}

/// Serves one accepted connection until the peer leaves, it breaks a rule, or shutdown
/// drains it.
pub(crate) async fn serve_connection<T: Io>(
    io: T,
    Accepted { peer, tls, preface_timeout }: Accepted,
    routes: Arc<Routes>,
    config: Arc<ServerConfig>,
    input: Arc<InputBudget>,
    shutdown: CancellationToken,
) {
    let conn_config = ConnConfig {
        max_frame_size: config.max_frame_size,
        max_header_size: config.max_header_size,
        max_concurrent_calls: Some(config.max_concurrent_calls),
        stream_accepts: true,
        stream_window: config.stream_window,
        connection_window: config.connection_window,
        handshake_timeout: preface_timeout,
        keepalive: config.keepalive_interval.map(|interval| (interval, config.keepalive_timeout)),
        timeouts: Timeouts {
            idle: config.idle_timeout,
            read_stall: config.read_stall_timeout,
            write_stall: config.write_stall_timeout,
        },
    };
    let shared = Shared::new(config.stream_window, config.connection_window, Some(input));
    let server = ServerPeer {
        peer: peer.clone(),
        tls,
        routes,
        max_concurrent_calls: config.max_concurrent_calls,
        request_timeout: config.request_timeout,
        calls: CallMap::default(),
        owed: VecDeque::new(),
        shutdown: Some(Box::pin(shutdown.cancelled_owned())),
        draining: false,
        drain_acked: false,
        last_call_id: 0,
        client_leaving: false,
    };
    match run(Connection::new(io, &conn_config, shared, server)).await {
        Ended::Drained | Ended::Closed => tracing::debug!(%peer, "connection closed"),
        Ended::Failed(err) if is_disconnect(&err) => tracing::debug!(%peer, %err, "the client went away"),
        Ended::Failed(err) => tracing::warn!(%peer, %err, "closing connection"),
        Ended::Unresponsive(timeout) => tracing::info!(%peer, ?timeout, "closing an unresponsive connection"),
        Ended::TimedOut(alarm) => {
            tracing::info!(%peer, reason = %alarm_status(alarm).message(), "closing connection")
        }
    }
}

/// Whether `err` is the client leaving abruptly (a reset, or a closed socket), which servers
/// see all the time, rather than a broken rule worth a warning.
fn is_disconnect(err: &WireError) -> bool {
    use std::io::ErrorKind;
    matches!(err, WireError::Io(io) if matches!(
        io.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof
    ))
}

/// A call being served.
struct CallEntry {
    /// Its handler's task.
    abort: Option<AbortHandle>,
    /// Behind interceptors, how to stop its handler on a cancel so that they see it.
    cancel: Option<Arc<CancelSignal>>,
    streaming: bool,
}

/// The server's side of the connection protocol, run by the connection's driver.
struct ServerPeer {
    peer: PeerAddr,
    /// What the TLS handshake established, on a TLS connection: shared by every call's context.
    tls: Option<Arc<TlsInfo>>,
    routes: Arc<Routes>,
    max_concurrent_calls: usize,
    request_timeout: std::time::Duration,
    calls: CallMap<CallEntry>,
    /// Where each answered call's answer ends in the output, until it has been written:
    /// those calls still count against the concurrency limit.
    owed: VecDeque<u64>,
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    draining: bool,
    drain_acked: bool,
    /// The highest call id seen: each new call's must be higher.
    last_call_id: u64,
    /// The client sent `GOAWAY`: it opens no more calls here.
    client_leaving: bool,
}

impl ServerPeer {
    /// Starts a unary call (`REQUEST`) or a streaming one (`STREAM_OPEN`).
    fn start_call(&mut self, state: &mut State, frame: Frame) -> Result<(), WireError> {
        let id = frame.call_id;
        let streaming = frame.kind == FrameKind::StreamOpen;
        if id == 0 {
            return Err(WireError::Protocol("call opened with call id 0"));
        }
        if id <= self.last_call_id {
            return Err(WireError::Protocol("call id not greater than every earlier one on the connection"));
        }
        self.last_call_id = id;
        let Some(method) = frame.header.method else {
            return Err(WireError::Protocol("call opened without a method"));
        };
        if self.client_leaving {
            let status = Status::unavailable("the client said it was going away (GOAWAY)").refused();
            return answer(state, id, streaming, status);
        }
        if self.draining {
            return answer(state, id, streaming, Status::unavailable("server is shutting down").refused());
        }
        if self.calls.len() + self.owed.len() >= self.max_concurrent_calls {
            let limit = self.max_concurrent_calls;
            let status =
                Status::resource_exhausted(format!("over {limit} calls in flight on one connection"));
            return answer(state, id, streaming, status.refused());
        }
        let Some(route) = self.routes.get(&method) else {
            let status = Status::unimplemented(self.routes.describe_unknown(&method));
            return answer(state, id, streaming, status);
        };
        if (route.kind == MethodKind::Unary) == streaming {
            let (is, opened) =
                if streaming { ("unary", "a stream") } else { ("a streaming method", "unary") };
            let status = Status::unimplemented(format!("{} is {is}, called as {opened}", route.path));
            return answer(state, id, streaming, status);
        }
        if frame.header.timeout.is_some_and(|timeout| timeout.is_zero()) {
            // No time left: the handler does not run.
            return answer(
                state,
                id,
                streaming,
                Status::deadline_exceeded("the call arrived with no time left (TIMEOUT 0)"),
            );
        }
        // A timeout beyond the protocol's cap is no deadline at all.
        let deadline = frame
            .header
            .timeout
            .filter(|&timeout| timeout <= MAX_TIMEOUT)
            .and_then(|timeout| tokio::time::Instant::now().checked_add(timeout));
        let context = ServerContext::new(
            route.path,
            route.kind,
            self.peer.clone(),
            self.tls.clone(),
            frame.header.metadata,
            deadline,
        );
        let payload = if streaming {
            let core = StreamCore::new(id, Arc::clone(&state.shared));
            state.streams.open(Arc::clone(&core));
            Payload::Stream(core)
        } else {
            Payload::Unary(frame.body)
        };
        let call = ServerCall {
            id,
            context,
            conn: Arc::clone(&state.shared),
            payload,
            interceptors: route.interceptors.clone(),
            request_timeout: self.request_timeout,
        };
        let spawned = route.service.call(route.index, call);
        self.calls.insert(id, CallEntry { abort: spawned.abort, cancel: spawned.cancel, streaming });
        Ok(())
    }

    /// Tells the client to stop sending calls (saying why), and asks it to prove it heard.
    fn start_drain(&mut self, state: &State, why: Status) -> Result<(), WireError> {
        if self.draining {
            return Ok(());
        }
        self.draining = true;
        state.shared.stop_accepting();
        state.queue(&status_frame(FrameKind::GoAway, 0, why))?;
        let mut ping = Frame::new(FrameKind::Ping, 0);
        ping.body = Bytes::from_static(&DRAIN_PING);
        state.queue(&ping)
    }
}

/// Answers a call the server will not run with `status`, in the frame its kind expects.
fn answer(state: &State, id: u64, streaming: bool, status: Status) -> Result<(), WireError> {
    let kind = if streaming { FrameKind::StreamEnd } else { FrameKind::Response };
    state.queue(&status_frame(kind, id, status))
}

impl Peer for ServerPeer {
    fn on_note(&mut self, state: &mut State, note: Note, base: u64) {
        match note {
            Note::Answered { id, end } => {
                self.calls.remove(&id);
                self.owed.push_back(base + end as u64);
            }
            Note::Unanswered(id) => {
                // Nobody cancelled it, yet its task ended without an answer (a codec
                // panicked outside the handler, or the runtime is shutting down): the caller
                // must still get one.
                if let Some(entry) = self.calls.remove(&id) {
                    if entry.streaming && state.streams.remove(id, &state.shared).is_none() {
                        return;
                    }
                    let status = Status::internal("the call's task ended without an answer");
                    let _ = answer(state, id, entry.streaming, status);
                }
            }
            Note::Sent { .. } | Note::Opened(_) | Note::Cancelled(_) => {}
        }
    }

    fn on_call_frame(&mut self, state: &mut State, frame: Frame) -> Result<(), WireError> {
        match frame.kind {
            FrameKind::Request | FrameKind::StreamOpen => self.start_call(state, frame),
            FrameKind::StreamEnd => {
                // The client half-closed: its handler reads the end after the messages.
                state.streams.end_inbound(frame.call_id, Ok(frame.header.metadata), &state.shared);
                Ok(())
            }
            FrameKind::Cancel => {
                if let Some(entry) = self.calls.remove(&frame.call_id) {
                    match (entry.cancel, entry.abort) {
                        (Some(cancel), _) => cancel.cancel(),
                        (None, Some(abort)) => abort.abort(),
                        (None, None) => {}
                    }
                }
                if let Some(core) = state.streams.remove(frame.call_id, &state.shared) {
                    core.abort(Status::cancelled("cancelled by the client"));
                }
                Ok(())
            }
            _ => Err(WireError::Protocol("a client sent a frame that only servers send")),
        }
    }

    fn on_stream_ended(&mut self, state: &mut State, id: u64) {
        // The call's end went out: it is over.
        self.calls.remove(&id);
        state.streams.remove(id, &state.shared);
    }

    fn on_goaway(&mut self, state: &mut State, status: Status) {
        // The client opens no more calls here: the connection closes once those in flight are
        // answered (docs/PROTOCOL.md §12).
        tracing::debug!(peer = %self.peer, %status, "the client sent GOAWAY");
        self.client_leaving = true;
        state.shared.stop_accepting();
    }

    fn in_flight(&self, _state: &State) -> usize {
        self.calls.len() + self.owed.len()
    }

    fn on_idle(&mut self, state: &mut State) -> Result<bool, WireError> {
        if self.draining {
            // Told to leave, and still here.
            return Ok(true);
        }
        self.start_drain(state, Status::unavailable("the connection is idle"))?;
        Ok(false)
    }

    fn on_pong(&mut self, body: &Bytes) {
        if self.draining && body.as_ref() == DRAIN_PING {
            self.drain_acked = true;
        }
    }

    fn on_written(&mut self, written: u64) {
        while self.owed.front().is_some_and(|&end| end <= written) {
            self.owed.pop_front();
        }
    }

    fn poll_role(&mut self, state: &mut State, cx: &mut TaskContext<'_>) -> Result<(), WireError> {
        if let Some(signal) = &mut self.shutdown
            && signal.as_mut().poll(cx).is_ready()
        {
            self.shutdown = None;
            self.start_drain(state, Status::unavailable("server is shutting down"))?;
        }
        Ok(())
    }

    fn read_paused(&self, unwritten: usize) -> bool {
        unwritten >= WRITE_HIGH_WATER
    }

    fn is_done(&self, _state: &State) -> bool {
        ((self.draining && self.drain_acked) || self.client_leaving) && self.calls.is_empty()
    }

    fn end_status(&self, ended: &Ended) -> Status {
        match ended {
            Ended::TimedOut(alarm) => alarm_status(*alarm),
            _ => Status::unavailable("the connection closed"),
        }
    }

    fn on_closed(&mut self, _state: &mut State, _status: &Status) {
        // However the connection ends (the peer left, it broke a rule, or the server was
        // stopped), nobody is left to answer: its handlers are stopped too.
        for (_, entry) in self.calls.drain() {
            if let Some(abort) = entry.abort {
                abort.abort();
            }
        }
    }
}
