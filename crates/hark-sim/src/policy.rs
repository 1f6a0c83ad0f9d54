//! Policies as named on the command line: `default`, `fixed:MS`, `punct`, `typing[:MS]`,
//! `adaptive`, `oracle`, each with modifiers that switch one mechanism on or off.

use hark_core::turn::{EndpointPolicy, TurnConfig};

/// The quiet window after a message under `typing` when no `:MS` is given: SPEC.md section 8's
/// reference "plain 2 s quiet window after typing stops".
pub const DEFAULT_TYPING_WINDOW_MS: u64 = 2000;

/// The default set: the baselines, each mechanism switched off in turn, the shipped engine, the
/// limit.
pub const DEFAULT_POLICIES: &[&str] = &[
    "fixed:800",
    "fixed:2000",
    "fixed:8000",
    "punct",
    "typing-nobargein",
    "typing",
    "typing+spec",
    "adaptive-nobargein",
    "adaptive-norhythm",
    "adaptive",
    "default",
    "oracle",
];

/// A policy to simulate: the engine's config and how the driver treats it.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// As given on the command line.
    pub name: String,
    /// The engine's configuration (prompts off: the simulator needs no texts).
    pub config: TurnConfig,
    /// The driver answers the engine's endpoint question with the truth (the turn's last bubble
    /// or not), instantly: the engine commits exactly at the end of the turn.
    pub oracle: bool,
    /// Hand the person's typing to the engine (off with `-notyping`).
    pub typing: bool,
}

/// A policy name that is not understood.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown policy {0:?}: use default, fixed:MS, punct, typing[:MS], adaptive or oracle, with any \
     of +spec, -nobargein, -norhythm, -notempo, -notyping, -nocontrol, -nocap, +cap, +capMS, \
     +patienceMS, +model, -model"
)]
pub struct PolicyError(pub String);

impl Policy {
    /// Parses `BASE[MODIFIER]...`.
    ///
    /// - `default`: exactly `TurnConfig::default()`, what a built-in agent with no
    ///   `[agent.turn]` table runs (the adaptive policy with speculation).
    /// - `fixed:MS`: the seed's plain debounce (`TurnConfig::fixed`): no barge-in, no rechecks, no
    ///   control words, and no hard cap (the seed has none; `+cap` adds the engine's).
    /// - `punct`, `typing[:MS]`, `adaptive`: that endpoint policy with the engine's defaults
    ///   (barge-in, both rechecks, control words, the hard cap) but without speculation.
    /// - `oracle`: commits exactly at the turn's end (a perfect, instant endpoint model), no hard
    ///   cap, no control words: the physical limit.
    /// - `+spec` speculates; `-nobargein` turns off barge-in and both deliver-time rechecks;
    ///   `-norhythm` the per-person rhythm; `-notempo` the tempo; `-notyping` hides typing from
    ///   the engine; `-nocontrol` the control words; `-nocap` the hard cap (then a turn that ends
    ///   on a hold word such as "wait" waits for ever: the simulator cuts it after
    ///   `EPISODE_LIMIT_MS` and reports it); `+cap` restores the default cap and `+capMS` sets it
    ///   (`+cap20000`); `+patienceMS` sets `endpoint_patience_ms`; `+model` and `-model` turn the
    ///   learned completeness model on and off.
    pub fn parse(spec: &str) -> Result<Policy, PolicyError> {
        let err = || PolicyError(spec.to_owned());
        let cut = spec.find(['+', '-']).unwrap_or(spec.len());
        let (base, mut mods) = spec.split_at(cut);
        let (kind, ms) = match base.split_once(':') {
            Some((k, ms)) => (k, Some(ms.parse::<u64>().map_err(|_| err())?)),
            None => (base, None),
        };
        let sim = TurnConfig {
            build_prompt: false,
            speculate: false,
            ..TurnConfig::default()
        };
        let mut oracle = false;
        let mut config = match (kind, ms) {
            ("fixed", Some(ms)) => TurnConfig {
                window_hard_cap_ms: u64::MAX,
                build_prompt: false,
                ..TurnConfig::fixed(ms)
            },
            ("punct", None) => TurnConfig {
                endpoint: EndpointPolicy::Punct,
                ..sim
            },
            ("typing", ms) => TurnConfig {
                endpoint: EndpointPolicy::Typing {
                    window_ms: ms.unwrap_or(DEFAULT_TYPING_WINDOW_MS),
                },
                ..sim
            },
            ("adaptive", None) => sim,
            ("default", None) => TurnConfig {
                build_prompt: false,
                ..TurnConfig::default()
            },
            ("oracle", None) => {
                oracle = true;
                TurnConfig {
                    endpoint_model_timeout_ms: Some(u64::MAX / 4),
                    window_hard_cap_ms: u64::MAX,
                    control_words: false,
                    ..sim
                }
            }
            _ => return Err(err()),
        };
        let mut typing = true;
        while !mods.is_empty() {
            let end = mods[1..].find(['+', '-']).map_or(mods.len(), |i| i + 1);
            let (m, rest) = mods.split_at(end);
            mods = rest;
            match m {
                "+spec" => config.speculate = true,
                "-nobargein" => {
                    config.bargein = false;
                    config.deliver_recheck = false;
                    config.bargein_recheck = false;
                }
                "-norhythm" => config.learn_rhythm = false,
                "-notempo" => config.use_tempo = false,
                "-notyping" => typing = false,
                "-nocontrol" => config.control_words = false,
                "-nocap" => config.window_hard_cap_ms = u64::MAX,
                "+cap" => config.window_hard_cap_ms = TurnConfig::default().window_hard_cap_ms,
                "+model" => config.completeness_model = true,
                "-model" => config.completeness_model = false,
                _ => {
                    if let Some(ms) = m.strip_prefix("+patience") {
                        config.endpoint_patience_ms = ms.parse().map_err(|_| err())?;
                    } else if let Some(ms) = m.strip_prefix("+cap") {
                        config.window_hard_cap_ms = ms.parse().map_err(|_| err())?;
                    } else {
                        return Err(err());
                    }
                }
            }
        }
        Ok(Policy {
            name: spec.to_owned(),
            config,
            oracle,
            typing,
        })
    }

