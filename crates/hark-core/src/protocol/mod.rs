//! The conversation protocol of SPEC.md section 2, as a sans-IO state machine.
//!
//! One [`Conversation`] holds one conversation's log, its participants, their cursors, drafts and
//! typing leases, and the `check` calls that are waiting. The driver feeds it requests and time and
//! drains [`Output`]s: durable [`Effect`]s to commit, replies to route and events to fan out.
//!
//! **Invariant:** a batch's `Persist` outputs are committed before any of its replies or events is
//! released; the state machine itself never waits for anything.
//!
//! # Hand-over: at least once to the participant, exactly once in effect
//!
//! Each participant has two positions. `handed` is the highest seq handed over in a result; the
//! next result continues after it, so a client that received every result sees every message
//! once. `cursor` is the highest seq the participant has *provably received*: results carrying
//! messages are tentative ([`Confirm`]) until the driver reports that they reached the client
//! ([`Conversation::handle_delivered`]) or the client says so itself ([`Confirm::Client`],
//! [`Action::Read`]). Only `cursor` is persisted, shown to others as the read receipt and used by
//! the push gate. A result that was lost ([`Conversation::handle_lost`]) rolls `handed` back to
//! where it was before that result, so its messages (and the receipts it told) come again in the
//! next one; a push meanwhile is held, and the held push's result hands over everything not yet
//! confirmed.
//!
//! **Invariant:** every seq in `(cursor, handed]` is the participant's own message or was carried
//! by a tentative hand-over still in `pending`; so when nothing is pending, `cursor` may move up to
//! `handed`.

mod draft;
mod types;
mod window;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

pub use draft::{Draft, cut_to_chars, notice_excerpt};
pub use types::*;
pub use window::{LogPrefix, Recall};

use window::Log;

use crate::time::Millis;

/// The protocol's limits (SPEC.md sections 2 and 6.1). Counts are Unicode scalar values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest text one `append` keeps; the rest is cut and reported.
    pub max_append_chars: usize,
    /// Longest a draft may grow; an `append` past it is cut, a `send` past it refused.
    pub max_draft_chars: usize,
    /// Most messages handed over in one result; `more_incoming` says more are waiting.
    pub max_incoming: usize,
    /// How long `check` waits when the caller does not say.
    pub default_check_ms: u64,
    /// The longest `check` ever waits; larger requests are clamped.
    pub max_check_ms: u64,
    /// A typing lease not refreshed for this long has expired.
    pub typing_timeout_ms: u64,
    /// Longest accepted `client_id`.
    pub max_client_id_chars: usize,
    /// Messages of the log kept in memory (the newest; more until a batch is committed). Older
    /// ones are read from the store when a request needs them (see the `window` module).
    pub log_window_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_append_chars: 2_000,
            max_draft_chars: 20_000,
            max_incoming: 100,
            default_check_ms: 25_000,
            max_check_ms: 60_000,
            typing_timeout_ms: 8_000,
            max_client_id_chars: 128,
            log_window_messages: 1_000,
        }
    }
}

/// A participant as restored from the store.
#[derive(Clone, Debug)]
pub struct ParticipantRecord {
    /// The participant's name.
    pub name: ParticipantName,
    /// Person or model.
    pub kind: ParticipantKind,
    /// The confirmed cursor (the read receipt); clamped to the log on restore.
    pub cursor: u64,
    /// The draft, one entry per append.
    pub draft_segments: Vec<String>,
}

/// Tentative hand-overs remembered per participant. A driver reports each one quickly; if one
/// never does, the oldest is taken as lost (and handed over again) rather than kept for ever.
const MAX_PENDING: usize = 32;

/// One conversation's protocol state.
#[derive(Debug)]
pub struct Conversation {
    id: String,
    limits: Limits,
    participants: Vec<Participant>,
    /// The log's recent window, and what the machine knows of the rest.
    log: Log,
    /// `(author index, client_id)` → seq for the window's messages, for idempotent push.
    client_ids: HashMap<(usize, String), u64>,
    waiters: Vec<Waiter>,
    outputs: VecDeque<Output>,
    last_now: Millis,
    /// Set on shutdown: `check` answers at once instead of waiting.
    closing: bool,
}

#[derive(Debug)]
struct Participant {
    name: ParticipantName,
    kind: ParticipantKind,
    /// The highest seq provably received: persisted, the read receipt, the push gate's line.
    cursor: u64,
    /// The highest seq handed over in a result, confirmed or not: where the next result starts.
    handed: u64,
    /// Ranges `(after, up_to]` of results that reached the client but were rolled back because
    /// an earlier result was lost: their messages come again, as repeats ([`Envelope::repeated`]).
    received_beyond: Vec<(u64, u64)>,
    /// Tentative hand-overs, oldest first (their `up_to` increase).
    pending: VecDeque<Handover>,
    draft: Draft,
    typing_until: Option<Millis>,
    /// Whether the last `Composing` event said this participant was composing.
    composing_reported: bool,
    /// What this participant was last told of every participant's read position (by index).
    receipts_told: Vec<u64>,
}

