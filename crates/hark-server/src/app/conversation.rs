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
//!
//! # Loading and eviction
//!
//! The [`Registry`] maps a conversation id to a slot: a load in progress (a shared future, so
//! every request for that id waits for the same load, and no request for another id waits at
//! all) or the live task's [`Handle`]. A task whose conversation is idle — its state machine at
//! rest ([`Conversation::is_at_rest`]), no event stream or agent subscribed, no request queued,
//! nobody holding its handle — for the configured idle time removes its own slot and stops; the
//! next request loads it again from the store.
//!
//! # Several nodes
//!
//! With a [`Cluster`] (PostgreSQL shared by several nodes), a conversation is loaded only after
//! this node acquired its ownership in the database, and its ownership is released when its task
//! stops for idleness. [`Registry::get`] says [`Found::Elsewhere`] when another live node owns
//! it. A node that learns it lost a conversation (its lease ran out: see `app::cluster`)
//! evicts the task at once: waiting calls are answered `unavailable`, event streams end, and the
//! database's fence refuses any commit it might still attempt.
//!
//! **Invariant:** at most one task owns a conversation. A handle is cloned out of the registry
//! only under its lock, and a task stops only if, under that same lock, the registry's copy is
//! the only one left and its queue is empty: nobody can then reach the stopping task, and the
//! next request starts a new one from what the store holds (which is everything: at rest means
//! nothing unstored).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use hark_core::protocol::{
    Action, ActionError, Confirm, Conversation, Envelope, Event, Limits, LogPrefix, Message,
    Output, ParticipantKind, ParticipantName, Recall, Receipt, RequestId,
};
use hark_store::{Cluster, NewParticipant, Owner, Store, StoreError, StoredConversation};
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
/// Events a subscriber may fall behind by before it lags. A lagging subscriber catches up from
/// the store (messages) and the description (receipts, composing), so this only bounds memory.
/// The channel itself exists only while somebody subscribes.
pub(crate) const EVENT_BUFFER: usize = 128;

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

/// A cheap handle to a live conversation's task. While any copy besides the registry's exists,
/// the task does not stop for idleness.
#[derive(Clone)]
pub(crate) struct Handle(Arc<HandleState>);

struct HandleState {
    /// Which task this is (tasks of one conversation over time have different numbers).
    task: u64,
    /// When this node acquired the conversation's ownership for this task (cluster only): a
    /// heartbeat that started before it cannot know of it.
    acquired_at: tokio::time::Instant,
    /// Ends the task at once: this node lost the conversation.
    evicted: CancellationToken,
    commands: mpsc::Sender<Command>,
    /// Delivery reports, read by the task before every command.
    reports: mpsc::UnboundedSender<Report>,
    next_request: AtomicU64,
}

impl Handle {
    /// Hands one action to the conversation's task; [`Pending::finish`] waits for its result
    /// (for `check`, until it returns). A result that hands something over comes with a
    /// pending [`Ticket`].
    pub(crate) async fn begin(
        &self,
        who: ParticipantName,
        action: Action,
        confirm: Confirm,
    ) -> Result<Pending, ActError> {
        let request = RequestId(self.0.next_request.fetch_add(1, Ordering::Relaxed));
        let (reply, result) = oneshot::channel();
        self.send(Command::Act {
            request,
            who,
            action,
            confirm,
            reply,
        })
        .await?;
        // If the wait is dropped (the client went away), the request is reported lost, so a
        // waiting `check` is withdrawn and hands nothing over to nobody.
        let waiting = Ticket::new(self.0.reports.clone(), request);
        Ok(Pending { result, waiting })
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
        self.0
            .commands
            .send(command)
            .await
            .map_err(|_| ActError::Unavailable)
    }

    fn is_running(&self) -> bool {
        !self.0.commands.is_closed() && !self.0.evicted.is_cancelled()
    }
}

/// An action handed to its conversation's task, its result still to come.
pub(crate) struct Pending {
    result: oneshot::Receiver<Result<Acted, ActError>>,
    waiting: Ticket,
}

impl Pending {
    /// Waits for the action's result.
    pub(crate) async fn finish(self) -> Result<Acted, ActError> {
        let result = self.result.await.map_err(|_| ActError::Unavailable)?;
        // Answered: from here on the result's own ticket (if any) speaks for it.
        self.waiting.disarm();
        result
    }
}

