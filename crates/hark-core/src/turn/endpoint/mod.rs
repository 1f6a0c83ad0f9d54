//! Has the person stopped talking? What a bubble's text says ([`completeness`], [`control_word`],
//! the learned [`CompletenessModel`]), and the adaptive decision built on it and on the person's
//! rhythm ([`decide`]).
//!
//! - `text`: the punctuation and word rules, and the control words.
//! - `model`: the learned completeness model (hashed n-grams, logistic), shipped as
//!   `completeness.bin`.
//! - `decide`: how long to stay quiet after a bubble, as an optimal-stopping decision over a
//!   model of "the person goes on"; its constants live beside it.

mod decide;
mod model;
mod text;

pub use decide::{
    Decision, END_PRIOR_BUBBLES, END_RATE, END_RATE_ALL, Evidence, MIN_LOG_SD, PATIENCE_PRICE,
    PAUSE_PRIOR_GAPS, PERSON_WEIGHT_MAX, PausePrior, SILENT_PRIOR, TEMPO_MAX_SHIFT, TEMPO_SLOPE,
    TYPING_PRIOR, decide,
};
pub use model::{BadModel, CompletenessModel, TAIL_CHARS, features};
pub use text::{Completeness, ControlWord, completeness, control_word, ends_in_question};
