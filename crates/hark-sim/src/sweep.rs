//! `--sweep`: frontiers instead of points.
//!
//! Each *family* of policies runs over its parameter in every condition (typing speed):
//!
//! - `fixed:W`, the seed's plain debounce, for W in [`WINDOWS_MS`] (0.5 to 15 s);
//! - `typing:W+spec`, the plain typing gate with barge-in, the rechecks and speculation, for the
//!   same W;
//! - the engine, `default+patienceP`, for P in [`PATIENCE_MS`]: the shipped configuration
//!   with its one patience knob, `endpoint_patience_ms`, moved;
//!
//! plus `default` itself. A family's *curve* is its points (median dead air, premature rate); its
//! premature rate at a dead-air budget B is read on the lower envelope of those points (the
//! points no other point of the family beats on both), linearly interpolated between the two that
//! bracket B, and equal to the best point's when B lies beyond the family's longest median (more
//! budget never hurts). Below the family's shortest median there is no value. The dead air at a
//! premature budget is read the same way, the other way round. The *envelope* is the better of
//! `fixed` and `typing+spec` at each budget: the engine should lie on or below it.
//!
//! The same reading on the p90 dead air instead of the median (the *p90 frontier*, at
//! [`P90_BUDGETS_MS`]) shows what the slowest tenth of finished turns pays: a family that
//! waits for everyone has equal p50 and p90, the engine waits long only for some turns, so where
//! its lead at equal median dead air shrinks or turns at equal p90 it is a median effect.
//!
//! The `fixed` family ignores typing (no gate, no rechecks), so it is run once, on the trace
//! without synthesised typing, and shared by every condition. Every other run prepares each
//! conversation's episodes once per condition and replays all its policies on them.

use std::fmt::Write;
use std::io::IsTerminal;
use std::time::Instant;

use serde_json::{Value, json};

use crate::policy::Policy;
use crate::report::{PolicyReport, TraceSummary};
use crate::{Condition, SimArgs, SimError, TypingSpeed, plot};

/// The windows of the `fixed` and `typing+spec` families.
pub const WINDOWS_MS: &[u64] = &[
    500, 750, 1000, 1250, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000, 10_000, 12_000, 15_000,
];

/// The values of `endpoint_patience_ms` the engine runs with.
pub const PATIENCE_MS: &[u64] = &[
    800, 1200, 1600, 2000, 2500, 3000, 3600, 4500, 6000, 8000, 10_000, 12_000, 15_000, 20_000,
    25_000, 30_000, 40_000, 60_000, 80_000,
];

/// Median dead-air budgets at which the families' premature rates are compared.
pub const DEAD_AIR_BUDGETS_MS: &[u64] = &[1000, 1500, 2000, 3000, 5000, 8000];

/// p90 dead-air budgets at which the families' premature rates are compared.
pub const P90_BUDGETS_MS: &[u64] = &[1500, 2000, 3000, 5000, 8000, 10_000];

/// Premature-rate budgets at which the families' median dead airs are compared.
pub const PREMATURE_BUDGETS: &[f64] = &[0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40];

/// One point of a family: its parameter and what it measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// The family's parameter: a window or a patience, in ms.
    pub param_ms: u64,
    /// Share of turns answered prematurely.
    pub premature: f64,
    /// Median dead air (turns not premature), if any turn got a reply.
    pub p50_ms: Option<u64>,
    /// 90th percentile of the dead air.
    pub p90_ms: Option<u64>,
}

impl Point {
    fn of(param_ms: u64, r: &PolicyReport) -> Point {
        Point {
            param_ms,
            premature: r.premature_rate(),
            p50_ms: r.dead_air(0.5),
            p90_ms: r.dead_air(0.9),
        }
    }
}

/// A family's points over its parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// `fixed`, `typing+spec` or `engine`.
    pub family: &'static str,
    /// In the order of the parameter.
    pub points: Vec<Point>,
}

/// Which dead air a curve is read on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantile {
    /// The median dead air.
    P50,
    /// The 90th percentile.
    P90,
}

impl Point {
    fn dead_air_ms(&self, q: Quantile) -> Option<u64> {
        match q {
            Quantile::P50 => self.p50_ms,
            Quantile::P90 => self.p90_ms,
        }
    }
}

