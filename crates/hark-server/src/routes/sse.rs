//! `GET /v1/conversations/{id}/events`: server-sent events with gapless resume.
//!
//! The stream subscribes to the conversation's live events first and learns the last committed
//! seq at that instant; it then replays every message after the client's position from the store
//! and switches to live events, dropping any message it already sent. A lagging subscriber
//! catches up from the store and is told the current receipts and composing states again, so a
//! slow client loses nothing.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use hark_core::protocol::{Event, Message};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::conversations::{bad_path, bad_query, caller};
use super::error::ApiError;
use super::state::HttpState;
use crate::app::{App, HISTORY_MAX_LIMIT, Participant, ParticipantInfo};
use crate::wire;

const STREAM_BUFFER: usize = 256;

/// `GET /v1/conversations/{id}/events`.
pub(super) async fn stream(
    State(state): State<HttpState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<wire::EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Path(id) = path.map_err(bad_path)?;
    let me = state
        .app
        .participant(&caller(&state, &headers).await?, &id)
        .await?;
    let Query(query) = query.map_err(bad_query)?;
    let resume_from = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be a message seq."))?,
        ),
        None => query.after,
    };
    let held = state.streams.take(
        &me,
        state.config.caps.max_streams_per_participant,
        "event streams",
        "max_streams_per_participant",
    )?;
    let subscription = state.app.subscribe(&me).await?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let feeder = Feeder {
        app: state.app.clone(),
        me,
        tx,
        sent: resume_from.unwrap_or(subscription.last_seq),
    };
    tokio::spawn(feeder.run(subscription.live, subscription.last_seq));
    let keepalive = KeepAlive::new()
        .interval(Duration::from_millis(state.config.keepalive_ms))
        .text("keep-alive");
    let stream = ReceiverStream::new(rx).map(move |event| {
        // The stream holds its slot until the client goes away and the body is dropped.
        let _held = &held;
        event
    });
    Ok(Sse::new(stream).keep_alive(keepalive))
}

struct Feeder {
    app: App,
    me: Participant,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
    /// The seq of the last message sent on this stream.
    sent: u64,
}

impl Feeder {
    async fn run(mut self, mut live: broadcast::Receiver<Event>, last_seq: u64) {
        if self.catch_up(Some(last_seq)).await.is_err() {
            return;
        }
        let shutdown = self.app.shutdown().clone();
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.tx.closed() => return,
                received = live.recv() => received,
            };
            let result = match received {
                Ok(Event::Message(message)) if message.seq <= self.sent => Ok(()),
                Ok(Event::Message(message)) => {
                    // A message beyond the next one means this stream missed some: fetch them.
                    match self.catch_up(Some(message.seq - 1)).await {
                        Ok(()) => self.send_message(&message).await,
                        Err(()) => Err(()),
                    }
                }
                Ok(event) => self.send(&event).await,
                Err(broadcast::error::RecvError::Lagged(_)) => self.recover().await,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if result.is_err() {
                return;
            }
        }
    }

    /// The stream fell behind the conversation's live events and some were dropped: sends every
    /// message it missed from the store, then the state the dropped events would have told
    /// (every read receipt, and whether each participant is composing). Those events are states,
    /// not news, so telling the current one again loses nothing.
    async fn recover(&mut self) -> Result<(), ()> {
        self.catch_up(None).await?;
        let description = match self.app.whoami(&self.me).await {
            Ok(description) => description,
            Err(error) => {
                tracing::warn!(%error, "event stream cannot recover its state; closing it");
                return Err(());
            }
        };
        for receipt in description.receipts {
            self.send(&Event::Receipt(receipt)).await?;
        }
        for ParticipantInfo {
            name: participant, ..
        } in description.participants
        {
            let composing = description.composing.contains(&participant);
            self.send(&Event::Composing {
                participant,
                composing,
            })
            .await?;
        }
        Ok(())
    }

    /// Sends every stored message after `self.sent`, up to `until` (or all of them).
    async fn catch_up(&mut self, until: Option<u64>) -> Result<(), ()> {
        while until.is_none_or(|until| self.sent < until) {
            let page = match self
                .app
                .history(&self.me, self.sent, Some(HISTORY_MAX_LIMIT))
                .await
            {
                Ok(page) => page.messages,
                Err(error) => {
                    tracing::warn!(%error, "event stream cannot replay; closing it");
                    return Err(());
                }
            };
            if page.is_empty() {
                break;
            }
            for message in &page {
                if until.is_some_and(|until| message.seq > until) {
                    return Ok(());
                }
                self.send_message(message).await?;
            }
        }
        Ok(())
    }

    async fn send_message(&mut self, message: &Message) -> Result<(), ()> {
        let event = SseEvent::default()
            .event("message")
            .id(message.seq.to_string())
            .data(wire::to_string(&wire::WireMessage::from(message)));
        self.tx.send(Ok(event)).await.map_err(drop)?;
        self.sent = message.seq;
        Ok(())
    }

    async fn send(&mut self, event: &Event) -> Result<(), ()> {
        let (name, data, _) = wire::event(event);
        let event = SseEvent::default().event(name).data(data);
        self.tx.send(Ok(event)).await.map_err(drop)
    }
}
