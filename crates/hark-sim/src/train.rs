//! `--train-completeness FILE` and `--eval-completeness`: the learned completeness model of
//! `hark_core::turn::CompletenessModel`.
//!
//! Training reads every bubble of the trace (use the Chit-Chat **train** split) with the label
//! "this is the last bubble of its turn" and its position in the turn, hashes its features with
//! hark-core's own [`features`] (so training and inference cannot drift apart), and fits a
//! logistic regression by AdaGrad on the log loss: [`EPOCHS`] passes over the bubbles in a fixed
//! pseudo-random order, learning rate [`LEARNING_RATE`], a small L2 penalty. The weights are then
//! rounded to 16-bit integers with one scale and written in the format hark-core reads. The same
//! trace gives the same file, byte for byte:
//!
//! ```sh
//! hark sim --trace dataset.json --split train \
//!     --train-completeness crates/hark-core/src/turn/endpoint/completeness.bin
//! ```
//!
//! Evaluation prints, on the trace (use the test split), the area under the ROC curve of the
//! built-in model's score, of the punctuation rules alone (question > complete > neutral >
//! partial), and of the rules' table with the position in the turn (what the decision uses
//! without the model); and the time the model takes per bubble.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use hark_core::turn::endpoint::{END_RATE, features};
use hark_core::turn::{
    Attachment, Completeness, CompletenessModel, completeness, ends_in_question,
};

use crate::trace::{EventKind, Trace};
use crate::{SimArgs, SimError};

/// Weights: `2^BITS` buckets of 16 bits (128 KiB).
pub const BITS: u32 = 16;
/// Passes over the training bubbles.
pub const EPOCHS: usize = 2;
/// AdaGrad's learning rate.
pub const LEARNING_RATE: f64 = 0.01;
/// L2 penalty per update.
pub const L2: f64 = 1e-6;

/// One bubble: its text, attachment, position in its turn and whether it ended the turn.
#[derive(Clone, Debug)]
pub struct Example {
    /// The text.
    pub text: String,
    /// The attachment, if any.
    pub attachment: Option<Attachment>,
    /// Bubbles of the turn before it.
    pub index: u32,
    /// It is the last bubble of its turn.
    pub last: bool,
}

/// Every bubble of the trace, in conversation and time order.
pub fn examples(trace: &Trace) -> Vec<Example> {
    let mut out = Vec::new();
    for c in &trace.conversations {
        for t in c.turns() {
            let msgs: Vec<(&String, Option<Attachment>)> = c.events[t.first..=t.last]
                .iter()
                .filter(|e| e.sender == t.sender)
                .filter_map(|e| match &e.kind {
                    EventKind::Message { text, attachment } => Some((text, *attachment)),
                    EventKind::Typing(_) => None,
                })
                .collect();
            let n = msgs.len();
            for (k, (text, attachment)) in msgs.into_iter().enumerate() {
                out.push(Example {
                    text: text.clone(),
                    attachment,
                    index: k as u32,
                    last: k + 1 == n,
                });
            }
        }
    }
    out
}

/// Trains a model on `examples` and returns the file's bytes.
pub fn train(examples: &[Example]) -> Vec<u8> {
    let size = 1usize << BITS;
    let mask = (size - 1) as u32;
    let hashed: Vec<Vec<u32>> = examples
        .iter()
        .map(|e| {
            let mut f = Vec::with_capacity(64);
            features(&e.text, e.attachment, e.index, |h| f.push(h & mask));
            f
        })
        .collect();
    let mut w = vec![0.0f64; size];
    let mut g2 = vec![1e-8f64; size];
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..EPOCHS {
        // Fisher–Yates with xorshift64*: a fixed order, so the same trace gives the same weights.
        for i in (1..order.len()).rev() {
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            let r = rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
            order.swap(i, (r % (i as u64 + 1)) as usize);
        }
        for &j in &order {
            let f = &hashed[j];
            let z: f64 = f
                .iter()
                .map(|&k| w[k as usize])
                .sum::<f64>()
                .clamp(-30.0, 30.0);
            let p = 1.0 / (1.0 + (-z).exp());
            let g = p - f64::from(u8::from(examples[j].last));
            for &k in f {
                let k = k as usize;
                let gk = g + L2 * w[k];
                g2[k] += gk * gk;
                w[k] -= LEARNING_RATE * gk / g2[k].sqrt();
            }
        }
    }
    let max = w.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-9);
    let scale = (max / f64::from(i16::MAX)) as f32;
    let mut bytes = Vec::with_capacity(16 + 2 * size);
    bytes.extend_from_slice(b"HKCM");
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&BITS.to_le_bytes());
    bytes.extend_from_slice(&scale.to_le_bytes());
    for x in w {
        let q = (x / f64::from(scale)).round().clamp(-32767.0, 32767.0) as i16;
        bytes.extend_from_slice(&q.to_le_bytes());
    }
    bytes
}

