//! The log window: the recent part of a conversation's log that the machine holds in memory,
//! and the little it must know of the rest.
//!
//! A loaded conversation keeps its newest messages (at most `Limits::log_window_messages`, plus
//! those of a batch not yet committed); everything older is in the store only. The machine needs
//! older messages in three places, and knows in advance which ones:
//! - a result for a participant whose `handed` position lies before the window (it was away):
//!   the messages after that position;
//! - a rollback (a lost or held result) to a position before the window: the same, also for
//!   the answer of a waiting `check` that a lost result wakes;
//! - an idempotent push whose `client_id` is not in the window: the original message, if any.
//!
//! Before a request, [`Conversation::recall_for`] names what the request may need (before a
//! report of a lost result, [`Conversation::recall_for_lost`]); the driver reads it from the
//! store and gives it with [`Conversation::handle_recalled`], and asks again until nothing more
//! is named (a run of the participant's own messages may be longer than one read, and only once
//! it is read does the machine know where it ends); the machine forgets it all once the request
//! or the report is handled. Everything else is answered from [`LogPrefix`], two
//! numbers that say whether someone other than a given participant wrote before the window after
//! a given seq: the push gate and `check` never need the old messages themselves.
//!
//! **Invariant:** only committed messages leave the window. The driver calls
//! [`Conversation::handle_committed`] once a batch's effects are durable, so whatever the store
//! is asked for below the window is there.
//!
//! [`Conversation::recall_for`]: super::Conversation::recall_for
//! [`Conversation::recall_for_lost`]: super::Conversation::recall_for_lost
//! [`Conversation::handle_recalled`]: super::Conversation::handle_recalled
//! [`Conversation::handle_committed`]: super::Conversation::handle_committed

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::types::{Message, ParticipantName};

/// What the machine knows of the log before its window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogPrefix {
    /// The seq of the last message before the window (0: the window starts at the beginning).
    pub seq: u64,
    /// Who sent that message (`None` when `seq` is 0).
    pub last_from: Option<ParticipantName>,
    /// The highest seq up to `seq` sent by someone other than `last_from` (0: none).
    pub last_other_seq: u64,
}

impl LogPrefix {
    /// The prefix made of `messages`, the log's first messages in `seq` order.
    pub fn of(messages: &[Message]) -> LogPrefix {
        let mut prefix = LogPrefix::default();
        for message in messages {
            prefix.extend(message);
        }
        prefix
    }

    /// The prefix one message longer: `message` (the next seq) left the window.
    pub fn extend(&mut self, message: &Message) {
        if self.last_from.as_ref() != Some(&message.from) {
            self.last_other_seq = self.seq;
            self.last_from = Some(message.from.clone());
        }
        self.seq = message.seq;
    }

    /// Whether a message in `(after, seq]` was sent by someone other than `name`.
    pub fn others_after(&self, name: &ParticipantName, after: u64) -> bool {
        if after >= self.seq {
            return false;
        }
        if self.last_from.as_ref() != Some(name) {
            return true;
        }
        self.last_other_seq > after
    }
}

/// Messages to read from the store before a request: `(after, limit)` pairs, each "the messages
/// with `seq > after`, at most `limit`", all before the window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recall {
    /// Runs of messages before the window, in increasing `after`, not overlapping.
    pub runs: Vec<(u64, usize)>,
    /// The message the participant sent with this client id, if the store has one.
    pub client_id: Option<String>,
}

impl Recall {
    /// Whether nothing needs to be read.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.client_id.is_none()
    }
}

/// The log as the machine holds it.
#[derive(Debug)]
pub(super) struct Log {
    /// Messages `prefix.seq + 1 ..= last_seq()`, oldest first.
    window: VecDeque<Arc<Message>>,
    prefix: LogPrefix,
    /// Messages before the window, given for the request in hand.
    recalled: BTreeMap<u64, Arc<Message>>,
    /// Ranges `(after, up_to]` already read for the request in hand: a seq in one of them that
    /// is not in `recalled` is not in the store either, and is not asked for again.
    asked: Vec<(u64, u64)>,
    /// The client id already looked up for the request in hand.
    asked_client_id: Option<String>,
    /// Messages the window keeps once a batch is committed.
    capacity: usize,
}

