//! `--plot FILE.svg`: a hand-written SVG with two panels: the dead-air CDF of every policy (over
//! all turns, so it tops out at the share not premature), and the premature-rate × median-dead-air
//! frontier (the `fixed:MS` rows joined as the seed's curve).

use std::fmt::Write;

use crate::report::PolicyReport;

const W: f64 = 1100.0;
const H: f64 = 460.0;
const PANEL_W: f64 = 440.0;
const PANEL_H: f64 = 330.0;
const TOP: f64 = 50.0;
const LEFT1: f64 = 60.0;
const LEFT2: f64 = 580.0;
const CDF_MAX_S: f64 = 20.0;

const COLOURS: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#843c39",
];

/// The plot of one condition: the dead-air CDF and the frontier.
pub fn svg(title: &str, reports: &[PolicyReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    cdf_panel(&mut s, reports);
    frontier_panel(&mut s, reports);
    s.push_str("</svg>\n");
    s
}

fn colour(i: usize) -> &'static str {
    COLOURS[i % COLOURS.len()]
}

fn axes(
    s: &mut String,
    left: f64,
    x_label: &str,
    y_label: &str,
    xticks: &[(f64, String)],
    yticks: &[(f64, String)],
) {
    let bottom = TOP + PANEL_H;
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
    );
    for (x, label) in xticks {
        let px = left + x * PANEL_W;
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{bottom}" stroke="#ddd"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            bottom + 16.0
        );
    }
    for (y, label) in yticks {
        let py = bottom - y * PANEL_H;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            left + PANEL_W,
            left - 6.0,
            py + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        left + PANEL_W / 2.0,
        bottom + 36.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        left - 42.0,
        TOP + PANEL_H / 2.0,
        esc(y_label)
    );
}

fn cdf_panel(s: &mut String, reports: &[PolicyReport]) {
    let xticks: Vec<(f64, String)> = (0..=4)
        .map(|i| {
            (
                f64::from(i) / 4.0,
                format!("{}", f64::from(i) * CDF_MAX_S / 4.0),
            )
        })
        .collect();
    let yticks: Vec<(f64, String)> = (0..=5)
        .map(|i| (f64::from(i) / 5.0, format!("{:.1}", f64::from(i) / 5.0)))
        .collect();
    axes(
        s,
        LEFT1,
        "dead air: turn end → first reply bubble (s)",
        "share of all turns answered in time",
        &xticks,
        &yticks,
    );
    let bottom = TOP + PANEL_H;
    for (i, r) in reports.iter().enumerate() {
        let n = r.dead_air_ms.len();
        if n == 0 {
            continue;
        }
        // A step function over all turns, sampled every 0.1 s for a small file: it tops out at
        // the share answered in time, so premature replies show as the gap below 1.
        let mut pts = String::new();
        let mut k = 0;
        for step in 0..=(CDF_MAX_S * 10.0) as usize {
            let x_ms = step as f64 * 100.0;
            while k < n && r.dead_air_ms[k] as f64 <= x_ms {
                k += 1;
            }
            let px = LEFT1 + (x_ms / 1000.0 / CDF_MAX_S) * PANEL_W;
            let py = bottom - (k as f64 / r.turns.max(1) as f64) * PANEL_H;
            let _ = write!(pts, "{px:.1},{py:.1} ");
        }
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.6"/>"#,
            pts.trim_end(),
            colour(i)
        );
    }
    // The legend, bottom right, over a white box (the curves there are mostly flat at the top).
    let rows = reports.len() as f64;
    let (lx, ly0) = (LEFT1 + PANEL_W - 165.0, TOP + PANEL_H - 10.0 - rows * 15.0);
    let _ = writeln!(
        s,
        r##"<rect x="{:.1}" y="{:.1}" width="158" height="{:.1}" fill="white" fill-opacity="0.9" stroke="#ccc"/>"##,
        lx - 6.0,
        ly0 - 4.0,
        rows * 15.0 + 6.0
    );
    for (i, r) in reports.iter().enumerate() {
        let ly = ly0 + 7.0 + i as f64 * 15.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 18.0,
            colour(i),
            lx + 22.0,
            ly + 4.0,
            esc(&r.policy)
        );
    }
}

