//! The watchdog: closes connections that hold resources without using them. An idle one
//! (no calls for a while), one whose peer stopped in the middle of a frame (a read stall),
//! and one whose peer does not read what we must send it (a write stall).
//!
//! One timer per connection, firing every quarter of the shortest timeout: at each firing,
//! each check compares what the driver has counted since the last one. A condition that
//! holds at every firing for a whole timeout raises its alarm, so an alarm comes between the
//! timeout and the timeout plus a quarter of the shortest one. Nothing is done per frame.

use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The watchdog's timeouts; `None` turns a check off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// No calls in flight, and none started, for this long.
    pub(crate) idle: Option<Duration>,
    /// A frame begun and not finished for this long (while we were reading).
    pub(crate) read_stall: Option<Duration>,
    /// Bytes waiting for the socket and none written for this long.
    pub(crate) write_stall: Option<Duration>,
}

/// What the driver counted, as of a firing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Calls in flight.
    pub(crate) calls: usize,
    /// Call activity so far (frames of calls read, calls started): any change is not idle.
    pub(crate) call_activity: u64,
    /// Whole frames read so far.
    pub(crate) frames_read: u64,
    /// Whether part of a frame sits in the read buffer while we read.
    pub(crate) partial_frame: bool,
    /// Bytes written so far.
    pub(crate) written: u64,
    /// Bytes waiting to be written.
    pub(crate) unwritten: usize,
}

/// An alarm: which timeout ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alarm {
    Idle(Duration),
    ReadStall(Duration),
    WriteStall(Duration),
}

/// One condition, watched across firings.
#[derive(Debug)]
struct Check {
    limit: Duration,
    /// Firings in a row at which the condition held.
    strikes: u32,
    /// Firings needed: the limit in periods, rounded up.
    needed: u32,
    /// The counter the condition compares with, as of the last firing.
    mark: u64,
}

impl Check {
    fn new(limit: Duration, period: Duration) -> Check {
        let needed = limit.as_nanos().div_ceil(period.as_nanos().max(1));
        Check { limit, strikes: 0, needed: u32::try_from(needed).unwrap_or(u32::MAX).max(1), mark: 0 }
    }

    /// Records one firing: `holds` whether the condition held with the counter at `count`
    /// unchanged since the last one. True once it has held for the whole limit.
    fn fire(&mut self, holds: bool, count: u64) -> bool {
        if holds && count == self.mark {
            self.strikes = self.strikes.saturating_add(1);
        } else {
            self.strikes = 0;
            self.mark = count;
        }
        self.strikes >= self.needed
    }
}

/// A connection's watchdog.
pub(crate) struct Watchdog {
    timer: Pin<Box<Sleep>>,
    period: Duration,
    idle: Option<Check>,
    read_stall: Option<Check>,
    write_stall: Option<Check>,
}

impl Watchdog {
    /// A watchdog for `timeouts`; `None` when every check is off.
    pub(crate) fn new(timeouts: Timeouts) -> Option<Watchdog> {
        let shortest =
            [timeouts.idle, timeouts.read_stall, timeouts.write_stall].into_iter().flatten().min()?;
        let period = (shortest / 4).max(Duration::from_millis(1));
        let check = |limit: Option<Duration>| limit.map(|limit| Check::new(limit, period));
        Some(Watchdog {
            timer: Box::pin(tokio::time::sleep(period)),
            period,
            idle: check(timeouts.idle),
            read_stall: check(timeouts.read_stall),
            write_stall: check(timeouts.write_stall),
        })
    }

    /// Polls the timer; at a firing, checks `progress` and returns the first alarm raised.
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        progress: impl FnOnce() -> Progress,
    ) -> Option<Alarm> {
        if self.timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        let now = Instant::now();
        self.timer.as_mut().reset(now + self.period);
        // Registers the next firing's wake-up.
        let _ = self.timer.as_mut().poll(cx);
        let p = progress();
        // Each check sees every firing, so none is left with a stale mark.
        let mut alarm = None;
        if let Some(check) = &mut self.write_stall
            && check.fire(p.unwritten > 0, p.written)
        {
            alarm = Some(Alarm::WriteStall(check.limit));
        }
        if let Some(check) = &mut self.read_stall
            && check.fire(p.partial_frame, p.frames_read)
        {
            alarm = alarm.or(Some(Alarm::ReadStall(check.limit)));
        }
        if let Some(check) = &mut self.idle
            && check.fire(p.calls == 0, p.call_activity)
        {
            alarm = alarm.or(Some(Alarm::Idle(check.limit)));
        }
        alarm
    }

    /// After an idle alarm: the next one comes after `grace` more of idleness, not a whole
    /// idle timeout (a peer told to leave gets that long to do so).
    pub(crate) fn idle_grace(&mut self, grace: Duration) {
        let period = self.period;
        if let Some(check) = &mut self.idle {
            let grace =
                u32::try_from(grace.as_nanos().div_ceil(period.as_nanos().max(1))).unwrap_or(u32::MAX);
            check.strikes = check.needed.saturating_sub(grace.max(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_raises_its_alarm_after_the_limit_of_unchanged_firings() {
        let mut check = Check::new(Duration::from_secs(8), Duration::from_secs(2));
        assert_eq!(check.needed, 4);
        // The first firing sets the mark.
        assert!(!check.fire(true, 5));
        for _ in 0..3 {
            assert!(!check.fire(true, 5));
        }
        assert!(check.fire(true, 5), "held for 4 periods");
        // Progress resets it, and so does the condition not holding.
        assert!(!check.fire(true, 6));
        assert!(!check.fire(true, 6));
        assert!(!check.fire(false, 6));
        assert_eq!(check.strikes, 0);
    }

    #[test]
    fn the_period_is_a_quarter_of_the_shortest_timeout() {
        let timeouts = Timeouts {
            idle: Some(Duration::from_secs(300)),
            read_stall: Some(Duration::from_secs(20)),
            write_stall: None,
        };
        let dog = tokio_test_runtime(|| Watchdog::new(timeouts).expect("a watchdog"));
        assert_eq!(dog.period, Duration::from_secs(5));
        assert_eq!(dog.idle.as_ref().map(|c| c.needed), Some(60));
        assert_eq!(dog.read_stall.as_ref().map(|c| c.needed), Some(4));
        assert!(dog.write_stall.is_none());
        assert!(Watchdog::new(Timeouts::default()).is_none());
    }

    /// Timers need a runtime to be made in.
    fn tokio_test_runtime<T>(f: impl FnOnce() -> T) -> T {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let _guard = runtime.enter();
        f()
    }
}
