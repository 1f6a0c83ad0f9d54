//! hark's server: the HTTP/SSE surface of SPEC.md section 3 and the tasks that drive the core.
//!
//! [`Server::new`] wires a [`Store`] to the routes; [`Server::serve`] runs them on a listener the
//! caller bound (tests bind port 0) until the shutdown token fires, then ends open event streams
//! and waiting `check` calls so that shutdown never hangs.

pub mod agents;
mod auth;
mod conversation;
mod error;
mod events;
mod routes;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use hark_core::protocol::Limits;
use hark_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::ApiError;

/// Decodes the body of `POST /v1/conversations/{id}/{action}` exactly as the route does: the
/// entry point the request-decoding fuzz target drives.
pub fn decode_action_request(
    action: &str,
    body: &[u8],
) -> Result<hark_core::protocol::Action, ApiError> {
    let kind = hark_core::protocol::ActionKind::parse(action)
        .ok_or_else(|| ApiError::bad_request(format!("Unknown action '{action}'.")))?;
    wire::decode_action(kind, body)
}

/// Everything the server can be told; the binary fills it from the CLI, config and environment.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The admin token; `None` leaves admin routes open only if `admin_open` is set.
    pub admin_token: Option<String>,
    /// Admin routes need no token (only ever set for a loopback listener without admin token).
    pub admin_open: bool,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Requests per second allowed per token; 0 turns the limit off.
    pub rate_limit_per_s: u32,
    /// Requests a token may make in a burst above the steady rate.
    pub rate_limit_burst: u32,
    /// Interval of SSE keep-alive comments.
    pub keepalive_ms: u64,
    /// A connection that has not sent a request's headers within this long is closed
    /// (slow-loris defence).
    pub header_read_timeout_ms: u64,
    /// A request body that has not fully arrived within this long is refused.
    pub body_read_timeout_ms: u64,
    /// The protocol's limits.
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            admin_token: None,
            admin_open: true,
            max_body_bytes: 1024 * 1024,
            rate_limit_per_s: 200,
            rate_limit_burst: 400,
            keepalive_ms: 15_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            limits: Limits::default(),
        }
    }
}

/// Shared by every request handler.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

pub(crate) struct Inner {
    store: Arc<dyn Store>,
    registry: conversation::Registry,
    auth: auth::Auth,
    agents: agents::Supervisor,
    config: ServerConfig,
    shutdown: CancellationToken,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

pub struct Server {
    state: AppState,
    tracker: TaskTracker,
}

impl Server {
    pub fn new(store: Arc<dyn Store>, config: ServerConfig, shutdown: CancellationToken) -> Self {
        Server::with_agents(
            store,
            config,
            agents::Supervisor::new(Vec::new(), None),
            shutdown,
        )
    }

    /// A server that also runs the built-in agents the supervisor knows.
    pub fn with_agents(
        store: Arc<dyn Store>,
        config: ServerConfig,
        agents: agents::Supervisor,
        shutdown: CancellationToken,
    ) -> Self {
        let tracker = TaskTracker::new();
        let registry = conversation::Registry::new(
            Arc::clone(&store),
            config.limits.clone(),
            shutdown.clone(),
            tracker.clone(),
        );
        let auth = auth::Auth::new(
            config.admin_token.as_deref(),
            config.admin_open,
            config.rate_limit_per_s,
            config.rate_limit_burst,
        );
        Server {
            state: AppState(Arc::new(Inner {
                store,
                registry,
                auth,
                agents,
                config,
                shutdown,
            })),
            tracker,
        }
    }

    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }

    /// Starts the agent task of every participant played by a built-in agent, so a restart
    /// picks up where the agents were.
    pub async fn start_agents(&self) -> Result<(), hark_store::StoreError> {
        for participant in self.state.store.agent_participants().await? {
            self.state.agents.start(
                &self.state,
                &participant.conversation,
                participant.name,
                &participant.agent,
            );
        }
        Ok(())
    }

    /// Creates a conversation in process (for `hark talk` and embedded use): participants are
    /// `(name, kind, agent)`; returns the id and each participant's token.
    pub async fn create_conversation(
        &self,
        title: Option<String>,
        participants: Vec<(
            hark_core::protocol::ParticipantName,
            hark_core::protocol::ParticipantKind,
            Option<String>,
        )>,
    ) -> Result<(String, Vec<String>), ApiError> {
        routes::create(&self.state, title, participants).await
    }

    /// Applies one participant's action in process.
    pub async fn act(
        &self,
        conversation: &str,
        who: hark_core::protocol::ParticipantName,
        action: hark_core::protocol::Action,
    ) -> Result<hark_core::protocol::Envelope, ApiError> {
        let handle = routes::conversation(&self.state, conversation).await?;
        handle.act(who, action).await.map_err(routes::act_error)
    }

    /// Serves until the shutdown token fires and every connection has finished.
    ///
    /// A hand-written accept loop rather than `axum::serve`, because that one sets no timer and
    /// so no header-read timeout: a client dribbling headers could hold a socket forever.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        if let Err(error) = self.start_agents().await {
            tracing::error!(%error, "cannot list the agents' participants; agents do not run");
        }
        let shutdown = self.state.shutdown.clone();
        let router = self.router();
        let header_timeout = Duration::from_millis(self.state.config.header_read_timeout_ms);
        let connections = TaskTracker::new();
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Running out of file descriptors must not end the server: back off.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(router.clone());
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout);
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let mut connection = std::pin::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => {}
                    _ = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            });
        }
        drop(listener);
        connections.close();
        connections.wait().await;
        self.tracker.close();
        Ok(())
    }
}
