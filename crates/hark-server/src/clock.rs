//! The server's one clock: every timestamp and every deadline in the server comes from here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hark_core::time::Millis;
use tokio::time::Instant;

/// Wall-clock time read once, at start, plus monotonic time elapsed since.
///
/// [`Clock::now`] is what the core state machines get as `now`, and message `sent_at` stamps come
/// from it. Because it advances only with the monotonic clock, a wall-clock step while the server
/// runs (NTP, an operator, a VM resumed) moves no deadline: a 2 s `check` waits 2 s, a typing
/// lease expires on time. The elapsed part is `tokio::time::Instant`, so under tokio's paused
/// time (`#[tokio::test(start_paused = true)]`) the whole server runs on a virtual clock that
/// tests advance at will.
///
/// The price is drift: a wall-clock correction made while the server runs shows in `sent_at`
/// only after a restart. A clock that must never run behind a conversation's log takes
/// [`Clock::not_before`].
///
/// **Invariant:** nothing in the server reads `SystemTime` except [`Clock::system`].
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall time at `start`.
    wall_at_start: Millis,
    /// The monotonic instant `wall_at_start` was read at.
    start: Instant,
}

impl Clock {
    /// The system's wall clock, read now, advanced by the monotonic clock from here on.
    pub fn system() -> Clock {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Clock::starting_at(Millis(millis(since_epoch)))
    }

    /// A clock that reads `wall` now and advances with tokio's clock: under paused time, a fully
    /// virtual clock (tests start it at a fixed, readable instant).
    pub fn starting_at(wall: Millis) -> Clock {
        Clock {
            wall_at_start: wall,
            start: Instant::now(),
        }
    }

    /// The current time, as the core wants it.
    pub fn now(&self) -> Millis {
        self.wall_at_start
            .saturating_add(millis(self.start.elapsed()))
    }

    /// The monotonic instant now, for leases and rate windows that never need wall time.
    pub fn instant(&self) -> Instant {
        Instant::now()
    }

    /// The monotonic instant at which [`Clock::now`] reaches `at`, for arming a timer (in the
    /// past, so at once, if it already has).
    pub fn deadline(&self, at: Millis) -> Instant {
        self.start + Duration::from_millis(at.since(self.wall_at_start))
    }

    /// This clock, moved forward if needed so that it reads at least `floor` now: a conversation
    /// whose last message was stamped after a wall-clock step back keeps stamping forward, and its
    /// timers still run at the monotonic rate.
    pub fn not_before(&self, floor: Millis) -> Clock {
        let behind = floor.since(self.now());
        Clock {
            wall_at_start: self.wall_at_start.saturating_add(behind),
            start: self.start,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time_and_arms_deadlines_from_it() {
        let clock = Clock::starting_at(Millis(1_000_000));
        assert_eq!(clock.now(), Millis(1_000_000));
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now(), Millis(1_001_500));
        let deadline = clock.deadline(Millis(1_002_000));
        tokio::time::sleep_until(deadline).await;
        assert_eq!(clock.now(), Millis(1_002_000));
        assert!(
            clock.deadline(Millis(5)) <= Instant::now(),
            "a past time is due at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn not_before_moves_forward_only() {
        let clock = Clock::starting_at(Millis(10_000));
        assert_eq!(clock.not_before(Millis(3_000)).now(), Millis(10_000));
        let ahead = clock.not_before(Millis(3_600_000));
        assert_eq!(ahead.now(), Millis(3_600_000));
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        assert_eq!(
            ahead.now(),
            Millis(3_602_000),
            "and runs at the monotonic rate"
        );
        tokio::time::sleep_until(ahead.deadline(Millis(3_603_000))).await;
        assert_eq!(ahead.now(), Millis(3_603_000));
    }
}