/// A result that handed something over and is not confirmed yet.
#[derive(Debug)]
struct Handover {
    request: RequestId,
    /// `handed` before this result: where a rollback returns to.
    before: u64,
    /// `handed` after it.
    up_to: u64,
    /// What the participant had been told of receipts before this result.
    receipts_before: Vec<u64>,
    /// Confirmed by the client ([`Confirm::Client`]) rather than the driver.
    by_client: bool,
    /// Known to have reached the client; it counts once every earlier one does too.
    delivered: bool,
}

#[derive(Debug)]
struct Waiter {
    request: RequestId,
    participant: usize,
    deadline: Millis,
    confirm: Confirm,
}

impl Conversation {
    /// A new, empty conversation.
    pub fn new(id: impl Into<String>, limits: Limits) -> Self {
        Conversation {
            id: id.into(),
            log: Log::new(limits.log_window_messages),
            limits,
            participants: Vec::new(),
            client_ids: HashMap::new(),
            waiters: Vec::new(),
            outputs: VecDeque::new(),
            last_now: Millis::ZERO,
            closing: false,
        }
    }

    /// Rebuilds a conversation from what the store holds. `messages` must be the whole log in
    /// `seq` order, starting at 1; only the window is kept.
    pub fn restore(
        id: impl Into<String>,
        limits: Limits,
        participants: Vec<ParticipantRecord>,
        messages: Vec<Message>,
    ) -> Self {
        Conversation::restore_window(id, limits, participants, LogPrefix::default(), messages)
    }

    /// Rebuilds a conversation from the end of its log: `messages` must follow `prefix` in `seq`
    /// order without a gap (the store reads only the newest ones; see `LogPrefix::of`).
    pub fn restore_window(
        id: impl Into<String>,
        limits: Limits,
        participants: Vec<ParticipantRecord>,
        prefix: LogPrefix,
        messages: Vec<Message>,
    ) -> Self {
        let mut conversation = Conversation::new(id, limits);
        conversation.log = Log::after(prefix, conversation.limits.log_window_messages);
        for record in participants {
            let index = conversation.add_participant(record.name, record.kind);
            let participant = &mut conversation.participants[index];
            participant.cursor = record.cursor;
            participant.handed = record.cursor;
            for segment in record.draft_segments {
                participant.draft.push(segment);
            }
            participant.composing_reported = !participant.draft.is_empty();
        }
        for message in messages {
            debug_assert_eq!(message.seq, conversation.log.last_seq() + 1);
            if let (Some(client_id), Some(author)) =
                (&message.client_id, conversation.index_of(&message.from))
            {
                conversation
                    .client_ids
                    .insert((author, client_id.clone()), message.seq);
            }
            conversation.log.push(Arc::new(message));
        }
        // Everything restored is in the store: the window may shrink to its size at once.
        conversation.handle_committed();
        // A cursor past the end of the log (a store edited by hand, a lost tail) would index
        // beyond it: nobody can have read what does not exist.
        let last = conversation.last_seq();
        for participant in &mut conversation.participants {
            participant.cursor = participant.cursor.min(last);
            participant.handed = participant.cursor;
        }
        conversation
    }

    /// The conversation's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The limits this conversation enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The `seq` of the newest message, 0 when there is none.
    pub fn last_seq(&self) -> u64 {
        self.log.last_seq()
    }

    /// The seq of the newest message no longer held in memory (0 when the whole log is).
    pub fn window_base(&self) -> u64 {
        self.log.base()
    }

    /// Messages held in memory (the window) with `seq > after`, oldest first, at most `limit`.
    pub fn messages_after(&self, after: u64, limit: usize) -> Vec<Arc<Message>> {
        self.log.window_after(after).take(limit).cloned().collect()
    }

    /// What `who`'s next request (`action`) may need from before the window: the driver reads
    /// it from the store, gives it with [`Conversation::handle_recalled`] and asks again, until
    /// nothing more is named; then it calls [`Conversation::handle_request`]. Empty for a
    /// participant that kept up.
    ///
    /// A result starts at the participant's `handed` position, or, after a rollback inside the
    /// request (a held push, a client's report of a lost result, too many unconfirmed results),
    /// at one of its unconfirmed results' starting points; from each such start it needs the
    /// messages up to the `max_incoming + 1`-th from someone else (times more for each of the
    /// participant's waiting checks, which such a rollback wakes too). How many of the
    /// participant's own messages lie in between is known only once they are read, so each
    /// round names the next run of at most that many messages after what was read already; a
    /// participant's own run of any length costs more rounds, never a result with nothing in it.
    pub fn recall_for(&self, who: &ParticipantName, action: &Action) -> Recall {
        let mut recall = Recall::default();
        let Some(me) = self.index_of(who) else {
            return recall;
        };
        let participant = &self.participants[me];
        let base = self.log.base();
        let starts = participant
            .pending
            .iter()
            .map(|h| h.before.max(participant.cursor))
            .chain([participant.handed]);
        // This request's result, and one for each of the participant's waiting checks that a
        // rollback inside the request wakes.
        let results = 1 + self.waiting_checks_of(me);
        recall.runs = self.unread_runs(who, starts, results);
        let client_id = match action {
            Action::Push { client_id, .. } | Action::Send { client_id, .. } => client_id.as_ref(),
            _ => None,
        };
        if let Some(client_id) = client_id
            && base > 0
            && !self.client_ids.contains_key(&(me, client_id.clone()))
            && !self.log.client_id_was_asked(client_id)
        {
            recall.client_id = Some(client_id.clone());
        }
        recall
    }