impl Curve {
    /// The lower envelope: (dead air ms at `q`, premature) sorted by dead air, each better than
    /// every point before it.
    fn frontier(&self, q: Quantile) -> Vec<(f64, f64)> {
        let mut pts: Vec<(f64, f64)> = self
            .points
            .iter()
            .filter_map(|p| Some((p.dead_air_ms(q)? as f64, p.premature)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut out: Vec<(f64, f64)> = Vec::new();
        for p in pts {
            if out.last().is_none_or(|l| p.1 < l.1) {
                out.push(p);
            }
        }
        out
    }

    /// The premature rate at a median dead air of `budget_ms` (see the module documentation).
    pub fn premature_at(&self, budget_ms: f64) -> Option<f64> {
        self.premature_at_quantile(Quantile::P50, budget_ms)
    }

    /// The premature rate at a dead air of `budget_ms` at quantile `q`, read like
    /// [`Curve::premature_at`].
    pub fn premature_at_quantile(&self, q: Quantile, budget_ms: f64) -> Option<f64> {
        let f = self.frontier(q);
        let first = f.first()?;
        if budget_ms < first.0 {
            return None;
        }
        for w in f.windows(2) {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            if budget_ms <= x1 {
                return Some(y0 + (y1 - y0) * (budget_ms - x0) / (x1 - x0));
            }
        }
        f.last().map(|p| p.1)
    }

    /// The median dead air needed for a premature rate of `budget` (see the module documentation).
    pub fn dead_air_at(&self, budget: f64) -> Option<f64> {
        let f = self.frontier(Quantile::P50);
        let first = f.first()?;
        if budget >= first.1 {
            return Some(first.0);
        }
        for w in f.windows(2) {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            if budget >= y1 {
                return Some(x0 + (x1 - x0) * (y0 - budget) / (y0 - y1));
            }
        }
        None
    }
}

/// One condition of the sweep.
#[derive(Clone, Debug)]
pub struct ConditionSweep {
    /// The condition.
    pub condition: Condition,
    /// Facts about the trace as replayed in this condition.
    pub summary: TraceSummary,
    /// `fixed`, `typing+spec`, `engine`.
    pub curves: Vec<Curve>,
    /// `default`: what an agent runs with no `[agent.turn]` table.
    pub default: Point,
}

impl ConditionSweep {
    fn curve(&self, family: &str) -> Option<&Curve> {
        self.curves.iter().find(|c| c.family == family)
    }

    /// The better of `fixed` and `typing+spec` at a median dead-air budget.
    pub fn envelope_premature_at(&self, budget_ms: f64) -> Option<f64> {
        self.envelope_premature_at_quantile(Quantile::P50, budget_ms)
    }

    /// The better of `fixed` and `typing+spec` at a dead-air budget at quantile `q`.
    pub fn envelope_premature_at_quantile(&self, q: Quantile, budget_ms: f64) -> Option<f64> {
        ["fixed", "typing+spec"]
            .iter()
            .filter_map(|f| self.curve(f)?.premature_at_quantile(q, budget_ms))
            .reduce(f64::min)
    }

    /// The better of `fixed` and `typing+spec` at a premature budget.
    pub fn envelope_dead_air_at(&self, budget: f64) -> Option<f64> {
        ["fixed", "typing+spec"]
            .iter()
            .filter_map(|f| self.curve(f)?.dead_air_at(budget))
            .reduce(f64::min)
    }

    fn label(&self) -> String {
        let typing = match self.condition.typing {
            TypingSpeed::None if self.summary.typing == "trace" => "typing from the trace".into(),
            TypingSpeed::None => "no typing".into(),
            TypingSpeed::Cps(c) => format!("typing at {c} chars/s"),
        };
        if self.condition.time_scale == 1.0 {
            typing
        } else {
            format!("{typing}, times ×{}", self.condition.time_scale)
        }
    }
}

/// Runs the sweep and prints it (`--json`: one object), and writes the plot if asked.
pub fn run(args: &SimArgs) -> Result<(), SimError> {
    let started = Instant::now();
    let progress = !args.json && std::io::stderr().is_terminal();
    let sweep = sweep(args, progress)?;
    let elapsed = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", to_json(&sweep));
    } else {
        print!("{}", to_table(&sweep));
        let scales = args.time_scale.len().max(1);
        let runs =
            scales * WINDOWS_MS.len() + sweep.len() * (WINDOWS_MS.len() + PATIENCE_MS.len() + 1);
        eprintln!(
            "swept {} condition{} × {} turns ({} policy runs) in {elapsed:.1} s",
            sweep.len(),
            if sweep.len() == 1 { "" } else { "s" },
            sweep.first().map_or(0, |c| c.summary.turns),
            runs
        );
    }
    if let Some(path) = &args.plot {
        let title = match sweep.first() {
            Some(c) => format!(
                "hark sim --sweep: {}{} ({} turns)",
                c.summary.file,
                c.summary
                    .split
                    .map(|s| format!(", {s} split"))
                    .unwrap_or_default(),
                c.summary.turns,
            ),
            None => "hark sim --sweep".to_owned(),
        };
        let panels: Vec<plot::Panel> = sweep
            .iter()
            .map(|c| plot::Panel {
                title: c.label(),
                curves: c.curves.clone(),
                default: c.default,
            })
            .collect();
        crate::write_plot(path, &plot::sweep_svg(&title, &panels))?;
    }
    Ok(())
}

/// Runs every family in every condition.
pub fn sweep(args: &SimArgs, progress: bool) -> Result<Vec<ConditionSweep>, SimError> {
    let (trace, format) = crate::load(args)?;
    let llm = crate::llm_of(args);
    let jobs = crate::jobs_of(args);
    let parse = |name: String| Policy::parse(&name).map_err(SimError::from);

    let fixed_policies = WINDOWS_MS
        .iter()
        .map(|w| parse(format!("fixed:{w}")))
        .collect::<Result<Vec<_>, _>>()?;
    // The debounce ignores typing: one run per time scale serves every typing speed.
    let mut fixed_by_scale: Vec<(f64, Curve)> = Vec::new();

    let mut policies = vec![parse("default".to_owned())?];
    for w in WINDOWS_MS {
        policies.push(parse(format!("typing:{w}+spec"))?);
    }
    for p in PATIENCE_MS {
        policies.push(parse(format!("default+patience{p}"))?);
    }
    let mut out = Vec::new();
    for condition in crate::conditions(args) {
        let fixed = match fixed_by_scale
            .iter()
            .find(|(s, _)| *s == condition.time_scale)
        {
            Some((_, c)) => c.clone(),
            None => {
                let untyped = Condition {
                    typing: TypingSpeed::None,
                    ..condition
                };
                let (trace, _) = crate::condition_trace(&trace, untyped);
                let reports = crate::simulate(&trace, &fixed_policies, &llm, jobs, progress);
                crate::warn_cut(&reports);
                let c = Curve {
                    family: "fixed",
                    points: WINDOWS_MS
                        .iter()
                        .zip(&reports)
                        .map(|(&w, r)| Point::of(w, r))
                        .collect(),
                };
                fixed_by_scale.push((condition.time_scale, c.clone()));
                c
            }
        };
        let (trace, label) = crate::condition_trace(&trace, condition);
        let summary = crate::summarise(&trace, args, format, condition, label, &llm);
        let reports = crate::simulate(&trace, &policies, &llm, jobs, progress);
        crate::warn_cut(&reports);
        let (default, rest) = reports.split_at(1);
        let (typing_reports, engine_reports) = rest.split_at(WINDOWS_MS.len());
        let curve = |family, params: &[u64], reports: &[PolicyReport]| Curve {
            family,
            points: params
                .iter()
                .zip(reports)
                .map(|(&p, r)| Point::of(p, r))
                .collect(),
        };
        out.push(ConditionSweep {
            condition,
            summary,
            curves: vec![
                fixed,
                curve("typing+spec", WINDOWS_MS, typing_reports),
                curve("engine", PATIENCE_MS, engine_reports),
            ],
            default: Point::of(
                hark_core::turn::TurnConfig::default().endpoint_patience_ms,
                &default[0],
            ),
        });
    }
    Ok(out)
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * 100.0))
}

