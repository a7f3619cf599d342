//! The streaming service the stream tests talk to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rpc_core::{Code, ServerContext, Status, StreamSender, Streaming};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Item {
    #[prost(uint64, tag = "1")]
    pub n: u64,
    #[prost(bytes = "bytes", tag = "2")]
    pub payload: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CountRequest {
    /// How many items to send.
    #[prost(uint64, tag = "1")]
    pub count: u64,
    /// Payload bytes per item.
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// After the items, fail with this code (0: succeed).
    #[prost(uint32, tag = "3")]
    pub fail_code: u32,
    /// Pause between items, in microseconds.
    #[prost(uint64, tag = "4")]
    pub pause_micros: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Total {
    #[prost(uint64, tag = "1")]
    pub sum: u64,
    #[prost(uint64, tag = "2")]
    pub count: u64,
}

/// Streams of every kind.
#[rpc_core::service(package = "test.v1")]
pub trait Streams {
    /// Sends `count` numbered items, then ends with `fail_code`.
    async fn count(
        &self,
        ctx: &mut ServerContext,
        request: CountRequest,
        responses: StreamSender<Item>,
    ) -> Result<(), Status>;
    /// Sums the numbers of the items it receives; sets trailer `x-count`.
    async fn sum(&self, ctx: &mut ServerContext, requests: Streaming<Item>) -> Result<Total, Status>;
    /// Sends every item back as it arrives.
    async fn echo(
        &self,
        ctx: &mut ServerContext,
        requests: Streaming<Item>,
        responses: StreamSender<Item>,
    ) -> Result<(), Status>;
    /// Reads items slowly (1 ms each), then reports how many it read.
    async fn slow_sum(&self, ctx: &mut ServerContext, requests: Streaming<Item>) -> Result<Total, Status>;
    /// Never reads its requests; answers after a minute.
    async fn ignore(&self, ctx: &mut ServerContext, requests: Streaming<Item>) -> Result<Total, Status>;
}

/// What the tests observe of the handlers.
#[derive(Debug, Default)]
pub struct StreamProbe {
    pub started: AtomicUsize,
    /// Handlers dropped before they finished.
    pub abandoned: AtomicUsize,
    /// Items handed to `send` successfully, across handlers.
    pub sent: AtomicU64,
    /// Items read by handlers.
    pub received: AtomicU64,
}

#[derive(Clone, Default)]
pub struct StreamService {
    pub probe: Arc<StreamProbe>,
}

struct Guard<'a>(&'a StreamProbe, bool);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Streams for StreamService {
    async fn count(
        &self,
        _ctx: &mut ServerContext,
        request: CountRequest,
        mut responses: StreamSender<Item>,
    ) -> Result<(), Status> {
        self.probe.started.fetch_add(1, Ordering::SeqCst);
        let mut guard = Guard(&self.probe, false);
        let payload = Bytes::from(vec![0x5a; request.size as usize]);
        for n in 0..request.count {
            if request.pause_micros > 0 {
                tokio::time::sleep(Duration::from_micros(request.pause_micros)).await;
            }
            responses.send(Item { n, payload: payload.clone() }).await?;
            self.probe.sent.fetch_add(1, Ordering::SeqCst);
        }
        guard.1 = true;
        match request.fail_code {
            0 => Ok(()),
            code => Err(Status::new(Code::from_u32(code), format!("failed after {} items", request.count))),
        }
    }

    async fn sum(&self, ctx: &mut ServerContext, mut requests: Streaming<Item>) -> Result<Total, Status> {
        self.probe.started.fetch_add(1, Ordering::SeqCst);
        let mut total = Total::default();
        while let Some(item) = requests.message().await? {
            total.sum += item.n;
            total.count += 1;
            self.probe.received.fetch_add(1, Ordering::SeqCst);
        }
        ctx.response_metadata_mut().insert("x-count", total.count.to_string());
        Ok(total)
    }

    async fn echo(
        &self,
        _ctx: &mut ServerContext,
        mut requests: Streaming<Item>,
        mut responses: StreamSender<Item>,
    ) -> Result<(), Status> {
        self.probe.started.fetch_add(1, Ordering::SeqCst);
        let mut guard = Guard(&self.probe, false);
        while let Some(item) = requests.message().await? {
            self.probe.received.fetch_add(1, Ordering::SeqCst);
            responses.send(item).await?;
            self.probe.sent.fetch_add(1, Ordering::SeqCst);
        }
        guard.1 = true;
        Ok(())
    }

    async fn ignore(&self, _ctx: &mut ServerContext, _requests: Streaming<Item>) -> Result<Total, Status> {
        self.probe.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(Total::default())
    }

    async fn slow_sum(
        &self,
        _ctx: &mut ServerContext,
        mut requests: Streaming<Item>,
    ) -> Result<Total, Status> {
        self.probe.started.fetch_add(1, Ordering::SeqCst);
        let mut total = Total::default();
        while let Some(item) = requests.message().await? {
            tokio::time::sleep(Duration::from_millis(1)).await;
            total.sum += item.n;
            total.count += 1;
            self.probe.received.fetch_add(1, Ordering::SeqCst);
        }
        Ok(total)
    }
}