/// Where a conversation lives, as [`Registry::get`] finds it.
#[derive(Clone)]
pub(crate) enum Found {
    /// Loaded here.
    Here(Handle),
    /// Another live node owns it; its base URL.
    Elsewhere(String),
    /// No such conversation.
    Missing,
}

/// The live conversations of this process, loaded from the store on first use and stopped
/// when idle (see the module docs).
pub(crate) struct Registry(Arc<Loader>);

/// What loading a conversation needs; shared with the loads in flight.
struct Loader {
    store: Arc<dyn Store>,
    limits: Limits,
    clock: Clock,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// How long a conversation stays loaded with nothing going on; `None`: for ever.
    idle: Option<Duration>,
    live: Arc<Live>,
    next_task: AtomicU64,
    /// The other nodes on the same database, if any.
    cluster: Option<Arc<dyn Cluster>>,
    /// On a cluster: told the id of every conversation with a built-in agent that this node
    /// loads, so that its agents run here (where it is owned).
    adopt: Option<mpsc::UnboundedSender<String>>,
}

/// A load in flight: every request for the id awaits the same one.
type Loading = Shared<BoxFuture<'static, Result<Found, StoreError>>>;

enum Slot {
    Loading(Loading),
    Live(Handle),
}

/// The slots by conversation id, behind a lock that is never held across an await.
#[derive(Default)]
struct Live(Mutex<HashMap<Arc<str>, Slot>>);

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Slot>> {
        // A panic while holding this lock leaves the map itself intact, so keep using it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Registry {
    /// `idle`: how long a conversation with nothing going on stays loaded (`None`: for ever).
    pub(crate) fn new(
        store: Arc<dyn Store>,
        limits: Limits,
        clock: Clock,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        idle: Option<Duration>,
        cluster: Option<(Arc<dyn Cluster>, mpsc::UnboundedSender<String>)>,
    ) -> Self {
        let (cluster, adopt) = cluster.unzip();
        Registry(Arc::new(Loader {
            store,
            limits,
            clock,
            shutdown,
            tracker,
            idle,
            live: Arc::default(),
            next_task: AtomicU64::new(1),
            cluster,
            adopt,
        }))
    }

    /// The conversation's handle, loading it if needed (and, on a cluster, taking its ownership
    /// first); where it lives otherwise. Requests for one id share one load; a load never delays
    /// another id.
    pub(crate) async fn get(&self, id: &str) -> Result<Found, StoreError> {
        let loading = {
            let mut live = self.0.live.lock();
            match live.get(id) {
                Some(Slot::Live(handle)) if handle.is_running() => {
                    return Ok(Found::Here(handle.clone()));
                }
                Some(Slot::Loading(loading)) => loading.clone(),
                // Unknown here, or its task stopped (the store failed under it): load it.
                _ => {
                    let loading = Arc::clone(&self.0).load(id.to_owned()).boxed().shared();
                    live.insert(Arc::from(id), Slot::Loading(loading.clone()));
                    loading
                }
            }
        };
        let loaded = loading.clone().await;
        // The first caller back puts the loaded handle in place of the load (or forgets a load
        // that found nothing or failed, so the next request tries again).
        let mut live = self.0.live.lock();
        if let Some(Slot::Loading(current)) = live.get(id)
            && current.ptr_eq(&loading)
        {
            match &loaded {
                Ok(Found::Here(handle)) => {
                    live.insert(Arc::from(id), Slot::Live(handle.clone()));
                }
                _ => {
                    live.remove(id);
                }
            }
        }
        loaded
    }

    /// How many conversations are loaded (or loading) right now.
    pub(crate) fn loaded(&self) -> usize {
        self.0.live.lock().len()
    }

    /// Whether `id` is loaded here right now.
    pub(crate) fn is_here(&self, id: &str) -> bool {
        matches!(self.0.live.lock().get(id), Some(Slot::Live(h)) if h.is_running())
    }

    /// Evicts every loaded conversation that is not in `owned` and was acquired before `since`
    /// (when the list was read): this node lost them. Returns how many.
    pub(crate) fn evict_lost(
        &self,
        owned: &std::collections::HashSet<String>,
        since: tokio::time::Instant,
    ) -> usize {
        self.evict_where(|id, handle| handle.0.acquired_at < since && !owned.contains(id))
    }

    /// Evicts every loaded conversation (this node's lease ran out). Returns how many.
    pub(crate) fn evict_all(&self) -> usize {
        self.evict_where(|_, _| true)
    }

    fn evict_where(&self, lost: impl Fn(&str, &Handle) -> bool) -> usize {
        let mut live = self.0.live.lock();
        let gone: Vec<Arc<str>> = live
            .iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Live(handle) if lost(id, handle) => Some(Arc::clone(id)),
                _ => None,
            })
            .collect();
        for id in &gone {
            if let Some(Slot::Live(handle)) = live.remove(id) {
                tracing::warn!(conversation = %id, "this node lost the conversation; evicted");
                handle.0.evicted.cancel();
            }
        }
        gone.len()
    }
}

