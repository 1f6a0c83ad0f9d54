//! MCP over stdin/stdout (`hark mcp`).
//!
//! rmcp's line transport, wrapped so that an answer counts as heard only once its line is written
//! and flushed (the [`Outbox`] holds each answer's delivery until then), and so that a client
//! that goes away ends the server at once: on EOF of stdin, or a write to a stdout nobody reads
//! any more, the calls still running are withdrawn (a waiting `check` hands nothing over) and
//! the session ends, instead of lingering for rmcp's drain timeout.

use std::future::Future;
use std::io::ErrorKind;
use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::model::{ClientNotification, JsonRpcMessage};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::async_rw::AsyncRwTransport;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::delivery::Outbox;
use super::handler::HarkMcp;
use super::session::ParticipantSession;

/// Serves `session` over stdin/stdout until the client closes stdin, stops reading stdout, or
/// `shutdown` fires.
///
/// Nothing else may write to stdout meanwhile: it carries the MCP messages.
pub async fn serve_stdio(
    session: Arc<dyn ParticipantSession>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    serve(session, stdin, stdout, shutdown).await
}

/// [`serve_stdio`] on any pair of streams.
async fn serve<R, W>(
    session: Arc<dyn ParticipantSession>,
    input: R,
    output: W,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    use rmcp::ServiceExt;

    let outbox = Arc::new(Outbox::default());
    let ended = shutdown.child_token();
    let transport = Delivering {
        inner: AsyncRwTransport::new_server(input, output),
        outbox: Arc::clone(&outbox),
        ended: ended.clone(),
    };
    let running = HarkMcp::for_session(session)
        .with_outbox(outbox)
        .serve_with_ct(transport, ended)
        .await
        .map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}

/// The stdio transport that settles each answer's delivery once it is written.
struct Delivering<R: AsyncRead, W: AsyncWrite> {
    inner: AsyncRwTransport<RoleServer, R, W>,
    outbox: Arc<Outbox>,
    /// Ends the session: cancelled when stdout broke.
    ended: CancellationToken,
}

impl<R, W> Transport<RoleServer> for Delivering<R, W>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        // Taken now, synchronously: once this answer is on its way, a cancellation that comes
        // later no longer concerns it.
        let delivery = match &item {
            JsonRpcMessage::Response(response) => self.outbox.take(&response.id),
            _ => None,
        };
        let written = self.inner.send(item);
        let outbox = Arc::clone(&self.outbox);
        let ended = self.ended.clone();
        async move {
            match written.await {
                Ok(()) => {
                    if let Some(delivery) = delivery {
                        delivery.delivered();
                    }
                    Ok(())
                }
                // Nobody reads stdout any more: the client is gone, which is how MCP sessions
                // end, not a failure. What was not written is lost; the session ends now.
                Err(error) if is_disconnect(&error) => {
                    tracing::debug!(%error, "stdout closed: the MCP client is gone");
                    drop(delivery);
                    outbox.close();
                    ended.cancel();
                    Ok(())
                }
                Err(error) => {
                    drop(delivery);
                    outbox.close();
                    ended.cancel();
                    Err(error)
                }
            }
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleServer>>> + Send {
        let outbox = Arc::clone(&self.outbox);
        let received = self.inner.receive();
        async move {
            let message = received.await;
            match &message {
                // EOF: the client closed stdin. Withdraw the calls still running before rmcp
                // waits for their answers.
                None => outbox.close(),
                Some(JsonRpcMessage::Notification(notification)) => {
                    if let ClientNotification::CancelledNotification(cancelled) =
                        &notification.notification
                        && let Some(id) = &cancelled.params.request_id
                    {
                        outbox.cancel(id.clone());
                    }
                }
                Some(_) => {}
            }
            message
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.outbox.close();
        self.inner.close()
    }
}

fn is_disconnect(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::NotConnected
    )
}
