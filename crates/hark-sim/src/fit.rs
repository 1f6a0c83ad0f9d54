//! `--fit-endpoint`: the population constants of the adaptive endpoint decision
//! (`hark_core::turn::endpoint::decide`), fitted on a trace pooled over every condition.
//!
//! Run on the Chit-Chat **train** split at every typing speed and without typing, and on
//! time-scaled copies, so that no constant belongs to one corpus or one typing speed:
//!
//! ```sh
//! hark sim --trace dataset.json --split train --fit-endpoint \
//!     --typing-cps 2,3,5,10,none --time-scale 0.5,1,2
//! ```
//!
//! What is fitted (each a plain statistic, every condition weighing the same):
//!
//! - `END_RATE`: the share of bubbles that end their turn, by look (neutral, complete, question,
//!   partial) and position in the turn (0, 1, 2, 3+); `END_RATE_ALL` over all bubbles. Timing does
//!   not change these, so every condition gives the same.
//! - `TYPING_PRIOR` and `SILENT_PRIOR`: over the quiet gaps after a bubble that the turn goes on
//!   from (to the person's next typing start or bubble, at most a minute), in conversations with
//!   typing and without: the share longer than `PAUSE_MS`, and the mean and spread of ln(ms) of
//!   those.
//! - How much a person differs from the population, as the number of observations the prior is
//!   worth (method of moments on people with at least two observations): for the pause share
//!   (a beta-binomial's `a + b`), for the mean log pause (within-person variance over
//!   between-person variance) and for the end rate. The decision uses one weight for the pause
//!   model (`PAUSE_PRIOR_GAPS`) and one for the end rate (`END_PRIOR_BUBBLES`).

use std::collections::BTreeMap;

use hark_core::turn::{Completeness, PAUSE_MS, completeness, ends_in_question};

use crate::trace::{Conversation, EventKind, Trace};
use crate::{SimArgs, SimError};

/// Quiet gaps longer than this are not part of a burst (`rhythm_max_gap_ms`'s default).
const MAX_GAP_MS: u64 = 60_000;

/// Runs the fit and prints the constants.
pub fn run(args: &SimArgs) -> Result<(), SimError> {
    let (trace, _) = crate::load(args)?;
    let mut fit = Fit::default();
    let conditions = crate::conditions(args);
    for condition in &conditions {
        let (t, _) = crate::condition_trace(&trace, *condition);
        fit.add(&t, 1.0 / conditions.len() as f64);
    }
    print!("{}", fit.report(&conditions));
    Ok(())
}

/// Statistics gathered over conditions.
#[derive(Debug, Default)]
pub struct Fit {
    ends: [[Tally; 4]; 4],
    typing: Pauses,
    silent: Pauses,
    /// Per person: turns and bubbles.
    people_ends: Vec<PersonEnds>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    ended: f64,
    all: f64,
}

#[derive(Debug, Default)]
struct Pauses {
    gaps: f64,
    pauses: f64,
    log_sum: f64,
    log_sq: f64,
    /// Per person, for the prior strengths.
    people: Vec<PersonPauses>,
}

/// One person's turns and bubbles.
#[derive(Clone, Copy, Debug, Default)]
struct PersonEnds {
    turns: f64,
    bubbles: f64,
}

/// One person's gaps and pauses, with the sum and the sum of squares of ln(pause ms).
#[derive(Clone, Copy, Debug, Default)]
struct PersonPauses {
    gaps: f64,
    pauses: f64,
    log_sum: f64,
    log_sq: f64,
}

impl Fit {
    /// Adds one condition's trace, each observation weighing `weight`.
    pub fn add(&mut self, trace: &Trace, weight: f64) {
        for c in &trace.conversations {
            self.add_conversation(c, weight);
        }
    }

    fn add_conversation(&mut self, c: &Conversation, weight: f64) {
        let pauses = if c.has_typing() {
            &mut self.typing
        } else {
            &mut self.silent
        };
        let mut people: BTreeMap<usize, (PersonEnds, PersonPauses)> = BTreeMap::new();
        for t in c.turns() {
            let msgs: Vec<usize> = (t.first..=t.last)
                .filter(|&i| {
                    c.events[i].sender == t.sender
                        && matches!(c.events[i].kind, EventKind::Message { .. })
                })
                .collect();
            let person = people.entry(t.sender).or_default();
            person.0.turns += 1.0;
            for (k, &i) in msgs.iter().enumerate() {
                let EventKind::Message { text, attachment } = &c.events[i].kind else {
                    continue;
                };
                let last = k + 1 == msgs.len();
                let class = completeness(text, *attachment);
                let row = match (class, ends_in_question(text)) {
                    (Completeness::Complete, true) => 2,
                    (Completeness::Neutral, _) => 0,
                    (Completeness::Complete, false) => 1,
                    (Completeness::Partial, _) => 3,
                };
                let cell = &mut self.ends[row][k.min(3)];
                cell.all += weight;
                cell.ended += if last { weight } else { 0.0 };
                person.0.bubbles += 1.0;
                if last {
                    continue;
                }
                // The quiet gap: to the person's next activity (typing start or bubble).
                let at = c.events[i].ts_ms;
                let Some(next) = c.events[i + 1..]
                    .iter()
                    .find(|e| e.sender == t.sender && !matches!(e.kind, EventKind::Typing(false)))
                else {
                    continue;
                };
                let gap = next.ts_ms.saturating_sub(at);
                if gap > MAX_GAP_MS {
                    continue;
                }
                pauses.gaps += weight;
                person.1.gaps += 1.0;
                if gap > PAUSE_MS {
                    let x = (gap as f64).ln();
                    pauses.pauses += weight;
                    pauses.log_sum += weight * x;
                    pauses.log_sq += weight * x * x;
                    person.1.pauses += 1.0;
                    person.1.log_sum += x;
                    person.1.log_sq += x * x;
                }
            }
        }
        for (_, (ends, gaps)) in people {
            self.people_ends.push(ends);
            pauses.people.push(gaps);
        }
    }