    /// What `results` results of `who` in a row, the first starting after any of `starts`, still
    /// need from before the window: the next unread run after each start, overlapping or
    /// adjacent runs made one.
    fn unread_runs(
        &self,
        who: &ParticipantName,
        starts: impl Iterator<Item = u64>,
        results: usize,
    ) -> Vec<(u64, usize)> {
        let wanted = self
            .limits
            .max_incoming
            .saturating_mul(results)
            .saturating_add(1);
        let base = self.log.base();
        let mut starts: Vec<u64> = starts.filter(|&start| start < base).collect();
        starts.sort_unstable();
        starts.dedup();
        let mut runs: Vec<(u64, usize)> = Vec::new();
        for (start, limit) in starts
            .into_iter()
            .filter_map(|s| self.unread_run(who, s, wanted))
        {
            match runs.last_mut() {
                // Overlapping or adjacent runs become one (starts only grow: a later start walks
                // over what an earlier one walked over).
                Some((after, run)) if *after + *run as u64 >= start => {
                    let end = (start + limit as u64).max(*after + *run as u64);
                    *run = (end - *after) as usize;
                }
                _ => runs.push((start, limit)),
            }
        }
        runs
    }

    /// How many `check` calls of participant `me` wait.
    fn waiting_checks_of(&self, me: usize) -> usize {
        self.waiters.iter().filter(|w| w.participant == me).count()
    }

    /// What the driver reads before it reports `request` lost ([`Conversation::handle_lost`]),
    /// in rounds as for [`Conversation::recall_for`]: the rollback may wake a waiting `check` of
    /// the same participant (each of them, if several wait: one result after another), whose
    /// answer then starts where the lost result did, perhaps before the window. Empty when no
    /// `check` of that participant waits (its next request recalls).
    pub fn recall_for_lost(&self, request: RequestId) -> Recall {
        let mut recall = Recall::default();
        let Some((me, index)) = self.find_pending(request) else {
            return recall;
        };
        let results = self.waiting_checks_of(me);
        if results == 0 {
            return recall;
        }
        let participant = &self.participants[me];
        let start = participant.pending[index].before.max(participant.cursor);
        recall.runs = self.unread_runs(&participant.name, std::iter::once(start), results);
        recall
    }

    /// The next run to read after `start` for results of `who`: `(after, limit)`, or `None` once
    /// what is in memory reaches the window or holds `wanted` messages of others.
    fn unread_run(&self, who: &ParticipantName, start: u64, wanted: usize) -> Option<(u64, usize)> {
        let base = self.log.base();
        let mut others = 0;
        let mut seq = start;
        while seq < base && self.log.prefix().others_after(who, seq) {
            match self.log.get(seq + 1) {
                Some(message) => {
                    if &message.from != who {
                        others += 1;
                        if others == wanted {
                            return None;
                        }
                    }
                }
                // Read already and not there: the store lost it; the result stops here.
                None if self.log.was_asked(seq + 1) => return None,
                None => {
                    let limit = ((wanted - others) as u64).min(base - seq);
                    return Some((seq, limit as usize));
                }
            }
            seq += 1;
        }
        None
    }

    /// Messages from before the window that the driver read for `recall` (the runs it named,
    /// and the message of the client id if the store had one). They are kept until the request
    /// has been handled.
    pub fn handle_recalled(&mut self, recall: &Recall, messages: Vec<Message>) {
        self.log.recall(recall, messages);
    }

    /// The driver could not read what [`Conversation::recall_for`] or
    /// [`Conversation::recall_for_lost`] named (the store failed): what was recalled so far is
    /// forgotten. The request is not handed in (it fails); a lost report still is, and a check it
    /// wakes before the window then says more is waiting.
    pub fn handle_recall_failed(&mut self) {
        self.log.forget_recalled();
    }

