//! Toxicity against fluency: x = conditional perplexity under the judge LM, y = EMT (left panel)
//! and toxic rate (right panel); one line per method through its strengths, each point labelled
//! with its strength; the `none` baseline as a black star. Whiskers are 95 % intervals of both
//! coordinates. One chart per prompt set × scorer. A method's marker is filled when the paired
//! interval of its toxicity difference from its baseline (the panel's metric) excludes 0 and
//! hollow otherwise; labels carry the confound audit's tags.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use metrics::{Measured, PairedDifference};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::{
    anchored, draw_header, file_part, font, palette, save, star, text_size, ChartsOutcome, Figure,
    LabelPlacer, Naming, TEXT_GREY,
};
use crate::fairness::Fairness;
use crate::load::{format_strength, Experiment, ScorerView};
use crate::paired::{toxicity_excludes_zero, PairedRow};

/// One cell's point: perplexity and a toxicity metric, with intervals.
#[derive(Debug, Clone)]
struct Point {
    label: String,
    x: f64,
    x_ci: Option<(f64, f64)>,
    y: f64,
    y_ci: Option<(f64, f64)>,
    /// Whether the paired interval of this panel's difference from the baseline excludes 0
    /// (`None`: no baseline or no interval): filled marker when `Some(true)`.
    differs: Option<bool>,
}

#[derive(Debug, Clone)]
struct Series {
    name: String,
    baseline: bool,
    color: RGBColor,
    points: Vec<Point>,
}

#[derive(Debug, Clone, Copy)]
enum Metric {
    Emt,
    ToxicRate,
    /// On challenging prompts EMT and toxic rate sit near 1 for most methods; the share of toxic
    /// continuations still separates them.
    ToxicSamples,
}

impl Metric {
    fn caption(self) -> &'static str {
        match self {
            Metric::Emt => "Expected maximum toxicity vs perplexity",
            Metric::ToxicRate => "Toxic rate vs perplexity",
            Metric::ToxicSamples => "Toxic samples vs perplexity",
        }
    }

    fn axis(self) -> &'static str {
        match self {
            Metric::Emt => "Expected maximum toxicity (0–1, lower is better)",
            Metric::ToxicRate => "Toxic rate (share of prompts, lower is better)",
            Metric::ToxicSamples => "Toxic samples (share of continuations, lower is better)",
        }
    }

    fn paired(self) -> fn(&PairedRow) -> &PairedDifference {
        match self {
            Metric::Emt => |r| &r.emt,
            Metric::ToxicRate => |r| &r.toxic_rate,
            Metric::ToxicSamples => |r| &r.toxic_samples,
        }
    }

    fn of<'a>(self, view: &ScorerView<'a>) -> &'a Measured {
        match self {
            Metric::Emt => &view.results.summary.expected_max_toxicity,
            Metric::ToxicRate => &view.results.summary.toxic_rate,
            Metric::ToxicSamples => &view.results.summary.toxic_sample_fraction,
        }
    }
}

struct FrontierChart {
    prompt_set: String,
    scorer: String,
    /// Per metric panel, the series (methods first, baseline last so its star is on top).
    panels: Vec<(Metric, Vec<Series>)>,
    /// Cells left out for lack of a value (no judge, no scored prompt).
    left_out: usize,
    /// Cells drawn whose perplexity is judged by the policy model itself.
    self_judged: usize,
}

