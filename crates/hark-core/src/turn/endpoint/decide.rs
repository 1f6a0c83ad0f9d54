//! The adaptive endpoint decision: after a bubble, how long to stay quiet before committing.
//!
//! # The question
//!
//! With the typing gate and the deliver-time recheck, a reply is premature only if the person's
//! next activity (typing start, or a bubble when their client sends no typing) comes *after*
//! the reply's first bubble. If they start typing before it, delivery is held and the burst is
//! collected again: that costs a generation, not a premature reply. So once the person is quiet
//! after a bubble, the only question is how long to stay quiet, `W`, before committing. A
//! finished turn pays `W` (plus the delivery overhead, mostly hidden by speculation) as dead air;
//! a turn that goes on is answered too early if the person's quiet gap is longer than `W` plus
//! the delivery lag `d`.
//!
//! # The model
//!
//! - `p` = P(this bubble ends the turn). Its log-odds are a population table by the bubble's
//!   look ([`Completeness`], a question mark) and its position in the burst ([`END_RATE`]), or
//!   the learned [`CompletenessModel`](super::CompletenessModel) when `completeness_model` is
//!   on, shifted by how this person ends turns: `logit(r) − logit(r₀)`, where `r` is their share
//!   of bubbles that ended a turn (their bursts over their bubbles, learned online from finished
//!   bursts, pulled towards the population's `r₀` by [`END_PRIOR_BUBBLES`] pseudo-bubbles).
//! - `S(t)` = P(a person who goes on is still quiet `t` after the bubble). Quiet gaps are a
//!   mixture: with probability `1 − π` the person resumes within [`PAUSE_MS`] (with typing
//!   leases, usually at once), and with probability `π` they pause, for a log-normal time
//!   (`μ`, `σ` of ln ms). So for `t` ≥ [`PAUSE_MS`], `S(t) = π · G(t) / G(PAUSE_MS)`, `G` the
//!   log-normal survival. `π`, `μ` and `σ` are this person's, learned online
//!   ([`PersonRhythm`]), blended with a population prior ([`TYPING_PRIOR`] for people whose client
//!   sends typing, [`SILENT_PRIOR`] for the others) weighing [`PAUSE_PRIOR_GAPS`] gaps.
//!
//! - Tempo (`use_tempo`): once the person's reply latency (agent's bubble → their next
//!   activity) is known from `rhythm_min_samples` replies, the prior's `μ` moves by
//!   [`TEMPO_SLOPE`] × ln(latency / `tempo_reference_ms`): people in a fast back-and-forth pause
//!   a little shorter (the log-log slope of the gap against the reply latency on the train split).
//!
//! # The rule
//!
//! Choose the window that minimises the expected cost of the decision,
//!
//! ```text
//! J(W) = (1 − p) · S(W + d) + p · W / P,   P = PATIENCE_PRICE × endpoint_patience_ms
//! ```
//!
//! over `W` from the floor (`window_complete_ms`, or `window_partial_ms` after a bubble that
//! trails off) to `endpoint_patience_ms` (and never past the hard cap). The first term is the
//! chance of a premature reply; the second is the expected dead air of a finished turn, priced in
//! premature replies: one premature reply is worth `P` of dead air. This is optimal stopping with
//! a linear waiting cost, and it is time consistent: re-deciding later on the same evidence,
//! conditioned on the quiet so far, picks the same deadline. `d` is `typing_cadence_min_ms`, the
//! shortest time from a commit to the first bubble.
//!
//! `endpoint_patience_ms` is the one knob that moves the engine along its frontier: the longest
//! the engine waits for a person it believes is still going, and (through [`PATIENCE_PRICE`])
//! how much it is willing to pay for that. At the floor the engine is a plain typing gate; the
//! more patience, the more it waits for people who pause mid-burst, and first where waiting buys
//! the most (a person who often pauses, a bubble that seldom ends a turn). Because the gain of
//! waiting is the drop of `S` across the window and pauses last seconds, the rule mostly either
//! answers at the floor or waits to its ceiling; with the default ceiling (3.6 s) the dead air
//! of a finished turn stays under 4 s whatever the rule decides, so a long window can only ever
//! be the minority of cases where the evidence says the person is likely to go on.
//!
//! The priors are statistics of the Chit-Chat **train** split pooled over typing at 2, 3, 5 and 10
//! characters per second and without typing, each at time scales 0.5, 1 and 2
//! (`hark sim --fit-endpoint`). The prior weights, [`PATIENCE_PRICE`] and the default patience
//! were chosen with `hark sim --sweep` on a held-out part of the train split. See
//! `docs/turn-engine.md`.

use super::super::config::TurnConfig;
use super::super::rhythm::{PAUSE_MS, PersonRhythm};
use super::text::Completeness;

