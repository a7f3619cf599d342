//! Keepalive: `PING` a peer that has gone quiet, and give up on one that does not answer.

use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};

use crate::wire::{Frame, FrameKind};

/// The body of keepalive pings.
const KEEPALIVE_PING: [u8; 8] = *b"keepaliv";

/// What the keepalive timer asks of the driver.
pub(crate) enum Action {
    None,
    /// Send this `PING` (boxed: once per keepalive interval at most).
    Ping(Box<Frame>),
    /// The peer did not answer within this long: the connection is dead.
    Dead(Duration),
}

/// A connection's keepalive: checks for activity each time its timer fires; a received frame
/// of any kind counts, so a busy connection is never pinged, and the timer is re-armed only
/// when it fires, not per frame.
pub(crate) struct Keepalive {
    interval: Duration,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    awaiting_pong: bool,
    frames_seen: u64,
}

impl Keepalive {
    pub(crate) fn new(interval: Duration, timeout: Duration) -> Keepalive {
        Keepalive {
            interval,
            timeout,
            timer: Box::pin(tokio::time::sleep(interval)),
            awaiting_pong: false,
            frames_seen: 0,
        }
    }

    /// Whether `body` is the keepalive's own `PONG` (it counts as activity like any frame).
    pub(crate) fn on_pong(&mut self, body: &Bytes) -> bool {
        body.as_ref() == KEEPALIVE_PING
    }

    /// Polls the timer, with `frames_read` the frames received so far.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, frames_read: u64) -> Action {
        if self.timer.as_mut().poll(cx).is_pending() {
            return Action::None;
        }
        if frames_read != self.frames_seen {
            self.frames_seen = frames_read;
            self.awaiting_pong = false;
            self.rearm(cx, self.interval);
            Action::None
        } else if self.awaiting_pong {
            Action::Dead(self.timeout)
        } else {
            self.awaiting_pong = true;
            self.rearm(cx, self.timeout);
            let mut ping = Frame::new(FrameKind::Ping, 0);
            ping.body = Bytes::from_static(&KEEPALIVE_PING);
            Action::Ping(Box::new(ping))
        }
    }

    fn rearm(&mut self, cx: &mut Context<'_>, after: Duration) {
        self.timer.as_mut().reset(Instant::now() + after);
        // Registers the new deadline's wake-up.
        let _ = self.timer.as_mut().poll(cx);
    }
}