fn secs(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{:.1}s", ms / 1000.0))
}

/// The tables: per condition, premature at dead-air budgets and dead air at premature budgets,
/// per family and for the envelope, and the default's point.
pub fn to_table(sweep: &[ConditionSweep]) -> String {
    let mut s = String::new();
    if let Some(c) = sweep.first() {
        let t = &c.summary;
        let _ = writeln!(
            s,
            "sweep of {} ({}{}): {} turns; LLM ttft {} ms, {} tokens/s, {} tokens: {} ms per \
             generation",
            t.file,
            t.format,
            t.split.map(|x| format!(", {x} split")).unwrap_or_default(),
            t.turns,
            t.llm_ttft_ms,
            t.llm_tps,
            t.reply_tokens,
            t.generation_ms
        );
    }
    for c in sweep {
        let _ = writeln!(s, "\n== {} ({})", c.label(), c.summary.typing);
        premature_block(&mut s, c, Quantile::P50);

        let _ = write!(s, "{:<32}", "median dead air at premature");
        for b in PREMATURE_BUDGETS {
            let _ = write!(s, "{:>8}", format!("{:.0}%", b * 100.0));
        }
        s.push('\n');
        for curve in &c.curves {
            let _ = write!(s, "{:<32}", curve.family);
            for b in PREMATURE_BUDGETS {
                let _ = write!(s, "{:>8}", secs(curve.dead_air_at(*b)));
            }
            s.push('\n');
        }
        let _ = write!(s, "{:<32}", "envelope (fixed, typing+spec)");
        for b in PREMATURE_BUDGETS {
            let _ = write!(s, "{:>8}", secs(c.envelope_dead_air_at(*b)));
        }
        s.push('\n');

        premature_block(&mut s, c, Quantile::P90);

        let d = c.default;
        let env = d.p50_ms.and_then(|m| c.envelope_premature_at(m as f64));
        let _ = writeln!(
            s,
            "default (endpoint_patience_ms {}): {} premature, dead air p50 {}, p90 {}; envelope \
             at its median {}{}",
            d.param_ms,
            pct(Some(d.premature)),
            secs(d.p50_ms.map(|m| m as f64)),
            secs(d.p90_ms.map(|m| m as f64)),
            pct(env),
            env.map(|e| format!(" ({:+.1} points)", (d.premature - e) * 100.0))
                .unwrap_or_default(),
        );
    }
    s.push_str(
        "\nA family's premature rate at a budget is read on its curve (its points' lower \
         envelope, interpolated linearly); `-`: the family never answers that fast, or never that \
         safely. Envelope: the better of fixed and typing+spec.\n",
    );
    s
}

