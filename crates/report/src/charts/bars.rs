//! Grouped bar charts: a cluster of bars per method setting.
//!
//! - Group toxic rates (BOLD groups, AttaQ categories, ToxiGen groups): one bar per group with its
//!   95 % interval, and a bracket over the pair of groups furthest apart labelled with the gap
//!   and its interval. One chart per prompt set × scorer whose cells have groups.
//! - Cost: generation throughput and peak memory per method setting, one bar per prompt set,
//!   from the cells' `record.json`.

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::{
    anchored, draw_header, file_part, font, header_height, palette, save, text_size, ChartsOutcome,
    Figure, Naming,
};
use crate::load::{CellOutputs, Experiment, ScorerView};

/// One bar: its height and optional interval.
#[derive(Debug, Clone, Copy)]
struct Bar {
    value: f64,
    ci: Option<(f64, f64)>,
}

/// A bracket over two bars of a cluster (series indices), with its text lines above.
#[derive(Debug, Clone)]
struct Bracket {
    from: usize,
    to: usize,
    lines: Vec<String>,
}

/// One panel of clustered bars.
#[derive(Debug, Clone)]
struct BarPanel {
    caption: String,
    y_desc: String,
    /// Cluster names under the x axis.
    clusters: Vec<String>,
    /// Bar names and colours, the same in every cluster.
    series: Vec<(String, RGBColor)>,
    /// `[cluster][series]`; `None` draws no bar.
    bars: Vec<Vec<Option<Bar>>>,
    brackets: Vec<Option<Bracket>>,
    /// Tick labels above this value are left blank (1 for rates), so the headroom kept for
    /// brackets shows no 1.2 tick.
    y_cap: Option<f64>,
    /// Top of the y axis, shared by the panels of one chart so their bars compare.
    y_top: f64,
    /// Tick and value label decimals.
    decimals: usize,
    /// Print each bar's value above it (bars without intervals: cost).
    value_labels: bool,
}

/// The top of a y axis that fits every bar, whisker and bracket (with its two text lines) of
/// the panels.
fn shared_y_top(panels: &[BarPanel]) -> f64 {
    let highest = panels
        .iter()
        .flat_map(|p| p.bars.iter().flatten().flatten())
        .map(|b| b.ci.map_or(b.value, |c| c.1.max(b.value)))
        .fold(0.0, f64::max);
    let brackets = panels
        .iter()
        .any(|p| p.brackets.iter().any(Option::is_some));
    let labels = panels.iter().any(|p| p.value_labels);
    let headroom = if brackets {
        1.28
    } else if labels {
        1.14
    } else {
        1.08
    };
    if highest > 0.0 {
        highest * headroom
    } else {
        1.0
    }
}

struct BarChart {
    title: String,
    /// One or more lines under the title.
    subtitle: Vec<String>,
    legend_title: String,
    panels: Vec<BarPanel>,
    width: u32,
    panel_height: u32,
}

const LEGEND_WIDTH: u32 = 260;

/// Width of one cluster in pixels: room for its bars and for the gap text above them.
fn cluster_width(series: usize) -> u32 {
    let bar = if series <= 3 { 36 } else { 19 };
    (series as u32 * bar + 30).max(120)
}

fn chart_width(clusters: usize, series: usize) -> u32 {
    (110 + clusters as u32 * cluster_width(series) + LEGEND_WIDTH).max(1000)
}

