//! The person's activity: typing leases, quiet gaps and what the rhythm learns from them.

use super::TurnEngine;
use crate::time::Millis;

impl TurnEngine {
    pub(super) fn on_typing(&mut self, now: Millis, on: bool) {
        let fresh = self.lease_fresh(now);
        if on {
            if !fresh {
                self.rhythm.observe_typing_start();
                self.activity_starts(now, true);
            }
            self.lease_until = Some(now.saturating_add(self.cfg.typing_timeout_ms));
        } else if fresh {
            self.lease_until = None;
            self.lease_ended(now);
        }
    }

    /// The person starts doing something (typing or a message out of the blue): learn the quiet
    /// gap that ended, as a continuation of the burst or as a reply to the agent.
    pub(super) fn activity_starts(&mut self, at: Millis, learn: bool) {
        let Some(quiet) = self.person.quiet_since.take() else {
            return;
        };
        if self.person.agent_spoke_since {
            if learn && let Some(agent_at) = self.person.last_agent_at {
                self.rhythm.observe_reply_latency(at.since(agent_at));
            }
            return;
        }
        let gap = at.since(quiet);
        if gap > self.cfg.rhythm_max_gap_ms {
            return;
        }
        if learn && self.cfg.learn_rhythm {
            self.rhythm.observe_gap(gap);
        }
    }

    pub(super) fn expire_lease(&mut self, now: Millis) {
        if let Some(until) = self.lease_until
            && until <= now
        {
            self.lease_until = None;
            self.lease_ended(until);
        }
    }

    pub(super) fn lease_ended(&mut self, at: Millis) {
        self.person.quiet(at);
        self.person.typing_stopped_at = Some(at);
    }

    pub(super) fn lease_fresh(&self, now: Millis) -> bool {
        self.lease_until.is_some_and(|l| l > now)
    }

    /// When the typing grace after the last stop (without a message) is over.
    pub(super) fn grace_until(&self) -> Option<Millis> {
        self.person
            .typing_stopped_at
            .map(|at| at.saturating_add(self.cfg.typing_grace_ms))
    }
}
