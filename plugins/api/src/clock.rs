//! Time: the wall clock (injectable) and the monotonic clock of latencies.
//!
//! Expiry is judged against unix milliseconds. The server reads them through a
//! [`Clock`] so that tests can move time by hand ([`ManualClock`]) instead of
//! sleeping.
//!
//! A request's latency and a connection's idle time are measured with
//! [`Moment`], a reading of the monotonic clock in nanoseconds. Every request
//! reads both clocks (when it arrives, for the store's expiry, when it is
//! answered), so both are read with one `clock_gettime` each (the vDSO's,
//! no system call) and turned into an integer, without the checks and the
//! `Duration` arithmetic of `std::time` (`SystemTime::duration_since` and
//! `Instant` differences were about 200 user-space instructions of a 4,560-
//! instruction GET; callgrind, 2026-12-07).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A source of unix time in milliseconds.
pub trait Clock: Send + Sync + 'static {
    /// Now, in unix milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let (secs, nanos) = read(libc::CLOCK_REALTIME);
        // Before 1970 (a clock set wrong) reads as 0, as `duration_since` did.
        u64::try_from(secs).map_or(0, |s| s * 1000 + nanos / 1_000_000)
    }
}

/// One reading of `clock`: whole seconds and the nanoseconds past them.
#[allow(unsafe_code)]
fn read(clock: libc::clockid_t) -> (i64, u64) {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration;
    // CLOCK_REALTIME and CLOCK_MONOTONIC exist on every supported system, so
    // the call cannot fail (and if it did, `ts` stays zero).
    unsafe { libc::clock_gettime(clock, &mut ts) };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    (ts.tv_sec as i64, ts.tv_nsec as u64)
}

/// A reading of the monotonic clock: nanoseconds since an unspecified start
/// (the machine's boot on Linux). It never goes back and does not move with
/// the wall clock. Like `std::time::Instant`, but one `clock_gettime` to read
/// and a subtraction to compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(u64);

impl Moment {
    /// Now.
    pub fn now() -> Self {
        let (secs, nanos) = read(libc::CLOCK_MONOTONIC);
        Moment(secs as u64 * 1_000_000_000 + nanos)
    }

    /// The time from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Moment) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// The time from `self` to now.
    pub fn elapsed(self) -> Duration {
        Moment::now().since(self)
    }

    /// The time from `self` to now, in seconds (what a latency histogram
    /// observes).
    pub fn elapsed_secs(self) -> f64 {
        Moment::now().0.saturating_sub(self.0) as f64 / 1e9
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock standing at `ms`.
    pub fn new(ms: u64) -> Self {
        ManualClock(AtomicU64::new(ms))
    }
    /// Moves the clock forward.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn system_clock_reads_unix_milliseconds() {
        let unix_ms = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let before = unix_ms();
        let now = SystemClock.now_ms();
        let after = unix_ms();
        assert!(before <= now && now <= after, "{before} <= {now} <= {after}");
    }

    #[test]
    fn moments_never_go_back_and_differences_saturate() {
        let a = Moment::now();
        let b = Moment::now();
        assert!(b >= a);
        assert_eq!(a.since(b), Duration::ZERO);
        assert_eq!(Moment(5).since(Moment(7)), Duration::ZERO);
        assert_eq!(Moment(2_500_000_007).since(Moment(7)), Duration::from_millis(2500));
        assert!(a.elapsed() >= b.since(a));
        assert!(a.elapsed_secs() >= 0.0);
    }

    #[test]
    fn moments_follow_the_monotonic_clock() {
        // The same clock as std's Instant on unix: two Moments read between
        // two Instants are no further apart than the Instants are.
        let first = (std::time::Instant::now(), Moment::now());
        let between = Moment::now();
        let span = first.0.elapsed();
        assert!(between.since(first.1) <= span);
    }
}