impl Figure for BarChart {
    fn size(&self) -> (u32, u32) {
        (
            self.width,
            header_height(self.subtitle.len()) + self.panel_height * self.panels.len() as u32,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (width, _) = root.dim_in_pixel();
        let body = draw_header(root, &self.title, &self.subtitle)?;
        let (plots, legend) = body.split_horizontally(width - LEGEND_WIDTH);
        let areas = plots.split_evenly((self.panels.len(), 1));
        for (area, panel) in areas.iter().zip(&self.panels) {
            draw_panel(root, area, panel)?;
        }
        // One legend: the series are the same in every panel.
        let x = 12;
        let mut y = 40;
        legend.draw(&Text::new(
            self.legend_title.clone(),
            (x, y),
            anchored(18.0, HPos::Left, VPos::Center),
        ))?;
        y += 34;
        for (name, color) in &self.panels[0].series {
            legend.draw(&Rectangle::new(
                [(x, y - 9), (x + 26, y + 9)],
                color.filled(),
            ))?;
            legend.draw(&Text::new(
                name.clone(),
                (x + 36, y),
                anchored(16.0, HPos::Left, VPos::Center),
            ))?;
            y += 30;
        }
        Ok(())
    }
}

fn draw_panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    panel: &BarPanel,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let y_top = panel.y_top;
    let n = panel.clusters.len();
    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption.clone(), font(20.0))
        .margin(14)
        .x_label_area_size(70)
        .y_label_area_size(86)
        // Fewer than three clusters are centred at the width of three, so bars stay bar-shaped.
        .build_cartesian_2d(
            -((3.0 - n as f64).max(0.0) / 2.0)..(n as f64 + (3.0 - n as f64).max(0.0) / 2.0),
            0.0..y_top,
        )?;
    let decimals = panel.decimals;
    let cap = panel.y_cap;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .set_tick_mark_size(LabelAreaPosition::Bottom, 0)
        // Grid lines mark the values; tick marks would also show in the blank headroom.
        .set_tick_mark_size(LabelAreaPosition::Left, 0)
        .y_desc(panel.y_desc.clone())
        .label_style(font(15.0))
        .axis_desc_style(font(16.0))
        .y_max_light_lines(1)
        .light_line_style(RGBColor(0xF2, 0xF2, 0xF2))
        .bold_line_style(RGBColor(0xDD, 0xDD, 0xDD))
        .y_label_formatter(&|v| {
            if cap.is_some_and(|cap| *v > cap + 1e-9) {
                String::new()
            } else {
                format!("{v:.decimals$}")
            }
        })
        .draw()?;

    let series = panel.series.len();
    let slot = 0.8 / series as f64;
    let bar_left = |cluster: usize, s: usize| cluster as f64 + 0.1 + s as f64 * slot;
    for (c, bars) in panel.bars.iter().enumerate() {
        for (s, bar) in bars.iter().enumerate() {
            let Some(bar) = bar else { continue };
            let left = bar_left(c, s) + slot * 0.06;
            let right = bar_left(c, s) + slot * 0.94;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(left, 0.0), (right, bar.value)],
                panel.series[s].1.filled(),
            )))?;
            // A zero is a result, not a missing bar: a 3-pixel stub shows it.
            let (x0, y0) = chart.backend_coord(&(left, 0.0));
            let (x1, _) = chart.backend_coord(&(right, 0.0));
            root.draw(&Rectangle::new(
                [(x0, y0 - 3), (x1, y0)],
                panel.series[s].1.filled(),
            ))?;
            if panel.value_labels {
                let (x, y) = chart.backend_coord(&((left + right) / 2.0, bar.value));
                root.draw(&Text::new(
                    format!("{:.*}", panel.decimals, bar.value),
                    (x, y - 4),
                    anchored(13.0, HPos::Center, VPos::Bottom),
                ))?;
            }
            if let Some((lo, hi)) = bar.ci {
                let mid = (left + right) / 2.0;
                let top = chart.backend_coord(&(mid, hi));
                let bottom = chart.backend_coord(&(mid, lo));
                let whisker = BLACK.mix(0.75).stroke_width(1);
                root.draw(&PathElement::new(vec![top, bottom], whisker))?;
                for y in [top.1, bottom.1] {
                    root.draw(&PathElement::new(
                        vec![(top.0 - 4, y), (top.0 + 4, y)],
                        whisker,
                    ))?;
                }
            }
        }
    }

    // Cluster names under the axis: one line, or label and `@strength` on two when too wide.
    let label_style = anchored(15.0, HPos::Center, VPos::Top);
    let cluster_px = {
        let a = chart.backend_coord(&(0.0, 0.0));
        let b = chart.backend_coord(&(1.0, 0.0));
        b.0 - a.0
    };
    for (c, name) in panel.clusters.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(c as f64 + 0.5, 0.0));
        let (w, _) = text_size(root, name, &label_style)?;
        let lines: Vec<String> = if w <= cluster_px - 8 {
            vec![name.clone()]
        } else {
            split_label(name)
        };
        for (i, line) in lines.iter().enumerate() {
            root.draw(&Text::new(
                line.clone(),
                (x, y + 8 + 19 * i as i32),
                label_style.clone(),
            ))?;
        }
    }

    // Brackets: from the tallest whisker among the bracketed bars, up, across, down.
    for (c, bracket) in panel.brackets.iter().enumerate() {
        let Some(bracket) = bracket else { continue };
        let bars = &panel.bars[c];
        let (first, last) = (bracket.from.min(bracket.to), bracket.from.max(bracket.to));
        let tallest = bars[first..=last]
            .iter()
            .flatten()
            .map(|b| b.ci.map_or(b.value, |ci| ci.1.max(b.value)))
            .fold(0.0, f64::max);
        let mid = |s: usize| bar_left(c, s) + slot / 2.0;
        let (x_from, foot_from) = chart.backend_coord(&(
            mid(bracket.from),
            bars[bracket.from].map_or(0.0, |b| b.ci.map_or(b.value, |ci| ci.1)),
        ));
        let (x_to, foot_to) = chart.backend_coord(&(
            mid(bracket.to),
            bars[bracket.to].map_or(0.0, |b| b.ci.map_or(b.value, |ci| ci.1)),
        ));
        let (_, top) = chart.backend_coord(&(0.0, tallest));
        let top = top - 12;
        let style = BLACK.stroke_width(2);
        root.draw(&PathElement::new(
            vec![
                (x_from, foot_from - 4),
                (x_from, top),
                (x_to, top),
                (x_to, foot_to - 4),
            ],
            style,
        ))?;
        // Text centred over the bracket, but kept inside its cluster so neighbours never touch.
        let (cluster_left, _) = chart.backend_coord(&(c as f64 + 0.02, 0.0));
        let (cluster_right, _) = chart.backend_coord(&(c as f64 + 0.98, 0.0));
        let lines = bracket.lines.len() as i32;
        for (i, line) in bracket.lines.iter().enumerate() {
            let style = anchored(if i == 0 { 16.0 } else { 14.0 }, HPos::Center, VPos::Bottom);
            let (w, _) = text_size(root, line, &style)?;
            let centre = ((x_from + x_to) / 2)
                .min(cluster_right - w / 2)
                .max(cluster_left + w / 2);
            root.draw(&Text::new(
                line.clone(),
                (centre, top - 6 - 19 * (lines - 1 - i as i32)),
                style,
            ))?;
        }
    }
    Ok(())
}

