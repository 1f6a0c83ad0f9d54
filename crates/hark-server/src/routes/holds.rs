//! [`Holds`]: how many of something (event streams, MCP sessions) each participant holds open,
//! so that one token cannot take the whole server's share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::app::{AppError, ErrorKind, Participant};

/// Open things per participant, each counted until its [`Held`] is dropped.
#[derive(Default)]
pub(crate) struct Holds {
    counts: Mutex<HashMap<(String, String), usize>>,
}

impl Holds {
    /// Counts one more for `who`, or refuses if `who` holds `max` already; `what` and `knob`
    /// make the sentence ("event streams", "max_streams_per_participant").
    pub(crate) fn take(
        self: &Arc<Self>,
        who: &Participant,
        max: usize,
        what: &str,
        knob: &str,
    ) -> Result<Held, AppError> {
        let key = (who.conversation().to_owned(), who.name().to_string());
        let mut counts = self.lock();
        let count = counts.entry(key.clone()).or_default();
        if *count >= max {
            return Err(AppError::new(
                ErrorKind::LimitReached,
                format!(
                    "You hold {max} {what} open, the server's limit per participant ([limits] \
                     {knob}): close one first."
                ),
            ));
        }
        *count += 1;
        Ok(Held {
            holds: Arc::clone(self),
            key,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), usize>> {
        // A panic while holding the lock leaves the counts themselves intact.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One thing held open; dropping it gives the slot back.
pub(crate) struct Held {
    holds: Arc<Holds>,
    key: (String, String),
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.holds.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}