/// `--train-completeness FILE`.
pub fn run_train(args: &SimArgs, out: &Path) -> Result<(), SimError> {
    let (trace, _) = crate::load(args)?;
    let ex = examples(&trace);
    let started = Instant::now();
    let bytes = train(&ex);
    std::fs::File::create(out)
        .and_then(|mut f| f.write_all(&bytes))
        .map_err(|error| SimError::Model {
            path: out.to_owned(),
            error,
        })?;
    eprintln!(
        "trained on {} bubbles in {:.1} s; wrote {} ({} bytes)",
        ex.len(),
        started.elapsed().as_secs_f64(),
        out.display(),
        bytes.len()
    );
    Ok(())
}

/// `--eval-completeness`.
pub fn run_eval(args: &SimArgs) -> Result<(), SimError> {
    let (trace, _) = crate::load(args)?;
    let ex = examples(&trace);
    let labels: Vec<bool> = ex.iter().map(|e| e.last).collect();
    let model = CompletenessModel::builtin();
    let started = Instant::now();
    let scores: Vec<f64> = ex
        .iter()
        .map(|e| model.logit(&e.text, e.attachment, e.index))
        .collect();
    let us = started.elapsed().as_secs_f64() * 1e6 / ex.len().max(1) as f64;
    let rules: Vec<f64> = ex.iter().map(|e| f64::from(rule_rank(e))).collect();
    let table: Vec<f64> = ex
        .iter()
        .map(|e| END_RATE[table_row(e)][e.index.min(3) as usize])
        .collect();
    println!(
        "{} bubbles, {:.1}% of them the last of their turn",
        ex.len(),
        labels.iter().filter(|&&l| l).count() as f64 * 100.0 / ex.len().max(1) as f64
    );
    println!(
        "AUC, \"this is the last bubble of its turn\": model {:.3}; punctuation rules {:.3}; \
         rules with the position in the turn {:.3}",
        auc(&scores, &labels),
        auc(&rules, &labels),
        auc(&table, &labels)
    );
    println!("model: {us:.2} µs per bubble (features and sum, one thread, this machine)");
    Ok(())
}

/// The punctuation rules as a ranking: question > complete > neutral > partial.
fn rule_rank(e: &Example) -> u8 {
    match completeness(&e.text, e.attachment) {
        Completeness::Complete if ends_in_question(&e.text) => 3,
        Completeness::Complete => 2,
        Completeness::Neutral => 1,
        Completeness::Partial => 0,
    }
}

fn table_row(e: &Example) -> usize {
    match rule_rank(e) {
        3 => 2,
        2 => 1,
        1 => 0,
        _ => 3,
    }
}

/// The area under the ROC curve: the chance that a random positive scores above a random
/// negative (ties count half).
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = labels.iter().filter(|&&l| l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        // Tied scores share the average of their ranks (1-based).
        let rank = (i + j + 1) as f64 / 2.0;
        rank_sum += rank * pairs[i..j].iter().filter(|p| p.1).count() as f64;
        i = j;
    }
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_rankings() {
        assert_eq!(auc(&[1.0, 2.0, 3.0, 4.0], &[false, false, true, true]), 1.0);
        assert_eq!(auc(&[4.0, 3.0, 2.0, 1.0], &[false, false, true, true]), 0.0);
        assert_eq!(auc(&[1.0, 1.0, 1.0, 1.0], &[false, true, false, true]), 0.5);
    }
}