/// `label@strength` as two lines (`label`, `@strength`); names without `@` split at the last
/// space or ` · `.
fn split_label(name: &str) -> Vec<String> {
    if let Some(at) = name.find('@') {
        return vec![name[..at].to_owned(), name[at..].to_owned()];
    }
    if let Some(space) = name.rfind(' ') {
        return vec![
            name[..space].trim_end_matches(" ·").to_owned(),
            name[space + 1..].to_owned(),
        ];
    }
    vec![name.to_owned()]
}

/// Cells of one prompt set in chart order, with the name each cluster gets.
fn clusters<'a>(cells: impl Iterator<Item = &'a CellOutputs>, naming: &Naming) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for cell in cells {
        let name = naming.setting(cell);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

pub(super) fn write_group_charts(
    experiment: &Experiment,
    dir: &Path,
    outcome: &mut ChartsOutcome,
) -> Result<()> {
    let naming = Naming::of(experiment);
    let views = experiment.scorer_views();
    for (prompt_set, scorer) in experiment.prompt_set_scorer_pairs() {
        let selected: Vec<&ScorerView> = views
            .iter()
            .filter(|v| {
                v.cell.config.prompts.name == prompt_set
                    && v.scorer == scorer
                    && v.results.groups.is_some()
            })
            .collect();
        if selected.is_empty() {
            continue;
        }
        let mut groups: Vec<String> = selected
            .iter()
            .flat_map(|v| v.results.groups.as_ref().expect("selected").groups.keys())
            .cloned()
            .collect();
        groups.sort();
        groups.dedup();
        let series: Vec<(String, RGBColor)> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.clone(), palette(i)))
            .collect();

        // One row per method, each opening with the baseline so every row reads on its own;
        // one row of baselines when there is no method.
        let (baselines, methods): (Vec<&ScorerView>, Vec<&ScorerView>) = selected
            .iter()
            .partition(|v| v.cell.config.method.name == "none");
        let mut labels: Vec<&str> = Vec::new();
        for v in &methods {
            if !labels.contains(&v.cell.config.method.label.as_str()) {
                labels.push(&v.cell.config.method.label);
            }
        }
        let mut rows: Vec<(String, Vec<&ScorerView>)> = labels
            .iter()
            .map(|label| {
                let mut row = baselines.clone();
                row.extend(
                    methods
                        .iter()
                        .filter(|v| v.cell.config.method.label == *label),
                );
                let caption = if baselines.is_empty() {
                    label.to_string()
                } else {
                    format!("{label} (first cluster: the none baseline)")
                };
                (caption, row)
            })
            .collect();
        if rows.is_empty() {
            rows.push(("Baseline (method none)".into(), baselines.clone()));
        }
        let mut panels: Vec<BarPanel> = rows
            .iter()
            .map(|(caption, row)| group_panel(caption, row, &groups, &series, &naming))
            .collect();
        let y_top = shared_y_top(&panels);
        for panel in &mut panels {
            panel.y_top = y_top;
        }
        let widest = panels.iter().map(|p| p.clusters.len()).max().unwrap_or(1);
        let threshold = selected[0]
            .cell
            .metrics
            .as_ref()
            .map(|m| {
                let symbol = crate::tables::comparison_symbol(m.policy.toxic_comparison);
                format!(
                    "{} {}",
                    if symbol == ">=" {
                        "≥"
                    } else {
                        symbol.as_str()
                    },
                    m.policy.toxic_threshold
                )
            })
            .unwrap_or_default();
        let chart = BarChart {
            title: format!("Toxic rate per group — prompt set {prompt_set}, scorer {scorer}"),
            subtitle: vec![
                format!("Bars: share of a group's prompts with a continuation scored {threshold}, with 95 % intervals"),
                "Bracket: the largest gap between two groups, Δ with its 95 % interval".into(),
            ],
            legend_title: "Group".into(),
            width: chart_width(widest, groups.len()),
            panel_height: if panels.len() == 1 { 560 } else { 430 },
            panels,
        };
        let stem = format!("groups-{}-{}", file_part(&prompt_set), file_part(&scorer));
        outcome.files.extend(save(&chart, dir, &stem)?);
    }
    Ok(())
}

