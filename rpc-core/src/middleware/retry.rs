//! Retries: a failed unary call is sent again, with exponential backoff and jitter, when
//! that is safe, within a retry budget, and never past the call's deadline.
//!
//! Exactly these are sent again:
//!
//! - a unary call the server **refused** ([`Status::is_refused`]: the `REFUSED` mark, which
//!   says the call was not processed at all: shed under load, over a rate or concurrency
//!   limit, rejected by an interceptor before its handler, or caught by a GOAWAY), whatever
//!   its code and whatever its method: resending it cannot do anything twice. On by
//!   default; [`Retry::retry_refused`] turns it off;
//! - a unary call of a method marked **idempotent** ([`Retry::idempotent`]) that failed with
//!   one of the retryable **codes** (default `Unavailable`; [`Retry::codes`]).
//!
//! and only while:
//!
//! 1. it has attempts left (default 3 in total, the first included);
//! 2. the backoff before the next attempt ends before the call's deadline;
//! 3. the retry budget has room: retries may not exceed a fraction of the calls plus a small
//!    floor per second, over a sliding window (Finagle's retry budget), so that a failing
//!    dependency is not hit by a retry storm.
//!
//! Streams pass through untouched: their messages cannot be replayed. Anything else (a
//! method not marked idempotent that failed without the refusal mark, say with
//! `Unavailable` after the connection broke mid-call) is not retried: it may have run.
//! Otherwise the last error is returned as it is.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::interceptor::{ClientContext, ClientInterceptor, ClientNext};
use crate::method::{MethodKind, MethodPatterns};
use crate::status::{Code, Status};

/// Retries failed unary calls with exponential backoff and jitter, when it is safe, within a
/// retry budget, and never past the call's deadline.
///
/// Add it to a channel; it then applies to every unary call made through it. Put it
/// *outside* (before) a [`CircuitBreaker`](super::CircuitBreaker) so that every attempt goes
/// through the breaker.
///
/// ```no_run
/// use std::time::Duration;
/// use rpc_core::{Channel, Code};
/// use rpc_core::middleware::Retry;
///
/// # async fn run() -> Result<(), rpc_core::Status> {
/// let retry = Retry::new()
///     .max_attempts(4)                                   // 1 call + up to 3 retries
///     .codes([Code::Unavailable, Code::ResourceExhausted])
///     .initial_backoff(Duration::from_millis(50))
///     .max_backoff(Duration::from_secs(1))
///     .idempotent("/acme.users.v1.Users/GetUser")        // one method
///     .idempotent("/acme.search.v1.Search/*");           // every method of a service
/// let channel = Channel::builder("127.0.0.1:50051").interceptor(retry).connect().await?;
/// # Ok(()) }
/// ```
///
/// Clones share their retry budget: one `Retry` cloned onto several channels limits the
/// retries of them all together.
#[derive(Debug, Clone)]
pub struct Retry {
    max_attempts: u32,
    codes: CodeSet,
    backoff: Backoff,
    idempotent: MethodPatterns,
    retry_refused: bool,
    budget: Arc<Budget>,
}

