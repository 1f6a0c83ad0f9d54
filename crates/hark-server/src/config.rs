//! [`ServerConfig`]: everything the server can be told. The binary fills it from the CLI, the
//! config file and the environment; each knob is documented here once.

use hark_core::protocol::Limits;

/// Everything the server can be told; the binary fills it from the CLI, config and environment.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The admin token; `None` leaves admin routes open only if `admin_open` is set.
    pub admin_token: Option<String>,
    /// Admin routes need no token (only ever set for a loopback listener without admin token).
    pub admin_open: bool,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Requests per second allowed per token, and per peer address for requests without a
    /// known token; 0 turns the limit off.
    pub rate_limit_per_s: u32,
    /// Requests a token (or a peer) may make in a burst above the steady rate.
    pub rate_limit_burst: u32,
    /// Interval of SSE keep-alive comments, in milliseconds.
    pub keepalive_ms: u64,
    /// A connection that has not sent a request's headers within this long is closed
    /// (slow-loris defence); an idle HTTP/1.1 keep-alive connection too.
    pub header_read_timeout_ms: u64,
    /// A request body that has not fully arrived within this long is refused.
    pub body_read_timeout_ms: u64,
    /// The protocol's limits. `typing_timeout_ms` is also the built-in agents' engine's: one
    /// source for the lease length everyone sees.
    pub limits: Limits,
    /// The server's own resource caps (`[limits]` in the config file, beside the protocol's).
    pub caps: Caps,
    /// Host names answered besides the loopback names with the bound port (`localhost`,
    /// `127.0.0.1`, `[::1]`); `"*"` answers any `Host` (a public server behind its own names).
    pub allowed_hosts: Vec<String>,
    /// A conversation with nothing going on (no event stream or agent subscribed, no waiting
    /// `check`, no unconfirmed result, no typing lease) for this long is unloaded from memory;
    /// the next request loads it again. 0 keeps every conversation loaded.
    pub idle_conversation_ms: u64,
    /// Largest attachment accepted, in bytes after decoding (`[limits] max_attachment_bytes`).
    pub max_attachment_bytes: usize,
}

/// How much of the machine one server, one participant or one conversation may hold: every
/// resource a client can make the server keep has a cap here, and reaching it is a 4xx JSON
/// error whose sentence names the knob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Open connections at once; one more is answered `503` and closed.
    pub max_connections: usize,
    /// An HTTP/2 connection without a request in flight for this long is closed (HTTP/1.1
    /// keep-alive connections wait at most `header_read_timeout_ms` for their next request).
    pub idle_timeout_ms: u64,
    /// On SIGTERM, connections get this long to finish; what is left is then closed.
    pub shutdown_drain_ms: u64,
    /// Event streams one participant may hold open.
    pub max_streams_per_participant: usize,
    /// MCP sessions one participant may hold open.
    pub max_mcp_sessions_per_participant: usize,
    /// MCP sessions open at once on the whole server.
    pub max_mcp_sessions: usize,
    /// An MCP session without a request for this long ends.
    pub mcp_session_idle_ms: u64,
    /// Participants one conversation may have, added ones included.
    pub max_participants: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_connections: 4096,
            idle_timeout_ms: 60_000,
            shutdown_drain_ms: 10_000,
            max_streams_per_participant: 8,
            max_mcp_sessions_per_participant: 8,
            max_mcp_sessions: 1024,
            mcp_session_idle_ms: 120_000,
            max_participants: 256,
        }
    }
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
            caps: Caps::default(),
            allowed_hosts: Vec::new(),
            idle_conversation_ms: 60_000,
            max_attachment_bytes: 5 * 1024 * 1024,
        }
    }
}
