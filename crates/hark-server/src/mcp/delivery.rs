//! Where an MCP answer's [`Delivery`] waits until the answer reached the client.
//!
//! rmcp runs a tool call in a task of its own and writes the answer itself, so the handler cannot
//! tell whether the client got it. It hands the delivery to whoever writes the answer:
//!
//! - over streamable HTTP, to the [`RequestScope`] of the `POST /mcp` that carried the call (in
//!   the request's extensions): the response body completing delivers it, the body being dropped
//!   first (the connection went away) loses it and withdraws a call still running;
//! - over stdio, to the [`Outbox`], keyed by the JSON-RPC id, which the stdio transport settles
//!   once it has written and flushed the answer (or failed to).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rmcp::model::RequestId;
use tokio_util::sync::CancellationToken;

use super::session::Delivery;

/// The answers of one `POST /mcp` request, settled with its response body.
#[derive(Debug, Default)]
pub(crate) struct RequestScope {
    state: Mutex<ScopeState>,
    /// Fires when the response was dropped before it was complete: the client is gone.
    gone: CancellationToken,
}

#[derive(Debug, Default)]
enum ScopeState {
    #[default]
    Open,
    Holding(Vec<Delivery>),
    Delivered,
    Lost,
}

impl RequestScope {
    /// Keeps `delivery` until the response is settled. A response already settled cannot carry
    /// this answer any more: it is lost at once.
    pub(crate) fn hold(&self, delivery: Delivery) {
        let mut state = lock(&self.state);
        match &mut *state {
            ScopeState::Open => *state = ScopeState::Holding(vec![delivery]),
            ScopeState::Holding(held) => held.push(delivery),
            ScopeState::Delivered | ScopeState::Lost => {
                drop(state);
                drop(delivery);
            }
        }
    }

    /// Fires once the client is known to be gone.
    pub(crate) fn gone(&self) -> CancellationToken {
        self.gone.clone()
    }

    fn settle(&self, delivered: bool) {
        let next = if delivered {
            ScopeState::Delivered
        } else {
            ScopeState::Lost
        };
        let held = match std::mem::replace(&mut *lock(&self.state), next) {
            ScopeState::Holding(held) => held,
            _ => Vec::new(),
        };
        if delivered {
            held.into_iter().for_each(Delivery::delivered);
        } else {
            // Dropping the deliveries reports them lost; the token withdraws calls still running.
            drop(held);
            self.gone.cancel();
        }
    }
}

/// Held by the response of a `POST /mcp`: [`ScopeGuard::delivered`] when hyper took its last
/// frame; dropped otherwise, which loses the scope's answers.
pub(crate) struct ScopeGuard(Option<Arc<RequestScope>>);

impl ScopeGuard {
    pub(crate) fn new(scope: Arc<RequestScope>) -> Self {
        ScopeGuard(Some(scope))
    }

    /// The response reached the client whole.
    pub(crate) fn delivered(mut self) {
        if let Some(scope) = self.0.take() {
            scope.settle(true);
        }
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        if let Some(scope) = self.0.take() {
            scope.settle(false);
        }
    }
}

/// The answers a stdio server has produced but not yet written, by JSON-RPC id.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    /// Fires when the client is gone (stdin ended, stdout broke): calls still running are
    /// withdrawn.
    closed: CancellationToken,
}

#[derive(Debug, Default)]
struct OutboxState {
    held: HashMap<RequestId, Delivery>,
    /// Calls the client cancelled before their answer was held (bounded: see `cancel`).
    cancelled: VecDeque<RequestId>,
    closed: bool,
}

/// Cancelled ids remembered in case their answer is held after the cancellation was read.
const REMEMBERED_CANCELS: usize = 256;