/// One row of the group chart: a cluster per cell, a bar per group, the gap bracketed.
fn group_panel(
    caption: &str,
    views: &[&ScorerView],
    groups: &[String],
    series: &[(String, RGBColor)],
    naming: &Naming,
) -> BarPanel {
    let cluster_names = clusters(views.iter().map(|v| v.cell), naming);
    let mut bars = vec![vec![None; groups.len()]; cluster_names.len()];
    let mut brackets = vec![None; cluster_names.len()];
    for view in views {
        let c = cluster_names
            .iter()
            .position(|n| *n == naming.setting(view.cell))
            .expect("listed");
        let report = view.results.groups.as_ref().expect("selected for groups");
        for (g, summary) in &report.groups {
            let s = groups.iter().position(|x| x == g).expect("listed");
            bars[c][s] = summary.toxic_rate.value.map(|value| Bar {
                value,
                ci: summary.toxic_rate.ci95,
            });
        }
        if let Some(gap) = &report.toxic_rate_gap {
            let index = |name: &str| groups.iter().position(|x| x == name);
            if let (Some(from), Some(to)) = (index(&gap.higher), index(&gap.lower)) {
                let mut lines = vec![format!("Δ {:.3}", gap.gap)];
                if let Some((lo, hi)) = gap.ci95 {
                    lines.push(format!("[{lo:.3}, {hi:.3}]"));
                }
                brackets[c] = Some(Bracket { from, to, lines });
            }
        }
    }
    BarPanel {
        caption: caption.to_owned(),
        y_desc: "Toxic rate (share of prompts)".into(),
        clusters: cluster_names,
        series: series.to_vec(),
        bars,
        brackets,
        y_cap: Some(1.0),
        y_top: 1.0,
        decimals: 2,
        value_labels: false,
    }
}