/// What the engine knows when the person has just sent a bubble.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evidence {
    /// How finished the bubble looks.
    pub class: Completeness,
    /// It ends in a question mark.
    pub question: bool,
    /// Bubbles of the burst before this one (0 for the first).
    pub index: u32,
    /// The learned model's log-odds that this bubble ends the turn, when it is used.
    pub model_logit: Option<f64>,
    /// The person's client sends typing leases (they were seen starting to type).
    pub typing: bool,
    /// Milliseconds until the burst's hard cap: a window never needs to be longer.
    pub cap_left_ms: u64,
}

/// The decision and the estimates behind it, for tests, the simulator and logs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Quiet time after the bubble before committing.
    pub window_ms: u64,
    /// P(this bubble ends the turn).
    pub p_end: f64,
    /// π: P(the person pauses longer than [`PAUSE_MS`] before going on).
    pub pause_share: f64,
    /// e^μ: the median length of such a pause.
    pub pause_median_ms: f64,
    /// σ: the spread of ln(pause ms).
    pub pause_log_sd: f64,
}

/// A population prior of the quiet gaps of people who go on: π, μ and σ (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PausePrior {
    /// Share of gaps longer than [`PAUSE_MS`].
    pub share: f64,
    /// Mean of ln(gap ms) over those.
    pub log_mean: f64,
    /// Standard deviation of ln(gap ms) over those.
    pub log_sd: f64,
}

/// The pauses of people whose client sends typing: the quiet from a bubble to the next typing
/// start. Fitted on the train split pooled over typing at 2, 3, 5 and 10 chars/s, each at time
/// scales 0.5, 1 and 2.
pub const TYPING_PRIOR: PausePrior = PausePrior {
    share: 0.491,
    log_mean: 8.99,
    log_sd: 1.00,
};

/// The gaps between bubbles of people whose client sends no typing, pooled over time scales 0.5,
/// 1 and 2 of the train split.
pub const SILENT_PRIOR: PausePrior = PausePrior {
    share: 0.955,
    log_mean: 9.21,
    log_sd: 0.90,
};

/// How many gaps the prior weighs against the person's learned ones. (People differ a lot: the
/// method of moments on the train split says the prior is worth 1.3 gaps for the pause share and
/// 2.4 pauses for their length; 3 is a little more cautious, and did better on held-out chats.)
pub const PAUSE_PRIOR_GAPS: f64 = 3.0;

/// The person's learned gaps weigh at most this many (their statistics are moving averages that
/// forget at that rate).
pub const PERSON_WEIGHT_MAX: f64 = 10.0;

/// Smallest spread of ln(pause ms) used: a person with three equal pauses is not that regular.
pub const MIN_LOG_SD: f64 = 0.3;

/// P(a bubble ends its turn) on the train split, by its look (rows: neutral, complete but not a
/// question, question, partial) and the bubbles before it in the burst (columns: 0, 1, 2, 3+).
pub const END_RATE: [[f64; 4]; 4] = [
    [0.51, 0.58, 0.58, 0.35],
    [0.52, 0.61, 0.60, 0.38],
    [0.76, 0.81, 0.81, 0.65],
    [0.38, 0.45, 0.40, 0.16],
];

/// The population's share of bubbles that end a turn (turns over bubbles, train split).
pub const END_RATE_ALL: f64 = 0.557;

/// Pseudo-bubbles at [`END_RATE_ALL`] that a person's own end rate is blended with. (The method of
/// moments says people's end rates differ little, worth 32 bubbles; with 5 the rule learns faster
/// who answers in one bubble, which did better on held-out chats, above all without typing.)
pub const END_PRIOR_BUBBLES: f64 = 5.0;

/// Tempo: how much ln(pause) moves per unit of ln(reply latency / `tempo_reference_ms`).
pub const TEMPO_SLOPE: f64 = 0.09;

/// Tempo: the shift of ln(pause) is kept within ± this.
pub const TEMPO_MAX_SHIFT: f64 = 0.5;

/// The dead air worth one premature reply avoided, in multiples of `endpoint_patience_ms`.
pub const PATIENCE_PRICE: f64 = 6.0;

/// Each candidate window is this factor longer than the previous one.
const GRID_STEP: f64 = 1.15;

/// Decides the quiet window after a bubble (see the module documentation).
pub fn decide(evidence: &Evidence, rhythm: &PersonRhythm, config: &TurnConfig) -> Decision {
    let p = p_end(evidence, rhythm, config);
    let prior = if evidence.typing {
        TYPING_PRIOR
    } else {
        SILENT_PRIOR
    };
    let prior = PausePrior {
        log_mean: prior.log_mean + tempo_shift(rhythm, config),
        ..prior
    };
    let pause = blend(&prior, rhythm, config.learn_rhythm);
    let floor = match evidence.class {
        Completeness::Partial => config.window_partial_ms,
        _ => config.window_complete_ms,
    };
    let ceiling = evidence
        .cap_left_ms
        .min(config.endpoint_patience_ms.max(floor));
    let lag = config.typing_cadence_min_ms as f64;
    let patience = PATIENCE_PRICE * config.endpoint_patience_ms.max(1) as f64;
    let cost = |w: f64| (1.0 - p) * pause.survival(w + lag) + p * w / patience;

    let mut best = (f64::INFINITY, ceiling.min(floor));
    if floor < ceiling {
        let mut w = floor as f64;
        loop {
            let j = cost(w);
            if j < best.0 {
                best = (j, w.round() as u64);
            }
            if w >= ceiling as f64 {
                break;
            }
            w = (w * GRID_STEP).max(w + 100.0).min(ceiling as f64);
        }
    }
    Decision {
        window_ms: best.1,
        p_end: p,
        pause_share: pause.share,
        pause_median_ms: pause.log_mean.exp(),
        pause_log_sd: pause.log_sd,
    }
}

