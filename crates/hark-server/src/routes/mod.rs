//! The HTTP front door (SPEC.md section 3, except `/mcp`, which `mcp::http` mounts): each route
//! reads the token and the body, calls the service once, and encodes the answer with `wire`.
//!
//! `router` assembles the routes; `conversations` holds the handlers of `/v1/…`, `sse` the event
//! stream, `input` the token and body readers, `error` the one mapping from service errors to
//! status codes, `delivery` the response body that reports whether it reached the client,
//! `state` what the handlers share, `holds` what each participant holds open, `edge` the checks every request passes first when served
//! on a listener.

pub(crate) mod conversations;
pub(crate) mod delivery;
pub(crate) mod edge;
pub(crate) mod error;
pub(crate) mod forward;
pub(crate) mod holds;
mod input;
mod router;
mod sse;
mod state;

pub use conversations::decode_action_request;
pub use error::ApiError;
pub(crate) use input::bearer;
pub(crate) use router::router;
pub(crate) use state::HttpState;
