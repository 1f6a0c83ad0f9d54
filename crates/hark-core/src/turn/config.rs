//! The knobs of the turn engine: the one place where each is named, defaulted and explained.

/// How the engine decides that the person has stopped talking.
///
/// Every policy also obeys `window_hard_cap_ms`, the control words (with `control_words`) and the
/// deliver-time rechecks; those are separate knobs, so the simulator can turn each mechanism on and
/// off on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointPolicy {
    /// Plain debounce: commit `window_ms` after the last message. Ignores typing and text.
    Fixed { window_ms: u64 },
    /// Completeness of the last bubble only: `window_complete_ms`, `window_neutral_ms` or
    /// `window_partial_ms` after it. Ignores typing.
    Punct,
    /// Typing gate: never commit while a typing lease is fresh; `typing_grace_ms` of quiet after
    /// typing stops without a message; `window_ms` after a message.
    Typing { window_ms: u64 },
    /// All signals: completeness, this burst's gaps and the person's learned rhythm, conversation
    /// tempo, the typing gate with grace, and the endpoint model when configured.
    Adaptive,
}

/// Every knob of the turn engine. `Default` gives the values of SPEC.md section 6.1.
///
/// Durations are wall-clock milliseconds (`_ms`); counts are per burst or per reply as stated.
/// Nonsensical values are tolerated: windows longer than the hard cap are cut to it,
/// `max_bubbles: 0` means one bubble, `typing_cps: 0` means the longest cadence.
#[derive(Clone, Debug, PartialEq)]
pub struct TurnConfig {
    /// Window after a bubble that looks finished (terminal `?`, `.`, `!`, an emoji). Default 800.
    pub window_complete_ms: u64,
    /// Window after a bubble that looks mid-thought (trailing conjunction, comma, ellipsis, a lone
    /// "and"/"so"/"but"/"i", a photo without its caption). Default 6000.
    pub window_partial_ms: u64,
    /// Window after a bubble that looks neither finished nor mid-thought ("ok cool", "hey").
    /// Not in the SPEC table; the engine needs a third value. Default 2000.
    pub window_neutral_ms: u64,
    /// From the first bubble of a burst, commit to a reply no matter what the window says. Delivery
    /// still waits while a fresh typing lease is held. A hold word ("wait") and a `wait_for_more`
    /// restart it. Default 10000.
    pub window_hard_cap_ms: u64,
    /// Quiet needed after the person's typing stops without a message (or their lease expires)
    /// before the engine commits or delivers. Default 900.
    pub typing_grace_ms: u64,
    /// A typing lease not refreshed for this long has expired, so a lost "typing stopped" cannot
    /// hang the engine. Default 8000.
    pub typing_timeout_ms: u64,
    /// Generate speculatively during the endpoint window, from each new message. Default true.
    pub speculate: bool,
    /// Speculative restarts per burst (each new message after the first speculative start is one)
    /// before the engine waits for the window instead. Default 4.
    pub max_spec_restarts: u32,
    /// Barge-in: a person message while a generation runs aborts it, bumps the epoch and folds the
    /// message into the burst. Off (the `fixed` baseline), the message waits for the next turn.
    /// Default true.
    pub bargein: bool,
    /// Deliver-time recheck before the first bubble: hold it while a typing lease is fresh (then
    /// `typing_grace_ms`), drop the reply and re-collect if a person message newer than its
    /// `read_up_to` is known. Default true.
    pub deliver_recheck: bool,
    /// The same recheck between bubbles: a fresh lease pauses delivery; a new person message stops
    /// it after the bubble in flight, drops the rest and re-collects. Default true.
    pub bargein_recheck: bool,
    /// Bubbles per reply; the last bubble absorbs the rest. Default 4.
    pub max_bubbles: u32,
    /// Delivery cadence: characters per second of simulated typing before each bubble, clamped to
    /// `typing_cadence_min_ms..=typing_cadence_max_ms`. Default 30.
    pub typing_cps: u32,
    /// Shortest typing before a bubble. Default 400.
    pub typing_cadence_min_ms: u64,
    /// Longest typing before a bubble. Default 3000.
    pub typing_cadence_max_ms: u64,
    /// How the engine decides the person is done. Default [`EndpointPolicy::Adaptive`].
    pub endpoint: EndpointPolicy,
    /// Handle control words: a hold word ("wait", "hold on") holds the burst up to a fresh hard cap
    /// and a burst of nothing but hold words ends silent; a stop word ("stop", "nvm") cancels
    /// whatever is in progress and ends the turn silent. Default true.
    pub control_words: bool,
    /// Learn and use the person's rhythm (quiet gaps between activities within a burst) under the
    /// adaptive policy. The current burst's own gaps are used either way. Default true.
    pub learn_rhythm: bool,
    /// Use conversation tempo (how fast the person answers the agent) under the adaptive policy:
    /// windows shrink to 0.75× in a fast back-and-forth and grow to 1.5× in a cold chat. Default
    /// true.
    pub use_tempo: bool,
    /// Learned gaps needed before the person's rhythm is trusted. Default 3.
    pub rhythm_min_samples: u32,
    /// Gaps longer than this are not part of a burst and are not learned. Default 60000.
    pub rhythm_max_gap_ms: u64,
    /// The reply latency at which tempo is neutral (factor 1). Default 15000.
    pub tempo_reference_ms: u64,
    /// Upper bound for the model's `wait_for_more {ms}` (also cut to the hard cap). Default 10000.
    pub max_wait_for_more_ms: u64,
    /// Ask the endpoint model after each message and wait this long for its verdict before falling
    /// back to the rules. `None` (default) never asks.
    pub endpoint_model_timeout_ms: Option<u64>,
    /// Messages kept for the prompt. Unanswered person messages and the agent's bubbles of the
    /// current turn are never dropped, whatever this says. Default 40.
    pub max_context_messages: u32,
    /// Build prompts at all. The simulator turns this off: prompts are then empty and the engine
    /// keeps no message texts. Default true.
    pub build_prompt: bool,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            window_complete_ms: 800,
            window_partial_ms: 6000,
            window_neutral_ms: 2000,
            window_hard_cap_ms: 10_000,
            typing_grace_ms: 900,
            typing_timeout_ms: 8000,
            speculate: true,
            max_spec_restarts: 4,
            bargein: true,
            deliver_recheck: true,
            bargein_recheck: true,
            max_bubbles: 4,
            typing_cps: 30,
            typing_cadence_min_ms: 400,
            typing_cadence_max_ms: 3000,
            endpoint: EndpointPolicy::Adaptive,
            control_words: true,
            learn_rhythm: true,
            use_tempo: true,
            rhythm_min_samples: 3,
            rhythm_max_gap_ms: 60_000,
            tempo_reference_ms: 15_000,
            max_wait_for_more_ms: 10_000,
            endpoint_model_timeout_ms: None,
            max_context_messages: 40,
            build_prompt: true,
        }
    }
}

impl TurnConfig {
    /// The `fixed:MS` baseline of SPEC.md section 8: a plain debounce with no barge-in, no
    /// rechecks, no speculation and no control words; a bubble that lands mid-turn waits for the
    /// next turn. The hard cap still applies; set `window_hard_cap_ms` to `u64::MAX` for a
    /// debounce with no cap at all.
    pub fn fixed(window_ms: u64) -> Self {
        TurnConfig {
            endpoint: EndpointPolicy::Fixed { window_ms },
            bargein: false,
            deliver_recheck: false,
            bargein_recheck: false,
            control_words: false,
            speculate: false,
            ..TurnConfig::default()
        }
    }

    /// Whether the policy holds the endpoint while the person types.
    pub(crate) fn typing_gate(&self) -> bool {
        matches!(
            self.endpoint,
            EndpointPolicy::Typing { .. } | EndpointPolicy::Adaptive
        )
    }
}
