//! MCP over stdin/stdout (`hark mcp`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::handler::HarkMcp;
use super::session::ParticipantSession;

/// Serves `session` over stdin/stdout until the client closes stdin or `shutdown` fires.
///
/// Nothing else may write to stdout meanwhile: it carries the MCP messages.
pub async fn serve_stdio(
    session: Arc<dyn ParticipantSession>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use rmcp::ServiceExt;

    let running = HarkMcp::for_session(session)
        .serve_with_ct(rmcp::transport::stdio(), shutdown)
        .await
        .map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}
