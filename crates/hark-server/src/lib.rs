//! hark's server: the HTTP/SSE surface of SPEC.md section 3, MCP (section 5) and the tasks that
//! drive the core.
//!
//! [`Server::new`] wires a [`Store`] to the routes; [`Server::serve`] runs them on a listener the
//! caller bound (tests bind port 0) until the shutdown token fires, then ends open event streams,
//! MCP sessions and waiting `check` calls so that shutdown never hangs.

pub mod agents;
mod auth;
mod conversation;
mod error;
mod events;
pub mod mcp;
mod routes;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;

use hark_core::protocol::Limits;
use hark_store::{Store, TokenOwner};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::ApiError;

/// Concurrent requests one HTTP/2 connection may carry.
const MAX_HTTP2_STREAMS: u32 = 16_384;

type HttpService = TowerToHyperService<axum::Router>;

async fn serve_http1(
    stream: tokio::net::TcpStream,
    service: HttpService,
    shutdown: CancellationToken,
    header_timeout: Duration,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    until_shutdown(
        builder.serve_connection(TokioIo::new(stream), service),
        shutdown,
    )
    .await;
}

async fn serve_http2(
    stream: tokio::net::TcpStream,
    service: HttpService,
    shutdown: CancellationToken,
) {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_HTTP2_STREAMS);
    until_shutdown(
        builder.serve_connection(TokioIo::new(stream), service),
        shutdown,
    )
    .await;
}

/// Serves a connection until it ends; on shutdown, lets its requests in flight finish first.
async fn until_shutdown<C: GracefulConnection>(connection: C, shutdown: CancellationToken) {
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Whether the connection opens with HTTP/2's preface (`PRI * HTTP/2.0…`), without consuming
/// anything. HTTP/1.1 methods never start with "PR", so two bytes decide.
async fn is_http2_preface(stream: &tokio::net::TcpStream) -> std::io::Result<bool> {
    let mut head = [0u8; 2];
    loop {
        let n = stream.peek(&mut head).await?;
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            1 if head[0] != b'P' => return Ok(false),
            // One byte so far, and it could start either: wait for the next.
            1 => tokio::time::sleep(Duration::from_millis(1)).await,
            _ => return Ok(&head == b"PR"),
        }
    }
}
use mcp::{ParticipantSession, ToolError};

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
    /// `Host` header values `/mcp` answers (rmcp's DNS-rebinding guard); empty allows any.
    pub mcp_allowed_hosts: Vec<String>,
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
            mcp_allowed_hosts: default_mcp_allowed_hosts(),
        }
    }
}

/// Once shutdown fires, waiting `check` calls answer at once (`timed_out: true`). MCP requests
/// in flight are given the time to deliver that answer before their sessions are ended; ending
/// the sessions at the same instant would cut the answer off.
async fn end_mcp_sessions(state: AppState) {
    /// A request still running after this (a store that hangs) is cut off after all.
    const GRACE: std::time::Duration = std::time::Duration::from_secs(5);
    state.shutdown.cancelled().await;
    state.mcp_posts.close();
    if tokio::time::timeout(GRACE, state.mcp_posts.wait())
        .await
        .is_err()
    {
        tracing::warn!("MCP tool calls still running at shutdown are cut off");
    }
    state.mcp_shutdown.cancel();
}

/// Loopback only, as rmcp defaults: a browser page elsewhere cannot reach a local `hark serve`
/// through a DNS name it controls.
pub fn default_mcp_allowed_hosts() -> Vec<String> {
    ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(String::from)
        .collect()
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
    /// `POST /mcp` requests whose answer is not delivered yet, so that shutdown can let them
    /// answer before it ends the MCP sessions.
    mcp_posts: TaskTracker,
    /// Ends MCP sessions: cancelled once `shutdown` fired and the running tool calls answered.
    mcp_shutdown: CancellationToken,
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
                mcp_posts: TaskTracker::new(),
                mcp_shutdown: CancellationToken::new(),
            })),
            tracker,
        }
    }

    /// Every route, `/mcp` included. Serve it with [`Server::serve`], which also ends the MCP
    /// sessions on shutdown.
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

    /// `name` in conversation `conversation`, acting in this process: what `hark mcp --db` serves.
    pub async fn participant_session(
        &self,
        conversation: &str,
        name: &str,
    ) -> Result<Arc<dyn ParticipantSession>, ToolError> {
        let name = routes::participant_name(name)?;
        let handle = routes::conversation(&self.state, conversation).await?;
        let description = handle.describe().await.map_err(routes::act_error)?;
        let Some(kind) = description
            .participants
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, kind, _)| *kind)
        else {
            return Err(ToolError::new(
                "not_found",
                format!("Conversation {conversation} has no participant named {name}."),
            ));
        };
        let owner = TokenOwner {
            conversation: conversation.to_owned(),
            name,
            kind,
        };
        Ok(Arc::new(mcp::LocalSession::new(self.state.clone(), owner)))
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
        tokio::spawn(end_mcp_sessions(self.state.clone()));
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
            // HTTP/1.1, and HTTP/2 with prior knowledge (h2c): a client that keeps many calls
            // open (thousands of waiting `check`s) multiplexes them on one connection instead
            // of paying hyper's fixed 16 KiB of buffers per HTTP/1.1 connection. A small task
            // peeks at the preface and spawns the connection's own task, so an HTTP/1.1
            // connection's future is not sized for HTTP/2's state machine.
            let tracker = connections.clone();
            connections.spawn(async move {
                match tokio::time::timeout(header_timeout, is_http2_preface(&stream)).await {
                    Ok(Ok(true)) => tracker.spawn(serve_http2(stream, service, shutdown)),
                    Ok(Ok(false)) => {
                        tracker.spawn(serve_http1(stream, service, shutdown, header_timeout))
                    }
                    // Nothing arrived in time, or the peer went away: drop the connection.
                    Ok(Err(_)) | Err(_) => return,
                };
            });
        }
        drop(listener);
        connections.close();
        connections.wait().await;
        self.tracker.close();
        Ok(())
    }
}