    /// Whether this is the seed's plain debounce (for the frontier comparison).
    pub fn fixed_window_ms(&self) -> Option<u64> {
        match self.config.endpoint {
            EndpointPolicy::Fixed { window_ms }
                if !self.config.speculate && !self.config.bargein && !self.oracle =>
            {
                Some(window_ms)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bases_and_modifiers() {
        let p = Policy::parse("fixed:800").unwrap();
        assert_eq!(p.config.endpoint, EndpointPolicy::Fixed { window_ms: 800 });
        assert!(!p.config.bargein && !p.config.deliver_recheck && !p.config.speculate);
        assert_eq!(p.config.window_hard_cap_ms, u64::MAX);
        assert_eq!(p.fixed_window_ms(), Some(800));

        let p = Policy::parse("adaptive+spec-norhythm").unwrap();
        assert_eq!(p.config.endpoint, EndpointPolicy::Adaptive);
        assert!(p.config.speculate && !p.config.learn_rhythm && p.config.bargein);
        assert_eq!(p.config.window_hard_cap_ms, 10_000);

        let p = Policy::parse("typing-nobargein").unwrap();
        assert_eq!(
            p.config.endpoint,
            EndpointPolicy::Typing { window_ms: 2000 }
        );
        assert!(!p.config.bargein && !p.config.deliver_recheck && !p.config.bargein_recheck);

        let p = Policy::parse("typing:1500-notyping").unwrap();
        assert_eq!(
            p.config.endpoint,
            EndpointPolicy::Typing { window_ms: 1500 }
        );
        assert!(!p.typing);

        let p = Policy::parse("adaptive+cap20000+spec").unwrap();
        assert_eq!(p.config.window_hard_cap_ms, 20_000);
        assert!(p.config.speculate);

        let p = Policy::parse("default").unwrap();
        assert_eq!(
            p.config,
            TurnConfig {
                build_prompt: false,
                ..TurnConfig::default()
            },
            "default is what an agent runs with no [agent.turn] table"
        );
        let p = Policy::parse("default+patience20000+model").unwrap();
        assert_eq!(p.config.endpoint_patience_ms, 20_000);
        assert!(p.config.completeness_model);

        let p = Policy::parse("oracle").unwrap();
        assert!(p.oracle && p.config.endpoint_model_timeout_ms.is_some());

        for bad in [
            "fixed",
            "fixed:x",
            "punct:3",
            "adaptive+turbo",
            "nope",
            "adaptive-",
            "default:3",
            "default+patience",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
        for p in DEFAULT_POLICIES {
            Policy::parse(p).unwrap();
        }
    }
}
