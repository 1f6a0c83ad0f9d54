//! Generations: speculation, the commit, and what a finished generation leads to.

use std::collections::VecDeque;

use super::super::bubbles::split_bubbles;
use super::super::{GenerationResult, Output, TurnOutcome};
use super::{Burst, Delivery, Generation, Phase, Ready, Turn, TurnEngine, hash_text};
use crate::time::Millis;

impl TurnEngine {
    pub(super) fn on_finished(
        &mut self,
        now: Millis,
        epoch: u64,
        result: Result<GenerationResult, ()>,
    ) {
        if self.generation.as_ref().is_none_or(|g| g.epoch != epoch) {
            // A stale epoch: aborted, superseded or never ours. Dropped, never delivered.
            return;
        }
        let Some(g) = self.generation.take() else {
            return;
        };
        let ours = self.turn.as_ref().is_some_and(|t| t.epoch == epoch);
        match (ours, result) {
            (true, Ok(result)) => self.apply_result(now, result, g.allow_wait),
            (true, Err(())) => self.end_turn(TurnOutcome::Failed),
            (false, Ok(result)) => {
                self.spec_ready = Some(Ready {
                    epoch,
                    read_up_to: g.read_up_to,
                    result,
                    allow_wait: g.allow_wait,
                    started: g.started,
                });
            }
            // A failed speculation is simply gone; the commit starts a fresh generation.
            (false, Err(())) => {}
        }
    }

    pub(super) fn maybe_speculate(&mut self) {
        let Some(b) = &mut self.burst else {
            return;
        };
        if !std::mem::take(&mut b.spec_wanted) {
            return;
        }
        if !self.cfg.speculate
            || self.generation.is_some()
            || !b.has_content
            || b.last_is_hold
            || b.spec_starts > self.cfg.max_spec_restarts
            || self
                .spec_ready
                .as_ref()
                .is_some_and(|r| r.read_up_to == b.last_seq)
        {
            return;
        }
        b.spec_starts += 1;
        let (read_up_to, allow_wait) = (b.last_seq, b.allow_wait);
        self.start_generation(read_up_to, allow_wait, true);
    }

    /// Aborts a speculative generation and forgets a speculative result: they read less than the
    /// burst now holds.
    pub(super) fn drop_speculation(&mut self) {
        self.spec_ready = None;
        let turn_epoch = self.turn.as_ref().map(|t| t.epoch);
        if let Some(g) = self.generation.take_if(|g| Some(g.epoch) != turn_epoch) {
            self.out
                .push_back(Output::AbortGeneration { epoch: g.epoch });
        }
    }

    pub(super) fn start_generation(
        &mut self,
        read_up_to: u64,
        allow_wait: bool,
        speculative: bool,
    ) -> u64 {
        debug_assert!(self.generation.is_none(), "single flight");
        let epoch = self.next_epoch();
        let prompt = self.prompt(allow_wait);
        self.generation = Some(Generation {
            epoch,
            read_up_to,
            speculative,
            allow_wait,
            started: self.now,
        });
        self.out.push_back(Output::StartGeneration {
            epoch,
            read_up_to,
            prompt,
            speculative,
        });
        epoch
    }

    /// The window elapsed (or the hard cap hit): COLLECTING → THINKING, or straight to SPEAKING
    /// when a speculative draft of exactly this burst is ready.
    pub(super) fn commit(&mut self, now: Millis) {
        let Some(burst) = self.burst.take() else {
            return;
        };
        self.ask = None;
        let read_up_to = burst.last_seq;
        if !burst.has_content {
            // Nothing but "wait": the person never said what to answer.
            self.drop_speculation();
            let epoch = self.next_epoch();
            self.out.push_back(Output::Committed { epoch, read_up_to });
            self.finish_silently(epoch, read_up_to);
            return;
        }
        if let Some(ready) = self.spec_ready.take_if(|r| r.read_up_to == read_up_to) {
            self.begin_turn(now, ready.epoch, burst, ready.started);
            self.apply_result(now, ready.result, ready.allow_wait);
            return;
        }
        if let Some(g) = &mut self.generation
            && g.speculative
            && g.read_up_to == read_up_to
        {
            g.speculative = false;
            let (epoch, started) = (g.epoch, g.started);
            self.begin_turn(now, epoch, burst, started);
            return;
        }
        self.drop_speculation();
        // Committed comes first: the moment of the decision precedes the work it starts.
        let epoch = self.epoch + 1;
        self.out.push_back(Output::Committed { epoch, read_up_to });
        let started = self.start_generation(read_up_to, burst.allow_wait, false);
        debug_assert_eq!(started, epoch);
        self.turn = Some(Turn {
            epoch,
            read_up_to,
            burst,
            phase: Phase::Thinking,
            composing_since: None,
        });
        self.show_typing(now);
    }

