//! Server-side limits: [`RateLimit`] (token buckets per method, optionally per caller) and
//! [`ConcurrencyLimit`] (load shedding past a number of calls in flight).
//!
//! Both answer `ResourceExhausted` marked as [refused](crate::Status::refused): the call was
//! not processed, so a client may retry it later, or elsewhere.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota};

use crate::interceptor::ServerContext;
use crate::interceptor::{ServerInterceptor, ServerNext};
use crate::status::Status;

/// How many calls go between clean-ups of idle buckets.
const SWEEP_EVERY: u64 = 4096;

/// The longest caller key used as-is; longer keys are cut, so a caller cannot make the
/// limiter hold arbitrarily large keys.
const MAX_KEY_LEN: usize = 128;

/// A bucket's key: the method, and the caller's key when limits are per caller.
type Key = (&'static str, String);

/// Token buckets per method: `rate` calls a second on average, up to `burst` at once. Calls
/// over it are answered `ResourceExhausted` (refused) without running.
///
/// With [`per_caller`](RateLimit::per_caller), each value of a metadata key (an API key, a
/// tenant id) gets its own buckets; callers without the key share one.
///
/// ```
/// use rpc_core::middleware::RateLimit;
/// use rpc_core::Server;
///
/// let server = Server::builder().interceptor(
///     RateLimit::per_second(100)
///         .burst(20)
///         .per_caller("x-api-key")
///         .method("/shop.v1.Orders/Place", 5, 5),
/// );
/// ```
#[derive(Clone)]
pub struct RateLimit {
    default_quota: Quota,
    method_quotas: HashMap<String, Quota>,
    caller_key: Option<String>,
    buckets: Arc<Buckets>,
}

/// The live buckets, built from the configured quotas.
struct Buckets {
    default: DefaultKeyedRateLimiter<Key>,
    methods: HashMap<String, DefaultKeyedRateLimiter<Key>>,
    calls: AtomicU64,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("quota", &self.default_quota)
            .field("methods", &self.method_quotas)
            .field("per_caller", &self.caller_key)
            .finish()
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl RateLimit {
    /// `rate` calls a second for each method, in bursts of up to `rate` (both at least 1).
    pub fn per_second(rate: u32) -> RateLimit {
        RateLimit {
            default_quota: quota(rate, rate),
            method_quotas: HashMap::new(),
            caller_key: None,
            buckets: Arc::new(Buckets::new(quota(rate, rate), &HashMap::new())),
        }
    }

    /// `rate` calls a minute for each method, in bursts of up to `rate` (both at least 1).
    pub fn per_minute(rate: u32) -> RateLimit {
        let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(rate);
        RateLimit {
            default_quota: quota,
            method_quotas: HashMap::new(),
            caller_key: None,
            buckets: Arc::new(Buckets::new(quota, &HashMap::new())),
        }
    }

    /// The burst size: how many calls may come at once after a quiet spell (at least 1).
    pub fn burst(mut self, burst: u32) -> RateLimit {
        self.default_quota =
            self.default_quota.allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        self.rebuilt()
    }

    /// Separate buckets for each value of the metadata `key` (e.g. `x-api-key`).
    pub fn per_caller(mut self, key: impl Into<String>) -> RateLimit {
        self.caller_key = Some(key.into());
        self.rebuilt()
    }

    /// A limit of its own for one method (full name, e.g. `/pkg.Service/Method`).
    pub fn method(mut self, method: impl Into<String>, per_second: u32, burst: u32) -> RateLimit {
        self.method_quotas.insert(method.into(), quota(per_second, burst));
        self.rebuilt()
    }

    /// Fresh buckets for the changed configuration (configuration happens before serving).
    fn rebuilt(mut self) -> RateLimit {
        self.buckets = Arc::new(Buckets::new(self.default_quota, &self.method_quotas));
        self
    }

    /// Takes a token for a call to `method`, or says why not.
    fn admit(&self, method: &'static str, ctx: &ServerContext) -> Result<(), Status> {
        let caller = match &self.caller_key {
            Some(key) => {
                let value =
                    ctx.metadata().get(key).map(|v| &v[..v.len().min(MAX_KEY_LEN)]).unwrap_or_default();
                String::from_utf8_lossy(value).into_owned()
            }
            None => String::new(),
        };
        let buckets = &self.buckets;
        let limiter = buckets.methods.get(method).unwrap_or(&buckets.default);
        let admitted = limiter.check_key(&(method, caller)).is_ok();
        if buckets.calls.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Buckets that have refilled completely are no different from new ones.
            buckets.default.retain_recent();
            buckets.methods.values().for_each(|limiter| limiter.retain_recent());
        }
        if admitted {
            Ok(())
        } else {
            Err(Status::resource_exhausted(format!("rate limit exceeded for {method}")).refused())
        }
    }
}

impl Buckets {
    fn new(default: Quota, methods: &HashMap<String, Quota>) -> Buckets {
        Buckets {
            default: DefaultKeyedRateLimiter::keyed(default),
            methods: methods.iter().map(|(m, q)| (m.clone(), DefaultKeyedRateLimiter::keyed(*q))).collect(),
            calls: AtomicU64::new(0),
        }
    }
}

impl ServerInterceptor for RateLimit {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        self.admit(ctx.method(), ctx)?;
        next.run(ctx).await
    }
}

/// Sheds load: past `limit` calls in flight (across the server, or the service it guards),
/// new calls are answered `ResourceExhausted` (refused) without running.
///
/// ```
/// use rpc_core::middleware::ConcurrencyLimit;
/// use rpc_core::Server;
///
/// let server = Server::builder().interceptor(ConcurrencyLimit::new(256));
/// ```
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    limit: usize,
    in_flight: Arc<AtomicUsize>,
}

impl ConcurrencyLimit {
    /// At most `limit` calls at once (at least 1).
    pub fn new(limit: usize) -> ConcurrencyLimit {
        ConcurrencyLimit { limit: limit.max(1), in_flight: Arc::new(AtomicUsize::new(0)) }
    }

    /// How many calls are in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Gives a slot back however the call ends (finished, failed, cancelled).
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ServerInterceptor for ConcurrencyLimit {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        let taken = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _slot = Slot(&self.in_flight);
        if taken >= self.limit {
            let limit = self.limit;
            return Err(
                Status::resource_exhausted(format!("over {limit} calls in flight: shedding load")).refused()
            );
        }
        next.run(ctx).await
    }
}