fn frontier_panel(s: &mut String, reports: &[PolicyReport]) {
    let pts: Vec<(usize, f64, f64)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, r.premature_rate(), r.dead_air(0.5)? as f64 / 1000.0)))
        .collect();
    let x_max = nice_max(pts.iter().map(|p| p.1).fold(0.05, f64::max));
    let y_max = nice_max(pts.iter().map(|p| p.2).fold(1.0, f64::max));
    let xticks: Vec<(f64, String)> = (0..=5)
        .map(|i| {
            let v = x_max * f64::from(i) / 5.0;
            (f64::from(i) / 5.0, format!("{:.0}%", v * 100.0))
        })
        .collect();
    let yticks: Vec<(f64, String)> = (0..=5)
        .map(|i| {
            let v = y_max * f64::from(i) / 5.0;
            (f64::from(i) / 5.0, format!("{v:.1}"))
        })
        .collect();
    axes(
        s,
        LEFT2,
        "premature rate",
        "median dead air (s)",
        &xticks,
        &yticks,
    );
    let bottom = TOP + PANEL_H;
    let at = |x: f64, y: f64| (LEFT2 + x / x_max * PANEL_W, bottom - y / y_max * PANEL_H);
    let mut fixed: Vec<(f64, f64)> = pts
        .iter()
        .filter(|p| reports[p.0].fixed_window_ms.is_some())
        .map(|p| (p.1, p.2))
        .collect();
    fixed.sort_by(|a, b| a.0.total_cmp(&b.0));
    if fixed.len() >= 2 {
        let line: Vec<String> = fixed
            .iter()
            .map(|&(x, y)| {
                let (px, py) = at(x, y);
                format!("{px:.1},{py:.1}")
            })
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#999" stroke-dasharray="5,4"/>"##,
            line.join(" ")
        );
    }
    // Labels right of their point, moved up or down (with a leader line) until they overlap no
    // label already placed: policies often crowd together.
    let mut placed: Vec<(f64, f64, f64)> = Vec::new();
    for &(i, x, y) in &pts {
        let (px, py) = at(x, y);
        let name = &reports[i].policy;
        let width = 6.5 * name.chars().count() as f64;
        let lx = px + 7.0;
        let mut ly = py - 5.0;
        for k in 0..40 {
            let step = f64::from((k + 1) / 2) * 13.0;
            let candidate = if k % 2 == 0 {
                py - 5.0 + step
            } else {
                py - 5.0 - step
            };
            let clear = placed.iter().all(|&(ox, oy, ow)| {
                (candidate - oy).abs() >= 12.5 || lx + width < ox || ox + ow < lx
            });
            if clear {
                ly = candidate;
                break;
            }
        }
        placed.push((lx, ly, width));
        let _ = writeln!(
            s,
            r#"<circle cx="{px:.1}" cy="{py:.1}" r="4.5" fill="{}"/>"#,
            colour(i)
        );
        if (ly - (py - 5.0)).abs() > 0.5 {
            let _ = writeln!(
                s,
                r#"<line x1="{px:.1}" y1="{py:.1}" x2="{lx:.1}" y2="{:.1}" stroke="{}" stroke-width="0.6"/>"#,
                ly - 4.0,
                colour(i)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{lx:.1}" y="{ly:.1}" fill="{}">{}</text>"#,
            colour(i),
            esc(name)
        );
    }
}

