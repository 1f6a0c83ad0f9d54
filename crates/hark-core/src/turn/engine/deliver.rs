//! SPEAKING: the bubbles' cadence, the rechecks, and how turns end.

use super::super::bubbles::cadence_ms;
use super::super::{Output, TurnOutcome};
use super::{Delivery, MAX_UNACKED, Phase, Turn, TurnEngine, hash_text};
use crate::time::Millis;

impl TurnEngine {
    pub(super) fn on_delivered(&mut self, epoch: u64, index: u32) {
        let Some(pos) = self
            .unacked
            .iter()
            .position(|&(e, i, _)| e == epoch && i == index)
        else {
            return;
        };
        if let Some((_, _, read)) = self.unacked.remove(pos) {
            self.answered_up_to = self.answered_up_to.max(read);
        }
    }

    // --- Speaking -----------------------------------------------------------------------------

    /// Whether the recheck guards the next bubble: the deliver-time recheck for the first, the
    /// between-bubbles recheck for the others.
    pub(super) fn gate(&self, sent: u32) -> bool {
        if sent == 0 {
            self.cfg.deliver_recheck
        } else {
            self.cfg.bargein_recheck
        }
    }

    pub(super) fn deliver_at(&self, d: &Delivery, gate: bool) -> Millis {
        match self.grace_until() {
            Some(g) if gate => d.next_at.max(g),
            _ => d.next_at,
        }
    }

    /// Sends the next bubble if due, or stops delivery for a newer message. True if it acted.
    pub(super) fn step_speaking(&mut self, now: Millis) -> bool {
        let Some(Turn {
            phase: Phase::Speaking(d),
            ..
        }) = &self.turn
        else {
            return false;
        };
        let gate = self.gate(d.sent);
        if gate && self.burst.is_some() {
            // The person went on: the bubble in flight (already handed to the store) stands,
            // the rest is dropped, and the burst is collected again.
            let outcome = if d.sent > 0 {
                TurnOutcome::Replied
            } else {
                TurnOutcome::Superseded
            };
            self.end_turn(outcome);
            return true;
        }
        if now < self.deliver_at(d, gate) || (gate && self.lease_fresh(now)) {
            return false;
        }
        self.send_next_bubble(now);
        true
    }

    pub(super) fn send_next_bubble(&mut self, now: Millis) {
        let (min, max, cps) = (
            self.cfg.typing_cadence_min_ms,
            self.cfg.typing_cadence_max_ms,
            self.cfg.typing_cps,
        );
        let Some(turn) = &mut self.turn else {
            return;
        };
        let Phase::Speaking(d) = &mut turn.phase else {
            return;
        };
        let Some(text) = d.bubbles.pop_front() else {
            return;
        };
        let index = d.sent;
        d.sent += 1;
        let of = d.of;
        let next = d
            .bubbles
            .front()
            .map(|b| cadence_ms(b.chars().count(), cps, min, max));
        if let Some(c) = next {
            d.next_at = now.saturating_add(c);
        }
        let (epoch, read_up_to) = (turn.epoch, turn.read_up_to);

        self.sent_in_turn.push(hash_text(&text));
        self.high_water = self.high_water.max(read_up_to);
        self.history.push_agent(&text, true, self.high_water);
        if self.unacked.len() == MAX_UNACKED {
            self.unacked.pop_front();
        }
        self.unacked.push_back((epoch, index, read_up_to));
        self.person.agent_spoke(now);
        // The bubble ends the agent's typing indicator by itself.
        self.typing_since = None;
        self.out.push_back(Output::SendBubble {
            epoch,
            read_up_to,
            text,
            index,
            of,
        });
        if next.is_some() {
            self.show_typing(now);
        } else {
            self.end_turn(TurnOutcome::Replied);
        }
    }

    // --- Ending turns -------------------------------------------------------------------------

    /// Ends the committed turn. A superseded turn's burst is folded back in front of whatever
    /// arrived since, to be collected again.
    pub(super) fn end_turn(&mut self, outcome: TurnOutcome) {
        let Some(turn) = self.turn.take() else {
            return;
        };
        if let Some(g) = self.generation.take_if(|g| g.epoch == turn.epoch) {
            self.out
                .push_back(Output::AbortGeneration { epoch: g.epoch });
        }
        self.hide_typing();
        if outcome == TurnOutcome::Silent {
            self.mark_answered(turn.read_up_to);
        }
        self.out.push_back(Output::TurnEnded {
            epoch: turn.epoch,
            outcome,
        });
        if outcome == TurnOutcome::Superseded {
            let burst = match self.burst.take() {
                Some(later) => turn.burst.absorb(later),
                None => turn.burst,
            };
            self.burst = Some(burst);
        }
        match &mut self.burst {
            Some(b) => b.spec_wanted = true,
            None => self.go_idle(),
        }
    }

    /// A stop word: cancel everything and close the burst silently.
    pub(super) fn stop(&mut self, seq: u64) {
        if let Some(turn) = &self.turn {
            let outcome = match &turn.phase {
                Phase::Speaking(d) if d.sent > 0 => TurnOutcome::Replied,
                _ => TurnOutcome::Superseded,
            };
            self.end_turn(outcome);
        }
        self.drop_speculation();
        self.burst = None;
        self.ask = None;
        self.hide_typing();
        let epoch = self.next_epoch();
        self.out.push_back(Output::Committed {
            epoch,
            read_up_to: seq,
        });
        self.finish_silently(epoch, seq);
    }

    /// Ends an epoch that never ran a generation: deliberately silent.
    pub(super) fn finish_silently(&mut self, epoch: u64, read_up_to: u64) {
        self.mark_answered(read_up_to);
        self.out.push_back(Output::TurnEnded {
            epoch,
            outcome: TurnOutcome::Silent,
        });
        if self.burst.is_none() && self.turn.is_none() {
            self.go_idle();
        }
    }

    pub(super) fn mark_answered(&mut self, read_up_to: u64) {
        self.high_water = self.high_water.max(read_up_to);
        self.answered_up_to = self.answered_up_to.max(read_up_to);
    }

    pub(super) fn go_idle(&mut self) {
        self.sent_in_turn.clear();
        self.history.unpin(self.high_water);
    }
}
