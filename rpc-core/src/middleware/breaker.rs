//! The circuit breaker: stops sending calls to an endpoint, or a method, that keeps failing,
//! and fails them fast instead, until a few probe calls show it has recovered.
//!
//! Each breaker moves between three [states](BreakerState):
//!
//! - **Closed**: calls go through, and their outcomes are counted. It trips (opens) after a
//!   number of consecutive failures, or when the failures among the recent calls reach a
//!   ratio (once there were enough of them).
//! - **Open**: calls fail at once with `Unavailable`, without being sent, for the open period.
//! - **HalfOpen**: after the open period, a few probe calls go through (the others still fail
//!   fast). If they all succeed the breaker closes; if any fails it opens again.
//!
//! Which status codes count as failures is configurable; other outcomes, `Ok` or not, count
//! as successes: the server answered.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::retry::CodeSet;
use crate::interceptor::{ClientContext, ClientInterceptor, ClientNext};
use crate::status::{Code, Status};

/// What one breaker guards: the calls that share a breaker trip it and are failed by it
/// together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerScope {
    /// One breaker per endpoint: the channel's target. Its key is
    /// [`Channel::target`](crate::Channel::target), e.g. `10.0.0.7:50051`.
    Endpoint,
    /// One breaker per method. Its key is the full method name, e.g.
    /// `/acme.users.v1.Users/GetUser`.
    Method,
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; their outcomes are counted.
    Closed,
    /// Calls fail fast with `Unavailable`, without being sent.
    Open,
    /// A few probe calls go through, to see if the calls succeed again.
    HalfOpen,
}

/// The callback told of every state change: the breaker's key, the old state, the new state.
type OnChange = Arc<dyn Fn(&str, BreakerState, BreakerState) + Send + Sync>;

/// Fails calls fast while an endpoint or a method keeps failing.
///
/// Add it to a channel; it then guards every call made through it, unary or streaming. Keep
/// a clone to watch it: clones share their breakers, so
/// [`state`](CircuitBreaker::state) on a clone reads the channel's breakers. Configure it
/// before cloning.
///
/// ```no_run
/// use std::time::Duration;
/// use rpc_core::Channel;
/// use rpc_core::middleware::{BreakerScope, BreakerState, CircuitBreaker, Retry};
///
/// # async fn run() -> Result<(), rpc_core::Status> {
/// let breaker = CircuitBreaker::new()
///     .scope(BreakerScope::Method)
///     .consecutive_failures(5)
///     .open_for(Duration::from_secs(10))
///     .on_state_change(|key, from, to| eprintln!("breaker {key}: {from:?} -> {to:?}"));
/// let channel = Channel::builder("127.0.0.1:50051")
///     .interceptor(Retry::new())          // outside: each attempt goes through the breaker
///     .interceptor(breaker.clone())
///     .connect()
///     .await?;
/// assert_eq!(breaker.state("/acme.users.v1.Users/GetUser"), BreakerState::Closed);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    config: Config,
    on_change: Option<OnChange>,
    /// The breakers by key. Locks are held only to look up or count, never across an await.
    breakers: Arc<RwLock<HashMap<Arc<str>, Arc<Cell>>>>,
}

/// A breaker's settings.
#[derive(Debug, Clone, Copy)]
struct Config {
    scope: BreakerScope,
    failure_codes: CodeSet,
    consecutive_failures: u32,
    failure_ratio: f64,
    window: usize,
    min_calls: usize,
    open_for: Duration,
    probes: u32,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("config", &self.config)
            .field("on_change", &self.on_change.is_some())
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// Default [`scope`](CircuitBreaker::scope): one breaker per endpoint.
    pub const DEFAULT_SCOPE: BreakerScope = BreakerScope::Endpoint;
    /// Default [`failure_codes`](CircuitBreaker::failure_codes).
    pub const DEFAULT_FAILURE_CODES: &'static [Code] =
        &[Code::Unavailable, Code::DeadlineExceeded, Code::Internal, Code::Unknown];
    /// Default [`consecutive_failures`](CircuitBreaker::consecutive_failures) that trip it.
    pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
    /// Default [`failure_ratio`](CircuitBreaker::failure_ratio) among recent calls that trips it.
    pub const DEFAULT_FAILURE_RATIO: f64 = 0.5;
    /// Default [`window`](CircuitBreaker::window): how many recent calls the ratio is over.
    pub const DEFAULT_WINDOW: usize = 20;
    /// Default [`min_calls`](CircuitBreaker::min_calls) in the window before the ratio counts.
    pub const DEFAULT_MIN_CALLS: usize = 10;
    /// Default [`open_for`](CircuitBreaker::open_for): how long it stays open.
    pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(5);
    /// Default [`probes`](CircuitBreaker::probes) let through when half-open.
    pub const DEFAULT_PROBES: u32 = 3;

