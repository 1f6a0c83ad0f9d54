//! What every HTTP handler holds: the service, and the HTTP door's own settings.

use std::sync::Arc;
use std::time::Duration;

use super::holds::Holds;
use crate::app::App;
use crate::config::ServerConfig;

/// The axum state of the HTTP routes.
#[derive(Clone)]
pub(crate) struct HttpState {
    /// The service.
    pub(crate) app: App,
    /// Body limits, keep-alive interval and the rest of the HTTP door's settings.
    pub(crate) config: Arc<ServerConfig>,
    /// Event streams open, per participant.
    pub(crate) streams: Arc<Holds>,
}

impl HttpState {
    /// The request-body read deadline.
    pub(crate) fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.config.body_read_timeout_ms)
    }
}