    /// Commits to the speculative draft `epoch`, which started composing at `drafted_from`.
    pub(super) fn begin_turn(
        &mut self,
        now: Millis,
        epoch: u64,
        burst: Burst,
        drafted_from: Millis,
    ) {
        let read_up_to = burst.last_seq;
        self.out.push_back(Output::Committed { epoch, read_up_to });
        self.turn = Some(Turn {
            epoch,
            read_up_to,
            burst,
            phase: Phase::Thinking,
            composing_since: Some(drafted_from),
        });
        self.show_typing(now);
    }

    // --- Thinking → Speaking ------------------------------------------------------------------

    pub(super) fn apply_result(&mut self, now: Millis, result: GenerationResult, allow_wait: bool) {
        match result {
            GenerationResult::Reply(text) => {
                // Duplicate suppression: nothing this turn already said, and no bubble twice.
                let mut said = Vec::new();
                let bubbles: VecDeque<String> = split_bubbles(&text, self.cfg.max_bubbles)
                    .into_iter()
                    .filter(|b| {
                        let h = hash_text(b);
                        let new = !self.sent_in_turn.contains(&h) && !said.contains(&h);
                        said.push(h);
                        new
                    })
                    .collect();
                let Some(first) = bubbles.front() else {
                    // Empty, or identical to what this turn already said.
                    self.end_turn(TurnOutcome::Silent);
                    return;
                };
                let since = self.typing_since.unwrap_or(now);
                let cadence = self.cadence(first);
                let mut next_at = since.saturating_add(cadence);
                if let Some(from) = self.turn.as_ref().and_then(|t| t.composing_since) {
                    // A speculative draft composed the reply while the person paused: its time
                    // counts toward the first bubble's typing, as a person's would who started
                    // typing on reading the message. The indicator still shows for at least the
                    // shortest cadence.
                    let shortest = since.saturating_add(self.cfg.typing_cadence_min_ms);
                    next_at = next_at.min(from.saturating_add(cadence).max(shortest));
                }
                let of = bubbles.len() as u32;
                if let Some(turn) = &mut self.turn {
                    turn.phase = Phase::Speaking(Delivery {
                        bubbles,
                        sent: 0,
                        of,
                        next_at,
                    });
                }
            }
            GenerationResult::WaitForMore { ms } if allow_wait => self.wait_for_more(now, ms),
            // A second wait for the same read counts as silence: the model had its wait.
            GenerationResult::WaitForMore { .. } | GenerationResult::StaySilent => {
                self.end_turn(TurnOutcome::Silent);
            }
        }
    }

    /// The model asked to hold: back to COLLECTING until `ms` passes quietly (then generate once
    /// more, without the tool) or the person goes on.
    pub(super) fn wait_for_more(&mut self, now: Millis, ms: u64) {
        let news = self.burst.is_some();
        self.end_turn(TurnOutcome::Superseded);
        let cap = self.cfg.window_hard_cap_ms;
        let until = now.saturating_add(ms.min(self.cfg.max_wait_for_more_ms).min(cap));
        if let Some(b) = &mut self.burst {
            b.cap_deadline = b.cap_deadline.max(now.saturating_add(cap));
            b.cap_moved = true;
            b.deadline = b.deadline.max(until);
            if !news {
                b.deadline = until;
                b.allow_wait = false;
            }
        }
    }
}
