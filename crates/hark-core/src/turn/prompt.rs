//! The context a generation reads: a bounded history, rendered as role-merged turns.

use std::collections::VecDeque;

use super::Attachment;

/// Who said a turn of the prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The person.
    User,
    /// The agent this engine speaks for.
    Assistant,
}

/// One turn of the prompt: consecutive messages of one side, joined by newlines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptTurn {
    /// Whose turn.
    pub role: Role,
    /// Its messages, joined by newlines.
    pub text: String,
}

/// What a generation reads. The runtime adds the system prompt and the tools.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prompt {
    /// Oldest first; roles alternate. Empty when `build_prompt` is off.
    pub turns: Vec<PromptTurn>,
    /// Offer the `wait_for_more` tool. False when the model already waited for this burst and
    /// nothing new came; a `wait_for_more` then counts as `stay_silent`.
    pub allow_wait: bool,
}

/// The messages the engine keeps for prompts.
#[derive(Clone, Debug, Default)]
pub(crate) struct History {
    entries: VecDeque<Entry>,
    enabled: bool,
    max: usize,
}

#[derive(Clone, Debug)]
struct Entry {
    role: Role,
    /// Person messages: their seq. Agent messages: 0.
    seq: u64,
    /// Agent bubbles of the turn in progress are pinned until the engine goes idle.
    pinned: bool,
    text: String,
    attachment: Option<Attachment>,
}

impl History {
    pub(crate) fn new(enabled: bool, max: u32) -> Self {
        History {
            entries: VecDeque::new(),
            enabled,
            max: max as usize,
        }
    }

    pub(crate) fn push_person(
        &mut self,
        seq: u64,
        text: String,
        attachment: Option<Attachment>,
        answered: u64,
    ) {
        if !self.enabled {
            return;
        }
        self.entries.push_back(Entry {
            role: Role::User,
            seq,
            pinned: false,
            text,
            attachment,
        });
        self.evict(answered);
    }

    /// An agent message; `pinned` keeps it while its turn is in progress.
    pub(crate) fn push_agent(&mut self, text: &str, pinned: bool, answered: u64) {
        if !self.enabled {
            return;
        }
        self.entries.push_back(Entry {
            role: Role::Assistant,
            seq: 0,
            pinned,
            text: text.to_owned(),
            attachment: None,
        });
        self.evict(answered);
    }

    /// Unpins the agent's bubbles: the turn is over.
    pub(crate) fn unpin(&mut self, answered: u64) {
        if !self.enabled {
            return;
        }
        for e in &mut self.entries {
            e.pinned = false;
        }
        self.evict(answered);
    }

    pub(crate) fn prompt(&self, allow_wait: bool) -> Prompt {
        let mut turns: Vec<PromptTurn> = Vec::new();
        for e in &self.entries {
            let piece = match (e.attachment, e.text.is_empty()) {
                (Some(a), true) => a.label().to_owned(),
                (Some(a), false) => format!("{} {}", a.label(), e.text),
                (None, _) => e.text.clone(),
            };
            match turns.last_mut() {
                Some(t) if t.role == e.role => {
                    t.text.push('\n');
                    t.text.push_str(&piece);
                }
                _ => turns.push(PromptTurn {
                    role: e.role,
                    text: piece,
                }),
            }
        }
        Prompt { turns, allow_wait }
    }

    /// Drops the oldest entries beyond the bound, but never an unanswered person message nor a
    /// pinned bubble: everything newer than the high-water mark stays in the context.
    fn evict(&mut self, answered: u64) {
        while self.entries.len() > self.max {
            let Some(front) = self.entries.front() else {
                return;
            };
            let keep = match front.role {
                Role::User => front.seq > answered,
                Role::Assistant => front.pinned,
            };
            if keep {
                return;
            }
            self.entries.pop_front();
        }
    }
}
