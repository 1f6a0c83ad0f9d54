//! [`AppError`]: the one error type that leaves the service. Each front door maps it once: HTTP
//! to a status code (`routes::error`), MCP to a tool error (`mcp::session`).

use std::fmt;

use hark_core::protocol::ActionError;
use hark_store::StoreError;

/// What kind of failure, as SPEC.md section 4 names it. Each kind has one stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or names something that cannot be (`bad_request`).
    BadRequest,
    /// No token, or one that is not known (`unauthorized`).
    Unauthorized,
    /// A valid token that may not do this (`forbidden`).
    Forbidden,
    /// No such conversation or participant (`not_found`).
    NotFound,
    /// `append` or `send` of nothing (`empty_text`).
    EmptyText,
    /// `undo` of an empty draft (`nothing_to_undo`).
    NothingToUndo,
    /// `push` of an empty draft (`empty_draft`).
    EmptyDraft,
    /// A `send` longer than the draft may grow (`too_long`).
    TooLong,
    /// A participant name already in use (`duplicate_name`).
    DuplicateName,
    /// A participant naming a built-in agent this server does not define (`unknown_agent`).
    UnknownAgent,
    /// An attachment over the configured size (`too_large`).
    TooLarge,
    /// Too many requests with one token (`rate_limited`).
    RateLimited,
    /// A configured cap is reached: participants of a conversation, event streams or MCP
    /// sessions of a participant (`limit_reached`). The sentence names the knob.
    LimitReached,
    /// The store cannot serve the request right now; nothing changed (`unavailable`).
    Unavailable,
}

impl ErrorKind {
    /// The stable snake_case code clients see.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::EmptyText => "empty_text",
            ErrorKind::NothingToUndo => "nothing_to_undo",
            ErrorKind::EmptyDraft => "empty_draft",
            ErrorKind::TooLong => "too_long",
            ErrorKind::DuplicateName => "duplicate_name",
            ErrorKind::UnknownAgent => "unknown_agent",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::LimitReached => "limit_reached",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

/// A refused or failed service call: its kind and a sentence a person or a model can act on.
///
/// Internal causes (a store's own error text) are logged where they happen, never put in the
/// sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppError {
    kind: ErrorKind,
    message: String,
}

impl AppError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AppError {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable code of its kind.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The sentence for the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        AppError::new(ErrorKind::BadRequest, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        AppError::new(ErrorKind::Unauthorized, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        AppError::new(ErrorKind::Forbidden, message)
    }

    pub(crate) fn conversation_not_found() -> Self {
        AppError::new(ErrorKind::NotFound, "No conversation has that id.")
    }

    pub(crate) fn rate_limited() -> Self {
        AppError::new(
            ErrorKind::RateLimited,
            "Too many requests with this token: slow down and retry in a moment.",
        )
    }

    /// The conversation is now run by another node (this one lost it a moment ago).
    pub(crate) fn moved() -> Self {
        AppError::new(
            ErrorKind::Unavailable,
            "This conversation just moved to another node; nothing was changed. Retry: the \
             request will reach it.",
        )
    }

    pub(crate) fn unavailable() -> Self {
        AppError::new(
            ErrorKind::Unavailable,
            "The store is unavailable right now; nothing was changed. Retry shortly.",
        )
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message)
    }
}

impl std::error::Error for AppError {}

impl From<ActionError> for AppError {
    fn from(error: ActionError) -> Self {
        let kind = match error {
            ActionError::EmptyText => ErrorKind::EmptyText,
            ActionError::NothingToUndo => ErrorKind::NothingToUndo,
            ActionError::EmptyDraft => ErrorKind::EmptyDraft,
            ActionError::TooLong { .. } => ErrorKind::TooLong,
            ActionError::InvalidClientId { .. } => ErrorKind::BadRequest,
            ActionError::UnknownParticipant => ErrorKind::Forbidden,
        };
        debug_assert_eq!(kind.code(), error.code(), "one code per refusal");
        AppError::new(kind, error.to_string())
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NameTaken => AppError::new(
                ErrorKind::DuplicateName,
                "A participant with that name is already in this conversation: pick another name.",
            ),
            StoreError::NotFound => AppError::conversation_not_found(),
            StoreError::Unavailable(cause) | StoreError::Corrupt(cause) => {
                tracing::error!(%cause, "store error");
                AppError::unavailable()
            }
            StoreError::Moved(cause) => {
                tracing::info!(%cause, "a conversation moved to another node");
                AppError::moved()
            }
        }
    }
}
