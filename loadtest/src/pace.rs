//! Sleeping on tokio until a deadline finer than a millisecond.
//!
//! tokio's timer counts whole milliseconds: `sleep_until(at)` wakes on the first millisecond
//! tick at or after `at`, and the runtime's `epoll_wait` takes its timeout in milliseconds
//! too. A publisher paced at 2,000 events a second with it wakes once a millisecond and sends
//! two events back to back, not one every 500 µs as its schedule says (and as the floor and
//! `redis-hop`, which sleep with `nanosleep`, are paced). [`Pacer`] arms a `timerfd`
//! (nanosecond resolution, no timer slack) and waits for it through the runtime's reactor, so
//! the task wakes when the deadline passes, not on the next millisecond.

use std::io;
use std::time::Instant;

use timerfd::{ClockId, SetTimeFlags, TimerFd, TimerState};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A one-shot `timerfd` registered with the current tokio runtime.
pub struct Pacer {
    fd: AsyncFd<TimerFd>,
}

impl Pacer {
    /// Must be called inside a tokio runtime with IO enabled.
    pub fn new() -> io::Result<Pacer> {
        let timer = TimerFd::new_custom(ClockId::Monotonic, true, true)?;
        // SAFETY: the `TimerFd` is moved into the registration and owns its descriptor, which
        // stays open and the same until the registration is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(timer, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Pacer { fd })
    }

    /// Returns once `at` has passed (at once when it already has).
    pub async fn sleep_until(&mut self, at: Instant) -> io::Result<()> {
        let now = Instant::now();
        if at <= now {
            return Ok(());
        }
        // `Instant` is CLOCK_MONOTONIC on Linux, the timer's clock. Re-arming also clears any
        // expiry left over from a sleep that was dropped before it ended.
        self.fd
            .get_mut()
            .set_state(TimerState::Oneshot(at - now), SetTimeFlags::Default);
        loop {
            let mut ready = self.fd.readable().await?;
            // Non-blocking: 0 when the timer has not expired yet (a stale readiness).
            if ready.get_inner().read() > 0 {
                return Ok(());
            }
            ready.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// How far past a 300 µs deadline each of 40 sleeps wakes, sorted.
    async fn overshoots(mut sleep: impl AsyncFnMut(Instant)) -> Vec<Duration> {
        let mut late = Vec::new();
        for _ in 0..40 {
            let at = Instant::now() + Duration::from_micros(300);
            sleep(at).await;
            let woke = Instant::now();
            assert!(woke >= at, "woke {:?} early", at - woke);
            late.push(woke - at);
        }
        late.sort();
        late
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pacer_wakes_near_a_deadline_finer_than_a_millisecond() {
        let mut pacer = Pacer::new().expect("timerfd");
        let late = overshoots(async |at| pacer.sleep_until(at).await.expect("sleep")).await;
        // tokio's own timer (below) wakes on the next millisecond tick, 0.7 ms or more past
        // such a deadline; a loaded scheduler adds tens of microseconds, not hundreds.
        let median = late[late.len() / 2];
        assert!(
            median < Duration::from_micros(400),
            "median overshoot {median:?} (all: {late:?})"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tokio_sleep_until_rounds_a_deadline_up_to_its_millisecond_tick() {
        // The reason for `Pacer`: if tokio's timer ever resolves finer, this fails and the
        // pacer can go.
        let late = overshoots(async |at| tokio::time::sleep_until(at.into()).await).await;
        let median = late[late.len() / 2];
        assert!(
            median >= Duration::from_micros(400),
            "median overshoot {median:?} (all: {late:?})"
        );
    }
}
