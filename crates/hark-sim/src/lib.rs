//! `hark sim` (SPEC.md section 8): replays real chat logs through the same [`TurnEngine`] code the
//! server runs, on a virtual clock, and compares turn-taking policies side by side.
//!
//! - [`read`]: trace readers (Chit-Chat, hark JSONL, Slack, Telegram, macOS Messages) into the
//!   common [`trace::Trace`].
//! - [`typing`]: synthesised typing for traces without typing events.
//! - [`policy`]: `fixed:MS`, `punct`, `typing`, `adaptive`, `oracle` and their modifiers.
//! - [`sim`]: one episode per turn, the stand-in LLM, and what is measured (see its docs).
//! - [`report`]: the metrics, the table and the `--json` object; [`plot`]: the SVG.
//!
//! [`TurnEngine`]: hark_core::turn::TurnEngine

pub mod plot;
pub mod policy;
pub mod read;
pub mod report;
pub mod sim;
pub mod trace;
pub mod typing;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::policy::{DEFAULT_POLICIES, Policy, PolicyError};
use crate::read::{Format, Split, TraceError};
use crate::report::{PolicyReport, TraceSummary};
use crate::sim::{LlmModel, TurnResult};
use crate::trace::{EventKind, Trace};

/// `hark sim`: replay a chat log through the turn engine and compare policies.
#[derive(Clone, Debug, clap::Args)]
pub struct SimArgs {
    /// The trace: a file, or a Slack channel folder.
    #[arg(long)]
    pub trace: PathBuf,
    /// Its format (detected from the content when left out).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Chit-Chat only: the train or test split (both when left out).
    #[arg(long, value_enum)]
    pub split: Option<Split>,
    /// A policy to simulate; repeat for several. fixed:MS, punct, typing[:MS], adaptive, oracle,
    /// with modifiers +spec, -nobargein, -norhythm, -notempo, -notyping, -nocontrol, -nocap, +cap,
    /// +capMS.
    /// Default: fixed:800, fixed:2000, fixed:8000, punct, typing-nobargein, typing,
    /// adaptive-nobargein, adaptive-norhythm, adaptive, adaptive+spec, oracle.
    #[arg(long = "policy", value_name = "P")]
    pub policies: Vec<String>,
    /// Synthesise typing for conversations without typing events: each bubble is typed for
    /// chars / N seconds before it is sent.
    #[arg(long, value_name = "N")]
    pub typing_cps: Option<f64>,
    /// The stand-in LLM's time to first token.
    #[arg(long, default_value_t = 600, value_name = "MS")]
    pub llm_ttft_ms: u64,
    /// The stand-in LLM's tokens per second.
    #[arg(long, default_value_t = 40.0, value_name = "N")]
    pub llm_tps: f64,
    /// Length of every reply in tokens (4 characters each, in sentences of about 40 characters:
    /// 20 tokens is two bubbles of a median chat message's length).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub reply_tokens: u32,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write the dead-air CDF and the premature × dead-air frontier as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Worker threads (default: the available cores). The output does not depend on it.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("--typing-cps must be a positive number of characters per second")]
    TypingCps,
    #[error("--llm-tps must be positive")]
    Tps,
    #[error("cannot write the plot {path}: {error}")]
    Plot {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Runs `hark sim` and prints the table (or the JSON object) on stdout.
pub fn run(args: &SimArgs) -> Result<(), SimError> {
    let started = Instant::now();
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let (summary, reports) = evaluate(args, show_progress)?;
    if args.json {
        println!("{}", report::to_json(&summary, &reports));
    } else {
        print!("{}", report::to_table(&summary, &reports));
        eprintln!(
            "simulated {} turns × {} policies in {:.2} s",
            summary.turns,
            reports.len(),
            started.elapsed().as_secs_f64()
        );
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "hark sim: {}{} ({} turns, typing: {})",
            summary.file,
            summary
                .split
                .map(|s| format!(", {s} split"))
                .unwrap_or_default(),
            summary.turns,
            summary.typing
        );
        std::fs::write(path, plot::svg(&title, &reports)).map_err(|error| SimError::Plot {
            path: path.clone(),
            error,
        })?;
    }
    Ok(())
}

/// Reads the trace, prepares typing and runs every policy: what `run` prints.
pub fn evaluate(
    args: &SimArgs,
    progress: bool,
) -> Result<(TraceSummary, Vec<PolicyReport>), SimError> {
    let policies = parse_policies(&args.policies)?;
    if args.typing_cps.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
        return Err(SimError::TypingCps);
    }
    if !(args.llm_tps > 0.0 && args.llm_tps.is_finite()) {
        return Err(SimError::Tps);
    }
    let (mut trace, format) = read::read_trace(&args.trace, args.format, args.split)?;
    let typing = prepare_typing(&mut trace, args.typing_cps);
    let llm = LlmModel {
        ttft_ms: args.llm_ttft_ms,
        tokens_per_s: args.llm_tps,
        reply_tokens: args.reply_tokens,
    };
    let summary = summarise(&trace, args, format, typing, &llm);
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let reports = simulate(&trace, &policies, &llm, jobs, progress);
    for r in reports.iter().filter(|r| r.cut > 0) {
        eprintln!(
            "warning: {}: {} turns had not settled {} minutes after their end and were cut",
            r.policy,
            r.cut,
            sim::EPISODE_LIMIT_MS / 60_000
        );
    }
    Ok((summary, reports))
}

