//! hark's core: pure state machines driven by inputs that carry the time.
//!
//! - [`protocol`]: one conversation's log, participants, cursors, drafts and the push gate.
//! - [`turn`]: the per-(conversation, agent) turn engine that answers a bursty person once.
//!
//! Nothing in this crate performs IO, reads a clock or draws randomness: the driver passes `now`
//! in and executes the outputs. That is what lets tests and the simulator run on a virtual clock.

#![warn(missing_docs)]

pub mod protocol;
pub mod time;
pub mod turn;