impl Loader {
    async fn load(self: Arc<Self>, id: String) -> Result<Found, StoreError> {
        let acquired_at = self.clock.instant();
        let ticket = match &self.cluster {
            None => None,
            Some(cluster) => match cluster.acquire(&id).await {
                Ok(Owner::Me { ticket }) => Some(ticket),
                Ok(Owner::Node { url, .. }) => return Ok(Found::Elsewhere(url)),
                Err(StoreError::NotFound) => return Ok(Found::Missing),
                Err(error) => return Err(error),
            },
        };
        let window = self.limits.log_window_messages;
        let (stored, prefix) = match self.store.load_conversation_window(&id, window).await {
            Ok(Some(loaded)) => loaded,
            other => {
                if let (Some(cluster), Some(ticket)) = (&self.cluster, ticket) {
                    let _ = cluster.release(&id, ticket).await;
                }
                return other.map(|_| Found::Missing);
            }
        };
        let has_agents = stored.participants.iter().any(|p| p.agent.is_some());
        let handle = self.start(stored, prefix, ticket, acquired_at);
        if has_agents && let Some(adopt) = &self.adopt {
            let _ = adopt.send(id);
        }
        Ok(Found::Here(handle))
    }

    fn start(
        &self,
        stored: StoredConversation,
        prefix: LogPrefix,
        ticket: Option<i64>,
        acquired_at: tokio::time::Instant,
    ) -> Handle {
        let id: Arc<str> = Arc::from(stored.id.as_str());
        let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
        // Unbounded: a report must be queued synchronously, at the instant a result is known
        // delivered or lost, and never dropped. There is at most one per request.
        let (reports, report_inbox) = mpsc::unbounded_channel();
        let agents = stored
            .participants
            .iter()
            .map(|p| {
                let seat = (p.agent.clone(), p.display_name.clone());
                (p.record.name.clone(), seat)
            })
            .collect();
        let clock = conversation_clock(&self.clock, &stored);
        let title = stored.title.clone();
        let conversation = restore(stored, prefix, &self.limits);
        let number = self.next_task.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let task = Task {
            ownership: self.cluster.clone().zip(ticket),
            evicted: evicted.clone(),
            id: Arc::clone(&id),
            number,
            clock,
            title,
            conversation,
            agents,
            store: Arc::clone(&self.store),
            limits: self.limits.clone(),
            events: None,
            pending: HashMap::new(),
            reports: reports.clone(),
            report_inbox,
            shutdown: self.shutdown.clone(),
            live: Arc::clone(&self.live),
            idle: self.idle,
        };
        let span = tracing::info_span!("conversation", id = %id);
        self.tracker.spawn(task.run(inbox).instrument(span));
        Handle(Arc::new(HandleState {
            task: number,
            acquired_at,
            evicted,
            commands,
            reports,
            next_request: AtomicU64::new(1),
        }))
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

/// The state machine of a conversation read with `Store::load_conversation_window`.
fn restore(stored: StoredConversation, prefix: LogPrefix, limits: &Limits) -> Conversation {
    Conversation::restore_window(
        stored.id,
        limits.clone(),
        stored.participants.into_iter().map(|p| p.record).collect(),
        prefix,
        stored.messages,
    )
}

/// A participant's built-in agent and display name, beside the state machine's record.
type Seat = (Option<String>, Option<String>);

struct Task {
    id: Arc<str>,
    /// This node's ownership of the conversation, on a cluster: released when the task stops
    /// for idleness.
    ownership: Option<(Arc<dyn Cluster>, i64)>,
    /// Fires when this node lost the conversation: the task ends at once.
    evicted: CancellationToken,
    /// This task's number, as its handle carries it.
    number: u64,
    title: Option<String>,
    clock: Clock,
    conversation: Conversation,
    agents: Vec<(ParticipantName, Seat)>,
    store: Arc<dyn Store>,
    limits: Limits,
    /// Live events, while somebody subscribes (no subscriber: no buffer).
    events: Option<broadcast::Sender<Event>>,
    pending: HashMap<RequestId, ActReply>,
    /// Where the tickets this task hands out report to.
    reports: mpsc::UnboundedSender<Report>,
    report_inbox: mpsc::UnboundedReceiver<Report>,
    shutdown: CancellationToken,
    /// The registry's slots: the task removes its own when it stops for idleness.
    live: Arc<Live>,
    idle: Option<Duration>,
}

impl Task {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        let mut closing = false;
        let mut active_at = self.clock.instant();
        loop {
            let deadline = self
                .conversation
                .poll_timeout()
                .map(|due| self.clock.deadline(due));
            let idle_at = self.idle.filter(|_| !closing).map(|idle| active_at + idle);
            let mut idled = false;
            tokio::select! {
                biased;
                _ = self.evicted.cancelled() => {
                    self.refuse_all();
                    return;
                }
                _ = self.shutdown.cancelled(), if !closing => {
                    closing = true;
                    self.conversation.handle_shutdown(self.clock.now());
                }
                // The task holds a sender itself, so this channel never ends.
                Some(report) = self.report_inbox.recv() => {
                    self.report(report).await;
                    self.take_reports().await;
                }
                command = inbox.recv() => {
                    let Some(command) = command else { break };
                    let mut next = Some(command);
                    let mut taken = 0;
                    while let Some(command) = next.take() {
                        // Every report queued before this request was sent applies first: a
                        // client that received a result and then pushes is not held for it.
                        self.take_reports().await;
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
                _ = sleep_until(idle_at), if idle_at.is_some() => idled = true,
            }
            if idled && self.stop_if_idle(&inbox) {
                if let Some((cluster, ticket)) = self.ownership.take() {
                    // Another node may take it now. (A later load here acquires a new ticket,
                    // which this release does not touch.)
                    let id = Arc::clone(&self.id);
                    tokio::spawn(async move {
                        if let Err(error) = cluster.release(&id, ticket).await {
                            tracing::warn!(%error, "cannot release an idle conversation");
                        }
                    });
                }
                return;
            }
            // Anything that happened (or an idle check that found the conversation in use)
            // starts the idle time again.
            active_at = self.clock.instant();
            if !self.flush().await {
                return;
            }
        }
    }

    /// Stops this task if nothing needs it: nothing but the store holds its state, nobody
    /// listens, and nobody can reach it (see the module docs). Returns whether it stopped.
    fn stop_if_idle(&self, inbox: &mpsc::Receiver<Command>) -> bool {
        if !self.conversation.is_at_rest()
            || !self.pending.is_empty()
            || self.events.as_ref().is_some_and(|e| e.receiver_count() > 0)
            || !self.report_inbox.is_empty()
        {
            return false;
        }
        let mut live = self.live.lock();
        let Some(Slot::Live(handle)) = live.get(&self.id) else {
            return false;
        };
        // The registry's copy is the only handle: nobody is sending, and nobody can start to
        // without this lock. Whatever was sent before is in the queue.
        if handle.0.task != self.number || Arc::strong_count(&handle.0) != 1 || !inbox.is_empty() {
            return false;
        }
        live.remove(&self.id);
        // After a crowd has gone, give the table's memory back.
        if live.capacity() > 1024 && live.len() * 4 < live.capacity() {
            let len = live.len();
            live.shrink_to(len * 2);
        }
        tracing::debug!("idle: the conversation is unloaded");
        true
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
                // A participant that was away, or an old client id, may need messages from
                // before the window: read them first (they are all committed).
                if let Err(error) = self
                    .recall(Some(&who), |c| c.recall_for(&who, &action))
                    .await
                {
                    tracing::warn!(%error, "cannot read older messages from the store");
                    let _ = reply.send(Err(ActError::Unavailable));
                    return true;
                }
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
                let events = self
                    .events
                    .get_or_insert_with(|| broadcast::channel(EVENT_BUFFER).0);
                let _ = reply.send((events.subscribe(), self.conversation.last_seq()));
                ok
            }
        }
    }

    /// Reads from the store what `next` names ([`Conversation::recall_for`] or
    /// [`Conversation::recall_for_lost`]) and hands it in, round after round until nothing more
    /// is named. `who` owns the client id a request may name. If a read fails, what was read is
    /// forgotten.
    async fn recall(
        &mut self,
        who: Option<&ParticipantName>,
        next: impl Fn(&Conversation) -> Recall,
    ) -> Result<(), StoreError> {
        loop {
            let recall = next(&self.conversation);
            if recall.is_empty() {
                return Ok(());
            }
            match self.read(who, &recall).await {
                Ok(messages) => self.conversation.handle_recalled(&recall, messages),
                Err(error) => {
                    self.conversation.handle_recall_failed();
                    return Err(error);
                }
            }
        }
    }

    /// Reads one round of what the machine named.
    async fn read(
        &self,
        who: Option<&ParticipantName>,
        recall: &Recall,
    ) -> Result<Vec<Message>, StoreError> {
        let mut messages = Vec::new();
        for &(after, limit) in &recall.runs {
            messages.extend(self.store.messages_after(&self.id, after, limit).await?);
        }
        if let (Some(who), Some(client_id)) = (who, &recall.client_id)
            && let Some(original) = self
                .store
                .message_by_client_id(&self.id, who, client_id)
                .await?
        {
            messages.push(original);
        }
        Ok(messages)
    }

    /// Applies one delivery report.
    async fn report(&mut self, report: Report) {
        match report {
            Report::Delivered(request) => self
                .conversation
                .handle_delivered(self.clock.now(), request),
            Report::Lost(request) => {
                // The rollback may wake a waiting check whose answer starts before the window.
                // If the read fails, the check still answers, saying more is waiting.
                if let Err(error) = self.recall(None, |c| c.recall_for_lost(request)).await {
                    tracing::warn!(%error, "cannot read older messages from the store");
                }
                self.conversation.handle_lost(self.clock.now(), request);
                // A withdrawn `check` is never answered: nobody waits for it any more.
                self.pending.remove(&request);
            }
        }
    }

    /// Applies every report queued so far.
    async fn take_reports(&mut self) {
        while let Ok(report) = self.report_inbox.try_recv() {
            self.report(report).await;
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
            if let StoreError::Moved(_) = error {
                // Another node owns it now: nothing of this batch was stored, and this task
                // must not serve it any longer.
                tracing::warn!(%error, "the conversation moved to another node; this task stops");
                self.live.lock().retain(|id, slot| {
                    !(id == &self.id && matches!(slot, Slot::Live(h) if h.0.task == self.number))
                });
                self.refuse_all();
                return false;
            }
            tracing::error!(%error, "commit failed; rebuilding the conversation from the store");
            return self.recover(replies).await;
        }
        // Committed: what is beyond the log window may leave memory.
        self.conversation.handle_committed();
        if self
            .events
            .as_ref()
            .is_some_and(|e| e.receiver_count() == 0)
        {
            // Nobody listens any more: free the buffer until somebody subscribes again.
            self.events = None;
        }
        if let Some(sender) = &self.events {
            for event in events {
                let _ = sender.send(event);
            }
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

    /// Answers every waiting call `unavailable` (the task is about to end).
    fn refuse_all(&mut self) {
        for (_, sender) in self.pending.drain() {
            let _ = sender.send(Err(ActError::Unavailable));
        }
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
        let window = self.limits.log_window_messages;
        match self.store.load_conversation_window(&self.id, window).await {
            Ok(Some((stored, prefix))) => {
                self.conversation = restore(stored, prefix, &self.limits);
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
