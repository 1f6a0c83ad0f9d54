//! The MCP front door (SPEC.md section 5): one tool server, reached three ways.
//!
//! [`HarkMcp`] is the `rmcp` server handler; its tools are the table of `crate::tools` (`append`,
//! `undo`, `reset`, `preview`, `push`, `check`, `history`, `whoami`). It is written against
//! [`ParticipantSession`], one participant's view of one conversation, which has two
//! implementations:
//!
//! - **local** (`local`, for `/mcp` on `hark serve` and `hark mcp --db`): calls the service;
//! - **remote** ([`RemoteSession`]): HTTP calls to a running `hark serve` with the participant's
//!   token, for `hark mcp --url … --token …`.
//!
//! Both speak the JSON of the HTTP API (`wire`), so a tool's structured content is byte for byte
//! what the same action answers over HTTP, and an error carries the same code and sentence.
//! `render` turns that JSON into the text a model reads; `http` mounts `/mcp`; `stdio` serves a
//! session over stdin/stdout; `delivery` holds each answer's [`Delivery`] until whoever writes
//! the answer knows whether it reached the client.
//!
//! **Invariant:** an answer counts as heard only once it reached the MCP client: the `/mcp`
//! response body was taken whole, the stdio line was written and flushed, or (`hark mcp --url`)
//! the bridge reports with `Hark-Received` on its next request that it wrote the answer.
//!
//! **Invariant:** the MCP surface adds no protocol of its own. Every tool is one action of
//! SPEC.md section 2 (or a read: `history`, `whoami`) and its result is that action's envelope;
//! the text content is a rendering of the structured content and nothing else.

mod delivery;
mod handler;
pub(crate) mod http;
pub(crate) mod local;
mod remote;
pub(crate) mod render;
mod session;
mod stdio;

pub use handler::{HarkMcp, MAX_MCP_CHECK_MS};
pub use remote::RemoteSession;
pub use session::{Answer, Delivery, ParticipantSession, ToolError};
pub use stdio::serve_stdio;
