//! The common trace type every reader produces, and the turns the simulator replays.

use hark_core::turn::Attachment;

/// A chat log: conversations in a stable order (sorted by id), each with its events in time order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    /// The conversations with two or more senders.
    pub conversations: Vec<Conversation>,
    /// Conversations the reader left out because only one person wrote in them (nobody answered).
    pub skipped_one_sender: usize,
}

/// One conversation: its participants and their messages and typing, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conversation {
    /// The source's id (or name) of the conversation.
    pub id: String,
    /// Participants in order of first appearance; [`Event::sender`] indexes this.
    pub senders: Vec<String>,
    /// Sorted by `ts_ms`, ties kept in the source's order.
    pub events: Vec<Event>,
}

/// Something a participant did, at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Who: an index into [`Conversation::senders`].
    pub sender: usize,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// What.
    pub kind: EventKind,
}

/// What a participant did.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// Sent a message.
    Message {
        /// Its text (empty for a bare attachment).
        text: String,
        /// What is attached, if anything.
        attachment: Option<Attachment>,
    },
    /// The sender started (`true`) or stopped (`false`) typing.
    Typing(bool),
}

/// A turn: a maximal run of one sender's messages (typing does not break a run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Turn {
    /// Whose turn.
    pub sender: usize,
    /// Index into [`Conversation::events`] of the turn's first message.
    pub first: usize,
    /// Index into [`Conversation::events`] of the turn's last message.
    pub last: usize,
}

/// Accumulates one conversation's events from a reader, then sorts them.
#[derive(Debug, Default)]
pub struct ConversationBuilder {
    id: String,
    senders: Vec<String>,
    events: Vec<Event>,
}

impl ConversationBuilder {
    /// An empty conversation called `id`.
    pub fn new(id: impl Into<String>) -> Self {
        ConversationBuilder {
            id: id.into(),
            ..ConversationBuilder::default()
        }
    }

    /// Adds a message.
    pub fn message(
        &mut self,
        sender: &str,
        ts_ms: u64,
        text: impl Into<String>,
        attachment: Option<Attachment>,
    ) {
        let sender = self.sender(sender);
        self.events.push(Event {
            sender,
            ts_ms,
            kind: EventKind::Message {
                text: text.into(),
                attachment,
            },
        });
    }

    /// Adds a typing event: started (`on`) or stopped.
    pub fn typing(&mut self, sender: &str, ts_ms: u64, on: bool) {
        let sender = self.sender(sender);
        self.events.push(Event {
            sender,
            ts_ms,
            kind: EventKind::Typing(on),
        });
    }

    fn sender(&mut self, name: &str) -> usize {
        match self.senders.iter().position(|s| s == name) {
            Some(i) => i,
            None => {
                self.senders.push(name.to_owned());
                self.senders.len() - 1
            }
        }
    }

    /// The conversation with its events in time order (a stable sort: ties keep the source's
    /// order), and the sender indices renumbered in order of first appearance in time.
    pub fn build(mut self) -> Conversation {
        self.events.sort_by_key(|e| e.ts_ms);
        let mut order: Vec<usize> = Vec::new();
        for e in &self.events {
            if !order.contains(&e.sender) {
                order.push(e.sender);
            }
        }
        let senders = order.iter().map(|&i| self.senders[i].clone()).collect();
        for e in &mut self.events {
            e.sender = order.iter().position(|&i| i == e.sender).unwrap_or(0);
        }
        Conversation {
            id: self.id,
            senders,
            events: self.events,
        }
    }
}

impl Conversation {
    /// How many distinct participants wrote at least one message.
    pub fn message_senders(&self) -> usize {
        let mut seen: Vec<usize> = Vec::new();
        for e in &self.events {
            if matches!(e.kind, EventKind::Message { .. }) && !seen.contains(&e.sender) {
                seen.push(e.sender);
            }
        }
        seen.len()
    }

    /// Its messages (typing events not counted).
    pub fn messages(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Message { .. }))
            .count()
    }

    /// Whether any participant's typing is in the trace.
    pub fn has_typing(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Typing(_)))
    }

    /// The turns, in order.
    pub fn turns(&self) -> Vec<Turn> {
        let mut turns: Vec<Turn> = Vec::new();
        for (i, e) in self.events.iter().enumerate() {
            if !matches!(e.kind, EventKind::Message { .. }) {
                continue;
            }
            match turns.last_mut() {
                Some(t) if t.sender == e.sender => t.last = i,
                _ => turns.push(Turn {
                    sender: e.sender,
                    first: i,
                    last: i,
                }),
            }
        }
        turns
    }
}

impl Trace {
    /// Builds a trace from conversations: drops those with fewer than two message senders
    /// (counted in `skipped_one_sender`) and sorts the rest by id.
    pub fn from_conversations(conversations: Vec<Conversation>) -> Trace {
        let mut skipped = 0;
        let mut kept: Vec<Conversation> = conversations
            .into_iter()
            .filter(|c| {
                let keep = c.message_senders() >= 2;
                skipped += usize::from(!keep);
                keep
            })
            .collect();
        kept.sort_by(|a, b| a.id.cmp(&b.id));
        Trace {
            conversations: kept,
            skipped_one_sender: skipped,
        }
    }

    /// Messages over all conversations (typing events not counted).
    pub fn messages(&self) -> usize {
        self.conversations.iter().map(Conversation::messages).sum()
    }

    /// Multiplies every time by `factor`, from each conversation's first event: gaps, typing and
    /// reply latencies all scale, the order stays. A proxy for chats with other rhythms.
    pub fn scale_time(&mut self, factor: f64) {
        for c in &mut self.conversations {
            let Some(origin) = c.events.first().map(|e| e.ts_ms) else {
                continue;
            };
            for e in &mut c.events {
                let offset = (e.ts_ms - origin) as f64 * factor;
                e.ts_ms = origin + offset.round() as u64;
            }
        }
    }

    /// Turns over all conversations.
    pub fn turns(&self) -> usize {
        self.conversations.iter().map(|c| c.turns().len()).sum()
    }

    /// Distinct sender names over all conversations.
    pub fn senders(&self) -> usize {
        let mut all: Vec<&str> = self
            .conversations
            .iter()
            .flat_map(|c| c.senders.iter().map(String::as_str))
            .collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    }
}