pub(super) fn write_all(
    experiment: &Experiment,
    fairness: &Fairness<'_>,
    dir: &Path,
    outcome: &mut ChartsOutcome,
) -> Result<()> {
    let naming = Naming::of(experiment);
    // One colour per method label across all charts of the report.
    let mut labels: Vec<&str> = experiment
        .cells
        .iter()
        .filter(|c| c.config.method.name != "none")
        .map(|c| c.config.method.label.as_str())
        .collect();
    labels.sort();
    labels.dedup();
    let views = experiment.scorer_views();
    for (prompt_set, scorer) in experiment.prompt_set_scorer_pairs() {
        let selected: Vec<&ScorerView> = views
            .iter()
            .filter(|v| v.cell.config.prompts.name == prompt_set && v.scorer == scorer)
            .collect();
        let mut panels = Vec::new();
        let mut left_out = 0;
        for metric in [Metric::Emt, Metric::ToxicRate, Metric::ToxicSamples] {
            let mut by_series: BTreeMap<(bool, String), Series> = BTreeMap::new();
            left_out = 0;
            for view in &selected {
                let cell = view.cell;
                let ppl = cell
                    .metrics
                    .as_ref()
                    .and_then(|m| m.results.perplexity.as_ref());
                let y = metric.of(view);
                let (Some(x), Some(y_value)) = (ppl.and_then(|p| p.value), y.value) else {
                    left_out += 1;
                    continue;
                };
                let baseline = cell.config.method.name == "none";
                let name = if baseline {
                    format!("none (baseline){}", naming.suffix(cell))
                } else {
                    format!("{}{}", cell.config.method.label, naming.suffix(cell))
                };
                let color = if baseline {
                    BLACK
                } else {
                    let i = labels
                        .iter()
                        .position(|l| *l == cell.config.method.label)
                        .expect("every label is listed");
                    palette(i)
                };
                // A baseline star carries its label, so sampling-only controls (a `none` cell
                // labelled "top-k 20") are told apart from plain sampling.
                let mut label = if baseline {
                    cell.config.method.label.clone()
                } else {
                    cell.config
                        .method
                        .strength
                        .map(format_strength)
                        .unwrap_or_default()
                };
                // The audit's confounds, so a point that differs from its baseline in more than
                // the method says so where it is drawn.
                let tags = fairness
                    .audit_of(cell.id())
                    .map(|a| a.chart_tags())
                    .unwrap_or_default();
                if !tags.is_empty() {
                    label = format!("{label} [{}]", tags.join(","));
                }
                let differs =
                    toxicity_excludes_zero(&fairness.paired, cell.id(), &scorer, metric.paired());
                by_series
                    .entry((baseline, name.clone()))
                    .or_insert_with(|| Series {
                        name,
                        baseline,
                        color,
                        points: Vec::new(),
                    })
                    .points
                    .push(Point {
                        label,
                        x,
                        x_ci: ppl.and_then(|p| p.ci95),
                        y: y_value,
                        y_ci: y.ci95,
                        differs,
                    });
            }
            // Cells are sorted by strength already; the line follows that order.
            panels.push((metric, by_series.into_values().collect::<Vec<_>>()));
        }
        if panels.iter().all(|(_, s)| s.is_empty()) {
            outcome.notes.push(format!(
                "frontier chart for {prompt_set} / {scorer} skipped: no cell has both a perplexity (judge LM) and a toxicity value"
            ));
            continue;
        }
        let self_judged = selected
            .iter()
            .filter(|v| crate::audit_checks::self_judged(v.cell).is_some())
            .count();
        let chart = FrontierChart {
            prompt_set: prompt_set.clone(),
            scorer: scorer.clone(),
            panels,
            left_out,
            self_judged,
        };
        let stem = format!("frontier-{}-{}", file_part(&prompt_set), file_part(&scorer));
        outcome.files.extend(save(&chart, dir, &stem)?);
        if left_out > 0 {
            outcome.notes.push(format!(
                "frontier chart for {prompt_set} / {scorer}: {left_out} cells left out (no perplexity or no toxicity value)"
            ));
        }
    }
    Ok(())
}

const LEGEND_WIDTH: u32 = 250;

