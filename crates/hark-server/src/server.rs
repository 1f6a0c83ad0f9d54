//! [`Server`]: the service wired to its front doors. It builds the [`App`], mounts the HTTP
//! routes and `/mcp` on it, starts the agents, and runs the accept loop.

use std::sync::Arc;
use std::time::Duration;

use hark_core::protocol::{Action, Envelope, ParticipantKind, ParticipantName};
use hark_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept;
use crate::agents::Supervisor;
use crate::app::{AgentLauncher, App, AppError, Caller, NoAgents, Node, ParticipantSpec};
use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::mcp::http::McpShutdown;
use crate::mcp::local::LocalSession;
use crate::mcp::{ParticipantSession, ToolError};
use crate::routes::{self, HttpState};

/// A hark server: the service and its front doors.
pub struct Server {
    app: App,
    config: Arc<ServerConfig>,
    mcp: McpShutdown,
    /// The conversation tasks.
    tasks: TaskTracker,
}

impl Server {
    /// A server on `store` without built-in agents, on the system clock.
    pub fn new(store: Arc<dyn Store>, config: ServerConfig, shutdown: CancellationToken) -> Self {
        Server::with_clock(store, config, Arc::new(NoAgents), Clock::system(), shutdown)
    }

    /// A server that also runs the built-in agents the supervisor knows, on the system clock.
    pub fn with_agents(
        store: Arc<dyn Store>,
        config: ServerConfig,
        agents: Supervisor,
        shutdown: CancellationToken,
    ) -> Self {
        Server::with_clock(store, config, Arc::new(agents), Clock::system(), shutdown)
    }

    /// A server that is one node of several on a shared database (see `app::cluster`).
    pub fn node(
        store: Arc<dyn Store>,
        config: ServerConfig,
        agents: Supervisor,
        node: Node,
        shutdown: CancellationToken,
    ) -> Self {
        Server::build(
            store,
            config,
            Arc::new(agents),
            Clock::system(),
            shutdown,
            Some(Arc::new(node)),
        )
    }

    /// A server on `clock`: tests pass [`Clock::starting_at`] under tokio's paused time to run
    /// the whole server, agents included, on a virtual clock.
    pub fn with_clock(
        store: Arc<dyn Store>,
        config: ServerConfig,
        agents: Arc<dyn AgentLauncher>,
        clock: Clock,
        shutdown: CancellationToken,
    ) -> Self {
        Server::build(store, config, agents, clock, shutdown, None)
    }

    fn build(
        store: Arc<dyn Store>,
        config: ServerConfig,
        agents: Arc<dyn AgentLauncher>,
        clock: Clock,
        shutdown: CancellationToken,
        node: Option<Arc<Node>>,
    ) -> Self {
        let tasks = TaskTracker::new();
        let app = App::new(store, &config, agents, clock, shutdown, tasks.clone(), node);
        Server {
            app,
            config: Arc::new(config),
            mcp: McpShutdown::default(),
            tasks,
        }
    }

    /// The service, for embedding and in-process tests.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Every route, `/mcp` included. Serve it with [`Server::serve`], which also ends the MCP
    /// sessions on shutdown.
    pub fn router(&self) -> axum::Router {
        let state = HttpState {
            app: self.app.clone(),
            config: Arc::clone(&self.config),
            streams: Arc::default(),
        };
        let mcp =
            crate::mcp::http::router(self.app.clone(), Arc::clone(&self.config), self.mcp.clone());
        routes::router(state, mcp)
    }

    /// Starts the agent task of every participant played by a built-in agent, so a restart
    /// picks up where the agents were.
    pub async fn start_agents(&self) -> Result<(), AppError> {
        self.app.start_agents().await
    }

    /// Creates a conversation in process (for `hark talk` and embedded use): participants are
    /// `(name, kind, agent)`; returns the id and each participant's token.
    pub async fn create_conversation(
        &self,
        title: Option<String>,
        participants: Vec<(ParticipantName, ParticipantKind, Option<String>)>,
    ) -> Result<(String, Vec<String>), AppError> {
        // In process, the caller holds the server itself: it is the admin.
        let admin = self.app.admin(&Caller::Admin)?;
        let participants = participants
            .into_iter()
            .map(|(name, kind, agent)| ParticipantSpec {
                name,
                kind,
                agent,
                display_name: None,
            })
            .collect();
        let created = self.app.create(&admin, title, participants).await?;
        let tokens = created.participants.into_iter().map(|p| p.token).collect();
        Ok((created.id, tokens))
    }

    /// Applies one participant's action in process.
    pub async fn act(
        &self,
        conversation: &str,
        who: ParticipantName,
        action: Action,
    ) -> Result<Envelope, AppError> {
        let me = self.app.participant_named(conversation, &who).await?;
        self.app.act(&me, action).await
    }

    /// `name` in conversation `conversation`, acting in this process: what `hark mcp --db` serves.
    pub async fn participant_session(
        &self,
        conversation: &str,
        name: &str,
    ) -> Result<Arc<dyn ParticipantSession>, ToolError> {
        let name = ParticipantName::parse(name).map_err(|e| {
            ToolError::new(
                "bad_request",
                format!("Bad participant name {name:?}: {e}."),
            )
        })?;
        let me = self.app.participant_named(conversation, &name).await?;
        Ok(Arc::new(LocalSession::new(self.app.clone(), me)))
    }

    /// Serves until the shutdown token fires and every connection has finished.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        if let Err(error) = self.start_agents().await {
            tracing::error!(%error, "cannot list the agents' participants; agents do not run");
        }
        let shutdown = self.app.shutdown().clone();
        tokio::spawn(self.mcp.clone().run(shutdown.clone()));
        let app = self.app.clone();
        tokio::spawn(async move { app.run_node().await });
        let edge = routes::edge::Edge {
            app: self.app.clone(),
            allowed_hosts: self
                .config
                .allowed_hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            port: listener.local_addr()?.port(),
        };
        // A forwarded body is read whole first: at most what any route takes.
        let max_body =
            self.config
                .max_body_bytes
                .max(routes::conversations::attachment_body_limit(
                    self.config.max_attachment_bytes,
                ));
        let body_timeout = Duration::from_millis(self.config.body_read_timeout_ms);
        let router = routes::forward::layer(self.router(), &self.app, max_body, body_timeout);
        let caps = &self.config.caps;
        let bounds = accept::Bounds {
            max_connections: caps.max_connections,
            header_timeout: Duration::from_millis(self.config.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(caps.idle_timeout_ms),
            drain: Duration::from_millis(caps.shutdown_drain_ms),
        };
        accept::serve(listener, router, edge, bounds, shutdown).await;
        self.tasks.close();
        if let Some(node) = self.app.node() {
            // Let the conversations store what they must, then hand them to the other nodes
            // at once rather than after the lease.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
            if let Err(error) = node.leave().await {
                tracing::warn!(%error, "cannot leave the cluster; the others wait for the lease");
            }
        }
        Ok(())
    }
}