    /// The effects output so far are durable: messages beyond the window's size may leave it.
    pub fn handle_committed(&mut self) {
        for message in self.log.trim() {
            if let (Some(client_id), Some(author)) =
                (&message.client_id, self.index_of(&message.from))
            {
                let key = (author, client_id.clone());
                if self.client_ids.get(&key) == Some(&message.seq) {
                    self.client_ids.remove(&key);
                }
            }
        }
    }

    /// Adds a participant (the caller has checked the name is free) and returns its index.
    pub fn add_participant(&mut self, name: ParticipantName, kind: ParticipantKind) -> usize {
        // Every list of receipts told, also the snapshots kept for a rollback, has one entry per
        // participant: the newcomer's receipt is news to everyone.
        for participant in &mut self.participants {
            participant.receipts_told.push(0);
            for handover in &mut participant.pending {
                handover.receipts_before.push(0);
            }
        }
        let count = self.participants.len() + 1;
        self.participants.push(Participant {
            name,
            kind,
            cursor: 0,
            handed: 0,
            received_beyond: Vec::new(),
            pending: VecDeque::new(),
            draft: Draft::default(),
            typing_until: None,
            composing_reported: false,
            receipts_told: vec![0; count],
        });
        count - 1
    }

    /// Whether `name` is a participant of this conversation.
    pub fn has_participant(&self, name: &ParticipantName) -> bool {
        self.index_of(name).is_some()
    }

    /// Participants with their kind, in the order they joined.
    pub fn participants(&self) -> impl Iterator<Item = (&ParticipantName, ParticipantKind)> {
        self.participants.iter().map(|p| (&p.name, p.kind))
    }

    /// Every participant's read position.
    pub fn receipts(&self) -> Vec<Receipt> {
        self.participants
            .iter()
            .map(|p| Receipt {
                participant: p.name.clone(),
                read_up_to: p.cursor,
            })
            .collect()
    }

    /// Who is composing at `now`: a non-empty draft or a fresh typing lease.
    pub fn composing(&self, now: Millis) -> Vec<ParticipantName> {
        let now = now.max(self.last_now);
        self.participants
            .iter()
            .filter(|p| p.is_composing(now))
            .map(|p| p.name.clone())
            .collect()
    }

    /// Who holds a fresh typing lease at `now` (a subset of [`Conversation::composing`]).
    pub fn typing(&self, now: Millis) -> Vec<ParticipantName> {
        let now = now.max(self.last_now);
        self.participants
            .iter()
            .filter(|p| p.typing_until.is_some_and(|until| until > now))
            .map(|p| p.name.clone())
            .collect()
    }

    /// Applies one participant's action. Replies come out of [`Conversation::poll_output`]; a
    /// `check` with nothing to hand over replies later, from a message or a timeout. `confirm`
    /// says how the client confirms the results it receives; with [`Confirm::Client`] the report
    /// it carries is applied first, so a push is gated on what the client really received.
    pub fn handle_request(
        &mut self,
        now: Millis,
        request: RequestId,
        who: &ParticipantName,
        action: Action,
        confirm: Confirm,
    ) {
        self.request(now, request, who, action, confirm);
        self.log.forget_recalled();
    }

    fn request(
        &mut self,
        now: Millis,
        request: RequestId,
        who: &ParticipantName,
        action: Action,
        confirm: Confirm,
    ) {
        let now = self.advance(now);
        let Some(me) = self.index_of(who) else {
            self.reply(request, Err(ActionError::UnknownParticipant), false);
            return;
        };
        if let Confirm::Client { received } = confirm {
            self.client_received(me, received);
        }
        let kind = action.kind();
        let result = match action {
            Action::Append { text } => self.append(me, text),
            Action::Undo => self.undo(me),
            Action::Reset => Ok(self.reset(me)),
            Action::Preview => Ok(ActionResult::Preview {
                text: self.participants[me].draft.text(),
            }),
            Action::Push { force, client_id } => self.push(now, me, force, client_id),
            Action::Send {
                text,
                client_id,
                attachment,
            } => self.send(now, me, text, client_id, attachment),
            Action::Typing { typing } => {
                self.participants[me].typing_until =
                    typing.then(|| now.saturating_add(self.limits.typing_timeout_ms));
                Ok(ActionResult::Done)
            }
            Action::Read { up_to } => {
                self.read(me, up_to);
                Ok(ActionResult::Done)
            }
            Action::Check { timeout_ms } => {
                if self.closing || self.has_unhanded(me) {
                    Ok(ActionResult::Check { timed_out: false })
                } else {
                    let wait_ms = timeout_ms
                        .unwrap_or(self.limits.default_check_ms)
                        .min(self.limits.max_check_ms);
                    self.waiters.push(Waiter {
                        request,
                        participant: me,
                        deadline: now.saturating_add(wait_ms),
                        confirm,
                    });
                    self.report_composing(now);
                    return;
                }
            }
        };
        match result {
            Ok(result) => {
                if matches!(result, ActionResult::Held { .. }) {
                    // The push was held for messages the participant has not provably received:
                    // this result hands over all of them, also those of results still in flight.
                    self.rollback(me, 0);
                }
                let (envelope, confirm) = self.envelope(now, request, me, kind, result, confirm);
                self.reply(request, Ok(envelope), confirm);
                self.wake_waiters(now);
            }
            Err(error) => self.reply(request, Err(error), false),
        }
        self.report_composing(now);
    }