/// P(the bubble ends the turn), with this person's habit.
fn p_end(e: &Evidence, rhythm: &PersonRhythm, config: &TurnConfig) -> f64 {
    let base = match e.model_logit {
        Some(l) => l,
        None => {
            let row = match (e.class, e.question) {
                (_, true) => 2,
                (Completeness::Neutral, false) => 0,
                (Completeness::Complete, false) => 1,
                (Completeness::Partial, false) => 3,
            };
            logit(END_RATE[row][e.index.min(3) as usize])
        }
    };
    let person = if config.learn_rhythm {
        // Finished bursts only: the gaps of the burst in progress (one per bubble before this
        // one) say nothing yet about how it ends, and the position already counts them.
        let turns = f64::from(rhythm.reply_samples);
        let bubbles = turns + f64::from(rhythm.gap_samples.saturating_sub(e.index));
        let rate = (turns + END_PRIOR_BUBBLES * END_RATE_ALL) / (bubbles + END_PRIOR_BUBBLES);
        logit(rate) - logit(END_RATE_ALL)
    } else {
        0.0
    };
    sigmoid(base + person)
}

/// How far tempo moves the prior's ln(pause): 0 until the reply latency is known.
fn tempo_shift(r: &PersonRhythm, config: &TurnConfig) -> f64 {
    if !config.use_tempo || r.reply_samples < config.rhythm_min_samples.max(1) {
        return 0.0;
    }
    let Some(typical) = r.typical_reply_ms() else {
        return 0.0;
    };
    let reference = config.tempo_reference_ms.max(1) as f64;
    (TEMPO_SLOPE * (typical / reference).ln()).clamp(-TEMPO_MAX_SHIFT, TEMPO_MAX_SHIFT)
}

/// The person's pause model: their learned statistics weighed against the prior.
fn blend(prior: &PausePrior, r: &PersonRhythm, learn: bool) -> PausePrior {
    if !learn {
        return *prior;
    }
    let k = PAUSE_PRIOR_GAPS;
    let n = f64::from(r.gap_samples).min(PERSON_WEIGHT_MAX);
    let share = (n * r.pause_rate + k * prior.share) / (n + k);
    let np = (f64::from(r.gap_samples) * r.pause_rate).min(PERSON_WEIGHT_MAX);
    let log_mean = (np * r.gap_log_mean + k * prior.log_mean) / (np + k);
    let var = (np * r.gap_log_var + k * prior.log_sd * prior.log_sd) / (np + k);
    PausePrior {
        share,
        log_mean,
        log_sd: var.sqrt().max(MIN_LOG_SD),
    }
}

impl PausePrior {
    /// P(a person who goes on is still quiet after `t_ms`).
    fn survival(&self, t_ms: f64) -> f64 {
        let floor = PAUSE_MS as f64;
        if t_ms < floor {
            // Those who resume "at once" do so some time within the floor; evenly, for want of
            // anything better: windows this short are below every default floor anyway.
            return self.share + (1.0 - self.share) * (1.0 - t_ms.max(0.0) / floor);
        }
        self.share * (self.g(t_ms) / self.g(floor)).min(1.0)
    }

    /// The log-normal survival of a pause.
    fn g(&self, t_ms: f64) -> f64 {
        let z = (t_ms.max(1.0).ln() - self.log_mean) / (self.log_sd * std::f64::consts::SQRT_2);
        (0.5 * erfc(z)).max(1e-12)
    }
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, relative error below
/// 1.2e-7 everywhere): `std` has none.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122),
            (1.0, 0.157_299_207),
            (2.0, 0.004_677_735),
            (-1.0, 1.842_700_793),
        ] {
            assert!((erfc(x) - want).abs() < 1e-6, "erfc({x})");
        }
    }

    #[test]
    fn survival_falls_from_one() {
        let p = TYPING_PRIOR;
        assert!((p.survival(0.0) - 1.0).abs() < 1e-9);
        let at_floor = p.survival(PAUSE_MS as f64);
        assert!((at_floor - p.share).abs() < 1e-9, "{at_floor}");
        assert!(p.survival(5000.0) < at_floor);
        assert!(p.survival(60_000.0) < 0.05);
    }
}