impl Log {
    pub(super) fn new(capacity: usize) -> Self {
        Log {
            window: VecDeque::new(),
            prefix: LogPrefix::default(),
            recalled: BTreeMap::new(),
            asked: Vec::new(),
            asked_client_id: None,
            capacity,
        }
    }

    /// A log whose window starts after `prefix`.
    pub(super) fn after(prefix: LogPrefix, capacity: usize) -> Self {
        Log {
            prefix,
            ..Log::new(capacity)
        }
    }

    pub(super) fn last_seq(&self) -> u64 {
        self.prefix.seq + self.window.len() as u64
    }

    /// The seq of the last message before the window.
    pub(super) fn base(&self) -> u64 {
        self.prefix.seq
    }

    pub(super) fn prefix(&self) -> &LogPrefix {
        &self.prefix
    }

    /// The message of `seq`, if it is in the window or was recalled.
    pub(super) fn get(&self, seq: u64) -> Option<&Arc<Message>> {
        if seq > self.prefix.seq {
            return self.window.get((seq - self.prefix.seq - 1) as usize);
        }
        self.recalled.get(&seq)
    }

    /// The window's messages with `seq > after`.
    pub(super) fn window_after(&self, after: u64) -> impl Iterator<Item = &Arc<Message>> {
        let skip = after.saturating_sub(self.prefix.seq) as usize;
        self.window.iter().skip(skip)
    }

    pub(super) fn push(&mut self, message: Arc<Message>) {
        debug_assert_eq!(message.seq, self.last_seq() + 1);
        self.window.push_back(message);
    }

    /// Whether a message after `after` was sent by someone other than `name`.
    pub(super) fn others_after(&self, name: &ParticipantName, after: u64) -> bool {
        self.prefix.others_after(name, after) || self.window_after(after).any(|m| &m.from != name)
    }

    /// Drops the oldest messages beyond the capacity and returns them.
    pub(super) fn trim(&mut self) -> Vec<Arc<Message>> {
        let excess = self.window.len().saturating_sub(self.capacity);
        let mut dropped = Vec::with_capacity(excess);
        for _ in 0..excess {
            if let Some(message) = self.window.pop_front() {
                self.prefix.extend(&message);
                dropped.push(message);
            }
        }
        dropped
    }

    /// Keeps recalled messages (those before the window) for the request in hand, and what was
    /// asked for them.
    pub(super) fn recall(&mut self, recall: &Recall, messages: Vec<Message>) {
        self.asked.extend(
            recall
                .runs
                .iter()
                .map(|&(after, limit)| (after, after.saturating_add(limit as u64))),
        );
        if let Some(client_id) = &recall.client_id {
            self.asked_client_id = Some(client_id.clone());
        }
        for message in messages {
            if message.seq <= self.prefix.seq {
                self.recalled.insert(message.seq, Arc::new(message));
            }
        }
    }

    /// The recalled message `name` sent with `client_id`.
    pub(super) fn recalled_client_id(
        &self,
        name: &ParticipantName,
        client_id: &str,
    ) -> Option<&Arc<Message>> {
        self.recalled
            .values()
            .find(|m| &m.from == name && m.client_id.as_deref() == Some(client_id))
    }

    /// Whether `seq` was in a run already read for the request in hand.
    pub(super) fn was_asked(&self, seq: u64) -> bool {
        self.asked
            .iter()
            .any(|&(after, up_to)| after < seq && seq <= up_to)
    }

    /// Whether `client_id` was already looked up for the request in hand.
    pub(super) fn client_id_was_asked(&self, client_id: &str) -> bool {
        self.asked_client_id.as_deref() == Some(client_id)
    }

    pub(super) fn forget_recalled(&mut self) {
        self.recalled.clear();
        self.asked.clear();
        self.asked_client_id = None;
    }
}