/// Premature rate per family, the envelope and the engine's lead at the dead-air budgets of `q`.
fn premature_block(s: &mut String, c: &ConditionSweep, q: Quantile) {
    let (title, budgets) = match q {
        Quantile::P50 => ("premature at median dead air", DEAD_AIR_BUDGETS_MS),
        Quantile::P90 => ("premature at p90 dead air", P90_BUDGETS_MS),
    };
    let _ = write!(s, "{title:<32}");
    for b in budgets {
        let _ = write!(s, "{:>8}", format!("{:.1}s", *b as f64 / 1000.0));
    }
    s.push('\n');
    let row = |s: &mut String, name: &str, f: &dyn Fn(f64) -> Option<f64>| {
        let _ = write!(s, "{name:<32}");
        for b in budgets {
            let _ = write!(s, "{:>8}", pct(f(*b as f64)));
        }
        s.push('\n');
    };
    for curve in &c.curves {
        row(s, curve.family, &|b| curve.premature_at_quantile(q, b));
    }
    row(s, "envelope (fixed, typing+spec)", &|b| {
        c.envelope_premature_at_quantile(q, b)
    });
    let _ = write!(s, "{:<32}", "engine − envelope (points)");
    for b in budgets {
        let d = c
            .curve("engine")
            .and_then(|e| e.premature_at_quantile(q, *b as f64))
            .zip(c.envelope_premature_at_quantile(q, *b as f64))
            .map(|(e, v)| format!("{:+.1}", (e - v) * 100.0));
        let _ = write!(s, "{:>8}", d.unwrap_or_else(|| "-".into()));
    }
    s.push('\n');
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The `--sweep --json` object.
pub fn to_json(sweep: &[ConditionSweep]) -> Value {
    let point = |p: &Point| {
        json!({
            "param_ms": p.param_ms,
            "premature_rate": round(p.premature, 4),
            "dead_air_ms": {"p50": p.p50_ms, "p90": p.p90_ms},
        })
    };
    let conditions: Vec<Value> = sweep
        .iter()
        .map(|c| {
            let families: serde_json::Map<String, Value> = c
                .curves
                .iter()
                .map(|curve| {
                    let at_dead_air: serde_json::Map<String, Value> = DEAD_AIR_BUDGETS_MS
                        .iter()
                        .map(|b| {
                            (
                                b.to_string(),
                                json!(curve.premature_at(*b as f64).map(|x| round(x, 4))),
                            )
                        })
                        .collect();
                    let at_p90: serde_json::Map<String, Value> = P90_BUDGETS_MS
                        .iter()
                        .map(|b| {
                            (
                                b.to_string(),
                                json!(
                                    curve
                                        .premature_at_quantile(Quantile::P90, *b as f64)
                                        .map(|x| round(x, 4))
                                ),
                            )
                        })
                        .collect();
                    let at_premature: serde_json::Map<String, Value> = PREMATURE_BUDGETS
                        .iter()
                        .map(|b| {
                            (
                                format!("{b}"),
                                json!(curve.dead_air_at(*b).map(|x| x.round())),
                            )
                        })
                        .collect();
                    (
                        curve.family.to_owned(),
                        json!({
                            "points": curve.points.iter().map(point).collect::<Vec<_>>(),
                            "premature_at_dead_air_ms": at_dead_air,
                            "premature_at_p90_dead_air_ms": at_p90,
                            "dead_air_ms_at_premature": at_premature,
                        }),
                    )
                })
                .collect();
            let envelope: serde_json::Map<String, Value> = DEAD_AIR_BUDGETS_MS
                .iter()
                .map(|b| {
                    (
                        b.to_string(),
                        json!(c.envelope_premature_at(*b as f64).map(|x| round(x, 4))),
                    )
                })
                .collect();
            let envelope_p90: serde_json::Map<String, Value> = P90_BUDGETS_MS
                .iter()
                .map(|b| {
                    (
                        b.to_string(),
                        json!(
                            c.envelope_premature_at_quantile(Quantile::P90, *b as f64)
                                .map(|x| round(x, 4))
                        ),
                    )
                })
                .collect();
            let d = c.default;
            json!({
                "typing": c.summary.typing,
                "typing_cps": match c.condition.typing { TypingSpeed::Cps(x) => json!(x), TypingSpeed::None => Value::Null },
                "time_scale": c.summary.time_scale,
                "turns": c.summary.turns,
                "families": families,
                "envelope_premature_at_dead_air_ms": envelope,
                "envelope_premature_at_p90_dead_air_ms": envelope_p90,
                "default": {
                    "endpoint_patience_ms": d.param_ms,
                    "premature_rate": round(d.premature, 4),
                    "dead_air_ms": {"p50": d.p50_ms, "p90": d.p90_ms},
                    "envelope_premature_at_its_median": d.p50_ms.and_then(|m| c.envelope_premature_at(m as f64)).map(|x| round(x, 4)),
                },
            })
        })
        .collect();
    let trace = sweep.first().map(|c| {
        json!({
            "file": c.summary.file,
            "format": c.summary.format,
            "split": c.summary.split,
            "turns": c.summary.turns,
            "llm": {
                "ttft_ms": c.summary.llm_ttft_ms,
                "tps": c.summary.llm_tps,
                "reply_tokens": c.summary.reply_tokens,
                "generation_ms": c.summary.generation_ms,
            },
        })
    });
    json!({ "trace": trace, "conditions": conditions })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(points: &[(u64, f64)]) -> Curve {
        Curve {
            family: "t",
            points: points
                .iter()
                .enumerate()
                .map(|(i, &(p50, premature))| Point {
                    param_ms: i as u64,
                    premature,
                    p50_ms: Some(p50),
                    p90_ms: Some(p50),
                })
                .collect(),
        }
    }

    #[test]
    fn reading_a_curve_at_budgets() {
        // A dominated point (3 s, 45%) is ignored; 2 s lies between 1 s and 4 s.
        let c = curve(&[(1000, 0.40), (3000, 0.45), (4000, 0.10), (8000, 0.05)]);
        assert_eq!(c.premature_at(500.0), None, "never that fast");
        assert_eq!(c.premature_at(1000.0), Some(0.40));
        let at2 = c.premature_at(2000.0).unwrap();
        assert!((at2 - 0.30).abs() < 1e-9, "{at2}");
        assert_eq!(
            c.premature_at(20_000.0),
            Some(0.05),
            "more budget never hurts"
        );
        assert_eq!(c.dead_air_at(0.5), Some(1000.0));
        let at20 = c.dead_air_at(0.20).unwrap();
        assert!((at20 - 3000.0).abs() < 1e-6, "{at20}");
        assert_eq!(c.dead_air_at(0.01), None, "never that safe");
    }

    #[test]
    fn the_p90_frontier_reads_the_p90_dead_air() {
        // Two points with the same median: on the p90 curve the one that keeps a tenth of its
        // turns waiting 6 s is a different trade-off from the one that never waits.
        let mut c = curve(&[(1400, 0.10), (1400, 0.07)]);
        c.points[0].p90_ms = Some(1400);
        c.points[1].p90_ms = Some(6000);
        assert_eq!(
            c.premature_at(1500.0),
            Some(0.07),
            "the median hides the wait"
        );
        assert_eq!(c.premature_at_quantile(Quantile::P90, 1400.0), Some(0.10));
        let at = c.premature_at_quantile(Quantile::P90, 3700.0).unwrap();
        assert!((at - 0.085).abs() < 1e-9, "{at}");
        assert_eq!(c.premature_at_quantile(Quantile::P90, 1000.0), None);
    }
}