impl Outbox {
    /// Keeps `delivery` until the answer to `id` is written. The answer of a call the client
    /// cancelled, or of a client that is gone, will never be read: it is lost at once.
    pub(crate) fn hold(&self, id: RequestId, delivery: Delivery) {
        let mut state = lock(&self.state);
        if let Some(index) = state.cancelled.iter().position(|c| *c == id) {
            state.cancelled.remove(index);
            return;
        }
        if state.closed {
            return;
        }
        let replaced = state.held.insert(id, delivery);
        drop(state);
        drop(replaced);
    }

    /// The delivery of the answer to `id`, which is being written now.
    pub(crate) fn take(&self, id: &RequestId) -> Option<Delivery> {
        lock(&self.state).held.remove(id)
    }

    /// The client cancelled call `id`: MCP clients ignore an answer that comes after their
    /// cancellation, so it counts as lost even if it is written.
    pub(crate) fn cancel(&self, id: RequestId) {
        let mut state = lock(&self.state);
        let dropped = state.held.remove(&id);
        if dropped.is_none() {
            if state.cancelled.len() == REMEMBERED_CANCELS {
                state.cancelled.pop_front();
            }
            state.cancelled.push_back(id);
        }
        drop(state);
        drop(dropped);
    }

    /// The client is gone: nothing more reaches it.
    pub(crate) fn close(&self) {
        let held = {
            let mut state = lock(&self.state);
            state.closed = true;
            std::mem::take(&mut state.held)
        };
        drop(held);
        self.closed.cancel();
    }

    /// Fires once the client is gone.
    pub(crate) fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain collections behind: keep using them.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A delivery that counts its fate: `(delivered, lost)`.
    fn counted(counts: &Arc<(AtomicUsize, AtomicUsize)>) -> Delivery {
        struct Lost(Arc<(AtomicUsize, AtomicUsize)>, bool);
        impl Drop for Lost {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.1.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        let mut guard = Lost(Arc::clone(counts), false);
        Delivery::new(move || {
            guard.1 = true;
            guard.0.0.fetch_add(1, Ordering::SeqCst);
        })
    }

    fn fates(counts: &Arc<(AtomicUsize, AtomicUsize)>) -> (usize, usize) {
        (
            counts.0.load(Ordering::SeqCst),
            counts.1.load(Ordering::SeqCst),
        )
    }

    #[test]
    fn a_scope_delivers_with_its_body_and_loses_without_it() {
        let counts = Arc::default();
        let scope = Arc::new(RequestScope::default());
        scope.hold(counted(&counts));
        ScopeGuard::new(Arc::clone(&scope)).delivered();
        assert_eq!(fates(&counts), (1, 0));
        assert!(!scope.gone().is_cancelled());
        // Too late for a response already complete: lost.
        scope.hold(counted(&counts));
        assert_eq!(fates(&counts), (1, 1));

        let scope = Arc::new(RequestScope::default());
        scope.hold(counted(&counts));
        drop(ScopeGuard::new(Arc::clone(&scope)));
        assert_eq!(fates(&counts), (1, 2));
        assert!(scope.gone().is_cancelled(), "a running call is withdrawn");
    }

    #[test]
    fn an_outbox_settles_by_id_and_loses_what_was_cancelled_or_left() {
        let counts = Arc::default();
        let outbox = Outbox::default();
        let id = |n| RequestId::Number(n);
        outbox.hold(id(1), counted(&counts));
        outbox.take(&id(1)).unwrap().delivered();
        assert_eq!(fates(&counts), (1, 0));
        // Cancelled after the answer was held, or before: lost either way.
        outbox.hold(id(2), counted(&counts));
        outbox.cancel(id(2));
        outbox.cancel(id(3));
        outbox.hold(id(3), counted(&counts));
        assert_eq!(fates(&counts), (1, 2));
        assert!(outbox.take(&id(3)).is_none());
        // The client went away with an answer still unwritten.
        outbox.hold(id(4), counted(&counts));
        outbox.close();
        assert_eq!(fates(&counts), (1, 3));
        outbox.hold(id(5), counted(&counts));
        assert_eq!(fates(&counts), (1, 4));
        assert!(outbox.closed().is_cancelled());
    }
}