    fn report(&self, conditions: &[crate::Condition]) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "// Fitted by `hark sim --fit-endpoint` over {} conditions: {}.\n",
            conditions.len(),
            conditions
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ));
        for (name, p) in [
            ("TYPING_PRIOR", &self.typing),
            ("SILENT_PRIOR", &self.silent),
        ] {
            if p.gaps == 0.0 {
                s.push_str(&format!("// {name}: no gaps in these conditions\n"));
                continue;
            }
            let share = p.pauses / p.gaps;
            let mean = p.log_sum / p.pauses.max(1e-9);
            let var = (p.log_sq / p.pauses.max(1e-9) - mean * mean).max(0.0);
            let (k_share, k_mean) = strengths(&p.people, share);
            s.push_str(&format!(
                "pub const {name}: PausePrior = PausePrior {{ share: {share:.3}, log_mean: {mean:.2}, log_sd: {:.2} }};\n\
                 // {name}: {} people; the prior is worth {k_share:.1} gaps for the share, {k_mean:.1} pauses for the mean\n",
                var.sqrt(),
                p.people.len(),
            ));
        }
        s.push_str("pub const END_RATE: [[f64; 4]; 4] = [\n");
        let mut ended = 0.0;
        let mut all = 0.0;
        for row in &self.ends {
            let cells: Vec<String> = row
                .iter()
                .map(|c| {
                    ended += c.ended;
                    all += c.all;
                    format!("{:.2}", (c.ended + 1.0) / (c.all + 2.0))
                })
                .collect();
            s.push_str(&format!("    [{}],\n", cells.join(", ")));
        }
        s.push_str("];\n");
        let rate = ended / all.max(1e-9);
        s.push_str(&format!("pub const END_RATE_ALL: f64 = {rate:.3};\n"));
        let k_end = beta_strength(self.people_ends.iter().map(|p| (p.bubbles, p.turns)), rate);
        s.push_str(&format!(
            "// END_RATE: a person's end rate is worth {k_end:.1} bubbles of the prior\n"
        ));
        s
    }
}

/// The prior strengths of the pause share and of the mean log pause.
fn strengths(people: &[PersonPauses], share: f64) -> (f64, f64) {
    let k_share = beta_strength(people.iter().map(|p| (p.gaps, p.pauses)), share);
    // Mean log pause: within-person variance over the variance of people's means beyond what
    // their own sampling explains.
    let (mut within, mut wn) = (0.0, 0.0);
    let mut means = Vec::new();
    for p in people {
        let (n, sum, sq) = (p.pauses, p.log_sum, p.log_sq);
        if n < 2.0 {
            continue;
        }
        let m = sum / n;
        within += sq - n * m * m;
        wn += n - 1.0;
        means.push((n, m));
    }
    if means.len() < 2 || wn == 0.0 {
        return (k_share, f64::NAN);
    }
    let within = within / wn;
    let grand = means.iter().map(|(_, m)| m).sum::<f64>() / means.len() as f64;
    let between = means.iter().map(|(_, m)| (m - grand).powi(2)).sum::<f64>()
        / (means.len() - 1) as f64
        - means.iter().map(|(n, _)| within / n).sum::<f64>() / means.len() as f64;
    (k_share, within / between.max(1e-9))
}

/// A beta prior's strength `a + b` from people's (trials, successes), by the method of moments.
fn beta_strength(people: impl Iterator<Item = (f64, f64)>, p: f64) -> f64 {
    let mut rates = Vec::new();
    let mut noise = 0.0;
    for (n, k) in people {
        if n < 2.0 {
            continue;
        }
        rates.push(k / n);
        noise += p * (1.0 - p) / n;
    }
    if rates.len() < 2 {
        return f64::NAN;
    }
    let m = rates.len() as f64;
    let mean = rates.iter().sum::<f64>() / m;
    let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (m - 1.0);
    let between = (var - noise / m).max(1e-9);
    p * (1.0 - p) / between - 1.0
}
