//! The seam a balanced channel plugs into: a [`Router`] picks, for each call, the instance
//! (an [`Endpoint`]) it goes to, and hears how the call went. The balancer (in
//! [`balance`](crate::balance)) is the one router; a channel only knows this trait.

use std::any::Any;
use std::sync::Arc;

use super::Endpoint;
use crate::metadata::Metadata;
use crate::status::Status;
use crate::stream::StreamOutcome;

/// Picks where each call of a balanced channel goes.
pub(crate) trait Router: Send + Sync + 'static {
    /// The instance for a call with `metadata`, other than the addresses `tried`.
    fn pick(&self, metadata: &Metadata, tried: &[Arc<str>]) -> Result<InFlight, Status>;

    /// Records the outcome of a call: `None` for a success.
    fn record(&self, call: &InFlight, status: Option<&Status>);

    /// Whether a call to `method` that failed with `status`, after `attempts` instances, may
    /// be sent to another instance.
    fn may_fail_over(&self, method: &str, status: &Status, attempts: u32) -> bool;

    /// The router, to look into.
    fn as_any(&self) -> &dyn Any;
}

/// One instance, as a router hands it out.
pub(crate) trait Node: Send + Sync + 'static {
    /// The connection to it.
    fn endpoint(&self) -> &Endpoint;
    /// Its address.
    fn address(&self) -> &Arc<str>;
    /// A call starts on it: counts it in flight; returns the instance's ejection generation.
    fn enter(&self) -> u32;
    /// A call on it ended.
    fn leave(&self);
    /// The node, to look into.
    fn as_any(&self) -> &dyn Any;
}

/// A call sent to an instance: counted in flight there while it lives, and remembering the
/// instance's ejection generation when it was sent.
pub(crate) struct InFlight {
    node: Arc<dyn Node>,
    generation: u32,
}

impl InFlight {
    pub(crate) fn new(node: Arc<dyn Node>) -> InFlight {
        let generation = node.enter();
        InFlight { node, generation }
    }

    pub(crate) fn node(&self) -> &Arc<dyn Node> {
        &self.node
    }

    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.node.leave();
    }
}

/// A stream on a balanced channel: in flight on its instance until it ends, and then
/// recorded like a unary call.
pub(crate) struct RecordOnEnd {
    pub(crate) router: Arc<dyn Router>,
    pub(crate) call: InFlight,
}

impl StreamOutcome for RecordOnEnd {
    fn ended(self: Box<Self>, status: Option<&Status>) {
        self.router.record(&self.call, status);
    }
}
