//! Aggregating turn results into the metrics of SPEC.md section 8, and printing them.

use serde_json::{Value, json};

use crate::sim::TurnResult;

/// The metrics of one policy over a whole trace.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyReport {
    /// The policy, as named.
    pub policy: String,
    /// Turns replayed.
    pub turns: usize,
    /// Turns answered prematurely.
    pub premature: usize,
    /// Turns (not premature) that ended without any reply bubble: deliberately silent.
    pub silent: usize,
    /// Episodes cut at the limit (should be 0).
    pub cut: usize,
    /// Sorted dead air of the turns not premature that got a reply.
    pub dead_air_ms: Vec<u64>,
    /// Sorted endpoint delays of the turns not premature.
    pub endpoint_ms: Vec<u64>,
    /// Generations started.
    pub llm_calls: u64,
    /// Tokens generated for nothing.
    pub wasted_tokens: f64,
    /// The seed's debounce window if this policy is `fixed:MS`.
    pub fixed_window_ms: Option<u64>,
}

impl PolicyReport {
    /// Aggregates the results of one policy's turns.
    pub fn new(policy: &str, fixed_window_ms: Option<u64>, results: &[TurnResult]) -> Self {
        let mut r = PolicyReport {
            policy: policy.to_owned(),
            turns: results.len(),
            premature: 0,
            silent: 0,
            cut: 0,
            dead_air_ms: Vec::new(),
            endpoint_ms: Vec::new(),
            llm_calls: 0,
            wasted_tokens: 0.0,
            fixed_window_ms,
        };
        for t in results {
            r.llm_calls += u64::from(t.llm_calls);
            r.wasted_tokens += t.wasted_tokens;
            r.cut += usize::from(t.cut);
            if t.premature {
                r.premature += 1;
                continue;
            }
            match t.dead_air_ms {
                Some(d) => r.dead_air_ms.push(d),
                None => r.silent += 1,
            }
            if let Some(e) = t.endpoint_ms {
                r.endpoint_ms.push(e);
            }
        }
        r.dead_air_ms.sort_unstable();
        r.endpoint_ms.sort_unstable();
        r
    }

    /// Share of turns answered prematurely.
    pub fn premature_rate(&self) -> f64 {
        ratio(self.premature as f64, self.turns)
    }

    /// Share of turns left deliberately silent.
    pub fn silent_rate(&self) -> f64 {
        ratio(self.silent as f64, self.turns)
    }

    /// Generations per turn.
    pub fn calls_per_turn(&self) -> f64 {
        ratio(self.llm_calls as f64, self.turns)
    }

    /// Wasted tokens per turn.
    pub fn wasted_per_turn(&self) -> f64 {
        ratio(self.wasted_tokens, self.turns)
    }

    /// Share of all turns answered in time (not premature) within `ms` of their end.
    pub fn answered_within(&self, ms: u64) -> f64 {
        let n = self.dead_air_ms.partition_point(|&d| d <= ms);
        ratio(n as f64, self.turns)
    }

    /// The `q` quantile of the dead air (0.5: the median).
    pub fn dead_air(&self, q: f64) -> Option<u64> {
        percentile(&self.dead_air_ms, q)
    }

    /// The `q` quantile of the endpoint delay.
    pub fn endpoint(&self, q: f64) -> Option<u64> {
        percentile(&self.endpoint_ms, q)
    }
}

fn ratio(x: f64, n: usize) -> f64 {
    if n == 0 { 0.0 } else { x / n as f64 }
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1).
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median dead air of the seed's debounce at `premature_rate`, interpolated linearly between
/// the two `fixed:MS` policies of the run whose premature rates bracket it. `None` outside.
pub fn fixed_dead_air_at(reports: &[PolicyReport], premature_rate: f64) -> Option<f64> {
    let mut pts: Vec<(f64, f64)> = reports
        .iter()
        .filter(|r| r.fixed_window_ms.is_some())
        .filter_map(|r| Some((r.premature_rate(), r.dead_air(0.5)? as f64)))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts.windows(2).find_map(|w| {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if premature_rate < x0 || premature_rate > x1 {
            return None;
        }
        if x1 == x0 {
            return Some(y0.min(y1));
        }
        Some(y0 + (y1 - y0) * (premature_rate - x0) / (x1 - x0))
    })
}