    /// A circuit breaker with the defaults: per endpoint; trips on 5 consecutive failures or
    /// on half of the last 20 calls failing (once there were 10); stays open 5 s; closes
    /// after 3 successful probes. Failures are `Unavailable`, `DeadlineExceeded`, `Internal`
    /// and `Unknown`.
    pub fn new() -> CircuitBreaker {
        CircuitBreaker {
            config: Config {
                scope: CircuitBreaker::DEFAULT_SCOPE,
                failure_codes: CodeSet::of(CircuitBreaker::DEFAULT_FAILURE_CODES.iter().copied()),
                consecutive_failures: CircuitBreaker::DEFAULT_CONSECUTIVE_FAILURES,
                failure_ratio: CircuitBreaker::DEFAULT_FAILURE_RATIO,
                window: CircuitBreaker::DEFAULT_WINDOW,
                min_calls: CircuitBreaker::DEFAULT_MIN_CALLS,
                open_for: CircuitBreaker::DEFAULT_OPEN_FOR,
                probes: CircuitBreaker::DEFAULT_PROBES,
            },
            on_change: None,
            breakers: Arc::default(),
        }
    }

    /// One breaker per endpoint, or one per method (default
    /// [`DEFAULT_SCOPE`](CircuitBreaker::DEFAULT_SCOPE)).
    pub fn scope(mut self, scope: BreakerScope) -> CircuitBreaker {
        self.config.scope = scope;
        self
    }

    /// The status codes that count as failures, replacing the default
    /// ([`DEFAULT_FAILURE_CODES`](CircuitBreaker::DEFAULT_FAILURE_CODES)).
    pub fn failure_codes(mut self, codes: impl IntoIterator<Item = Code>) -> CircuitBreaker {
        self.config.failure_codes = CodeSet::of(codes);
        self
    }

    /// Trips after this many failures in a row (default
    /// [`DEFAULT_CONSECUTIVE_FAILURES`](CircuitBreaker::DEFAULT_CONSECUTIVE_FAILURES));
    /// 0 turns this trigger off.
    pub fn consecutive_failures(mut self, failures: u32) -> CircuitBreaker {
        self.config.consecutive_failures = failures;
        self
    }

    /// Trips when at least this fraction (from 0 to 1) of the calls in the
    /// [`window`](CircuitBreaker::window) failed (default
    /// [`DEFAULT_FAILURE_RATIO`](CircuitBreaker::DEFAULT_FAILURE_RATIO)).
    pub fn failure_ratio(mut self, ratio: f64) -> CircuitBreaker {
        self.config.failure_ratio = if ratio.is_nan() { 1.0 } else { ratio.clamp(0.0, 1.0) };
        self
    }

    /// How many of the most recent calls the failure ratio is over (default
    /// [`DEFAULT_WINDOW`](CircuitBreaker::DEFAULT_WINDOW)); 0 turns the ratio trigger off.
    pub fn window(mut self, calls: usize) -> CircuitBreaker {
        self.config.window = calls;
        self
    }

    /// How many calls the window must hold before the ratio can trip the breaker (default
    /// [`DEFAULT_MIN_CALLS`](CircuitBreaker::DEFAULT_MIN_CALLS); at least 1, at most the
    /// window).
    pub fn min_calls(mut self, calls: usize) -> CircuitBreaker {
        self.config.min_calls = calls.max(1);
        self
    }

