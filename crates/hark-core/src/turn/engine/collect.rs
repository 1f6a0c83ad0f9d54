//! COLLECTING: the burst, the endpoint window and the endpoint model's verdicts.

use super::super::config::EndpointPolicy;
use super::super::endpoint::{
    CompletenessModel, ControlWord, Evidence, completeness, control_word, decide, ends_in_question,
};
use super::super::{Attachment, Output, PersonMessage, TurnOutcome};
use super::{Ask, Burst, Completeness, Phase, Turn, TurnEngine};
use crate::time::Millis;

impl TurnEngine {
    pub(super) fn on_person_message(&mut self, at: Millis, m: PersonMessage, live: bool) {
        if m.seq <= self.last_person_seq {
            return;
        }
        self.last_person_seq = m.seq;
        let typing = self.lease_until.take().is_some_and(|l| l > at);
        if !typing {
            self.activity_starts(at, live);
        }
        self.person.quiet(at);
        self.person.typing_stopped_at = None;

        let control = if self.cfg.control_words && m.attachment.is_none() {
            control_word(&m.text)
        } else {
            None
        };
        let mut class = completeness(&m.text, m.attachment);
        let question = class == Completeness::Complete && ends_in_question(&m.text);
        let index = self.burst.as_ref().map_or(0, |b| b.messages);
        let mut model_logit = (self.cfg.completeness_model
            && self.cfg.endpoint == EndpointPolicy::Adaptive)
            .then(|| CompletenessModel::builtin().logit(&m.text, m.attachment, index));
        let captioned = !m.text.trim().is_empty();
        if self.person.bare_attachment && m.attachment.is_none() && captioned {
            // The caption of the photo just sent: the pair is complete unless the caption
            // itself trails off. The text model sees the caption alone, so the rules decide.
            if class != Completeness::Partial {
                class = Completeness::Complete;
            }
            model_logit = None;
        }
        self.person.bare_attachment = !captioned
            && matches!(
                m.attachment,
                Some(Attachment::Photo | Attachment::Video | Attachment::File)
            );
        self.history
            .push_person(m.seq, m.text, m.attachment, self.high_water);

        if control == Some(ControlWord::Stop) {
            self.stop(m.seq);
            return;
        }
        let thinking = matches!(
            self.turn,
            Some(Turn {
                phase: Phase::Thinking,
                ..
            })
        );
        if thinking && self.cfg.bargein {
            // Barge-in: abort the generation, bump the epoch, fold the message into the burst.
            self.end_turn(TurnOutcome::Superseded);
        }
        self.drop_speculation();
        let look = Look {
            class,
            question,
            model_logit,
        };
        self.add_to_burst(at, m.seq, look, control == Some(ControlWord::Hold));

        if live
            && self.turn.is_none()
            && control.is_none()
            && self.cfg.endpoint == EndpointPolicy::Adaptive
            && let Some(timeout) = self.cfg.endpoint_model_timeout_ms
        {
            self.last_ask += 1;
            let ask = Ask {
                id: self.last_ask,
                deadline: at.saturating_add(timeout),
            };
            self.ask = Some(ask);
            let prompt = self.prompt(true);
            self.out.push_back(Output::AskEndpoint {
                ask: ask.id,
                read_up_to: m.seq,
                prompt,
            });
        }
    }

    pub(super) fn on_verdict(&mut self, now: Millis, ask: u64, done: bool, wait_ms: u64) {
        if self.ask.is_none_or(|a| a.id != ask) {
            return;
        }
        self.ask = None;
        if self.turn.is_none()
            && let Some(b) = &mut self.burst
        {
            b.deadline = if done {
                now
            } else {
                now.saturating_add(wait_ms.min(self.cfg.window_hard_cap_ms))
            };
        }
    }

    pub(super) fn add_to_burst(&mut self, at: Millis, seq: u64, look: Look, hold: bool) {
        let cap = self.cfg.window_hard_cap_ms;
        let mut b = self.burst.take().unwrap_or(Burst {
            last_seq: seq,
            deadline: at,
            cap_deadline: at.saturating_add(cap),
            cap_moved: false,
            class: look.class,
            question: look.question,
            has_content: false,
            last_is_hold: false,
            messages: 0,
            spec_starts: 0,
            spec_wanted: true,
            allow_wait: true,
        });
        let index = b.messages;
        b.messages += 1;
        b.last_seq = seq;
        b.class = look.class;
        b.question = look.question;
        b.has_content |= !hold;
        b.last_is_hold = hold;
        b.allow_wait = true;
        b.spec_wanted = true;
        if hold {
            // The person asked for time: wait as long as liveness allows, from now.
            b.cap_deadline = b.cap_deadline.max(at.saturating_add(cap));
            b.cap_moved = true;
            b.deadline = b.cap_deadline;
        } else {
            let cap_left = b.cap_deadline.since(at);
            b.deadline = at.saturating_add(self.rule_window_ms(&look, index, cap_left));
        }
        self.burst = Some(b);
    }

    pub(super) fn should_commit(&self, now: Millis, b: &Burst) -> bool {
        if now >= b.cap_deadline {
            return true;
        }
        if self.cfg.typing_gate() && self.lease_fresh(now) {
            return false;
        }
        if self.ask.is_some() {
            return false;
        }
        now >= self.window_deadline(b)
    }

    pub(super) fn window_deadline(&self, b: &Burst) -> Millis {
        match self.grace_until() {
            Some(g) if self.cfg.typing_gate() => b.deadline.max(g),
            _ => b.deadline,
        }
    }

    /// The quiet window after a message, by policy. `index` is the message's position in the
    /// burst; `cap_left_ms` the time from it to the burst's hard cap.
    fn rule_window_ms(&self, look: &Look, index: u32, cap_left_ms: u64) -> u64 {
        let c = &self.cfg;
        let w = match c.endpoint {
            EndpointPolicy::Fixed { window_ms } | EndpointPolicy::Typing { window_ms } => window_ms,
            EndpointPolicy::Punct => match look.class {
                Completeness::Complete => c.window_complete_ms,
                Completeness::Neutral => c.window_neutral_ms,
                Completeness::Partial => c.window_partial_ms,
            },
            EndpointPolicy::Adaptive => {
                let evidence = Evidence {
                    class: look.class,
                    question: look.question,
                    index,
                    model_logit: look.model_logit,
                    typing: self.rhythm.typing_starts > 0,
                    cap_left_ms,
                };
                decide(&evidence, &self.rhythm, c).window_ms
            }
        };
        w.min(c.window_hard_cap_ms)
    }
}

/// How a message looks, for the endpoint window.
#[derive(Clone, Copy, Debug)]
pub(super) struct Look {
    class: Completeness,
    question: bool,
    model_logit: Option<f64>,
}