    /// The reply to `request` reached the client's transport ([`Output::Reply::confirm`]): what
    /// it handed over now counts as heard, once every earlier result of the participant does.
    pub fn handle_delivered(&mut self, now: Millis, request: RequestId) {
        self.advance(now);
        let Some((me, index)) = self.find_pending(request) else {
            return;
        };
        let participant = &mut self.participants[me];
        participant.pending[index].delivered = true;
        self.settle(me);
    }

    /// The reply to `request` did not reach the client (its connection dropped, its caller went
    /// away), or the caller of a waiting `check` is gone. A waiting check is withdrawn, so nothing
    /// is handed over to nobody; a result already produced is rolled back, so its messages and
    /// receipts come again in the participant's next result (or in the answer of its waiting
    /// `check`, from what the driver read for [`Conversation::recall_for_lost`]).
    pub fn handle_lost(&mut self, now: Millis, request: RequestId) {
        self.lost(now, request);
        self.log.forget_recalled();
    }

    fn lost(&mut self, now: Millis, request: RequestId) {
        let now = self.advance(now);
        if let Some(index) = self.waiters.iter().position(|w| w.request == request) {
            self.waiters.remove(index);
            self.report_composing(now);
            return;
        }
        let Some((me, index)) = self.find_pending(request) else {
            return;
        };
        self.rollback(me, index);
        self.wake_waiters(now);
    }

    /// Fires what is due at `now`: expired `check` calls and typing leases.
    pub fn handle_timeout(&mut self, now: Millis) {
        let now = self.advance(now);
        let mut index = 0;
        while index < self.waiters.len() {
            if self.waiters[index].deadline <= now {
                let waiter = self.waiters.remove(index);
                self.finish_check(now, waiter, true);
            } else {
                index += 1;
            }
        }
        for participant in &mut self.participants {
            if participant.typing_until.is_some_and(|until| until <= now) {
                participant.typing_until = None;
            }
        }
        self.report_composing(now);
    }

    /// The server is going away: every waiting `check` answers now, and later ones do not wait.
    pub fn handle_shutdown(&mut self, now: Millis) {
        let now = self.advance(now);
        self.closing = true;
        for waiter in std::mem::take(&mut self.waiters) {
            self.finish_check(now, waiter, true);
        }
    }

