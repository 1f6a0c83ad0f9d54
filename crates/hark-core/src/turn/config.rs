//! The knobs of the turn engine: the one place where each is named, defaulted and explained.
//!
//! [`TurnConfig`] is generated from one table (the `turn_knobs!` invocation below): each knob's
//! name, type, default and documentation are written once, and the same table gives
//! [`TurnConfig::KNOBS`] (for docs and error sentences), [`TurnConfig::set`] (for a config file's
//! `[agent.turn]` table, by name) and [`TurnConfig::get`]. Adding a knob is one entry there.

use std::fmt;
use std::str::FromStr;

/// How the engine decides that the person has stopped talking.
///
/// Every policy also obeys `window_hard_cap_ms`, the control words (with `control_words`) and the
/// deliver-time rechecks; those are separate knobs, so the simulator can turn each mechanism on and
/// off on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointPolicy {
    /// Plain debounce: commit `window_ms` after the last message. Ignores typing and text.
    Fixed {
        /// The debounce.
        window_ms: u64,
    },
    /// Completeness of the last bubble only: `window_complete_ms`, `window_neutral_ms` or
    /// `window_partial_ms` after it. Ignores typing.
    Punct,
    /// Typing gate: never commit while a typing lease is fresh; `typing_grace_ms` of quiet after
    /// typing stops without a message; `window_ms` after a message.
    Typing {
        /// The window after a message.
        window_ms: u64,
    },
    /// All signals: completeness, this burst's gaps and the person's learned rhythm, conversation
    /// tempo, the typing gate with grace, and the endpoint model when configured.
    Adaptive,
}

/// A knob's value as a config file gives it, before it is checked against the knob's type.
#[derive(Clone, Debug, PartialEq)]
pub enum KnobValue {
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Integer(i64),
    /// A number with a fraction. A whole `100.0` is accepted where an integer is expected.
    Float(f64),
    /// Text, for knobs such as `endpoint` (`"adaptive"`, `"fixed:800"`).
    Text(String),
}

impl fmt::Display for KnobValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KnobValue::Bool(v) => write!(f, "{v}"),
            KnobValue::Integer(v) => write!(f, "{v}"),
            KnobValue::Float(v) => write!(f, "{v}"),
            KnobValue::Text(v) => write!(f, "{v:?}"),
        }
    }
}

/// One knob of [`TurnConfig`], for readers of config files and generated docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Knob {
    /// The field's name, which is also its key in `[agent.turn]`.
    pub name: &'static str,
    /// What the knob means, from the field's doc comment.
    pub doc: &'static str,
    /// What values it takes, in words ("a whole number of milliseconds or more", …).
    pub expects: &'static str,
}

/// A knob could not be set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KnobError {
    /// No knob has this name.
    Unknown {
        /// The name that was given.
        name: String,
    },
    /// The value does not fit the knob.
    Invalid {
        /// The knob.
        name: &'static str,
        /// What it takes, from [`Knob::expects`].
        expects: &'static str,
        /// The value that was given, as written.
        given: String,
    },
}

impl fmt::Display for KnobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KnobError::Unknown { name } => {
                write!(f, "{name:?} is not a turn engine knob; the knobs are ")?;
                for (i, k) in TurnConfig::KNOBS.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(k.name)?;
                }
                Ok(())
            }
            KnobError::Invalid {
                name,
                expects,
                given,
            } => write!(f, "the knob {name} takes {expects}, not {given}"),
        }
    }
}

impl std::error::Error for KnobError {}

/// A type a knob can have: how a [`KnobValue`] becomes one and back.
trait KnobType: Sized {
    const EXPECTS: &'static str;
    fn from_knob(value: &KnobValue) -> Option<Self>;
    fn to_knob(&self) -> KnobValue;
}

impl KnobType for bool {
    const EXPECTS: &'static str = "true or false";
    fn from_knob(value: &KnobValue) -> Option<Self> {
        match value {
            KnobValue::Bool(v) => Some(*v),
            _ => None,
        }
    }
    fn to_knob(&self) -> KnobValue {
        KnobValue::Bool(*self)
    }
}

