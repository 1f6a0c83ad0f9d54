//! hark's server: the service layer and its three front doors — the HTTP/SSE surface of SPEC.md
//! section 3, MCP (section 5) and the built-in agents (section 6).
//!
//! Start reading at [`app::App`], the one service API every front door calls. [`Server`] wires
//! it to the routes and the accept loop: [`Server::new`] takes a [`hark_store::Store`],
//! [`Server::serve`] runs on a listener the caller bound (tests bind port 0) until the shutdown
//! token fires, then ends open event streams, MCP sessions and waiting `check` calls so that
//! shutdown never hangs. Every `now` and every deadline comes from one [`Clock`].
//!
//! This file is the public API only.
#![warn(missing_docs)]

mod accept;
pub mod agents;
pub mod app;
mod clock;
mod config;
pub mod mcp;
mod routes;
mod server;
mod tools;
mod wire;

pub use app::{AppError, ErrorKind};
pub use clock::Clock;
pub use config::{Caps, ServerConfig};
pub use routes::{ApiError, decode_action_request};
pub use server::Server;
