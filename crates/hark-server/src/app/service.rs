//! [`App`]: the service every front door calls. HTTP routes, MCP sessions and built-in agents
//! decode their input, call one of these methods, and encode what comes back; none of them finds
//! a conversation, checks a token or maps a store error on its own.

use std::sync::Arc;

use async_trait::async_trait;
use hark_core::protocol::{Action, Confirm, Envelope, Limits, ParticipantName};
use hark_store::{
    NewAttachment, NewConversation, NewParticipant, Store, StoredAttachment, TokenOwner,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::{
    Admin, Auth, Caller, Participant, Reader, hash_token, mint_conversation_id, mint_token,
};
use super::cluster::Node;
use super::context::{AgentContext, AgentLauncher, Port};
use super::conversation::{Description, Found, Handle, Pending, Registry};
use super::delivery::Acted;
use super::error::{AppError, ErrorKind};
use super::types::{
    AgentInfo, AttachmentInfo, Created, CreatedParticipant, HistoryPage, ParticipantSpec,
    Subscription, check_attachment,
};
use crate::clock::Clock;
use crate::config::ServerConfig;

/// Most participants a conversation may start with.
pub const MAX_PARTICIPANTS: usize = 64;
/// Longest title, in Unicode scalar values.
pub const MAX_TITLE_CHARS: usize = 200;
/// Messages a history page holds when the caller does not say.
pub const HISTORY_DEFAULT_LIMIT: usize = 100;
/// Most messages one history page holds.
pub const HISTORY_MAX_LIMIT: usize = 1000;

/// Where a request for a conversation is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// Here (it is loaded here, or does not exist).
    Here,
    /// By the node at this base URL, which owns it.
    At(String),
}

/// How long a remote owner is remembered without asking the database again.
const REMOTE_OWNER_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// The service: one per server, cheap to clone.
#[derive(Clone)]
pub struct App(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    registry: Registry,
    auth: Auth,
    agents: Arc<dyn AgentLauncher>,
    limits: Limits,
    /// Participants one conversation may have.
    max_participants: usize,
    max_attachment_bytes: usize,
    clock: Clock,
    shutdown: CancellationToken,
    /// This process as a node of several on one database, if it is one.
    node: Option<Arc<Node>>,
    /// Conversations owned by other nodes, as last found: their base URL, and when.
    remote: std::sync::Mutex<std::collections::HashMap<String, (String, tokio::time::Instant)>>,
    /// Conversations with agents that this node just loaded (taken by the node loop, which
    /// starts their agents here).
    adoptions: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
}