/// A whole number, also when written with a zero fraction (`100.0`, as some tools emit).
fn whole(value: &KnobValue) -> Option<u64> {
    match value {
        KnobValue::Integer(v) => u64::try_from(*v).ok(),
        KnobValue::Float(v) if v.fract() == 0.0 && *v >= 0.0 && *v <= u64::MAX as f64 => {
            Some(*v as u64)
        }
        _ => None,
    }
}

impl KnobType for u64 {
    const EXPECTS: &'static str = "a whole number, 0 or more";
    fn from_knob(value: &KnobValue) -> Option<Self> {
        whole(value)
    }
    fn to_knob(&self) -> KnobValue {
        KnobValue::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl KnobType for u32 {
    const EXPECTS: &'static str = "a whole number from 0 to 4294967295";
    fn from_knob(value: &KnobValue) -> Option<Self> {
        whole(value).and_then(|v| u32::try_from(v).ok())
    }
    fn to_knob(&self) -> KnobValue {
        KnobValue::Integer(i64::from(*self))
    }
}

impl KnobType for f64 {
    const EXPECTS: &'static str = "a finite number";
    fn from_knob(value: &KnobValue) -> Option<Self> {
        match value {
            KnobValue::Integer(v) => Some(*v as f64),
            KnobValue::Float(v) if v.is_finite() => Some(*v),
            _ => None,
        }
    }
    fn to_knob(&self) -> KnobValue {
        KnobValue::Float(*self)
    }
}

/// An optional duration: a whole number of milliseconds, or `false` for none.
impl KnobType for Option<u64> {
    const EXPECTS: &'static str = "a whole number of milliseconds, or false for none";
    fn from_knob(value: &KnobValue) -> Option<Self> {
        match value {
            KnobValue::Bool(false) => Some(None),
            v => whole(v).map(Some),
        }
    }
    fn to_knob(&self) -> KnobValue {
        match self {
            Some(v) => v.to_knob(),
            None => KnobValue::Bool(false),
        }
    }
}

impl KnobType for EndpointPolicy {
    const EXPECTS: &'static str =
        "\"adaptive\", \"punct\", \"fixed:MS\" or \"typing:MS\" (MS a whole number)";
    fn from_knob(value: &KnobValue) -> Option<Self> {
        match value {
            KnobValue::Text(t) => t.parse().ok(),
            _ => None,
        }
    }
    fn to_knob(&self) -> KnobValue {
        KnobValue::Text(self.to_string())
    }
}

/// Defines [`TurnConfig`] from one table: the public knobs, then (after `;`) fields that are not
/// knobs of a config file (the simulator's switches).
macro_rules! turn_knobs {
    (
        $( $(#[doc = $doc:literal])+ $name:ident : $ty:ty = $default:expr, )+
        ;
        $( $(#[doc = $idoc:literal])+ $iname:ident : $ity:ty = $idefault:expr, )*
    ) => {
        /// Every knob of the turn engine. `Default` gives the values of SPEC.md section 6.1.
        ///
        /// Durations are wall-clock milliseconds (`_ms`); counts are per burst or per reply as
        /// stated. Nonsensical values are tolerated: windows longer than the hard cap are cut to
        /// it, `max_bubbles: 0` means one bubble, `typing_cps: 0` means the longest cadence.
        #[derive(Clone, Debug, PartialEq)]
        pub struct TurnConfig {
            $( $(#[doc = $doc])+ pub $name: $ty, )+
            $( $(#[doc = $idoc])+ pub $iname: $ity, )*
        }

        impl Default for TurnConfig {
            fn default() -> Self {
                TurnConfig {
                    $( $name: $default, )+
                    $( $iname: $idefault, )*
                }
            }
        }

        impl TurnConfig {
            /// Every knob a config file may set, in the order of the table.
            pub const KNOBS: &'static [Knob] = &[
                $( Knob {
                    name: stringify!($name),
                    doc: concat!($($doc, "\n"),+),
                    expects: <$ty as KnobType>::EXPECTS,
                }, )+
            ];

            /// Sets the knob `name` to `value`, checked against the knob's type.
            pub fn set(&mut self, name: &str, value: &KnobValue) -> Result<(), KnobError> {
                match name {
                    $( stringify!($name) => {
                        self.$name = KnobType::from_knob(value).ok_or_else(|| {
                            KnobError::Invalid {
                                name: stringify!($name),
                                expects: <$ty as KnobType>::EXPECTS,
                                given: value.to_string(),
                            }
                        })?;
                    } )+
                    _ => return Err(KnobError::Unknown { name: name.to_owned() }),
                }
                Ok(())
            }

            /// The knob `name`'s current value.
            pub fn get(&self, name: &str) -> Option<KnobValue> {
                match name {
                    $( stringify!($name) => Some(KnobType::to_knob(&self.$name)), )+
                    _ => None,
                }
            }
        }
    };
}

impl fmt::Display for EndpointPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointPolicy::Fixed { window_ms } => write!(f, "fixed:{window_ms}"),
            EndpointPolicy::Punct => f.write_str("punct"),
            EndpointPolicy::Typing { window_ms } => write!(f, "typing:{window_ms}"),
            EndpointPolicy::Adaptive => f.write_str("adaptive"),
        }
    }
}

/// The text is not an [`EndpointPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadEndpointPolicy;

impl fmt::Display for BadEndpointPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(<EndpointPolicy as KnobType>::EXPECTS)
    }
}

impl FromStr for EndpointPolicy {
    type Err = BadEndpointPolicy;

    /// Reads what `Display` writes: `adaptive`, `punct`, `fixed:MS`, `typing:MS`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ms = |t: &str| t.parse::<u64>().map_err(|_| BadEndpointPolicy);
        match s.split_once(':') {
            None if s == "adaptive" => Ok(EndpointPolicy::Adaptive),
            None if s == "punct" => Ok(EndpointPolicy::Punct),
            Some(("fixed", t)) => Ok(EndpointPolicy::Fixed { window_ms: ms(t)? }),
            Some(("typing", t)) => Ok(EndpointPolicy::Typing { window_ms: ms(t)? }),
            _ => Err(BadEndpointPolicy),
        }
    }
}

turn_knobs! {
    /// Window after a bubble that looks finished (terminal `?`, `.`, `!`, an emoji). Under the
    /// adaptive policy, the shortest window after any bubble: the engine answers this soon when
    /// it is confident the person is done. Default 800.
    window_complete_ms: u64 = 800,
    /// Window after a bubble that looks mid-thought (trailing conjunction, comma, ellipsis, a lone
    /// "and"/"so"/"but"/"i", a photo without its caption). Under the adaptive policy, the
    /// shortest window after such a bubble. Default 6000.
    window_partial_ms: u64 = 6000,
    /// Window after a bubble that looks neither finished nor mid-thought ("ok cool", "hey").
    /// Not in the SPEC table; the engine needs a third value. Default 2000.
    window_neutral_ms: u64 = 2000,
    /// From the first bubble of a burst, commit to a reply no matter what the window says. Delivery
    /// still waits while a fresh typing lease is held. A hold word ("wait") and a `wait_for_more`
    /// restart it. Default 10000.
    window_hard_cap_ms: u64 = 10_000,
    /// Quiet needed after the person's typing stops without a message (or their lease expires)
    /// before the engine commits or delivers. Default 900.
    typing_grace_ms: u64 = 900,
    /// A typing lease not refreshed for this long has expired, so a lost "typing stopped" cannot
    /// hang the engine. Default 8000.
    typing_timeout_ms: u64 = 8000,
    /// Generate speculatively during the endpoint window, from each new message. Default true.
    speculate: bool = true,
    /// Speculative restarts per burst (each new message after the first speculative start is one)
    /// before the engine waits for the window instead. Default 4.
    max_spec_restarts: u32 = 4,
    /// Barge-in: a person message while a generation runs aborts it, bumps the epoch and folds the
    /// message into the burst. Off (the `fixed` baseline), the message waits for the next turn.
    /// Default true.
    bargein: bool = true,
    /// Deliver-time recheck before the first bubble: hold it while a typing lease is fresh (then
    /// `typing_grace_ms`), drop the reply and re-collect if a person message newer than its
    /// `read_up_to` is known. Default true.
    deliver_recheck: bool = true,
    /// The same recheck between bubbles: a fresh lease pauses delivery; a new person message stops
    /// it after the bubble in flight, drops the rest and re-collects. Default true.
    bargein_recheck: bool = true,
    /// Bubbles per reply; the last bubble absorbs the rest. Default 4.
    max_bubbles: u32 = 4,
    /// Delivery cadence: characters per second of simulated typing before each bubble, clamped to
    /// `typing_cadence_min_ms..=typing_cadence_max_ms`. Default 30.
    typing_cps: u32 = 30,
    /// Shortest typing before a bubble. Default 400.
    typing_cadence_min_ms: u64 = 400,
    /// Longest typing before a bubble. Default 3000.
    typing_cadence_max_ms: u64 = 3000,
    /// How the engine decides the person is done. Default [`EndpointPolicy::Adaptive`].
    endpoint: EndpointPolicy = EndpointPolicy::Adaptive,
    /// Handle control words: a hold word ("wait", "hold on") holds the burst up to a fresh hard cap
    /// and a burst of nothing but hold words ends silent; a stop word ("stop", "nvm") cancels
    /// whatever is in progress and ends the turn silent. Default true.
    control_words: bool = true,
    /// Adaptive policy: the longest the engine stays quiet after a bubble for a person it
    /// believes is still going — the one knob that moves it along its frontier. The engine picks
    /// each window between `window_complete_ms` and this to minimise P(premature) + P(done) ×
    /// window / (6 × this) (`turn::endpoint::decide`): at 800 it is a plain typing gate; more
    /// patience waits longer for people who often pause mid-burst, first where waiting buys the
    /// most. A finished turn's dead air stays under this plus the delivery time. Default 3600.
    endpoint_patience_ms: u64 = 3600,
    /// Adaptive policy: take P(this bubble ends the turn) from the learned completeness model
    /// (hashed word and character n-grams, `turn::CompletenessModel`, about 4 µs a bubble)
    /// instead of the punctuation rules' table. Default true: on held-out chats it lowered the
    /// premature rate at equal dead air at 3 to 10 chars/s and without typing, and changed little
    /// at 2 chars/s.
    completeness_model: bool = true,
    /// Learn and use the person's rhythm under the adaptive policy: how often and how long they
    /// pause mid-burst, and how often their bubbles end a turn. Off, the population's priors
    /// decide for everyone. Default true.
    learn_rhythm: bool = true,
    /// Use conversation tempo (how fast the person answers the agent) under the adaptive policy:
    /// in a fast back-and-forth the engine expects the person's pauses to be a little shorter, in
    /// a cold chat a little longer (`turn::endpoint::decide`). Default true.
    use_tempo: bool = true,
    /// Reply latencies the person's tempo needs before it is used. Default 3.
    rhythm_min_samples: u32 = 3,
    /// Gaps longer than this are not part of a burst and are not learned. Default 60000.
    rhythm_max_gap_ms: u64 = 60_000,
    /// The reply latency at which tempo is neutral (no shift). Default 15000.
    tempo_reference_ms: u64 = 15_000,
    /// Upper bound for the model's `wait_for_more {ms}` (also cut to the hard cap). Default 10000.
    max_wait_for_more_ms: u64 = 10_000,
    /// Ask the endpoint model after each message and wait this long for its verdict before falling
    /// back to the rules. `None` (default) never asks.
    endpoint_model_timeout_ms: Option<u64> = None,
    /// Messages kept for the prompt. Unanswered person messages and the agent's bubbles of the
    /// current turn are never dropped, whatever this says. Default 40.
    max_context_messages: u32 = 40,
    ;
    /// Build prompts at all. The simulator turns this off: prompts are then empty and the engine
    /// keeps no message texts. Default true.
    build_prompt: bool = true,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_knob_reads_back_its_default_and_takes_it_again() {
        let defaults = TurnConfig::default();
        for knob in TurnConfig::KNOBS {
            let value = defaults.get(knob.name).expect(knob.name);
            let mut config = TurnConfig::default();
            config.set(knob.name, &value).expect(knob.name);
            assert_eq!(config, defaults, "{}", knob.name);
            assert!(!knob.doc.trim().is_empty(), "{} has no doc", knob.name);
        }
        assert_eq!(TurnConfig::KNOBS.len(), 27);
        assert!(TurnConfig::KNOBS.iter().all(|k| k.name != "build_prompt"));
    }

    #[test]
    fn set_checks_names_and_types() {
        let mut c = TurnConfig::default();
        c.set("window_complete_ms", &KnobValue::Integer(650))
            .unwrap();
        c.set("max_bubbles", &KnobValue::Float(3.0)).unwrap();
        c.set("speculate", &KnobValue::Bool(false)).unwrap();
        c.set("endpoint", &KnobValue::Text("typing:2000".into()))
            .unwrap();
        c.set("endpoint_model_timeout_ms", &KnobValue::Integer(300))
            .unwrap();
        assert_eq!(c.window_complete_ms, 650);
        assert_eq!(c.max_bubbles, 3);
        assert!(!c.speculate);
        assert_eq!(c.endpoint, EndpointPolicy::Typing { window_ms: 2000 });
        assert_eq!(c.endpoint_model_timeout_ms, Some(300));
        c.set("endpoint_model_timeout_ms", &KnobValue::Bool(false))
            .unwrap();
        assert_eq!(c.endpoint_model_timeout_ms, None);

        let unknown = c.set("window_ms", &KnobValue::Integer(1)).unwrap_err();
        assert!(unknown.to_string().starts_with(
            "\"window_ms\" is not a turn engine knob; the knobs are window_complete_ms, "
        ));
        let before = c.clone();
        for (name, value) in [
            ("window_complete_ms", KnobValue::Integer(-1)),
            ("window_complete_ms", KnobValue::Float(1.5)),
            ("window_complete_ms", KnobValue::Text("800".into())),
            ("max_bubbles", KnobValue::Integer(1 << 40)),
            ("speculate", KnobValue::Integer(1)),
            ("endpoint", KnobValue::Text("fixed:soon".into())),
            ("endpoint_model_timeout_ms", KnobValue::Bool(true)),
        ] {
            let err = c.set(name, &value).unwrap_err();
            assert!(matches!(err, KnobError::Invalid { .. }), "{name}: {err}");
        }
        assert_eq!(c, before, "a refused value changes nothing");
        assert_eq!(
            c.set("max_bubbles", &KnobValue::Integer(-2))
                .unwrap_err()
                .to_string(),
            "the knob max_bubbles takes a whole number from 0 to 4294967295, not -2"
        );
    }

    #[test]
    fn endpoint_policies_round_trip() {
        for p in [
            EndpointPolicy::Adaptive,
            EndpointPolicy::Punct,
            EndpointPolicy::Fixed { window_ms: 8000 },
            EndpointPolicy::Typing { window_ms: 0 },
        ] {
            assert_eq!(p.to_string().parse(), Ok(p));
        }
        for bad in ["", "fixed", "fixed:", "typing:-1", "Adaptive", "punct:3"] {
            assert_eq!(
                bad.parse::<EndpointPolicy>(),
                Err(BadEndpointPolicy),
                "{bad}"
            );
        }
    }
}