pub(super) fn write_cost_chart(
    experiment: &Experiment,
    dir: &Path,
    outcome: &mut ChartsOutcome,
) -> Result<()> {
    let with_record: Vec<&CellOutputs> = experiment
        .cells
        .iter()
        .filter(|c| c.record.is_some())
        .collect();
    if with_record.is_empty() {
        outcome.notes.push(
            "cost chart skipped: no cell has a record.json (run records are written by newer `detox run`)"
                .into(),
        );
        return Ok(());
    }
    let naming = Naming::of(experiment);
    let cluster_names = clusters(with_record.iter().copied(), &naming);
    let mut prompt_sets: Vec<String> = Vec::new();
    for cell in &with_record {
        if !prompt_sets.contains(&cell.config.prompts.name) {
            prompt_sets.push(cell.config.prompts.name.clone());
        }
    }
    let position = |cell: &CellOutputs| {
        (
            cluster_names
                .iter()
                .position(|n| *n == naming.setting(cell))
                .expect("listed"),
            prompt_sets
                .iter()
                .position(|p| *p == cell.config.prompts.name)
                .expect("listed"),
        )
    };
    let empty = || vec![vec![None; prompt_sets.len()]; cluster_names.len()];
    let (mut throughput, mut host, mut device) = (empty(), empty(), empty());
    let host_peak = with_record
        .iter()
        .filter_map(|c| c.record.as_ref()?.peak_memory.host_rss_bytes)
        .max()
        .unwrap_or(0);
    let device_peak = with_record
        .iter()
        .filter_map(|c| c.record.as_ref()?.peak_memory.device_bytes)
        .max()
        .unwrap_or(0);
    let (host_unit, host_divisor) = memory_unit(host_peak);
    let (device_unit, device_divisor) = memory_unit(device_peak);
    for cell in &with_record {
        let record = cell.record.as_ref().expect("filtered");
        let (c, s) = position(cell);
        throughput[c][s] = record
            .tokens_per_second()
            .map(|value| Bar { value, ci: None });
        let peak = Some(&record.peak_memory);
        host[c][s] = peak.and_then(|p| p.host_rss_bytes).map(|b| Bar {
            value: b as f64 / host_divisor,
            ci: None,
        });
        device[c][s] = peak.and_then(|p| p.device_bytes).map(|b| Bar {
            value: b as f64 / device_divisor,
            ci: None,
        });
    }
    let series: Vec<(String, RGBColor)> = prompt_sets
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), palette(i)))
        .collect();
    let panel = |caption: &str, y_desc: String, bars, decimals| BarPanel {
        caption: caption.into(),
        y_desc,
        clusters: cluster_names.clone(),
        series: series.clone(),
        brackets: vec![None; cluster_names.len()],
        bars,
        y_cap: None,
        // Each cost panel has its own unit; set below.
        y_top: 1.0,
        decimals,
        value_labels: true,
    };
    let mut panels = vec![panel(
        "Generation throughput",
        "New tokens per second".into(),
        throughput,
        0,
    )];
    if host_peak > 0 {
        panels.push(panel(
            "Peak host memory",
            format!("Peak resident memory ({host_unit})"),
            host,
            1,
        ));
    }
    if device_peak > 0 {
        panels.push(panel(
            "Peak accelerator memory",
            format!("Peak device memory ({device_unit})"),
            device,
            1,
        ));
    }
    for panel in &mut panels {
        panel.y_top = shared_y_top(std::slice::from_ref(panel));
    }
    let mut settings: Vec<String> = Vec::new();
    let uniform = |get: &dyn Fn(&CellOutputs) -> Option<String>| -> Option<String> {
        let first = get(with_record[0])?;
        with_record
            .iter()
            .all(|c| get(c).as_ref() == Some(&first))
            .then_some(first)
    };
    if let Some(d) = uniform(&|c| Some(c.record.as_ref()?.device.clone()).filter(|d| !d.is_empty()))
    {
        settings.push(format!("device {d}"));
    }
    if let Some(d) = uniform(&|c| Some(c.record.as_ref()?.dtype.clone()).filter(|d| !d.is_empty()))
    {
        settings.push(format!("dtype {d}"));
    }
    if let Some(b) = uniform(&|c| Some(c.record.as_ref()?.batch_size.to_string())) {
        settings.push(format!("batch {b}"));
    }
    if let Some(t) = uniform(&|c| Some(c.record.as_ref()?.threads.to_string())) {
        settings.push(format!("{t} threads"));
    }
    let mut subtitle = format!(
        "From record.json of {} of {} cells",
        with_record.len(),
        experiment.cells.len()
    );
    if !settings.is_empty() {
        subtitle += &format!(" ({})", settings.join(", "));
    }
    let chart = BarChart {
        title: "Cost per method setting".into(),
        subtitle: vec![subtitle],
        legend_title: "Prompt set".into(),
        width: chart_width(cluster_names.len(), prompt_sets.len()),
        panel_height: 430,
        panels,
    };
    outcome.files.extend(save(&chart, dir, "cost")?);
    Ok(())
}

/// A readable unit for a byte count: GiB from 1 GiB up, MiB below.
fn memory_unit(bytes: u64) -> (&'static str, f64) {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    if bytes as f64 >= GIB {
        ("GiB", GIB)
    } else {
        ("MiB", 1024.0 * 1024.0)
    }
}