    /// How long a tripped breaker fails calls fast before it lets probes through (default
    /// [`DEFAULT_OPEN_FOR`](CircuitBreaker::DEFAULT_OPEN_FOR)).
    pub fn open_for(mut self, period: Duration) -> CircuitBreaker {
        self.config.open_for = period;
        self
    }

    /// How many probe calls a half-open breaker lets through; all must succeed for it to
    /// close (default [`DEFAULT_PROBES`](CircuitBreaker::DEFAULT_PROBES); at least 1).
    pub fn probes(mut self, probes: u32) -> CircuitBreaker {
        self.config.probes = probes.max(1);
        self
    }

    /// Calls `callback` with the breaker's key, the old state and the new one at every state
    /// change. It runs on the task whose call caused the change, with no lock held, so it may
    /// read [`state`](CircuitBreaker::state); keep it short. Changes of one breaker that race
    /// may be reported out of order.
    pub fn on_state_change(
        mut self,
        callback: impl Fn(&str, BreakerState, BreakerState) + Send + Sync + 'static,
    ) -> CircuitBreaker {
        self.on_change = Some(Arc::new(callback));
        self
    }

    /// The state of the breaker for `key`: a target (`host:port`, per endpoint) or a full
    /// method name (per method). A key no call has used yet is `Closed`. An open breaker
    /// whose open period has passed is reported, and becomes, `HalfOpen`.
    pub fn state(&self, key: &str) -> BreakerState {
        let Some(cell) = self.breakers.read().unwrap_or_else(PoisonError::into_inner).get(key).cloned()
        else {
            return BreakerState::Closed;
        };
        let (state, change) = {
            let mut breaker = cell.lock();
            let change = breaker.refresh(Instant::now());
            (breaker.phase.state(), change)
        };
        self.notify(&cell.key, change);
        state
    }

    /// The breaker for `key`, created closed on first use.
    fn cell(&self, key: &str) -> Arc<Cell> {
        if let Some(cell) = self.breakers.read().unwrap_or_else(PoisonError::into_inner).get(key) {
            return Arc::clone(cell);
        }
        let mut breakers = self.breakers.write().unwrap_or_else(PoisonError::into_inner);
        let cell = breakers.entry(Arc::from(key)).or_insert_with_key(|key| {
            Arc::new(Cell {
                key: Arc::clone(key),
                breaker: Mutex::new(Breaker::new(self.config.window.min(Self::PREALLOCATED_WINDOW))),
            })
        });
        Arc::clone(cell)
    }

    /// The most outcomes a breaker allocates room for up front; a larger window grows.
    const PREALLOCATED_WINDOW: usize = 64;

    /// Logs a state change and tells the callback.
    fn notify(&self, key: &str, change: Option<Change>) {
        let Some(Change { from, to, reason }) = change else { return };
        match to {
            BreakerState::Open => tracing::warn!(
                key,
                ?from,
                reason,
                open_for_ms = self.config.open_for.as_millis() as u64,
                "circuit breaker opened: failing calls fast"
            ),
            BreakerState::HalfOpen => {
                tracing::info!(key, probes = self.config.probes, "circuit breaker half-open: probing")
            }
            BreakerState::Closed => tracing::info!(key, reason, "circuit breaker closed"),
        }
        if let Some(callback) = &self.on_change {
            callback(key, from, to);
        }
    }
}

impl Default for CircuitBreaker {
    fn default() -> CircuitBreaker {
        CircuitBreaker::new()
    }
}

impl ClientInterceptor for CircuitBreaker {
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        let cell = match self.config.scope {
            BreakerScope::Endpoint => self.cell(ctx.target()),
            BreakerScope::Method => self.cell(ctx.method()),
        };
        let admitted = {
            let mut breaker = cell.lock();
            let change = breaker.refresh(Instant::now());
            let admitted = breaker.admit(&self.config);
            drop(breaker);
            self.notify(&cell.key, change);
            admitted
        };
        let ticket = match admitted {
            Ok(ticket) => ticket,
            Err(rejection) => return Err(rejection.status(&cell.key, self.config.probes)),
        };
        let mut pending = Pending { breaker: self, cell: &cell, ticket, settled: false };
        let result = next.run(ctx).await;
        let failed = result.as_ref().is_err_and(|status| self.config.failure_codes.contains(status.code()));
        pending.settle(failed);
        result
    }
}

