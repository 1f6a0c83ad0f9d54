//! The person's rhythm, learned online: how often and how long they pause within a burst, how
//! often their bubbles end a turn, and how fast they answer the agent (conversation tempo).

/// A person's timing, learned online and small enough to persist as seven numbers.
///
/// The statistics are exponentially weighted moving averages: the weight of a new sample is `1/n`
/// for the first ten samples (a plain mean while little is known), then 0.1, so they follow a
/// person who changes pace. Durations are learned as the natural log of milliseconds, so one
/// long pause moves them little. The runtime saves this with [`super::TurnEngine::rhythm`] (or
/// the snapshot) and restores it with [`super::TurnEngine::set_rhythm`] or
/// [`super::TurnEngine::restore`]. The endpoint decision (`turn::endpoint::decide`) reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PersonRhythm {
    /// Mean of ln(gap ms) over the person's *pauses*: quiet gaps within a burst longer than
    /// [`PAUSE_MS`]. A gap is the quiet from the end of one activity (a message sent, typing
    /// stopped) to the start of the next (typing started, a message sent) with no agent bubble
    /// in between; without typing events, the time between bubbles.
    pub gap_log_mean: f64,
    /// Variance of ln(gap ms) over the pauses.
    pub gap_log_var: f64,
    /// Gaps learned so far, pauses or not: each is one bubble (or typing start) that went on
    /// with the burst rather than ending it.
    pub gap_samples: u32,
    /// Mean of ln(latency ms) from the agent's last bubble to the person's next activity.
    pub reply_log_mean: f64,
    /// Latencies learned so far: each is a burst the person started after the agent spoke, so
    /// with `gap_samples` it says how often this person's bubbles end their turn.
    pub reply_samples: u32,
    /// Share of the gaps longer than [`PAUSE_MS`]: how often this person stops to think in the
    /// middle of a burst rather than going on at once.
    pub pause_rate: f64,
    /// Times the person was seen starting to type: their client sends typing leases, so their
    /// silence after a bubble means something.
    pub typing_starts: u32,
}

/// A quiet gap within a burst longer than this is a pause ([`PersonRhythm::pause_rate`]): with
/// typing leases, someone who goes on at once starts typing well within it.
pub const PAUSE_MS: u64 = 1000;

/// Gaps shorter than this are learned as this: chat logs have one-second timestamps, and a zero
/// gap has no logarithm.
pub(crate) const MIN_LEARNED_MS: u64 = 100;
/// Reply latencies longer than this are learned as this: beyond it the chat is simply cold.
const MAX_REPLY_MS: u64 = 600_000;
/// The weight of a new sample once warmed up.
const ALPHA_FLOOR: f64 = 0.1;

impl PersonRhythm {
    /// Learns one quiet gap within a burst.
    pub fn observe_gap(&mut self, gap_ms: u64) {
        let pauses = self.pause_rate * f64::from(self.gap_samples);
        let paused = gap_ms > PAUSE_MS;
        self.pause_rate +=
            alpha_of(f64::from(self.gap_samples)) * (f64::from(u8::from(paused)) - self.pause_rate);
        self.gap_samples = self.gap_samples.saturating_add(1);
        if paused {
            // The pauses' own count is not stored; the share times the gaps estimates it.
            let alpha = alpha_of(pauses.round());
            let x = ln_ms(gap_ms);
            let d = x - self.gap_log_mean;
            self.gap_log_mean += alpha * d;
            self.gap_log_var = (1.0 - alpha) * (self.gap_log_var + alpha * d * d);
        }
    }

    /// Learns one reply latency (agent's bubble → person's next activity).
    pub fn observe_reply_latency(&mut self, latency_ms: u64) {
        let x = ln_ms(latency_ms.min(MAX_REPLY_MS));
        let alpha = alpha_of(f64::from(self.reply_samples));
        self.reply_log_mean += alpha * (x - self.reply_log_mean);
        self.reply_samples = self.reply_samples.saturating_add(1);
    }

    /// Notes that the person started typing (a typing lease that was not already held).
    pub fn observe_typing_start(&mut self) {
        self.typing_starts = self.typing_starts.saturating_add(1);
    }

    /// The typical (median) pause in ms, if a pause was learned.
    pub fn typical_gap_ms(&self) -> Option<f64> {
        (self.pause_rate * f64::from(self.gap_samples) >= 0.5).then(|| self.gap_log_mean.exp())
    }

    /// The typical (median) reply latency in ms, if any was learned.
    pub fn typical_reply_ms(&self) -> Option<f64> {
        (self.reply_samples > 0).then(|| self.reply_log_mean.exp())
    }
}

pub(crate) fn ln_ms(ms: u64) -> f64 {
    (ms.max(MIN_LEARNED_MS) as f64).ln()
}

fn alpha_of(samples: f64) -> f64 {
    (1.0 / (samples.max(0.0) + 1.0)).max(ALPHA_FLOOR)
}
