//! The person's rhythm, learned online: how long they pause within a burst, and how fast they
//! answer the agent (conversation tempo).

/// A person's timing, learned online and small enough to persist as seven numbers.
///
/// Both statistics are exponentially weighted moving averages of the natural log of a duration in
/// milliseconds, so one long pause moves them little and they follow a person who changes pace.
/// The weight of a new sample is `1/n` for the first ten samples (a plain mean while little is
/// known), then 0.1. The runtime saves this with [`super::TurnEngine::rhythm`] (or the snapshot)
/// and restores it with [`super::TurnEngine::set_rhythm`] or [`super::TurnEngine::restore`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PersonRhythm {
    /// Mean of ln(gap ms): quiet time from the end of one activity of the person (a message sent,
    /// typing stopped) to the start of the next (typing started, a message sent) within a burst.
    /// Without typing events this is the gap between bubbles.
    pub gap_log_mean: f64,
    /// Variance of ln(gap ms).
    pub gap_log_var: f64,
    /// Gaps learned so far.
    pub gap_samples: u32,
    /// Mean of ln(latency ms) from the agent's last bubble to the person's next activity.
    pub reply_log_mean: f64,
    /// Latencies learned so far.
    pub reply_samples: u32,
    /// Share of the gaps (same weights) longer than [`PAUSE_MS`]: how often this person stops to
    /// think in the middle of a burst. With typing leases it tells the people who resume at once
    /// (a reply may follow their bubble quickly) from those who pause and go on.
    pub pause_rate: f64,
    /// Times the person was seen starting to type: their client sends typing leases, so their
    /// silence after a bubble means something.
    pub typing_starts: u32,
}

/// A quiet gap within a burst longer than this is a pause (for [`PersonRhythm::pause_rate`]):
/// about the time a reply takes to go out after a short window, so a pause this long lets a
/// reply slip in before the person goes on.
pub const PAUSE_MS: u64 = 2000;

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
        let x = ln_ms(gap_ms);
        let alpha = alpha(self.gap_samples);
        let d = x - self.gap_log_mean;
        self.gap_log_mean += alpha * d;
        self.gap_log_var = (1.0 - alpha) * (self.gap_log_var + alpha * d * d);
        let paused = if gap_ms > PAUSE_MS { 1.0 } else { 0.0 };
        self.pause_rate += alpha * (paused - self.pause_rate);
        self.gap_samples = self.gap_samples.saturating_add(1);
    }

    /// Learns one reply latency (agent's bubble → person's next activity).
    pub fn observe_reply_latency(&mut self, latency_ms: u64) {
        let x = ln_ms(latency_ms.min(MAX_REPLY_MS));
        let alpha = alpha(self.reply_samples);
        self.reply_log_mean += alpha * (x - self.reply_log_mean);
        self.reply_samples = self.reply_samples.saturating_add(1);
    }

    /// Notes that the person started typing (a typing lease that was not already held).
    pub fn observe_typing_start(&mut self) {
        self.typing_starts = self.typing_starts.saturating_add(1);
    }

    /// The typical (median) gap in ms, if any gap was learned.
    pub fn typical_gap_ms(&self) -> Option<f64> {
        (self.gap_samples > 0).then(|| self.gap_log_mean.exp())
    }

    /// The typical (median) reply latency in ms, if any was learned.
    pub fn typical_reply_ms(&self) -> Option<f64> {
        (self.reply_samples > 0).then(|| self.reply_log_mean.exp())
    }
}

pub(crate) fn ln_ms(ms: u64) -> f64 {
    (ms.max(MIN_LEARNED_MS) as f64).ln()
}

fn alpha(samples: u32) -> f64 {
    (1.0 / (f64::from(samples) + 1.0)).max(ALPHA_FLOOR)
}