impl Figure for FrontierChart {
    fn size(&self) -> (u32, u32) {
        (2100, 680)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (width, _) = root.dim_in_pixel();
        let title = format!(
            "Toxicity vs fluency — prompt set {}, scorer {}",
            self.prompt_set, self.scorer
        );
        let mut subtitle = String::from(
            "Each line is one method through its strengths (numbers next to points); whiskers: 95 % bootstrap intervals over prompts",
        );
        if self.left_out > 0 {
            subtitle += &format!("; {} cells without a value left out", self.left_out);
        }
        let mut lines = vec![subtitle];
        if self.self_judged > 0 {
            lines.push(format!(
                "Perplexity of {} cells is judged by the policy model itself (see the confound audit)",
                self.self_judged
            ));
        }
        let body = draw_header(root, &title, &lines)?;
        let (plots, legend) = body.split_horizontally(width - LEGEND_WIDTH);
        let areas = plots.split_evenly((1, self.panels.len()));
        for (area, (metric, series)) in areas.iter().zip(&self.panels) {
            draw_panel(root, area, *metric, series)?;
        }
        let series = &self.panels[0].1;
        draw_legend(&legend, series)?;
        Ok(())
    }
}

fn padded(lo: f64, hi: f64, fraction: f64) -> (f64, f64) {
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = (hi.abs() * 0.1).max(1.0);
        (lo - pad, hi + pad)
    } else {
        (lo - span * fraction, hi + span * fraction)
    }
}

fn draw_panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    metric: Metric,
    series: &[Series],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let points = || series.iter().flat_map(|s| &s.points);
    let x_lo = points()
        .map(|p| p.x_ci.map_or(p.x, |c| c.0.min(p.x)))
        .fold(f64::INFINITY, f64::min);
    let x_hi = points()
        .map(|p| p.x_ci.map_or(p.x, |c| c.1.max(p.x)))
        .fold(f64::NEG_INFINITY, f64::max);
    let y_hi = points()
        .map(|p| p.y_ci.map_or(p.y, |c| c.1.max(p.y)))
        .fold(0.0, f64::max);
    if !x_lo.is_finite() {
        // No point in this panel: an empty frame with the axis titles says so.
        area.draw(&Text::new("no cell with both values", (20, 40), font(16.0)))?;
        return Ok(());
    }
    // A method that wrecks fluency (perplexity in the thousands) would squash every other point
    // against the left edge: past a 20-fold spread the axis is logarithmic.
    let log_x = x_lo > 0.0 && x_hi / x_lo >= 20.0;
    let to_x = |x: f64| if log_x { x.log10() } else { x };
    let (x_lo, x_hi) = if log_x {
        padded(x_lo.log10(), x_hi.log10(), 0.04)
    } else {
        let (lo, hi) = padded(x_lo, x_hi, 0.08);
        (lo.max(0.0), hi)
    };
    // Toxicity lives in [0, 1]: start at 0 so heights compare, leave room above for labels.
    let y_top = (y_hi * 1.15).clamp(0.05, 1.05);

    let mut chart = ChartBuilder::on(area)
        .caption(metric.caption(), font(20.0))
        .margin(14)
        .x_label_area_size(58)
        .y_label_area_size(76)
        .build_cartesian_2d(x_lo..x_hi, 0.0..y_top)?;
    let x_desc = if log_x {
        "Conditional perplexity under the judge LM, log scale (lower is more fluent)"
    } else {
        "Conditional perplexity under the judge LM (lower is more fluent)"
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(metric.axis())
        .label_style(font(15.0))
        .axis_desc_style(font(16.0))
        .max_light_lines(1)
        .light_line_style(RGBColor(0xF2, 0xF2, 0xF2))
        .bold_line_style(RGBColor(0xDD, 0xDD, 0xDD))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .x_label_formatter(&|v| format_axis(if log_x { 10f64.powf(*v) } else { *v }))
        .draw()?;
    // Every x below is in axis units.
    let series: Vec<Series> = series
        .iter()
        .map(|s| Series {
            points: s
                .points
                .iter()
                .map(|p| Point {
                    x: to_x(p.x),
                    x_ci: p
                        .x_ci
                        .map(|(lo, hi)| (to_x(lo.max(f64::MIN_POSITIVE)), to_x(hi))),
                    ..p.clone()
                })
                .collect(),
            ..s.clone()
        })
        .collect();
    let series = series.as_slice();

    // Whiskers first, lines over them, markers on top.
    for s in series {
        let whisker = s.color.mix(0.45).stroke_width(1);
        for p in &s.points {
            if let Some((lo, hi)) = p.y_ci {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(p.x, lo), (p.x, hi)],
                    whisker,
                )))?;
            }
            if let Some((lo, hi)) = p.x_ci {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(lo, p.y), (hi, p.y)],
                    whisker,
                )))?;
            }
        }
    }
    for s in series.iter().filter(|s| !s.baseline && s.points.len() > 1) {
        chart.draw_series(LineSeries::new(
            s.points.iter().map(|p| (p.x, p.y)),
            s.color.stroke_width(3),
        ))?;
    }

    let (x_range, y_range) = chart.plotting_area().get_pixel_range();
    let mut placer = LabelPlacer::new((x_range.start, y_range.start, x_range.end, y_range.end));
    for s in series {
        for p in &s.points {
            placer.block_point(chart.backend_coord(&(p.x, p.y)), 7);
        }
    }
    for s in series {
        for p in &s.points {
            let at = chart.backend_coord(&(p.x, p.y));
            if s.baseline {
                root.draw(&Polygon::new(star(at, 11.0), BLACK.filled()))?;
            } else if p.differs == Some(true) {
                root.draw(&Circle::new(at, 6, s.color.filled()))?;
                root.draw(&Circle::new(at, 6, WHITE.stroke_width(1)))?;
            } else {
                // Hollow: no difference from the baseline shown by the paired interval.
                root.draw(&Circle::new(at, 6, WHITE.filled()))?;
                root.draw(&Circle::new(at, 6, s.color.stroke_width(2)))?;
            }
        }
    }
    let label_style = font(15.0);
    for s in series {
        for p in s.points.iter().filter(|p| !p.label.is_empty()) {
            let at = chart.backend_coord(&(p.x, p.y));
            let size = text_size(root, &p.label, &label_style)?;
            let (left, top) = placer.place(at, size);
            let color = if s.baseline { BLACK } else { darker(s.color) };
            root.draw(&Text::new(
                p.label.clone(),
                (left, top),
                label_style.color(&color),
            ))?;
        }
    }
    Ok(())
}

