//! `hark sim` (SPEC.md section 8): replays real chat logs through the same [`TurnEngine`] code the
//! server runs, on a virtual clock, and compares turn-taking policies side by side.
//!
//! - [`read`]: trace readers (Chit-Chat, hark JSONL, Slack, Telegram, macOS Messages) into the
//!   common [`trace::Trace`].
//! - [`typing`]: synthesised typing for traces without typing events.
//! - [`policy`]: `default`, `fixed:MS`, `punct`, `typing`, `adaptive`, `oracle` and their
//!   modifiers.
//! - [`sim`]: one episode per turn, the stand-in LLM, and what is measured (see its docs).
//! - [`report`]: the metrics, the table and the `--json` object; [`plot`]: the SVGs.
//! - [`sweep`]: `--sweep`, each family of policies over its parameter, as frontiers.
//! - [`fit`]: `--fit-endpoint`, the population constants of the endpoint decision;
//!   [`train`]: `--train-completeness` and `--eval-completeness`, the learned completeness model.
//!
//! A run has one or more *conditions*: the typing speeds of `--typing-cps` (a list; `none` keeps
//! the trace's own typing, if any), each applied to the trace scaled by `--time-scale`.
//!
//! [`TurnEngine`]: hark_core::turn::TurnEngine

#![warn(missing_docs)]

pub mod fit;
pub mod plot;
pub mod policy;
pub mod read;
pub mod report;
pub mod sim;
pub mod sweep;
pub mod trace;
pub mod train;
pub mod typing;

use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::str::FromStr;
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
    /// The trace: a file, or a Slack export (a channel folder, or the export's root folder).
    #[arg(long)]
    pub trace: PathBuf,
    /// Its format (detected from the content when left out).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Chit-Chat only: the train or test split (both when left out).
    #[arg(long, value_enum)]
    pub split: Option<Split>,
    /// A policy to simulate; repeat for several. default (what an agent with no [agent.turn]
    /// runs), fixed:MS, punct, typing[:MS], adaptive, oracle, with modifiers +spec, -nobargein,
    /// -norhythm, -notempo, -notyping, -nocontrol, -nocap, +cap, +capMS, +patienceMS, +model,
    /// -model.
    /// Default: fixed:800, fixed:2000, fixed:8000, punct, typing-nobargein, typing, typing+spec,
    /// adaptive-nobargein, adaptive-norhythm, adaptive, default, oracle.
    #[arg(long = "policy", value_name = "P")]
    pub policies: Vec<String>,
    /// Synthesise typing for conversations without typing events: each bubble is typed for
    /// chars / N seconds before it is sent. A comma-separated list runs each speed as its own
    /// condition; `none` is a condition without synthesised typing (e.g. `2,3,5,10,none`).
    #[arg(long, value_name = "N,…", value_delimiter = ',')]
    pub typing_cps: Vec<TypingSpeed>,
    /// Multiply every time in the trace by this before anything else (0.5: people who write twice
    /// as fast), a proxy for chats with other rhythms. A comma-separated list runs each scale
    /// (with each typing speed) as its own condition. Default 1.
    #[arg(long, value_name = "X,…", value_delimiter = ',')]
    pub time_scale: Vec<f64>,
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
    /// Run each family over its parameter (fixed:W and typing:W+spec for W from 0.5 to 15 s, the
    /// engine over endpoint_patience_ms) in every condition, and print the frontiers: premature
    /// rate at median dead-air budgets, dead air at premature budgets, and premature rate at p90
    /// dead-air budgets.
    #[arg(long)]
    pub sweep: bool,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG: the dead-air CDF and the frontier (one condition), or with --sweep one panel
    /// per condition with every family's p50 and p90 curves.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Worker threads (default: the available cores). The output does not depend on it.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Fit the endpoint decision's population constants on the trace (use the train split) in
    /// every condition pooled, and print them as the Rust source of `turn::endpoint::decide`'s
    /// constants.
    #[arg(long, conflicts_with_all = ["sweep", "train_completeness", "eval_completeness"])]
    pub fit_endpoint: bool,
    /// Train the completeness model on the trace (use the train split) and write its weights
    /// to FILE (hark-core's `completeness.bin`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["sweep", "eval_completeness"])]
    pub train_completeness: Option<PathBuf>,
    /// Measure the completeness model on the trace (use the test split): AUC for "this is the
    /// last bubble of its turn" beside the punctuation rules, and microseconds per bubble.
    #[arg(long, conflicts_with = "sweep")]
    pub eval_completeness: bool,
}