    /// The next thing for the driver to do, or `None` when the machine is idle.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Conversation::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let waits = self.waiters.iter().map(|w| w.deadline);
        let leases = self.participants.iter().filter_map(|p| p.typing_until);
        waits.chain(leases).min()
    }

    /// Whether this machine holds nothing the store does not: no output to drain, no waiting
    /// `check`, no tentative hand-over, no typing lease. A driver may then drop it and
    /// [`Conversation::restore`] it from the store later, and nobody can tell, except that each
    /// participant's next result tells every read receipt again (as after a restart: receipts
    /// are told at least once).
    pub fn is_at_rest(&self) -> bool {
        self.outputs.is_empty()
            && self.waiters.is_empty()
            && self.participants.iter().all(|p| {
                p.pending.is_empty()
                    && p.received_beyond.is_empty()
                    && p.handed == p.cursor
                    && p.typing_until.is_none()
                    && p.composing_reported != p.draft.is_empty()
            })
    }

    /// How many `check` calls are waiting.
    pub fn waiting_checks(&self) -> usize {
        self.waiters.len()
    }

    /// Who is waiting in `check` right now, in the order they joined, each named once.
    pub fn checking(&self) -> Vec<ParticipantName> {
        self.participants
            .iter()
            .enumerate()
            .filter(|(index, _)| self.waiters.iter().any(|w| w.participant == *index))
            .map(|(_, p)| p.name.clone())
            .collect()
    }

    // ---- actions ------------------------------------------------------------------------------

    fn append(&mut self, me: usize, text: String) -> Result<ActionResult, ActionError> {
        if text.is_empty() {
            return Err(ActionError::EmptyText);
        }
        let total = text.chars().count();
        let room = self
            .limits
            .max_draft_chars
            .saturating_sub(self.participants[me].draft.chars());
        let keep = total.min(self.limits.max_append_chars).min(room);
        let (kept, dropped) = cut_to_chars(&text, keep);
        let dropped_chars = total - keep;
        let notice = (dropped_chars > 0).then(|| {
            let excerpt = notice_excerpt(dropped);
            if keep < total.min(self.limits.max_append_chars) {
                format!(
                    "Your draft is full ({} characters at most), so only {keep} of {total} \
                     characters were added; dropped: \"{excerpt}\". Push or shorten the draft \
                     (undo, reset) before adding more.",
                    self.limits.max_draft_chars
                )
            } else {
                format!(
                    "One append keeps at most {} characters, so {dropped_chars} were dropped, \
                     starting with \"{excerpt}\". Append the rest in another call.",
                    self.limits.max_append_chars
                )
            }
        });
        if keep > 0 {
            let kept = kept.to_owned();
            let name = self.participants[me].name.clone();
            self.participants[me].draft.push(kept.clone());
            self.persist(Effect::PushSegment {
                participant: name,
                text: kept,
            });
        }
        Ok(ActionResult::Append {
            appended_chars: keep,
            truncated: dropped_chars > 0,
            dropped_chars,
            notice,
        })
    }

    fn undo(&mut self, me: usize) -> Result<ActionResult, ActionError> {
        let Some(removed) = self.participants[me].draft.pop() else {
            return Err(ActionError::NothingToUndo);
        };
        let name = self.participants[me].name.clone();
        self.persist(Effect::PopSegment { participant: name });
        Ok(ActionResult::Undo { removed })
    }

    fn reset(&mut self, me: usize) -> ActionResult {
        let discarded_chars = self.participants[me].draft.chars();
        if !self.participants[me].draft.is_empty() {
            self.participants[me].draft.clear();
            let name = self.participants[me].name.clone();
            self.persist(Effect::ClearDraft { participant: name });
        }
        ActionResult::Reset { discarded_chars }
    }

    fn push(
        &mut self,
        now: Millis,
        me: usize,
        force: bool,
        client_id: Option<String>,
    ) -> Result<ActionResult, ActionError> {
        if let Some(original) = self.duplicate_of(me, client_id.as_deref())? {
            return Ok(original);
        }
        if self.participants[me].draft.text_is_blank() {
            return Err(ActionError::EmptyDraft);
        }
        if !force && self.has_unseen(me) {
            return Ok(ActionResult::Held {
                reason: HoldReason::UnseenMessages,
            });
        }
        let text = self.participants[me].draft.text();
        self.participants[me].draft.clear();
        let name = self.participants[me].name.clone();
        self.persist(Effect::ClearDraft { participant: name });
        Ok(self.publish(now, me, text, client_id, None))
    }

    fn send(
        &mut self,
        now: Millis,
        me: usize,
        text: String,
        client_id: Option<String>,
        attachment: Option<AttachmentRef>,
    ) -> Result<ActionResult, ActionError> {
        if let Some(original) = self.duplicate_of(me, client_id.as_deref())? {
            return Ok(original);
        }
        let draft = &self.participants[me].draft;
        if text.trim().is_empty() && draft.text_is_blank() && attachment.is_none() {
            return Err(ActionError::EmptyText);
        }
        let chars = draft.chars() + text.chars().count();
        if chars > self.limits.max_draft_chars {
            return Err(ActionError::TooLong {
                chars,
                max_chars: self.limits.max_draft_chars,
            });
        }
        let mut full = draft.text();
        full.push_str(&text);
        if !self.participants[me].draft.is_empty() {
            self.participants[me].draft.clear();
            let name = self.participants[me].name.clone();
            self.persist(Effect::ClearDraft { participant: name });
        }
        Ok(self.publish(now, me, full, client_id, attachment))
    }

    /// The client says it has read up to `up_to` (from the event stream): that is a confirmation
    /// of its own, for everything up to there.
    fn read(&mut self, me: usize, up_to: u64) {
        let up_to = up_to.min(self.last_seq());
        let participant = &mut self.participants[me];
        if up_to <= participant.cursor {
            return;
        }
        participant.handed = participant.handed.max(up_to);
        while participant
            .pending
            .front()
            .is_some_and(|h| h.up_to <= up_to)
        {
            participant.pending.pop_front();
        }
        self.set_cursor(me, up_to);
        self.settle(me);
    }

    /// Applies a [`Confirm::Client`] report: the client's own results up to `received` reached
    /// it; the first of them beyond it, and everything after, did not.
    fn client_received(&mut self, me: usize, received: u64) {
        let participant = &mut self.participants[me];
        let mut lost = None;
        for (index, handover) in participant.pending.iter_mut().enumerate() {
            if !handover.by_client {
                continue;
            }
            if handover.up_to <= received {
                handover.delivered = true;
            } else {
                lost = Some(index);
                break;
            }
        }
        if let Some(index) = lost {
            self.rollback(me, index);
        }
        self.settle(me);
    }

    fn find_pending(&self, request: RequestId) -> Option<(usize, usize)> {
        self.participants.iter().enumerate().find_map(|(me, p)| {
            let index = p.pending.iter().position(|h| h.request == request)?;
            Some((me, index))
        })
    }

    /// Moves the confirmed cursor over every delivered hand-over at the front of the queue (and,
    /// with nothing pending, up to `handed`: see the module's invariant).
    fn settle(&mut self, me: usize) {
        let participant = &mut self.participants[me];
        let mut cursor = participant.cursor;
        while let Some(front) = participant.pending.front() {
            if !front.delivered {
                break;
            }
            cursor = cursor.max(front.up_to);
            participant.pending.pop_front();
        }
        if participant.pending.is_empty() {
            cursor = cursor.max(participant.handed);
        }
        participant
            .received_beyond
            .retain(|&(_, up_to)| up_to > cursor);
        if cursor > participant.cursor {
            self.set_cursor(me, cursor);
        }
    }

    /// Forgets the hand-over at `index` and every later one: their messages and receipts are
    /// handed over again.
    fn rollback(&mut self, me: usize, index: usize) {
        let participant = &mut self.participants[me];
        let Some(first) = participant.pending.get(index) else {
            return;
        };
        let mut handed = first.before.max(participant.cursor);
        // The participant's own messages right after it were never news to it. Before the
        // window, unless recalled, only the prefix can tell: all its own up to the window, or
        // not (then the skip stops here, which only delays the receipt).
        loop {
            match self.log.get(handed + 1) {
                Some(m) if m.from == participant.name => handed += 1,
                Some(_) => break,
                None if handed < self.log.base()
                    && !self.log.prefix().others_after(&participant.name, handed) =>
                {
                    handed = self.log.base();
                }
                None => break,
            }
        }
        participant.handed = handed;
        participant.receipts_told = first.receipts_before.clone();
        for handover in participant.pending.drain(index..) {
            if handover.delivered {
                participant
                    .received_beyond
                    .push((handover.before, handover.up_to));
            }
        }
        self.settle(me);
    }

    // ---- helpers ------------------------------------------------------------------------------

    fn advance(&mut self, now: Millis) -> Millis {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    fn index_of(&self, name: &ParticipantName) -> Option<usize> {
        self.participants.iter().position(|p| &p.name == name)
    }

    fn reply(&mut self, request: RequestId, reply: Result<Envelope, ActionError>, confirm: bool) {
        self.outputs.push_back(Output::Reply {
            request,
            reply,
            confirm,
        });
    }

    fn persist(&mut self, effect: Effect) {
        self.outputs.push_back(Output::Persist(effect));
    }

    /// The original message if `client_id` was used before by this participant.
    fn duplicate_of(
        &self,
        me: usize,
        client_id: Option<&str>,
    ) -> Result<Option<ActionResult>, ActionError> {
        let Some(client_id) = client_id else {
            return Ok(None);
        };
        let chars = client_id.chars().count();
        if chars == 0 || chars > self.limits.max_client_id_chars {
            return Err(ActionError::InvalidClientId {
                max_chars: self.limits.max_client_id_chars,
            });
        }
        let name = &self.participants[me].name;
        let original = match self.client_ids.get(&(me, client_id.to_owned())) {
            Some(&seq) => self.log.get(seq),
            // Older than the window: the driver recalled it, if the store has it.
            None => self.log.recalled_client_id(name, client_id),
        };
        Ok(original.map(|message| ActionResult::Sent {
            message: Arc::clone(message),
            duplicate: true,
        }))
    }

    fn publish(
        &mut self,
        now: Millis,
        me: usize,
        text: String,
        client_id: Option<String>,
        attachment: Option<AttachmentRef>,
    ) -> ActionResult {
        let seq = self.last_seq() + 1;
        let message = Arc::new(Message {
            seq,
            id: format!("{}-{seq}", self.id),
            from: self.participants[me].name.clone(),
            text,
            sent_at: now,
            client_id: client_id.clone(),
            attachment,
        });
        if let Some(client_id) = client_id {
            self.client_ids.insert((me, client_id), seq);
        }
        self.log.push(Arc::clone(&message));
        // A message ends its author's typing lease, as in every chat app.
        self.participants[me].typing_until = None;
        self.persist(Effect::InsertMessage(Arc::clone(&message)));
        self.outputs
            .push_back(Output::Event(Event::Message(Arc::clone(&message))));
        ActionResult::Sent {
            message,
            duplicate: false,
        }
    }

    /// Whether a message from someone else lies beyond what this participant provably received:
    /// the push gate.
    fn has_unseen(&self, me: usize) -> bool {
        self.others_after(me, self.participants[me].cursor)
    }

    /// Whether a message from someone else lies beyond what was handed to this participant:
    /// `check` has something to hand over.
    fn has_unhanded(&self, me: usize) -> bool {
        self.others_after(me, self.participants[me].handed)
    }

    fn others_after(&self, me: usize, seq: u64) -> bool {
        self.log.others_after(&self.participants[me].name, seq)
    }

    fn set_cursor(&mut self, me: usize, cursor: u64) {
        let participant = &mut self.participants[me];
        participant.cursor = cursor;
        let name = participant.name.clone();
        self.persist(Effect::SetCursor {
            participant: name.clone(),
            cursor,
        });
        self.outputs
            .push_back(Output::Event(Event::Receipt(Receipt {
                participant: name,
                read_up_to: cursor,
            })));
    }

    /// Builds the common envelope for `me`, handing over what arrived after `handed`. If it hands
    /// something over, the hand-over is tentative (see the module docs); the returned flag says
    /// whether the driver must report the reply's delivery.
    fn envelope(
        &mut self,
        now: Millis,
        request: RequestId,
        me: usize,
        action: ActionKind,
        result: ActionResult,
        confirm: Confirm,
    ) -> (Envelope, bool) {
        if self.participants[me].pending.len() >= MAX_PENDING {
            // A driver that never reported: take the oldest as lost (at least once).
            self.rollback(me, 0);
        }
        let participant = &self.participants[me];
        let before = participant.handed;
        let mut incoming = Vec::new();
        let mut more_incoming = false;
        let mut last = before;
        while last < self.log.last_seq() {
            let Some(message) = self.log.get(last + 1) else {
                // Before the window and not recalled: skipped if it holds only the participant's
                // own messages; otherwise this result ends here and says more is waiting (the
                // driver recalls from here for the next request).
                if self.log.prefix().others_after(&participant.name, last) {
                    more_incoming = true;
                    break;
                }
                last = self.log.base();
                continue;
            };
            if message.from == participant.name {
                last = message.seq;
                continue;
            }
            if incoming.len() == self.limits.max_incoming {
                more_incoming = true;
                break;
            }
            last = message.seq;
            incoming.push(Arc::clone(message));
        }
        let repeated = incoming
            .iter()
            .map(|m| m.seq)
            .filter(|&seq| {
                participant
                    .received_beyond
                    .iter()
                    .any(|&(after, up_to)| after < seq && seq <= up_to)
            })
            .collect();
        let receipts_before = participant.receipts_told.clone();
        let mut receipts = Vec::new();
        for other in 0..self.participants.len() {
            let read_up_to = self.participants[other].cursor;
            if other != me && self.participants[me].receipts_told[other] != read_up_to {
                self.participants[me].receipts_told[other] = read_up_to;
                receipts.push(Receipt {
                    participant: self.participants[other].name.clone(),
                    read_up_to,
                });
            }
        }
        let participant = &mut self.participants[me];
        participant.handed = last;
        let tentative = !incoming.is_empty() || !receipts.is_empty();
        if tentative {
            participant.pending.push_back(Handover {
                request,
                before,
                up_to: last,
                receipts_before,
                by_client: matches!(confirm, Confirm::Client { .. }),
                delivered: false,
            });
        }
        // Nothing tentative (own messages skipped over, say) may settle at once.
        self.settle(me);
        let composing = self
            .participants
            .iter()
            .enumerate()
            .filter(|&(index, p)| index != me && p.is_composing(now))
            .map(|(_, p)| p.name.clone())
            .collect();
        let participant = &self.participants[me];
        let draft = &participant.draft;
        let envelope = Envelope {
            action,
            result,
            incoming,
            more_incoming,
            repeated,
            receipts,
            composing,
            draft: DraftSummary {
                segments: draft.segments(),
                chars: draft.chars(),
            },
            cursor: participant.handed,
        };
        (envelope, tentative && confirm == Confirm::Transport)
    }

    fn finish_check(&mut self, now: Millis, waiter: Waiter, timed_out: bool) {
        let result = ActionResult::Check { timed_out };
        let (envelope, confirm) = self.envelope(
            now,
            waiter.request,
            waiter.participant,
            ActionKind::Check,
            result,
            waiter.confirm,
        );
        self.reply(waiter.request, Ok(envelope), confirm);
    }

    /// Answers every waiting `check` whose participant now has something unseen.
    fn wake_waiters(&mut self, now: Millis) {
        let mut index = 0;
        while index < self.waiters.len() {
            if self.has_unhanded(self.waiters[index].participant) {
                let waiter = self.waiters.remove(index);
                self.finish_check(now, waiter, false);
            } else {
                index += 1;
            }
        }
    }

    /// Emits a `Composing` event for everyone whose composing state changed.
    fn report_composing(&mut self, now: Millis) {
        for index in 0..self.participants.len() {
            let participant = &mut self.participants[index];
            let composing = participant.is_composing(now);
            if composing != participant.composing_reported {
                participant.composing_reported = composing;
                let name = participant.name.clone();
                self.outputs.push_back(Output::Event(Event::Composing {
                    participant: name,
                    composing,
                }));
            }
        }
    }
}

impl Participant {
    fn is_composing(&self, now: Millis) -> bool {
        !self.draft.is_empty() || self.typing_until.is_some_and(|until| until > now)
    }
}
