//! The timer table: a fixed set of slots, recomputed from the facts after every step.

use super::{Phase, TIMERS, Timer, Turn, TurnEngine};
use crate::time::Millis;

impl TurnEngine {
    pub(super) fn rearm(&mut self, now: Millis) {
        let mut t = [None; TIMERS];
        let lease = self.lease_fresh(now);
        if self.turn.is_none()
            && let Some(b) = &self.burst
        {
            t[Timer::HardCap as usize] = Some(b.cap_deadline);
            if self.ask.is_none() && !(self.cfg.typing_gate() && lease) {
                t[Timer::Window as usize] = Some(self.window_deadline(b));
            }
        }
        t[Timer::Lease as usize] = self.lease_until;
        t[Timer::Ask as usize] = self.ask.map(|a| a.deadline);
        if let Some(Turn {
            phase: Phase::Speaking(d),
            ..
        }) = &self.turn
        {
            let gate = self.gate(d.sent);
            if !(gate && lease) {
                t[Timer::Deliver as usize] = Some(self.deliver_at(d, gate));
            }
        }
        debug_assert!(
            t.iter().flatten().all(|&d| d > now),
            "a due timer was left armed: {t:?} at {now:?}"
        );
        self.timers = t;
    }
}