/// One condition's typing: synthesised at N characters per second, or none (the trace's own).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TypingSpeed {
    /// No synthesised typing: the trace's own typing events, if it has any.
    None,
    /// Typing synthesised at this many characters per second where the trace has none.
    Cps(f64),
}

impl FromStr for TypingSpeed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Ok(TypingSpeed::None);
        }
        match s.parse::<f64>() {
            Ok(c) if c > 0.0 && c.is_finite() => Ok(TypingSpeed::Cps(c)),
            _ => Err(format!(
                "{s:?} is not a typing speed: give characters per second (a positive number) or none"
            )),
        }
    }
}

impl fmt::Display for TypingSpeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypingSpeed::None => f.write_str("none"),
            TypingSpeed::Cps(c) => write!(f, "{c} chars/s"),
        }
    }
}

/// One condition of a run: a time scale and a typing speed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Condition {
    /// Every time in the trace is multiplied by this.
    pub time_scale: f64,
    /// Typing synthesised at this speed, or none.
    pub typing: TypingSpeed,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.typing {
            TypingSpeed::None => f.write_str("no synthesised typing")?,
            TypingSpeed::Cps(c) => write!(f, "typing at {c} chars/s")?,
        }
        if self.time_scale != 1.0 {
            write!(f, ", times ×{}", self.time_scale)?;
        }
        Ok(())
    }
}

/// Why `hark sim` could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The trace could not be read.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A policy name is not understood.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// `--llm-tps` is zero, negative or not a number.
    #[error("--llm-tps must be positive")]
    Tps,
    /// `--time-scale` is zero, negative or not a number.
    #[error("--time-scale must be a list of positive numbers")]
    TimeScale,
    /// Nothing in the trace can be replayed.
    #[error(
        "{0} holds no turn to replay: no conversation has messages from two senders (a turn is \
         answered by the other side, so a log of one person alone, or an empty one, says nothing \
         about turn-taking)"
    )]
    NoTurns(PathBuf),
    /// The SVG could not be written.
    #[error("cannot write the plot {path}: {error}")]
    Plot {
        /// Where.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The completeness model could not be written.
    #[error("cannot write the model {path}: {error}")]
    Model {
        /// Where.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

/// One condition's results: the trace as replayed, and every policy's metrics.
#[derive(Clone, Debug)]
pub struct ConditionRun {
    /// The condition.
    pub condition: Condition,
    /// Facts about the trace and the run.
    pub summary: TraceSummary,
    /// One report per policy, in the order given.
    pub reports: Vec<PolicyReport>,
}

/// Runs `hark sim` and prints the tables (or the JSON object) on stdout.
pub fn run(args: &SimArgs) -> Result<(), SimError> {
    if let Some(out) = &args.train_completeness {
        return train::run_train(args, out);
    }
    if args.eval_completeness {
        return train::run_eval(args);
    }
    if args.fit_endpoint {
        return fit::run(args);
    }
    if args.sweep {
        return sweep::run(args);
    }
    let started = Instant::now();
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let runs = evaluate(args, show_progress)?;
    if args.json {
        let objects: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| report::to_json(&r.summary, &r.reports))
            .collect();
        match objects.as_slice() {
            [one] => println!("{one}"),
            _ => println!("{}", serde_json::json!({ "conditions": objects })),
        }
    } else {
        for (i, r) in runs.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", report::to_table(&r.summary, &r.reports));
        }
        let turns: usize = runs.iter().map(|r| r.summary.turns).sum();
        eprintln!(
            "simulated {} turns × {} policies in {:.2} s",
            turns,
            runs.first().map_or(0, |r| r.reports.len()),
            started.elapsed().as_secs_f64()
        );
    }
    if let (Some(path), Some(r)) = (&args.plot, runs.first()) {
        let title = format!(
            "hark sim: {}{} ({} turns, typing: {})",
            r.summary.file,
            r.summary
                .split
                .map(|s| format!(", {s} split"))
                .unwrap_or_default(),
            r.summary.turns,
            r.summary.typing
        );
        write_plot(path, &plot::svg(&title, &r.reports))?;
    }
    Ok(())
}

pub(crate) fn write_plot(path: &std::path::Path, svg: &str) -> Result<(), SimError> {
    std::fs::write(path, svg).map_err(|error| SimError::Plot {
        path: path.to_owned(),
        error,
    })
}

