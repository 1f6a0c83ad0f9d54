//! The driver of the protocol state machine: one task per live conversation owns its
//! [`Conversation`] and executes its outputs. Only the service reaches it (through [`Registry`]
//! and [`Handle`]), so "find or load the conversation" has one owner.
//!
//! The task drains whatever commands are queued, feeds them to the state machine, commits every
//! durable effect of that batch in one store call, and only then publishes events and answers.
//! So nobody ever sees a message, a cursor or a draft that a crash could take back, and many
//! pushes share one fsync.
//!
//! A reply that hands something over goes out with a [`Ticket`]; the task reads the delivery
//! reports of its own channel before every request it takes (see `app::delivery`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hark_core::protocol::{
    Action, ActionError, Confirm, Conversation, Envelope, Event, Limits, Output, ParticipantKind,
    ParticipantName, Receipt, RequestId,
};
use hark_store::{NewParticipant, Store, StoreError, StoredConversation};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::delivery::{Acted, Report, Ticket};
use super::error::AppError;
use super::types::ParticipantInfo;
use crate::clock::Clock;

/// Commands queued for one conversation's task before it stops taking more into a batch.
const MAX_BATCH: usize = 1024;
const COMMAND_QUEUE: usize = 4096;
const EVENT_BUFFER: usize = 4096;

/// What went wrong with an action: refused by the protocol, or not stored.
#[derive(Debug)]
pub(crate) enum ActError {
    Refused(ActionError),
    Unavailable,
}

impl From<ActError> for AppError {
    fn from(error: ActError) -> Self {
        match error {
            ActError::Refused(error) => error.into(),
            ActError::Unavailable => AppError::unavailable(),
        }
    }
}

/// A conversation's state as `GET /v1/conversations/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// Its id.
    pub id: String,
    /// Its title, if any.
    pub title: Option<String>,
    /// Every participant in joining order.
    pub participants: Vec<ParticipantInfo>,
    /// The seq of the last message (0 when nobody has written).
    pub last_seq: u64,
    /// Every participant's read position.
    pub receipts: Vec<Receipt>,
    /// Who is composing right now.
    pub composing: Vec<ParticipantName>,
    /// Who is waiting in `check` right now.
    pub checking: Vec<ParticipantName>,
    /// Who holds a fresh typing lease right now (a subset of `composing`).
    pub typing: Vec<ParticipantName>,
}

type ActReply = oneshot::Sender<Result<Acted, ActError>>;

enum Command {
    Act {
        request: RequestId,
        who: ParticipantName,
        action: Action,
        confirm: Confirm,
        reply: ActReply,
    },
    AddParticipant {
        participant: NewParticipant,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Describe(oneshot::Sender<Description>),
    Subscribe(oneshot::Sender<(broadcast::Receiver<Event>, u64)>),
}

/// A cheap handle to a live conversation's task.
#[derive(Clone)]
pub(crate) struct Handle {
    id: Arc<str>,
    commands: mpsc::Sender<Command>,
    /// Delivery reports, read by the task before every command.
    reports: mpsc::UnboundedSender<Report>,
    next_request: Arc<AtomicU64>,
}

impl Handle {
    /// Applies one action and waits for its result (for `check`, until it returns). A result
    /// that hands something over comes with a pending [`Ticket`].
    pub(crate) async fn act(
        &self,
        who: ParticipantName,
        action: Action,
        confirm: Confirm,
    ) -> Result<Acted, ActError> {
        let request = RequestId(self.next_request.fetch_add(1, Ordering::Relaxed));
        let (reply, result) = oneshot::channel();
        self.send(Command::Act {
            request,
            who,
            action,
            confirm,
            reply,
        })
        .await?;
        // If this future is dropped while waiting (the client went away), report the request
        // lost, so a waiting `check` is withdrawn and hands nothing over to nobody.
        let waiting = Ticket::new(self.reports.clone(), request);
        let result = result.await.map_err(|_| ActError::Unavailable)?;
        // Answered: from here on the result's own ticket (if any) speaks for it.
        waiting.disarm();
        result
    }

    pub(crate) async fn add_participant(
        &self,
        participant: NewParticipant,
    ) -> Result<(), StoreError> {
        let (reply, result) = oneshot::channel();
        self.send(Command::AddParticipant { participant, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the conversation task stopped".into()))?;
        result
            .await
            .map_err(|_| StoreError::Unavailable("the conversation task stopped".into()))?
    }

    pub(crate) async fn describe(&self) -> Result<Description, ActError> {
        let (reply, result) = oneshot::channel();
        self.send(Command::Describe(reply)).await?;
        result.await.map_err(|_| ActError::Unavailable)
    }

    /// A receiver of live events and the seq of the last message already committed: every
    /// message after it will arrive on the receiver.
    pub(crate) async fn subscribe(&self) -> Result<(broadcast::Receiver<Event>, u64), ActError> {
        let (reply, result) = oneshot::channel();
        self.send(Command::Subscribe(reply)).await?;
        result.await.map_err(|_| ActError::Unavailable)
    }

    async fn send(&self, command: Command) -> Result<(), ActError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ActError::Unavailable)
    }

    fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }
}

/// The live conversations of this process, loaded from the store on first use.
pub(crate) struct Registry {
    store: Arc<dyn Store>,
    limits: Limits,
    clock: Clock,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    live: Mutex<HashMap<Arc<str>, Handle>>,
    /// Serialises loads so a conversation is never loaded twice at once.
    loading: tokio::sync::Mutex<()>,
}

impl Registry {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        limits: Limits,
        clock: Clock,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        Registry {
            store,
            limits,
            clock,
            shutdown,
            tracker,
            live: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// The conversation's handle, loading it if needed; `None` if the store does not know it.
    pub(crate) async fn get(&self, id: &str) -> Result<Option<Handle>, StoreError> {
        if let Some(handle) = self.cached(id) {
            return Ok(Some(handle));
        }
        let _loading = self.loading.lock().await;
        if let Some(handle) = self.cached(id) {
            return Ok(Some(handle));
        }
        let Some(stored) = self.store.load_conversation(id).await? else {
            return Ok(None);
        };
        let handle = self.start(stored);
        self.lock_live()
            .insert(Arc::clone(&handle.id), handle.clone());
        Ok(Some(handle))
    }

    fn cached(&self, id: &str) -> Option<Handle> {
        let live = self.lock_live();
        live.get(id).filter(|h| h.is_running()).cloned()
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Handle>> {
        // A panic while holding this lock leaves the map itself intact, so keep using it.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self, stored: StoredConversation) -> Handle {
        let id: Arc<str> = Arc::from(stored.id.as_str());
        let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
        // Unbounded: a report must be queued synchronously, at the instant a result is known
        // delivered or lost, and never dropped. There is at most one per request.
        let (reports, report_inbox) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let agents = stored
            .participants
            .iter()
            .map(|p| {
                let seat = (p.agent.clone(), p.display_name.clone());
                (p.record.name.clone(), seat)
            })
            .collect();
        let conversation = restore(&stored, &self.limits);
        let task = Task {
            id: Arc::clone(&id),
            clock: conversation_clock(&self.clock, &stored),
            title: stored.title.clone(),
            conversation,
            agents,
            store: Arc::clone(&self.store),
            limits: self.limits.clone(),
            events,
            pending: HashMap::new(),
            reports: reports.clone(),
            report_inbox,
            shutdown: self.shutdown.clone(),
        };
        let span = tracing::info_span!("conversation", id = %id);
        self.tracker.spawn(task.run(inbox).instrument(span));
        Handle {
            id,
            commands,
            reports,
            next_request: Arc::new(AtomicU64::new(1)),
        }
    }
}

/// The clock a conversation's task runs on: the server's, but never behind the last message's
/// `sent_at`, so that stamps never go backwards within a conversation, not even across a restart
/// after the wall clock was set back. Its timers still follow the monotonic clock.
fn conversation_clock(clock: &Clock, stored: &StoredConversation) -> Clock {
    match stored.messages.last() {
        Some(last) => clock.not_before(last.sent_at),
        None => *clock,
    }
}

fn restore(stored: &StoredConversation, limits: &Limits) -> Conversation {
    Conversation::restore(
        stored.id.clone(),
        limits.clone(),
        stored
            .participants
            .iter()
            .map(|p| p.record.clone())
            .collect(),
        stored.messages.clone(),
    )
}

/// A participant's built-in agent and display name, beside the state machine's record.
type Seat = (Option<String>, Option<String>);

struct Task {
    id: Arc<str>,
    title: Option<String>,
    clock: Clock,
    conversation: Conversation,
    agents: Vec<(ParticipantName, Seat)>,
    store: Arc<dyn Store>,
    limits: Limits,
    events: broadcast::Sender<Event>,
    pending: HashMap<RequestId, ActReply>,
    /// Where the tickets this task hands out report to.
    reports: mpsc::UnboundedSender<Report>,
    report_inbox: mpsc::UnboundedReceiver<Report>,
    shutdown: CancellationToken,
}

impl Task {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        let mut closing = false;
        loop {
            let deadline = self
                .conversation
                .poll_timeout()
                .map(|due| self.clock.deadline(due));
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled(), if !closing => {
                    closing = true;
                    self.conversation.handle_shutdown(self.clock.now());
                }
                // The task holds a sender itself, so this channel never ends.
                Some(report) = self.report_inbox.recv() => {
                    self.report(report);
                    self.take_reports();
                }
                command = inbox.recv() => {
                    let Some(command) = command else { break };
                    let mut next = Some(command);
                    let mut taken = 0;
                    while let Some(command) = next.take() {
                        // Every report queued before this request was sent applies first: a
                        // client that received a result and then pushes is not held for it.
                        self.take_reports();
                        if !self.handle(command).await {
                            return;
                        }
                        taken += 1;
                        if taken < MAX_BATCH {
                            next = inbox.try_recv().ok();
                        }
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.conversation.handle_timeout(self.clock.now());
                }
            }
            if !self.flush().await {
                return;
            }
        }
    }

    /// Feeds one command to the state machine. Returns false if the task must stop.
    async fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Act {
                request,
                who,
                action,
                confirm,
                reply,
            } => {
                self.pending.insert(request, reply);
                self.conversation
                    .handle_request(self.clock.now(), request, &who, action, confirm);
                true
            }
            Command::AddParticipant { participant, reply } => {
                if !self.flush().await {
                    let _ = reply.send(Err(StoreError::Unavailable("reload failed".into())));
                    return false;
                }
                let name = participant.name.clone();
                let kind = participant.kind;
                let seat = (participant.agent.clone(), participant.display_name.clone());
                let result = if self.conversation.has_participant(&name) {
                    Err(StoreError::NameTaken)
                } else {
                    self.store.add_participant(&self.id, participant).await
                };
                if result.is_ok() {
                    self.conversation.add_participant(name.clone(), kind);
                    self.agents.push((name, seat));
                }
                let _ = reply.send(result);
                true
            }
            Command::Describe(reply) => {
                let ok = self.flush().await;
                let now = self.clock.now();
                let _ = reply.send(Description {
                    id: self.id.to_string(),
                    title: self.title.clone(),
                    participants: self
                        .conversation
                        .participants()
                        .map(|(name, kind)| self.info(name, kind))
                        .collect(),
                    last_seq: self.conversation.last_seq(),
                    receipts: self.conversation.receipts(),
                    composing: self.conversation.composing(now),
                    checking: self.conversation.checking(),
                    typing: self.conversation.typing(now),
                });
                ok
            }
            Command::Subscribe(reply) => {
                // Flush first, so the seq handed back is committed and every later message is
                // published after this receiver exists: no gap, no duplicate.
                let ok = self.flush().await;
                let _ = reply.send((self.events.subscribe(), self.conversation.last_seq()));
                ok
            }
        }
    }

    /// Applies one delivery report.
    fn report(&mut self, report: Report) {
        let now = self.clock.now();
        match report {
            Report::Delivered(request) => self.conversation.handle_delivered(now, request),
            Report::Lost(request) => {
                self.conversation.handle_lost(now, request);
                // A withdrawn `check` is never answered: nobody waits for it any more.
                self.pending.remove(&request);
            }
        }
    }

    /// Applies every report queued so far.
    fn take_reports(&mut self) {
        while let Ok(report) = self.report_inbox.try_recv() {
            self.report(report);
        }
    }

    fn info(&self, name: &ParticipantName, kind: ParticipantKind) -> ParticipantInfo {
        let (agent, display_name) = self
            .agents
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, seat)| seat.clone())
            .unwrap_or_default();
        ParticipantInfo {
            name: name.clone(),
            kind,
            agent,
            display_name,
        }
    }

    /// Commits the batch's effects, then publishes its events and sends its replies. Returns
    /// false if the store failed and the state could not be rebuilt.
    async fn flush(&mut self) -> bool {
        let mut effects = Vec::new();
        let mut events = Vec::new();
        let mut replies = Vec::new();
        while let Some(output) = self.conversation.poll_output() {
            match output {
                Output::Persist(effect) => effects.push(effect),
                Output::Event(event) => events.push(event),
                Output::Reply {
                    request,
                    reply,
                    confirm,
                } => replies.push((request, reply, confirm)),
            }
        }
        if !effects.is_empty()
            && let Err(error) = self.store.commit(&self.id, effects).await
        {
            tracing::error!(%error, "commit failed; rebuilding the conversation from the store");
            return self.recover(replies).await;
        }
        for event in events {
            // No receivers is fine: nobody is listening right now.
            let _ = self.events.send(event);
        }
        for (request, reply, confirm) in replies {
            let ticket = if confirm {
                Ticket::new(self.reports.clone(), request)
            } else {
                Ticket::none()
            };
            let reply = reply
                .map(|envelope| Acted { envelope, ticket })
                .map_err(ActError::Refused);
            // A caller that is gone drops the reply, and with it the ticket: the result is
            // reported lost, and its messages come again.
            if let Some(sender) = self.pending.remove(&request) {
                let _ = sender.send(reply);
            }
        }
        true
    }

    /// Nothing of the failed batch was stored: refuse its replies and every waiting call, and
    /// rebuild the state machine from what the store holds.
    async fn recover(&mut self, replies: Vec<Reply>) -> bool {
        for (request, _, _) in replies {
            if let Some(sender) = self.pending.remove(&request) {
                let _ = sender.send(Err(ActError::Unavailable));
            }
        }
        for (_, sender) in self.pending.drain() {
            let _ = sender.send(Err(ActError::Unavailable));
        }
        match self.store.load_conversation(&self.id).await {
            Ok(Some(stored)) => {
                self.conversation = restore(&stored, &self.limits);
                if self.shutdown.is_cancelled() {
                    self.conversation.handle_shutdown(self.clock.now());
                }
                true
            }
            Ok(None) | Err(_) => {
                tracing::error!("cannot reload the conversation; its task stops");
                false
            }
        }
    }
}

/// A reply of the state machine: the request, the result, whether it needs a delivery report.
type Reply = (RequestId, Result<Envelope, ActionError>, bool);

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