impl SimArgs {
    /// The defaults of the command line for `trace` (for tests and embedding).
    pub fn new(trace: impl Into<PathBuf>) -> Self {
        SimArgs {
            trace: trace.into(),
            format: None,
            split: None,
            policies: Vec::new(),
            typing_cps: None,
            llm_ttft_ms: 600,
            llm_tps: 40.0,
            reply_tokens: 20,
            json: false,
            plot: None,
            jobs: None,
        }
    }
}

/// The policies named, or the default set.
pub fn parse_policies(names: &[String]) -> Result<Vec<Policy>, PolicyError> {
    if names.is_empty() {
        DEFAULT_POLICIES.iter().map(|p| Policy::parse(p)).collect()
    } else {
        names.iter().map(|p| Policy::parse(p)).collect()
    }
}

/// Synthesises typing where the trace has none (with `cps`), and says where typing comes from.
pub fn prepare_typing(trace: &mut Trace, cps: Option<f64>) -> String {
    let from_trace = trace.conversations.iter().any(|c| c.has_typing());
    let mut synthesised = false;
    if let Some(cps) = cps {
        for c in &mut trace.conversations {
            synthesised |= typing::synthesise(c, cps);
        }
    }
    match (from_trace, synthesised, cps) {
        (true, true, Some(cps)) => format!("trace, synthesised at {cps} chars/s elsewhere"),
        (false, true, Some(cps)) => format!("synthesised at {cps} chars/s"),
        (true, _, _) => "trace".to_owned(),
        _ => "none".to_owned(),
    }
}

fn summarise(
    trace: &Trace,
    args: &SimArgs,
    format: Format,
    typing: String,
    llm: &LlmModel,
) -> TraceSummary {
    let mut human = Vec::new();
    let mut turns = 0;
    let mut multi = 0;
    for c in &trace.conversations {
        let ts = c.turns();
        turns += ts.len();
        for (k, t) in ts.iter().enumerate() {
            let bubbles = c.events[t.first..=t.last]
                .iter()
                .filter(|e| matches!(e.kind, EventKind::Message { .. }) && e.sender == t.sender)
                .count();
            multi += usize::from(bubbles > 1);
            if let Some(next) = ts.get(k + 1) {
                human.push(c.events[next.first].ts_ms - c.events[t.last].ts_ms);
            }
        }
    }
    human.sort_unstable();
    TraceSummary {
        file: args.trace.file_name().map_or_else(
            || args.trace.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        ),
        format: format.name(),
        split: args.split.map(Split::name),
        conversations: trace.conversations.len(),
        skipped_one_sender: trace.skipped_one_sender,
        senders: trace.senders(),
        messages: trace.messages(),
        turns,
        multi_bubble_turns: multi,
        typing,
        human_reply_ms: human,
        llm_ttft_ms: llm.ttft_ms,
        llm_tps: llm.tokens_per_s,
        reply_tokens: llm.reply_tokens,
        generation_ms: llm.generation_ms(),
    }
}

/// Runs every policy over every conversation on `jobs` threads and aggregates the results in
/// conversation order, so the output does not depend on scheduling.
pub fn simulate(
    trace: &Trace,
    policies: &[Policy],
    llm: &LlmModel,
    jobs: usize,
    progress: bool,
) -> Vec<PolicyReport> {
    let total: usize = trace.conversations.iter().map(|c| c.turns().len()).sum();
    let bar = if progress {
        let bar = ProgressBar::with_draw_target(
            Some((total * policies.len()) as u64),
            ProgressDrawTarget::stderr(),
        );
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} turn replays ({eta} left)")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let n = trace.conversations.len();
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<Vec<Vec<TurnResult>>>>> = Mutex::new(vec![None; n]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(n.max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(conv) = trace.conversations.get(i) else {
                        break;
                    };
                    let episodes = sim::episodes(conv);
                    let per_policy: Vec<Vec<TurnResult>> = policies
                        .iter()
                        .map(|p| sim::run_conversation(&episodes, conv.senders.len(), p, llm))
                        .collect();
                    bar.inc((episodes.len() * policies.len()) as u64);
                    // A poisoned lock means another worker panicked; the scope re-raises that.
                    if let Ok(mut slots) = slots.lock() {
                        slots[i] = Some(per_policy);
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    let slots = slots.into_inner().unwrap_or_default();
    policies
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let results: Vec<TurnResult> = slots
                .iter()
                .flatten()
                .flat_map(|per_policy| per_policy[k].iter().copied())
                .collect();
            PolicyReport::new(&p.name, p.fixed_window_ms(), &results)
        })
        .collect()
}