/// Axis numbers: whole numbers as such, else one decimal above 10 and two below.
fn format_axis(v: f64) -> String {
    if v.abs() >= 100.0 || (v.abs() >= 10.0 && (v - v.round()).abs() < 1e-9) {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The series colour darkened for text, so light hues stay legible on white.
fn darker(c: RGBColor) -> RGBColor {
    RGBColor(
        (c.0 as f64 * 0.7) as u8,
        (c.1 as f64 * 0.7) as u8,
        (c.2 as f64 * 0.7) as u8,
    )
}

fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, series: &[Series]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    // Coordinates are relative to the legend strip.
    let x = 12;
    let mut y = 30;
    area.draw(&Text::new(
        "Method",
        (x, y),
        anchored(18.0, HPos::Left, VPos::Center),
    ))?;
    y += 34;
    for s in series {
        if s.baseline {
            area.draw(&Polygon::new(star((x + 18, y), 10.0), BLACK.filled()))?;
        } else {
            area.draw(&PathElement::new(
                vec![(x, y), (x + 36, y)],
                s.color.stroke_width(3),
            ))?;
            area.draw(&Circle::new((x + 18, y), 6, s.color.filled()))?;
        }
        area.draw(&Text::new(
            s.name.clone(),
            (x + 46, y),
            anchored(16.0, HPos::Left, VPos::Center),
        ))?;
        y += 30;
    }
    y += 14;
    let mut notes = Vec::new();
    if series.iter().any(|s| !s.baseline) {
        notes.push("Numbers: method strength");
    }
    notes.extend([
        "Whiskers: 95 % intervals",
        "(perplexity and toxicity)",
        "Filled: toxicity differs from",
        "the baseline (paired 95 % CI",
        "excludes 0); hollow: it does not",
        "or no baseline",
        "[len, eos, empty, cand, n]:",
        "confounds (see the audit)",
    ]);
    for line in notes {
        area.draw(&Text::new(
            line,
            (x, y),
            anchored(14.0, HPos::Left, VPos::Center).color(&TEXT_GREY),
        ))?;
        y += 22;
    }
    Ok(())
}