impl Retry {
    /// Default [`max_attempts`](Retry::max_attempts): the first attempt and two retries.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
    /// Default [`codes`](Retry::codes) retried: only `Unavailable`.
    pub const DEFAULT_CODES: &'static [Code] = &[Code::Unavailable];
    /// Default [`initial_backoff`](Retry::initial_backoff): the delay before the first retry.
    pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
    /// Default [`backoff_multiplier`](Retry::backoff_multiplier): each delay doubles.
    pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
    /// Default [`max_backoff`](Retry::max_backoff): no delay is longer.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);
    /// Default [`jitter`](Retry::jitter): each delay is cut by a random 0 to 20 %.
    pub const DEFAULT_JITTER: f64 = 0.2;
    /// Default [`budget_ratio`](Retry::budget_ratio): retries may add 20 % to the calls.
    pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
    /// Default [`budget_min_per_second`](Retry::budget_min_per_second): the floor of retries
    /// always allowed, per second of the window, however few calls were made.
    pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 10;
    /// Default [`budget_window`](Retry::budget_window): how far back calls and retries count.
    pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);
    /// The shortest [`budget_window`](Retry::budget_window); shorter ones are raised to it.
    pub const MIN_BUDGET_WINDOW: Duration = Duration::from_secs(1);

    /// A retry policy with the defaults: up to 3 attempts of refused calls (whatever their
    /// code) and of calls of idempotent methods that failed with `Unavailable`; no method
    /// marked idempotent yet (so only refused calls are retried until some are); 100 ms
    /// backoff doubling up to 2 s with 20 % jitter; a budget of 20 % of calls plus 10
    /// retries a second over 10 s.
    pub fn new() -> Retry {
        Retry {
            max_attempts: Retry::DEFAULT_MAX_ATTEMPTS,
            codes: CodeSet::of(Retry::DEFAULT_CODES.iter().copied()),
            backoff: Backoff {
                initial: Retry::DEFAULT_INITIAL_BACKOFF,
                multiplier: Retry::DEFAULT_BACKOFF_MULTIPLIER,
                max: Retry::DEFAULT_MAX_BACKOFF,
                jitter: Retry::DEFAULT_JITTER,
            },
            idempotent: MethodPatterns::default(),
            retry_refused: true,
            budget: Arc::new(Budget::new(BudgetConfig::default())),
        }
    }

    /// The most times a call is sent, the first included (default
    /// [`DEFAULT_MAX_ATTEMPTS`](Retry::DEFAULT_MAX_ATTEMPTS); at least 1, which turns
    /// retries off).
    pub fn max_attempts(mut self, attempts: u32) -> Retry {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The status codes that are retried, replacing the default (`Unavailable`).
    pub fn codes(mut self, codes: impl IntoIterator<Item = Code>) -> Retry {
        self.codes = CodeSet::of(codes);
        self
    }

    /// The delay before the first retry (default
    /// [`DEFAULT_INITIAL_BACKOFF`](Retry::DEFAULT_INITIAL_BACKOFF)).
    pub fn initial_backoff(mut self, delay: Duration) -> Retry {
        self.backoff.initial = delay;
        self
    }

    /// What each delay is multiplied by for the next retry (default
    /// [`DEFAULT_BACKOFF_MULTIPLIER`](Retry::DEFAULT_BACKOFF_MULTIPLIER); at least 1, so
    /// delays never shrink; 1 gives a constant delay).
    pub fn backoff_multiplier(mut self, multiplier: f64) -> Retry {
        self.backoff.multiplier = if multiplier.is_nan() { 1.0 } else { multiplier.max(1.0) };
        self
    }

    /// The longest delay between two attempts (default
    /// [`DEFAULT_MAX_BACKOFF`](Retry::DEFAULT_MAX_BACKOFF)).
    pub fn max_backoff(mut self, delay: Duration) -> Retry {
        self.backoff.max = delay;
        self
    }

    /// The fraction, from 0 to 1, by which each delay is randomly shortened so that clients
    /// that failed together do not retry together (default
    /// [`DEFAULT_JITTER`](Retry::DEFAULT_JITTER)): a delay of `d` becomes a random delay
    /// between `d * (1 - jitter)` and `d`. 0 turns jitter off; 1 is "full jitter".
    pub fn jitter(mut self, jitter: f64) -> Retry {
        self.backoff.jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
        self
    }

    /// Marks methods as idempotent, so their failed calls may be retried: a full method name
    /// (`/acme.users.v1.Users/GetUser`), or every method of a service (`/acme.users.v1.Users/*`).
    /// May be called many times.
    pub fn idempotent(mut self, pattern: impl Into<String>) -> Retry {
        self.idempotent.add(pattern.into());
        self
    }

    /// Whether a call the server refused (not processed: [`Status::is_refused`]) is sent
    /// again whatever its code and method (default `true`). With `false`, a refusal is
    /// retried only as any other failure is: an idempotent method, a retryable code.
    pub fn retry_refused(mut self, retry: bool) -> Retry {
        self.retry_refused = retry;
        self
    }

    /// Marks every method as idempotent: every failed call with a retryable code is retried.
    pub fn all_idempotent(mut self) -> Retry {
        self.idempotent.all = true;
        self
    }

    /// The fraction of calls that retries may add, within the budget window (default
    /// [`DEFAULT_BUDGET_RATIO`](Retry::DEFAULT_BUDGET_RATIO); at least 0). Starts a fresh
    /// budget, no longer shared with earlier clones.
    pub fn budget_ratio(mut self, ratio: f64) -> Retry {
        let ratio = if ratio.is_nan() { 0.0 } else { ratio.max(0.0) };
        self.budget = Arc::new(Budget::new(BudgetConfig { ratio, ..self.budget.config }));
        self
    }

    /// The retries always allowed per second of the budget window, however few calls were
    /// made (default [`DEFAULT_BUDGET_MIN_PER_SECOND`](Retry::DEFAULT_BUDGET_MIN_PER_SECOND)).
    /// Starts a fresh budget, no longer shared with earlier clones.
    pub fn budget_min_per_second(mut self, retries: u32) -> Retry {
        let config = BudgetConfig { min_per_second: retries, ..self.budget.config };
        self.budget = Arc::new(Budget::new(config));
        self
    }

    /// How far back calls and retries count towards the budget (default
    /// [`DEFAULT_BUDGET_WINDOW`](Retry::DEFAULT_BUDGET_WINDOW); at least
    /// [`MIN_BUDGET_WINDOW`](Retry::MIN_BUDGET_WINDOW)). Starts a fresh budget, no longer
    /// shared with earlier clones.
    pub fn budget_window(mut self, window: Duration) -> Retry {
        let config = BudgetConfig { window: window.max(Retry::MIN_BUDGET_WINDOW), ..self.budget.config };
        self.budget = Arc::new(Budget::new(config));
        self
    }

    /// Why the call that failed with `status` after `attempts` attempts is not sent again,
    /// or `None` if it may be (budget and deadline aside).
    fn refusal(&self, ctx: &ClientContext, status: &Status, attempts: u32) -> Option<&'static str> {
        if attempts >= self.max_attempts {
            Some("no attempts left")
        } else if self.retry_refused && status.is_refused() {
            None
        } else if !self.codes.contains(status.code()) {
            Some("the code is not retryable")
        } else if !self.idempotent.matches(ctx.method()) {
            Some("the method is not idempotent and the call may have been processed")
        } else {
            None
        }
    }
}

