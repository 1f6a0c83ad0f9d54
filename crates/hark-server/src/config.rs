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
    /// Requests per second allowed per token; 0 turns the limit off.
    pub rate_limit_per_s: u32,
    /// Requests a token may make in a burst above the steady rate.
    pub rate_limit_burst: u32,
    /// Interval of SSE keep-alive comments, in milliseconds.
    pub keepalive_ms: u64,
    /// A connection that has not sent a request's headers within this long is closed
    /// (slow-loris defence).
    pub header_read_timeout_ms: u64,
    /// A request body that has not fully arrived within this long is refused.
    pub body_read_timeout_ms: u64,
    /// The protocol's limits. `typing_timeout_ms` is also the built-in agents' engine's: one
    /// source for the lease length everyone sees.
    pub limits: Limits,
    /// `Host` header values `/mcp` answers (rmcp's DNS-rebinding guard); empty allows any.
    pub mcp_allowed_hosts: Vec<String>,
    /// Largest attachment accepted, in bytes after decoding (`[limits] max_attachment_bytes`).
    pub max_attachment_bytes: usize,
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
            max_attachment_bytes: 5 * 1024 * 1024,
        }
    }
}

/// Loopback only, as rmcp defaults: a browser page elsewhere cannot reach a local `hark serve`
/// through a DNS name it controls.
pub fn default_mcp_allowed_hosts() -> Vec<String> {
    ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(String::from)
        .collect()
}
