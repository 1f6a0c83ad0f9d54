//! Policies as named on the command line: `fixed:MS`, `punct`, `typing[:MS]`, `adaptive`,
//! `oracle`, each with modifiers that switch one mechanism on or off.

use hark_core::turn::{EndpointPolicy, TurnConfig};

/// The quiet window after a message under `typing` when no `:MS` is given: SPEC.md section 8's
/// reference "plain 2 s quiet window after typing stops".
pub const DEFAULT_TYPING_WINDOW_MS: u64 = 2000;

/// The default set: the baselines, each mechanism switched off in turn, speculation, the limit.
pub const DEFAULT_POLICIES: &[&str] = &[
    "fixed:800",
    "fixed:2000",
    "fixed:8000",
    "punct",
    "typing-nobargein",
    "typing",
    "adaptive-nobargein",
    "adaptive-norhythm",
    "adaptive",
    "adaptive+spec",
    "oracle",
];

/// A policy to simulate: the engine's config and how the driver treats it.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// As given on the command line.
    pub name: String,
    pub config: TurnConfig,
    /// The driver answers the engine's endpoint question with the truth (the turn's last bubble
    /// or not), instantly: the engine commits exactly at the end of the turn.
    pub oracle: bool,
    /// Hand the person's typing to the engine (off with `-notyping`).
    pub typing: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown policy {0:?}: use fixed:MS, punct, typing[:MS], adaptive or oracle, with any of \
     +spec, -nobargein, -norhythm, -notempo, -notyping, -nocontrol, -nocap, +cap, +capMS"
)]
pub struct PolicyError(pub String);

impl Policy {
    /// Parses `BASE[MODIFIER]...`.
    ///
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
    ///   (`+cap20000`).
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
                _ => match m.strip_prefix("+cap").map(str::parse::<u64>) {
                    Some(Ok(ms)) => config.window_hard_cap_ms = ms,
                    _ => return Err(err()),
                },
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

        let p = Policy::parse("oracle").unwrap();
        assert!(p.oracle && p.config.endpoint_model_timeout_ms.is_some());

        for bad in [
            "fixed",
            "fixed:x",
            "punct:3",
            "adaptive+turbo",
            "nope",
            "adaptive-",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
        for p in DEFAULT_POLICIES {
            Policy::parse(p).unwrap();
        }
    }
}