/// Facts about the trace and the run, for the `trace` object.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSummary {
    /// The trace's file name.
    pub file: String,
    /// Its format.
    pub format: &'static str,
    /// The Chit-Chat split, if one was picked.
    pub split: Option<&'static str>,
    /// Conversations replayed.
    pub conversations: usize,
    /// Conversations left out because only one person wrote.
    pub skipped_one_sender: usize,
    /// Distinct senders.
    pub senders: usize,
    /// Messages.
    pub messages: usize,
    /// Turns (maximal runs of one sender).
    pub turns: usize,
    /// Turns of two or more bubbles.
    pub multi_bubble_turns: usize,
    /// "none", "trace" or "synthesised at N chars/s".
    pub typing: String,
    /// `--time-scale`: every time in the trace was multiplied by this.
    pub time_scale: f64,
    /// The other side's real reply: turn end → their next message (turns that got one), sorted.
    pub human_reply_ms: Vec<u64>,
    /// `--llm-ttft-ms`.
    pub llm_ttft_ms: u64,
    /// `--llm-tps`.
    pub llm_tps: f64,
    /// `--reply-tokens`.
    pub reply_tokens: u32,
    /// One generation's duration.
    pub generation_ms: u64,
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The one `--json` object: `{"trace": {...}, "policies": [...]}` (SPEC.md section 8).
pub fn to_json(trace: &TraceSummary, reports: &[PolicyReport]) -> Value {
    let policies: Vec<Value> = reports
        .iter()
        .map(|r| {
            let vs_fixed = fixed_dead_air_at(reports, r.premature_rate())
                .zip(r.dead_air(0.5))
                .filter(|_| r.fixed_window_ms.is_none())
                .map(|(f, d)| (d as f64 - f).round());
            json!({
                "policy": r.policy,
                "turns": r.turns,
                "premature_rate": round(r.premature_rate(), 4),
                "dead_air_ms": {"p50": r.dead_air(0.5), "p90": r.dead_air(0.9)},
                "endpoint_delay_ms": {"p50": r.endpoint(0.5), "p90": r.endpoint(0.9)},
                "llm_calls_per_turn": round(r.calls_per_turn(), 3),
                "wasted_tokens_per_turn": round(r.wasted_per_turn(), 2),
                "silent_rate": round(r.silent_rate(), 4),
                "answered_within_2s": round(r.answered_within(2000), 4),
                "dead_air_vs_fixed_ms": vs_fixed,
            })
        })
        .collect();
    json!({
        "trace": {
            "file": trace.file,
            "format": trace.format,
            "split": trace.split,
            "conversations": trace.conversations,
            "skipped_one_sender": trace.skipped_one_sender,
            "senders": trace.senders,
            "messages": trace.messages,
            "turns": trace.turns,
            "multi_bubble_turns": trace.multi_bubble_turns,
            "typing": trace.typing,
            "time_scale": trace.time_scale,
            "human_reply_ms": {
                "p50": percentile(&trace.human_reply_ms, 0.5),
                "p90": percentile(&trace.human_reply_ms, 0.9),
            },
            "llm": {
                "ttft_ms": trace.llm_ttft_ms,
                "tps": trace.llm_tps,
                "reply_tokens": trace.reply_tokens,
                "generation_ms": trace.generation_ms,
            },
        },
        "policies": policies,
    })
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{:.1}", ms as f64 / 1000.0))
}

/// The terminal table.
pub fn to_table(trace: &TraceSummary, reports: &[PolicyReport]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "trace {} ({}{}): {} conversations ({} one-sender left out), {} messages, {} turns \
         ({} with 2+ bubbles), typing: {}\n",
        trace.file,
        trace.format,
        trace
            .split
            .map(|x| format!(", {x} split"))
            .unwrap_or_default(),
        trace.conversations,
        trace.skipped_one_sender,
        trace.messages,
        trace.turns,
        trace.multi_bubble_turns,
        trace.typing,
    ));
    s.push_str(&format!(
        "LLM: ttft {} ms, {} tokens/s, replies of {} tokens: {} ms per generation. \
         The real other side answered after {} s (p50), {} s (p90).\n\n",
        trace.llm_ttft_ms,
        trace.llm_tps,
        trace.reply_tokens,
        trace.generation_ms,
        secs(percentile(&trace.human_reply_ms, 0.5)),
        secs(percentile(&trace.human_reply_ms, 0.9)),
    ));
    let width = reports
        .iter()
        .map(|r| r.policy.len())
        .max()
        .unwrap_or(6)
        .max(6);
    s.push_str(&format!(
        "{:<width$}  {:>9}  {:>13}  {:>13}  {:>10}  {:>10}  {:>9}  {:>6}  {:>6}  {:>8}\n",
        "policy",
        "premature",
        "dead air p50",
        "dead air p90",
        "endpt p50",
        "endpt p90",
        "calls/turn",
        "wasted",
        "≤2s",
        "vs fixed",
    ));
    for r in reports {
        let vs = fixed_dead_air_at(reports, r.premature_rate())
            .zip(r.dead_air(0.5))
            .filter(|_| r.fixed_window_ms.is_none())
            .map_or_else(
                || "-".to_owned(),
                |(f, d)| format!("{:+.1}s", (d as f64 - f) / 1000.0),
            );
        s.push_str(&format!(
            "{:<width$}  {:>8.1}%  {:>12}s  {:>12}s  {:>9}s  {:>9}s  {:>10.2}  {:>6.1}  {:>5.0}%  {:>8}\n",
            r.policy,
            r.premature_rate() * 100.0,
            secs(r.dead_air(0.5)),
            secs(r.dead_air(0.9)),
            secs(r.endpoint(0.5)),
            secs(r.endpoint(0.9)),
            r.calls_per_turn(),
            r.wasted_per_turn(),
            r.answered_within(2000) * 100.0,
            vs,
        ));
    }
    s.push_str(
        "\npremature: a reply delivered before reading the whole turn. Dead air: turn end to the \
         first reply bubble; endpoint: turn end to the commit (both over turns not premature). \
         wasted: tokens aborted or discarded per turn. ≤2s: turns answered, not prematurely, \
         within 2 s of their end. vs fixed: median dead air minus the plain debounce's at the \
         same premature rate (interpolated between the fixed:MS rows).\n",
    );
    s
}
