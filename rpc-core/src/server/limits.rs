//! Connection limits: how many connections a server holds at once from each peer address,
//! and the answer a connection over the limit gets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::conn::status_frame;
use crate::status::Status;
use crate::transport::{Io, PeerAddr};
use crate::wire::{Frame, FrameKind, PREFACE};

/// How long a refused connection gets to take its `GOAWAY`.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Connections open per peer IP address, within a limit.
#[derive(Debug)]
pub(crate) struct PeerCounts {
    limit: usize,
    open: Mutex<HashMap<IpAddr, Count>>,
}

#[derive(Debug, Default)]
struct Count {
    open: usize,
    /// Whether the limit was hit since the count was last below it (logged once).
    refused: bool,
}

/// One admitted connection's place in its address's count, given back when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    counts: Arc<PeerCounts>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.counts.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            count.open -= 1;
            if count.open == 0 {
                open.remove(&self.ip);
            } else if count.open < self.counts.limit {
                count.refused = false;
            }
        }
    }
}

impl PeerCounts {
    pub(crate) fn new(limit: usize) -> Arc<PeerCounts> {
        Arc::new(PeerCounts { limit, open: Mutex::new(HashMap::new()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Count>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a connection from `peer`, if its address is under the limit: `Ok(None)` for a
    /// peer without an IP address (a Unix socket, an in-memory pipe), which is not counted;
    /// `Err` with the open count when over it.
    pub(crate) fn admit(self: &Arc<Self>, peer: &PeerAddr) -> Result<Option<Admitted>, usize> {
        let PeerAddr::Tcp(address) = peer else { return Ok(None) };
        let ip = address.ip();
        let mut open = self.lock();
        let count = open.entry(ip).or_default();
        if count.open >= self.limit {
            if !std::mem::replace(&mut count.refused, true) {
                tracing::warn!(%ip, limit = self.limit, "connection limit per address reached: refusing more from it");
            }
            return Err(count.open);
        }
        count.open += 1;
        Ok(Some(Admitted { counts: Arc::clone(self), ip }))
    }
}

/// Tells a connection it is refused, with a `GOAWAY` after the preface and the `SETTINGS`
/// frame a peer expects first, then closes it.
pub(crate) async fn refuse(mut io: impl Io, why: Status) {
    let mut out = BytesMut::new();
    out.extend_from_slice(&PREFACE);
    Frame::new(FrameKind::Settings, 0).encode_unchecked(&mut out);
    status_frame(FrameKind::GoAway, 0, why).encode_unchecked(&mut out);
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        io.write_all(&out).await?;
        io.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_is_counted_up_to_the_limit_and_given_back() {
        let counts = PeerCounts::new(2);
        let a = PeerAddr::Tcp("10.0.0.1:1000".parse().expect("addr"));
        let b = PeerAddr::Tcp("10.0.0.2:1000".parse().expect("addr"));
        let first = counts.admit(&a).expect("under").expect("counted");
        let _second = counts.admit(&a).expect("under");
        assert_eq!(counts.admit(&a).expect_err("over"), 2);
        let _other = counts.admit(&b).expect("another address").expect("counted");
        drop(first);
        assert!(counts.admit(&a).is_ok(), "a place was given back");
        assert!(counts.admit(&PeerAddr::Memory(1)).expect("not counted").is_none());
    }
}
