//! Delivery tickets: how a front door tells a conversation whether a result that handed
//! something over reached its client (SPEC.md section 2, "hand-over is at least once").
//!
//! A result that hands over messages or changed receipts is tentative in the state machine until
//! its fate is reported. The service gives such a result to its caller with a [`Ticket`]; the
//! front door calls [`Ticket::delivered`] once the result is in the client's hands (an HTTP body
//! whose last frame hyper took, a line written to stdout, a value an in-process caller holds).
//! Dropping the ticket unconfirmed reports it lost, so its messages come again in the
//! participant's next result and the push gate waits for them.
//!
//! Reports go to the conversation's task on a channel of their own that is never full, and the
//! task reads every queued report before it takes the next request. A report is queued
//! synchronously, before the client can even see the result, so a client that received a result
//! and then acts is never held for it.

use hark_core::protocol::{Envelope, RequestId};
use tokio::sync::mpsc;

/// What became of one reply, as the conversation's task learns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// The reply reached the client's transport.
    Delivered(RequestId),
    /// The reply did not reach the client, or the caller of a waiting `check` went away.
    Lost(RequestId),
}

/// The pending report of one tentative result. Dropping it unconfirmed reports the result lost.
#[must_use = "a dropped ticket reports its result lost"]
#[derive(Debug)]
pub struct Ticket {
    report: Option<(mpsc::UnboundedSender<Report>, RequestId)>,
}

impl Ticket {
    /// A ticket with nothing to report: the result handed nothing over.
    pub fn none() -> Self {
        Ticket { report: None }
    }

    pub(crate) fn new(reports: mpsc::UnboundedSender<Report>, request: RequestId) -> Self {
        Ticket {
            report: Some((reports, request)),
        }
    }

    /// Whether the result handed something over and waits for this ticket's report.
    pub fn is_pending(&self) -> bool {
        self.report.is_some()
    }

    /// Forgets the report without sending it (the request was answered otherwise).
    pub(crate) fn disarm(mut self) {
        self.report = None;
    }

    /// The result reached the client: what it handed over now counts as heard.
    pub fn delivered(mut self) {
        if let Some((reports, request)) = self.report.take() {
            // A closed channel means the conversation's task is gone, and its state with it.
            let _ = reports.send(Report::Delivered(request));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((reports, request)) = self.report.take() {
            let _ = reports.send(Report::Lost(request));
        }
    }
}

/// A successful action's result and its delivery ticket.
#[derive(Debug)]
pub struct Acted {
    /// The common envelope.
    pub envelope: Envelope,
    /// Report with it whether the envelope reached the client.
    pub ticket: Ticket,
}

impl Acted {
    /// The envelope, for a caller that holds it now and so has received it (in process).
    pub fn delivered(self) -> Envelope {
        self.ticket.delivered();
        self.envelope
    }
}