impl Default for Retry {
    fn default() -> Retry {
        Retry::new()
    }
}

impl ClientInterceptor for Retry {
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        if ctx.kind() != MethodKind::Unary {
            return next.run(ctx).await;
        }
        self.budget.deposit(Instant::now());
        let mut attempts = 0;
        loop {
            attempts += 1;
            let status = match next.run(ctx).await {
                Ok(()) => return Ok(()),
                Err(status) => status,
            };
            let method = ctx.method();
            if let Some(reason) = self.refusal(ctx, &status, attempts) {
                if attempts > 1 || self.codes.contains(status.code()) || status.is_refused() {
                    tracing::debug!(method, attempts, %status, reason, "not retrying");
                }
                return Err(status);
            }
            let delay = self.backoff.delay(attempts);
            if ctx.remaining().is_some_and(|remaining| remaining <= delay) {
                tracing::debug!(method, attempts, %status, "not retrying: the backoff would end past the deadline");
                return Err(status);
            }
            if !self.budget.try_withdraw(Instant::now()) {
                tracing::debug!(method, attempts, %status, "not retrying: the retry budget is exhausted");
                return Err(status);
            }
            tracing::debug!(
                method,
                attempt = attempts + 1,
                delay_ms = delay.as_millis() as u64,
                %status,
                refused = status.is_refused(),
                "retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// A set of status codes, as a bit per code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CodeSet(u32);

impl CodeSet {
    /// The set of `codes`.
    pub(super) fn of(codes: impl IntoIterator<Item = Code>) -> CodeSet {
        CodeSet(codes.into_iter().fold(0, |bits, code| bits | 1 << code.as_u32()))
    }

    /// Whether `code` is in the set.
    pub(super) fn contains(self, code: Code) -> bool {
        self.0 & (1 << code.as_u32()) != 0
    }
}

/// How many slots the budget window is divided into: calls and retries expire a slot at a time.
const BUDGET_SLOTS: usize = 10;

/// The budget's settings.
#[derive(Debug, Clone, Copy)]
struct BudgetConfig {
    ratio: f64,
    min_per_second: u32,
    window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> BudgetConfig {
        BudgetConfig {
            ratio: Retry::DEFAULT_BUDGET_RATIO,
            min_per_second: Retry::DEFAULT_BUDGET_MIN_PER_SECOND,
            window: Retry::DEFAULT_BUDGET_WINDOW,
        }
    }
}

/// A retry budget over a sliding window: a retry is allowed while the retries in the window
/// stay within `min_per_second * window + ratio * calls in the window`.
#[derive(Debug)]
struct Budget {
    config: BudgetConfig,
    /// The retries always allowed in a window: `min_per_second * window`.
    reserve: f64,
    slot: Duration,
    /// Held only to count, never across an await.
    slots: Mutex<Slots>,
}

#[derive(Debug)]
struct Slots {
    origin: Instant,
    slots: [Slot; BUDGET_SLOTS],
}

/// The calls and retries of one slot of the window.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Which slot since the origin this one counts; stale counts are reset before use.
    index: u64,
    calls: u64,
    retries: u64,
}

impl Budget {
    fn new(config: BudgetConfig) -> Budget {
        Budget {
            config,
            reserve: f64::from(config.min_per_second) * config.window.as_secs_f64(),
            slot: config.window / BUDGET_SLOTS as u32,
            slots: Mutex::new(Slots { origin: Instant::now(), slots: [Slot::default(); BUDGET_SLOTS] }),
        }
    }

    /// Counts a call.
    fn deposit(&self, now: Instant) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        self.current(&mut slots, now).calls += 1;
    }

    /// Counts a retry if the budget allows it; whether it did.
    fn try_withdraw(&self, now: Instant) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let index = self.index(&slots, now);
        let (mut calls, mut retries) = (0u64, 0u64);
        for slot in &slots.slots {
            if slot.index + (BUDGET_SLOTS as u64) > index && slot.index <= index {
                calls += slot.calls;
                retries += slot.retries;
            }
        }
        let allowed = self.reserve + self.config.ratio * calls as f64;
        if retries as f64 + 1.0 > allowed {
            return false;
        }
        self.current(&mut slots, now).retries += 1;
        true
    }