/// Reads the trace, then per condition prepares typing and runs every policy: what `run` prints.
pub fn evaluate(args: &SimArgs, progress: bool) -> Result<Vec<ConditionRun>, SimError> {
    let policies = parse_policies(&args.policies)?;
    let (trace, format) = load(args)?;
    let llm = llm_of(args);
    let mut runs = Vec::new();
    for condition in conditions(args) {
        let (trace, typing_label) = condition_trace(&trace, condition);
        let summary = summarise(&trace, args, format, condition, typing_label, &llm);
        let reports = simulate(&trace, &policies, &llm, jobs_of(args), progress);
        warn_cut(&reports);
        runs.push(ConditionRun {
            condition,
            summary,
            reports,
        });
    }
    Ok(runs)
}

/// Reads and checks the trace (as it is: each condition scales its own copy).
pub(crate) fn load(args: &SimArgs) -> Result<(Trace, Format), SimError> {
    if !(args.llm_tps > 0.0 && args.llm_tps.is_finite()) {
        return Err(SimError::Tps);
    }
    if !args.time_scale.iter().all(|x| *x > 0.0 && x.is_finite()) {
        return Err(SimError::TimeScale);
    }
    let (trace, format) = read::read_trace(&args.trace, args.format, args.split)?;
    if trace.turns() == 0 {
        return Err(SimError::NoTurns(args.trace.clone()));
    }
    Ok((trace, format))
}

/// The conditions of the run: every time scale (default 1) with every typing speed (default:
/// none synthesised), in the order given.
pub fn conditions(args: &SimArgs) -> Vec<Condition> {
    let scales = if args.time_scale.is_empty() {
        vec![1.0]
    } else {
        args.time_scale.clone()
    };
    let speeds = if args.typing_cps.is_empty() {
        vec![TypingSpeed::None]
    } else {
        args.typing_cps.clone()
    };
    scales
        .iter()
        .flat_map(|&time_scale| {
            speeds
                .iter()
                .map(move |&typing| Condition { time_scale, typing })
        })
        .collect()
}

/// The trace of one condition (scaled, typing synthesised where it has none) and where its
/// typing comes from.
pub fn condition_trace(trace: &Trace, condition: Condition) -> (Trace, String) {
    let mut trace = trace.clone();
    if condition.time_scale != 1.0 {
        trace.scale_time(condition.time_scale);
    }
    let cps = match condition.typing {
        TypingSpeed::None => None,
        TypingSpeed::Cps(c) => Some(c),
    };
    let label = prepare_typing(&mut trace, cps);
    (trace, label)
}

pub(crate) fn llm_of(args: &SimArgs) -> LlmModel {
    LlmModel {
        ttft_ms: args.llm_ttft_ms,
        tokens_per_s: args.llm_tps,
        reply_tokens: args.reply_tokens,
    }
}

pub(crate) fn jobs_of(args: &SimArgs) -> usize {
    args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}

pub(crate) fn warn_cut(reports: &[PolicyReport]) {
    for r in reports.iter().filter(|r| r.cut > 0) {
        eprintln!(
            "warning: {}: {} turns had not settled {} minutes after their end and were cut",
            r.policy,
            r.cut,
            sim::EPISODE_LIMIT_MS / 60_000
        );
    }
}

impl SimArgs {
    /// The defaults of the command line for `trace` (for tests and embedding).
    pub fn new(trace: impl Into<PathBuf>) -> Self {
        SimArgs {
            trace: trace.into(),
            format: None,
            split: None,
            policies: Vec::new(),
            typing_cps: Vec::new(),
            time_scale: Vec::new(),
            llm_ttft_ms: 600,
            llm_tps: 40.0,
            reply_tokens: 20,
            sweep: false,
            json: false,
            plot: None,
            jobs: None,
            fit_endpoint: false,
            train_completeness: None,
            eval_completeness: false,
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

pub(crate) fn summarise(
    trace: &Trace,
    args: &SimArgs,
    format: Format,
    condition: Condition,
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
        time_scale: condition.time_scale,
        human_reply_ms: human,
        llm_ttft_ms: llm.ttft_ms,
        llm_tps: llm.tokens_per_s,
        reply_tokens: llm.reply_tokens,
        generation_ms: llm.generation_ms(),
    }
}

/// Runs every policy over every conversation on `jobs` threads and aggregates the results in
/// conversation order, so the output does not depend on scheduling. Each conversation's
/// episodes are prepared once and replayed under every policy.
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