impl App {
    /// The service over `store`. Conversation tasks are spawned on `tasks`; `shutdown` ends them,
    /// waiting `check`s and event streams.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        config: &ServerConfig,
        agents: Arc<dyn AgentLauncher>,
        clock: Clock,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        node: Option<Arc<Node>>,
    ) -> Self {
        let (adopt, adoptions) = tokio::sync::mpsc::unbounded_channel();
        let registry = Registry::new(
            Arc::clone(&store),
            config.limits.clone(),
            clock,
            shutdown.clone(),
            tasks,
            (config.idle_conversation_ms > 0)
                .then(|| std::time::Duration::from_millis(config.idle_conversation_ms)),
            node.as_ref().map(|n| (Arc::clone(n.cluster()), adopt)),
        );
        let auth = Auth::new(
            config.admin_token.as_deref(),
            config.admin_open,
            config.rate_limit_per_s,
            config.rate_limit_burst,
        );
        App(Arc::new(Inner {
            store,
            registry,
            auth,
            agents,
            limits: config.limits.clone(),
            max_participants: config.caps.max_participants,
            max_attachment_bytes: config.max_attachment_bytes,
            clock,
            shutdown,
            node,
            remote: Default::default(),
            adoptions: std::sync::Mutex::new(Some(adoptions)),
        }))
    }

    // ---- who is calling ------------------------------------------------------------------------

    /// Resolves a bearer token (rate-limited per token); `None` is an anonymous caller.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Caller, AppError> {
        self.0.auth.caller(token, &*self.0.store).await
    }

    /// Admits a request from `peer` carrying `token` (if any) before anything is done for it:
    /// requests without a known token are rate-limited per peer address.
    pub fn screen(&self, peer: std::net::IpAddr, token: Option<&str>) -> Result<(), AppError> {
        self.0.auth.screen(peer, token)
    }

    /// The caller may use admin routes (the admin token, or anyone on an open loopback server).
    pub fn admin(&self, caller: &Caller) -> Result<Admin, AppError> {
        self.0.auth.admin(caller)
    }

    /// The caller is a participant of `conversation`.
    pub async fn participant(
        &self,
        caller: &Caller,
        conversation: &str,
    ) -> Result<Participant, AppError> {
        self.0
            .auth
            .participant(caller, &*self.0.store, conversation)
            .await
    }

    /// The caller is a participant, of whichever conversation its token opens.
    pub fn any_participant(&self, caller: &Caller) -> Result<Participant, AppError> {
        self.0.auth.any_participant(caller)
    }

    /// The caller may read `conversation`'s description: the admin or one of its participants.
    pub fn reader(&self, caller: &Caller, conversation: &str) -> Result<Reader, AppError> {
        self.0.auth.reader(caller, conversation)
    }

    /// `name` of `conversation`, without a token: for a process that holds the database itself
    /// (`hark mcp --db`). Never reachable from the network.
    pub async fn participant_named(
        &self,
        conversation: &str,
        name: &ParticipantName,
    ) -> Result<Participant, AppError> {
        let description = self.conversation(conversation).await?.describe().await?;
        description
            .participants
            .iter()
            .find(|p| &p.name == name)
            .map(|p| Participant::new(conversation, p.name.clone(), p.kind))
            .ok_or_else(|| {
                AppError::new(
                    ErrorKind::NotFound,
                    format!("Conversation {conversation} has no participant named {name}."),
                )
            })
    }

    // ---- the calls -----------------------------------------------------------------------------

    /// Creates a conversation; its agents start at once.
    pub async fn create(
        &self,
        _: &Admin,
        title: Option<String>,
        participants: Vec<ParticipantSpec>,
    ) -> Result<Created, AppError> {
        if let Some(title) = &title
            && title.chars().count() > MAX_TITLE_CHARS
        {
            return Err(AppError::bad_request(format!(
                "A title is at most {MAX_TITLE_CHARS} characters."
            )));
        }
        let most = MAX_PARTICIPANTS.min(self.0.max_participants);
        if participants.is_empty() || participants.len() > most {
            return Err(AppError::bad_request(format!(
                "A conversation starts with 1 to {most} participants."
            )));
        }
        let mut stored: Vec<NewParticipant> = Vec::with_capacity(participants.len());
        let mut created = Vec::with_capacity(participants.len());
        for spec in participants {
            if stored.iter().any(|q| q.name == spec.name) {
                return Err(AppError::new(
                    ErrorKind::DuplicateName,
                    format!(
                        "Two participants are named '{}': names are unique in a conversation.",
                        spec.name
                    ),
                ));
            }
            let (participant, token) = self.new_participant(&spec)?;
            stored.push(participant);
            created.push(CreatedParticipant {
                name: spec.name,
                kind: spec.kind,
                agent: spec.agent,
                display_name: spec.display_name,
                token,
            });
        }
        let id = mint_conversation_id();
        self.0
            .store
            .create_conversation(NewConversation {
                id: id.clone(),
                title: title.clone(),
                created_at: self.0.clock.now(),
                participants: stored.clone(),
            })
            .await?;
        for participant in stored {
            self.joined(&id, participant);
        }
        Ok(Created {
            id,
            title,
            participants: created,
        })
    }

    /// Adds a participant to a conversation; its agent starts at once.
    pub async fn add_participant(
        &self,
        _: &Admin,
        conversation: &str,
        spec: ParticipantSpec,
    ) -> Result<CreatedParticipant, AppError> {
        let (participant, token) = self.new_participant(&spec)?;
        let handle = self.conversation(conversation).await?;
        // Each participant costs every message's receipts and every event's fan-out: a
        // conversation's participants are capped, added ones included. (Two adds racing at
        // the cap may both pass; adding is the admin's, not a stranger's.)
        let max = self.0.max_participants;
        if handle.describe().await?.participants.len() >= max {
            return Err(AppError::new(
                ErrorKind::LimitReached,
                format!(
                    "This conversation has {max} participants, the server's limit ([limits] \
                     max_participants): it cannot take another."
                ),
            ));
        }
        handle.add_participant(participant.clone()).await?;
        self.joined(conversation, participant);
        Ok(CreatedParticipant {
            name: spec.name,
            kind: spec.kind,
            agent: spec.agent,
            display_name: spec.display_name,
            token,
        })
    }

    /// Applies one action of `who` for a caller in this process, which holds the result as soon
    /// as it is returned: what it hands over counts as heard at once. Waits for the result (for
    /// `check`, until it returns); dropping the future withdraws a waiting `check`, so nothing is
    /// handed over to nobody.
    pub async fn act(&self, who: &Participant, action: Action) -> Result<Envelope, AppError> {
        Ok(self
            .act_with(who, action, Confirm::Transport)
            .await?
            .delivered())
    }

    /// Applies one action of `who` for a client across a transport. A result that hands
    /// something over is tentative: with [`Confirm::Transport`] it comes with a pending ticket,
    /// which the caller confirms once the result reached the client (or drops, and the result's
    /// messages come again); with [`Confirm::Client`] the client's own next report decides, and
    /// the report this request carries is applied before the action.
    pub async fn act_with(
        &self,
        who: &Participant,
        action: Action,
        confirm: Confirm,
    ) -> Result<Acted, AppError> {
        Ok(self.begin_act(who, action, confirm).await?.finish().await?)
    }

    /// [`App::act_with`] up to the wait: the action handed to its conversation. What waits for
    /// the result (a `check`, for up to a minute) then holds only the small [`Pending`].
    pub(crate) async fn begin_act(
        &self,
        who: &Participant,
        action: Action,
        confirm: Confirm,
    ) -> Result<Pending, AppError> {
        let mut action = action;
        if let Action::Send {
            attachment: Some(named),
            ..
        } = &mut action
        {
            let stored = self.attachment(who, &named.id).await?;
            named.mime = stored.mime;
            named.bytes = stored.data.len() as u64;
        }
        let handle = self.conversation(who.conversation()).await?;
        Ok(handle.begin(who.name().clone(), action, confirm).await?)
    }

    /// Title, participants, last seq, receipts, who composes and who waits in `check`.
    pub async fn describe(&self, access: &Reader) -> Result<Description, AppError> {
        Ok(self
            .conversation(access.conversation())
            .await?
            .describe()
            .await?)
    }

    /// The description of `who`'s conversation (the caller adds `who` itself).
    pub async fn whoami(&self, who: &Participant) -> Result<Description, AppError> {
        self.describe(&Reader::new(who.conversation())).await
    }

    /// Messages with `seq > after`, oldest first, at most `limit` (default
    /// [`HISTORY_DEFAULT_LIMIT`], at most [`HISTORY_MAX_LIMIT`]). Moves no cursor. A `limit`
    /// of 0 returns no message, and `more` says whether any follow `after`.
    pub async fn history(
        &self,
        who: &Participant,
        after: u64,
        limit: Option<usize>,
    ) -> Result<HistoryPage, AppError> {
        let limit = limit
            .unwrap_or(HISTORY_DEFAULT_LIMIT)
            .min(HISTORY_MAX_LIMIT);
        let mut messages = self
            .0
            .store
            .messages_after(who.conversation(), after, limit + 1)
            .await?;
        let more = messages.len() > limit;
        messages.truncate(limit);
        Ok(HistoryPage { messages, more })
    }

    /// Stores a photo `who` uploads to its conversation: at most the configured
    /// `max_attachment_bytes`, its first bytes matching `mime` (one of
    /// [`super::ATTACHMENT_TYPES`]). Durable when this returns.
    pub async fn attach(
        &self,
        who: &Participant,
        mime: &str,
        data: Vec<u8>,
    ) -> Result<AttachmentInfo, AppError> {
        let max = self.0.max_attachment_bytes;
        if data.len() > max {
            return Err(AppError::new(
                ErrorKind::TooLarge,
                format!(
                    "The attachment is {} bytes; this server takes at most {max} \
                     (max_attachment_bytes).",
                    data.len()
                ),
            ));
        }
        if data.is_empty() {
            return Err(AppError::bad_request("The attachment is empty."));
        }
        check_attachment(mime, &data).map_err(AppError::bad_request)?;
        let info = AttachmentInfo {
            id: mint_conversation_id(),
            mime: mime.to_owned(),
            bytes: data.len(),
        };
        self.0
            .store
            .put_attachment(
                who.conversation(),
                NewAttachment {
                    id: info.id.clone(),
                    mime: info.mime.clone(),
                    data,
                    created_at: self.0.clock.now(),
                },
            )
            .await?;
        Ok(info)
    }

    /// An attachment of `who`'s conversation.
    pub async fn attachment(
        &self,
        who: &Participant,
        id: &str,
    ) -> Result<StoredAttachment, AppError> {
        self.0
            .store
            .attachment(who.conversation(), id)
            .await?
            .ok_or_else(|| {
                AppError::new(
                    ErrorKind::NotFound,
                    format!("This conversation has no attachment {id:?}."),
                )
            })
    }

    /// Live events of `who`'s conversation, and the last seq committed before them.
    pub async fn subscribe(&self, who: &Participant) -> Result<Subscription, AppError> {
        let handle = self.conversation(who.conversation()).await?;
        let (live, last_seq) = handle.subscribe().await?;
        Ok(Subscription { live, last_seq })
    }

    /// The configured built-in agents, in name order. Names only: nothing secret.
    pub fn agents(&self) -> Vec<AgentInfo> {
        self.0.agents.agents()
    }

    /// How many conversations are loaded in memory right now (idle ones are unloaded after
    /// `idle_conversation_ms`).
    pub fn loaded_conversations(&self) -> usize {
        self.0.registry.loaded()
    }

    /// `Ok` when the store answers.
    pub async fn health(&self) -> Result<(), AppError> {
        Ok(self.0.store.ping().await?)
    }

    /// Starts the agent of every participant played by a built-in agent, so a restart picks up
    /// where the agents were. On a cluster, only of the conversations this node can own: the
    /// others' agents run on their owners.
    pub async fn start_agents(&self) -> Result<(), AppError> {
        if self.0.node.is_some() {
            let mut conversations: Vec<String> = self
                .0
                .store
                .agent_participants()
                .await?
                .into_iter()
                .map(|p| p.conversation)
                .collect();
            conversations.dedup();
            for id in conversations {
                self.adopt(&id).await;
            }
            return Ok(());
        }
        for participant in self.0.store.agent_participants().await? {
            let who = Participant::new(
                &participant.conversation,
                participant.name,
                participant.kind,
            );
            self.0.agents.launch(self.context(who), &participant.agent);
        }
        Ok(())
    }

    // ---- several nodes ---------------------------------------------------------------------------

    /// This process as a node of a cluster, if it is one.
    pub fn node(&self) -> Option<&Node> {
        self.0.node.as_deref()
    }

    /// Where requests for conversation `id` are served: here (it is loaded here, or is now,
    /// or does not exist), or at the node that owns it.
    pub async fn locate(&self, id: &str) -> Result<Location, AppError> {
        if self.0.node.is_none() || self.0.registry.is_here(id) {
            return Ok(Location::Here);
        }
        let now = self.0.clock.instant();
        if let Some((url, at)) = self.remote().get(id)
            && now.duration_since(*at) < REMOTE_OWNER_TTL
        {
            return Ok(Location::At(url.clone()));
        }
        match self.0.registry.get(id).await? {
            Found::Here(_) | Found::Missing => {
                self.forget_location(id);
                Ok(Location::Here)
            }
            Found::Elsewhere(url) => {
                let mut remote = self.remote();
                if remote.len() >= 100_000 {
                    remote.retain(|_, (_, at)| now.duration_since(*at) < REMOTE_OWNER_TTL);
                }
                remote.insert(id.to_owned(), (url.clone(), now));
                Ok(Location::At(url))
            }
        }
    }

    /// The conversation a participant's token opens (`None` for the admin's or an unknown
    /// token), without counting against the token's rate limit: for routing a request to the
    /// node that serves it, which counts it.
    pub async fn conversation_of_token(&self, token: &str) -> Result<Option<String>, AppError> {
        self.0.auth.conversation_of(token, &*self.0.store).await
    }

    /// Forgets where conversation `id` was last found (its node did not answer, or said it
    /// no longer owns it).
    pub fn forget_location(&self, id: &str) {
        self.remote().remove(id);
    }

    fn remote(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (String, tokio::time::Instant)>>
    {
        self.0.remote.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps this node's lease until shutdown: renews it every third of its length, evicts the
    /// conversations it lost, and adopts agent conversations whose node died. Returns at once
    /// if this process is not a node.
    pub async fn run_node(&self) {
        let Some(node) = self.0.node.clone() else {
            return;
        };
        let Some(mut adoptions) = self
            .0
            .adoptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let lease = node.lease();
        let mut renewed = self.0.clock.instant();
        let mut tick = tokio::time::interval(lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.0.shutdown.cancelled() => return,
                Some(id) = adoptions.recv() => {
                    self.adopt(&id).await;
                    continue;
                }
                _ = tick.tick() => {}
            }
            let started = self.0.clock.instant();
            match node.cluster().heartbeat().await {
                Ok(owned) => {
                    let owned = owned.into_iter().collect();
                    renewed = started;
                    self.0.registry.evict_lost(&owned, started);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot renew this node's lease");
                    if started.duration_since(renewed) >= lease {
                        let evicted = self.0.registry.evict_all();
                        if evicted > 0 {
                            tracing::warn!(evicted, "this node's lease ran out");
                        }
                    }
                    continue;
                }
            }
            match node.cluster().orphans().await {
                Ok(orphans) => {
                    for id in orphans {
                        self.adopt(&id).await;
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot look for orphaned agents"),
            }
        }
    }

    /// Takes conversation `id` if nobody else runs it, and starts its agents here.
    async fn adopt(&self, id: &str) {
        let handle = match self.0.registry.get(id).await {
            Ok(Found::Here(handle)) => handle,
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(%error, conversation = id, "cannot take over a conversation");
                return;
            }
        };
        let Ok(description) = handle.describe().await else {
            return;
        };
        drop(handle);
        for participant in description.participants {
            if let Some(agent) = &participant.agent {
                let who = Participant::new(id, participant.name.clone(), participant.kind);
                self.0.agents.launch(self.context(who), agent);
            }
        }
    }

    // ---- what the other layers may know --------------------------------------------------------

    /// The server's clock.
    pub fn clock(&self) -> Clock {
        self.0.clock
    }

    /// Fires when the server shuts down.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    /// The protocol's limits.
    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    // ---- helpers for the context and this module -----------------------------------------------

    fn context(&self, who: Participant) -> AgentContext {
        AgentContext::new(Arc::new(self.clone()), who)
    }

    /// The conversation's live handle, loading it if needed: the one place that finds a
    /// conversation (idle ones are unloaded behind it; remote owners would live here too).
    async fn conversation(&self, id: &str) -> Result<Handle, AppError> {
        match self.0.registry.get(id).await? {
            Found::Here(handle) => Ok(handle),
            Found::Missing => Err(AppError::conversation_not_found()),
            // Requests are forwarded to the owner before they get here; only a race with a
            // move (or an agent whose conversation moved) ends here.
            Found::Elsewhere(_) => Err(AppError::moved()),
        }
    }

    fn new_participant(
        &self,
        spec: &ParticipantSpec,
    ) -> Result<(NewParticipant, String), AppError> {
        if let Some(agent) = &spec.agent
            && !self.0.agents.knows(agent)
        {
            return Err(AppError::new(
                ErrorKind::UnknownAgent,
                format!("No built-in agent named '{agent}' is configured on this server."),
            ));
        }
        let token = mint_token();
        Ok((
            NewParticipant {
                name: spec.name.clone(),
                kind: spec.kind,
                agent: spec.agent.clone(),
                display_name: spec.display_name.clone(),
                token_hash: hash_token(&token),
            },
            token,
        ))
    }

    /// A participant is in the store: its token resolves without a lookup, its agent starts.
    fn joined(&self, conversation: &str, participant: NewParticipant) {
        let who = Participant::new(conversation, participant.name.clone(), participant.kind);
        self.0.auth.remember(
            participant.token_hash,
            TokenOwner {
                conversation: conversation.to_owned(),
                name: participant.name,
                kind: participant.kind,
            },
        );
        if let Some(agent) = &participant.agent {
            self.0.agents.launch(self.context(who), agent);
        }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

/// What an agent's context reaches: exactly these, through the service.
#[async_trait]
impl Port for App {
    async fn act(&self, who: &Participant, action: Action) -> Result<Envelope, AppError> {
        App::act(self, who, action).await
    }

    async fn subscribe(&self, who: &Participant) -> Result<Subscription, AppError> {
        App::subscribe(self, who).await
    }

    fn store(&self) -> &dyn Store {
        &*self.0.store
    }

    fn clock(&self) -> Clock {
        self.0.clock
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    fn limits(&self) -> &Limits {
        &self.0.limits
    }
}