    /// The number of the slot `now` falls in, counted from the origin.
    fn index(&self, slots: &Slots, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(slots.origin).as_nanos();
        (elapsed / self.slot.as_nanos().max(1)) as u64
    }

    /// The slot `now` falls in, reset if it held counts from an earlier round of the window.
    fn current<'a>(&self, slots: &'a mut Slots, now: Instant) -> &'a mut Slot {
        let index = self.index(slots, now);
        let slot = &mut slots.slots[(index % BUDGET_SLOTS as u64) as usize];
        if slot.index != index {
            *slot = Slot { index, calls: 0, retries: 0 };
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(initial_ms: u64, multiplier: f64, max_ms: u64, jitter: f64) -> Backoff {
        Backoff {
            initial: Duration::from_millis(initial_ms),
            multiplier,
            max: Duration::from_millis(max_ms),
            jitter,
        }
    }

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_maximum() {
        let b = backoff(100, 2.0, 1000, 0.0);
        let delays: Vec<u128> = (1..=7).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
        // Huge exponents saturate instead of overflowing.
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(1000));
        assert_eq!(backoff(100, 1.0, 1000, 0.0).delay(5), Duration::from_millis(100));
    }

    #[test]
    fn jittered_backoff_stays_between_its_bounds_and_varies() {
        let b = backoff(100, 2.0, 1000, 0.2);
        for attempts in 1..=6 {
            let ceiling = b.ceiling(attempts);
            let floor = ceiling.mul_f64(0.8);
            let samples: Vec<Duration> = (0..500).map(|_| b.delay(attempts)).collect();
            for delay in &samples {
                assert!(*delay >= floor && *delay <= ceiling, "{delay:?} outside {floor:?}..={ceiling:?}");
            }
            assert!(samples.iter().any(|d| *d != samples[0]), "jitter varies the delay");
        }
        // Full jitter reaches down towards zero but never past the ceiling.
        let full = backoff(100, 2.0, 1000, 1.0);
        assert!((0..500).all(|_| full.delay(3) <= Duration::from_millis(400)));
        assert!((0..500).any(|_| full.delay(3) < Duration::from_millis(200)));
    }

    #[test]
    fn the_retry_builder_clamps_its_knobs() {
        let retry =
            Retry::new().max_attempts(0).jitter(7.0).backoff_multiplier(0.5).budget_window(Duration::ZERO);
        assert_eq!(retry.max_attempts, 1);
        assert_eq!(retry.backoff.jitter, 1.0);
        assert_eq!(retry.backoff.multiplier, 1.0);
        assert_eq!(retry.budget.config.window, Retry::MIN_BUDGET_WINDOW);
    }

    #[test]
    fn idempotent_patterns_match_one_method_or_a_whole_service() {
        let retry = Retry::new().idempotent("/a.v1.Users/Get").idempotent("/a.v1.Search/*");
        assert!(retry.idempotent.matches("/a.v1.Users/Get"));
        assert!(!retry.idempotent.matches("/a.v1.Users/Delete"));
        assert!(!retry.idempotent.matches("/a.v1.Users/GetAll"));
        assert!(retry.idempotent.matches("/a.v1.Search/Query"));
        assert!(!retry.idempotent.matches("/a.v1.SearchAdmin/Drop"));
        assert!(Retry::new().all_idempotent().idempotent.matches("/x.Y/Z"));
    }

    #[test]
    fn code_sets_hold_exactly_their_codes() {
        let set = CodeSet::of([Code::Unavailable, Code::Internal]);
        assert!(set.contains(Code::Unavailable) && set.contains(Code::Internal));
        assert!(!set.contains(Code::Ok) && !set.contains(Code::Unauthenticated));
    }

    #[test]
    fn the_budget_floor_allows_min_per_second_times_the_window_without_calls() {
        let budget =
            Budget::new(BudgetConfig { ratio: 0.0, min_per_second: 2, window: Duration::from_secs(1) });
        let now = Instant::now();
        assert!(budget.try_withdraw(now));
        assert!(budget.try_withdraw(now));
        assert!(!budget.try_withdraw(now), "the floor is 2 retries a second");
    }

    #[test]
    fn the_budget_grows_with_calls_by_its_ratio() {
        let budget =
            Budget::new(BudgetConfig { ratio: 0.5, min_per_second: 0, window: Duration::from_secs(10) });
        let now = Instant::now();
        budget.deposit(now);
        assert!(!budget.try_withdraw(now), "half a retry is not a retry");
        budget.deposit(now);
        assert!(budget.try_withdraw(now));
        assert!(!budget.try_withdraw(now));
        for _ in 0..4 {
            budget.deposit(now);
        }
        assert!(budget.try_withdraw(now) && budget.try_withdraw(now));
        assert!(!budget.try_withdraw(now), "six calls allow three retries");
    }

    #[test]
    fn calls_and_retries_leave_the_budget_when_the_window_slides_past_them() {
        let window = Duration::from_secs(10);
        let budget = Budget::new(BudgetConfig { ratio: 1.0, min_per_second: 0, window });
        let start = Instant::now();
        budget.deposit(start);
        assert!(budget.try_withdraw(start));
        assert!(!budget.try_withdraw(start + window / 2), "the retry still counts");
        let later = start + window + window / BUDGET_SLOTS as u32;
        assert!(!budget.try_withdraw(later), "the call that paid for retries has expired too");
        budget.deposit(later);
        assert!(budget.try_withdraw(later), "the old retry no longer counts");
    }
}