/// One breaker, with the key it is known by.
struct Cell {
    key: Arc<str>,
    breaker: Mutex<Breaker>,
}

impl Cell {
    fn lock(&self) -> MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A call let through, until its outcome is counted. Dropped unsettled (the call was
/// cancelled), it gives its probe slot back.
struct Pending<'a> {
    breaker: &'a CircuitBreaker,
    cell: &'a Cell,
    ticket: Ticket,
    settled: bool,
}

impl Pending<'_> {
    fn settle(&mut self, failed: bool) {
        self.settled = true;
        let change = self.cell.lock().record(&self.breaker.config, self.ticket, failed, Instant::now());
        self.breaker.notify(&self.cell.key, change);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.cell.lock().release(self.ticket);
        }
    }
}

/// A state change, to log and report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    from: BreakerState,
    to: BreakerState,
    reason: &'static str,
}

/// Where a breaker is, with what that state counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

impl Phase {
    fn state(self) -> BreakerState {
        match self {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// Leave to send one call: from which phase of the breaker, and whether it is a probe.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    generation: u64,
    probe: bool,
}

/// Why a call was failed fast.
#[derive(Debug, Clone, Copy)]
enum Rejection {
    Open { left: Duration },
    ProbesBusy,
}

impl Rejection {
    fn status(self, key: &str, probes: u32) -> Status {
        match self {
            Rejection::Open { left } => Status::unavailable(format!(
                "circuit breaker for {key} is open after repeated failures: call not sent (probes in {} ms)",
                left.as_millis()
            )),
            Rejection::ProbesBusy => Status::unavailable(format!(
                "circuit breaker for {key} is half-open and its {probes} probe call(s) are under way: call not sent"
            )),
        }
    }
}

/// The state of one breaker.
#[derive(Debug)]
struct Breaker {
    phase: Phase,
    /// Changes at every state change, so outcomes of calls let through in an earlier phase
    /// are not counted in the current one.
    generation: u64,
    /// Failures in a row, while closed.
    consecutive: u32,
    /// The outcomes of the most recent calls (`true`: failed), while closed.
    recent: VecDeque<bool>,
    /// How many of `recent` failed.
    recent_failures: usize,
}

impl Breaker {
    fn new(capacity: usize) -> Breaker {
        Breaker {
            phase: Phase::Closed,
            generation: 0,
            consecutive: 0,
            recent: VecDeque::with_capacity(capacity),
            recent_failures: 0,
        }
    }

    /// Moves to `phase`, forgetting what the old one counted.
    fn enter(&mut self, phase: Phase, reason: &'static str) -> Option<Change> {
        let from = self.phase.state();
        self.phase = phase;
        self.generation += 1;
        self.consecutive = 0;
        self.recent.clear();
        self.recent_failures = 0;
        Some(Change { from, to: phase.state(), reason })
    }

    /// An open breaker whose period has passed becomes half-open.
    fn refresh(&mut self, now: Instant) -> Option<Change> {
        match self.phase {
            Phase::Open { until } if now >= until => {
                self.enter(Phase::HalfOpen { admitted: 0, succeeded: 0 }, "the open period has passed")
            }
            _ => None,
        }
    }

    /// Lets a call through, or says why not. Call [`refresh`](Breaker::refresh) first.
    fn admit(&mut self, config: &Config) -> Result<Ticket, Rejection> {
        let generation = self.generation;
        match &mut self.phase {
            Phase::Closed => Ok(Ticket { generation, probe: false }),
            Phase::Open { until } => {
                Err(Rejection::Open { left: until.saturating_duration_since(Instant::now()) })
            }
            Phase::HalfOpen { admitted, .. } if *admitted < config.probes => {
                *admitted += 1;
                Ok(Ticket { generation, probe: true })
            }
            Phase::HalfOpen { .. } => Err(Rejection::ProbesBusy),
        }
    }

    /// Counts the outcome of a call let through with `ticket`.
    fn record(&mut self, config: &Config, ticket: Ticket, failed: bool, now: Instant) -> Option<Change> {
        if ticket.generation != self.generation {
            return None;
        }
        let open = Phase::Open { until: now + config.open_for };
        match &mut self.phase {
            Phase::Closed => {
                self.consecutive = if failed { self.consecutive.saturating_add(1) } else { 0 };
                if config.window > 0 {
                    if self.recent.len() >= config.window && self.recent.pop_front() == Some(true) {
                        self.recent_failures -= 1;
                    }
                    self.recent.push_back(failed);
                    self.recent_failures += usize::from(failed);
                }
                if config.consecutive_failures > 0 && self.consecutive >= config.consecutive_failures {
                    self.enter(open, "consecutive failures")
                } else if self.ratio_tripped(config) {
                    self.enter(open, "failure ratio over the recent calls")
                } else {
                    None
                }
            }
            Phase::HalfOpen { .. } if failed => self.enter(open, "a probe call failed"),
            Phase::HalfOpen { succeeded, .. } => {
                *succeeded += 1;
                if *succeeded >= config.probes {
                    self.enter(Phase::Closed, "the probe calls succeeded")
                } else {
                    None
                }
            }
            Phase::Open { .. } => None,
        }
    }

    /// Whether the failures among the recent calls reached the ratio, with enough calls.
    fn ratio_tripped(&self, config: &Config) -> bool {
        let calls = self.recent.len();
        config.window > 0
            && self.recent_failures > 0
            && calls >= config.min_calls.min(config.window)
            && self.recent_failures as f64 >= config.failure_ratio * calls as f64
    }

    /// Gives back the probe slot of a call that ended without an outcome (it was cancelled).
    fn release(&mut self, ticket: Ticket) {
        if !ticket.probe || ticket.generation != self.generation {
            return;
        }
        if let Phase::HalfOpen { admitted, .. } = &mut self.phase {
            *admitted = admitted.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        CircuitBreaker::new()
            .consecutive_failures(3)
            .window(4)
            .min_calls(4)
            .failure_ratio(0.5)
            .probes(2)
            .config
    }

    fn call(breaker: &mut Breaker, config: &Config, failed: bool) -> Option<Change> {
        let ticket = breaker.admit(config).expect("admitted");
        breaker.record(config, ticket, failed, Instant::now())
    }

    #[test]
    fn outcomes_of_an_earlier_phase_are_not_counted() {
        let config = config();
        let mut breaker = Breaker::new(4);
        let late = breaker.admit(&config).expect("closed");
        for _ in 0..3 {
            call(&mut breaker, &config, true);
        }
        assert_eq!(breaker.phase.state(), BreakerState::Open);
        let change = breaker.refresh(Instant::now() + config.open_for);
        assert_eq!(change.map(|c| c.to), Some(BreakerState::HalfOpen));
        // A call sent while closed ends now: it is no probe and changes nothing.
        assert_eq!(breaker.record(&config, late, true, Instant::now()), None);
        assert_eq!(breaker.phase.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn a_cancelled_probe_gives_its_slot_back() {
        let config = config();
        let mut breaker = Breaker::new(4);
        for _ in 0..3 {
            call(&mut breaker, &config, true);
        }
        breaker.refresh(Instant::now() + config.open_for);
        let first = breaker.admit(&config).expect("probe 1");
        let _second = breaker.admit(&config).expect("probe 2");
        assert!(matches!(breaker.admit(&config), Err(Rejection::ProbesBusy)));
        breaker.release(first);
        assert!(breaker.admit(&config).is_ok(), "the slot is free again");
    }

    #[test]
    fn the_ratio_is_over_a_sliding_window_of_recent_calls() {
        let config = config();
        let mut breaker = Breaker::new(4);
        // f s s s: one in four.
        for failed in [true, false, false, false] {
            assert_eq!(call(&mut breaker, &config, failed), None);
        }
        // The failure slides out as a new one slides in: still one in four.
        assert_eq!(call(&mut breaker, &config, true), None);
        assert_eq!(breaker.recent_failures, 1);
        let change = call(&mut breaker, &config, true).expect("two in four trips it");
        assert_eq!((change.to, change.reason), (BreakerState::Open, "failure ratio over the recent calls"));
    }
}