/// A round upper bound for an axis.
fn nice_max(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One condition of a `--sweep` plot.
#[derive(Clone, Debug)]
pub struct Panel {
    /// The condition, as a title.
    pub title: String,
    /// The families' curves.
    pub curves: Vec<crate::sweep::Curve>,
    /// The default's point.
    pub default: crate::sweep::Point,
}

const SWEEP_COLS: usize = 3;
const SWEEP_PANEL_W: f64 = 330.0;
const SWEEP_PANEL_H: f64 = 250.0;
const SWEEP_GAP_X: f64 = 80.0;
const SWEEP_GAP_Y: f64 = 95.0;
const SWEEP_X_MAX_S: f64 = 16.0;

/// `--sweep --plot`: one panel per condition, premature rate against dead air, with each
/// family's curve at the median (solid) and at the 90th percentile (dashed), and the default's
/// two points.
pub fn sweep_svg(title: &str, panels: &[Panel]) -> String {
    let rows = panels.len().div_ceil(SWEEP_COLS).max(1);
    let width = 70.0 + SWEEP_COLS as f64 * (SWEEP_PANEL_W + SWEEP_GAP_X);
    let height = 90.0 + rows as f64 * (SWEEP_PANEL_H + SWEEP_GAP_Y);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        esc(title)
    );
    // The legend, once, under the title.
    let families = ["fixed", "typing+spec", "engine"];
    let mut lx = 70.0;
    for (i, f) in families.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="42" x2="{}" y2="42" stroke="{}" stroke-width="2"/><text x="{}" y="46">{f}</text>"#,
            lx + 22.0,
            family_colour(i),
            lx + 26.0
        );
        lx += 130.0;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{lx}" y1="42" x2="{}" y2="42" stroke="#444" stroke-width="1.6"/><text x="{}" y="46">median dead air</text>"##,
        lx + 22.0,
        lx + 26.0
    );
    lx += 150.0;
    let _ = writeln!(
        s,
        r##"<line x1="{lx}" y1="42" x2="{}" y2="42" stroke="#444" stroke-width="1.6" stroke-dasharray="5,4"/><text x="{}" y="46">90th percentile</text>"##,
        lx + 22.0,
        lx + 26.0
    );
    lx += 150.0;
    let _ = writeln!(
        s,
        r##"<circle cx="{}" cy="42" r="5" fill="#000"/><text x="{}" y="46">default (p50 ●, p90 ○)</text>"##,
        lx + 10.0,
        lx + 20.0
    );
    for (k, panel) in panels.iter().enumerate() {
        let left = 70.0 + (k % SWEEP_COLS) as f64 * (SWEEP_PANEL_W + SWEEP_GAP_X);
        let top = 80.0 + (k / SWEEP_COLS) as f64 * (SWEEP_PANEL_H + SWEEP_GAP_Y);
        sweep_panel(&mut s, left, top, panel);
    }
    s.push_str("</svg>\n");
    s
}

fn family_colour(i: usize) -> &'static str {
    ["#7f7f7f", "#ff7f0e", "#1f77b4"][i % 3]
}

fn sweep_panel(s: &mut String, left: f64, top: f64, panel: &Panel) {
    let (w, h) = (SWEEP_PANEL_W, SWEEP_PANEL_H);
    let bottom = top + h;
    let y_max = nice_max(
        panel
            .curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.premature))
            .fold(0.05, f64::max),
    );
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{}</text>"#,
        left + w / 2.0,
        top - 8.0,
        esc(&panel.title)
    );
    for i in 0..=8 {
        let v = SWEEP_X_MAX_S * f64::from(i) / 8.0;
        let px = left + f64::from(i) / 8.0 * w;
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{bottom}" stroke="#e4e4e4"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{v}</text>"##,
            bottom + 15.0
        );
    }
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let py = bottom - f64::from(i) / 5.0 * h;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}%</text>"##,
            left + w,
            left - 5.0,
            py + 4.0,
            v * 100.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">dead air (s)</text>"#,
        left + w / 2.0,
        bottom + 32.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">premature</text>"#,
        left - 42.0,
        top + h / 2.0
    );
    let at = |ms: u64, y: f64| {
        let x = (ms as f64 / 1000.0).min(SWEEP_X_MAX_S);
        (left + x / SWEEP_X_MAX_S * w, bottom - y / y_max * h)
    };
    for (i, c) in panel.curves.iter().enumerate() {
        for dashed in [false, true] {
            let mut pts: Vec<(u64, f64)> = c
                .points
                .iter()
                .filter_map(|p| Some((if dashed { p.p90_ms? } else { p.p50_ms? }, p.premature)))
                .collect();
            pts.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
            let line: Vec<String> = pts
                .iter()
                .map(|&(ms, y)| {
                    let (px, py) = at(ms, y);
                    format!("{px:.1},{py:.1}")
                })
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.6"{}/>"#,
                line.join(" "),
                family_colour(i),
                if dashed {
                    r#" stroke-dasharray="5,4""#
                } else {
                    ""
                }
            );
        }
    }
    let d = panel.default;
    if let (Some(p50), Some(p90)) = (d.p50_ms, d.p90_ms) {
        let (x50, y) = at(p50, d.premature);
        let (x90, _) = at(p90, d.premature);
        let _ = writeln!(
            s,
            // The open p90 circle first, so that the filled p50 dot shows when they coincide.
            r##"<line x1="{x50:.1}" y1="{y:.1}" x2="{x90:.1}" y2="{y:.1}" stroke="#000" stroke-width="0.8"/><circle cx="{x90:.1}" cy="{y:.1}" r="5" fill="white" stroke="#000"/><circle cx="{x50:.1}" cy="{y:.1}" r="3.5" fill="#000"/><text x="{:.1}" y="{:.1}">default {:.1}%</text>"##,
            x90 + 7.0,
            y - 6.0,
            d.premature * 100.0
        );
    }
}
