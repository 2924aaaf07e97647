//! `agreement-<scorer a>-<scorer b>`: each cell's toxic-sample share under one scorer against the
//! other, coloured by prompt set, with the diagonal where they would agree. Points off the
//! diagonal in one direction are a calibration difference; a cloud that is not monotone means the
//! scorers would rank methods differently. The legend carries each prompt set's Cohen's κ
//! (sample labels) and Spearman ρ (cell shares).

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::{
    anchored, draw_header, file_part, font, palette, save, ChartsOutcome, Figure, TEXT_GREY,
};
use crate::agreement::{ScorerAgreement, ALL_PROMPT_SETS};

struct AgreementChart {
    scorer_a: String,
    scorer_b: String,
    /// Per prompt set: its agreement row (cell shares inside).
    sets: Vec<ScorerAgreement>,
    /// The pooled row, when there are several prompt sets.
    pooled: Option<ScorerAgreement>,
}

pub(super) fn write_agreement_charts(
    agreement: &[ScorerAgreement],
    dir: &Path,
    outcome: &mut ChartsOutcome,
) -> Result<()> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for row in agreement {
        let pair = (row.scorer_a.as_str(), row.scorer_b.as_str());
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    for (a, b) in pairs {
        let of_pair = agreement
            .iter()
            .filter(|r| r.scorer_a == a && r.scorer_b == b);
        let chart = AgreementChart {
            scorer_a: a.to_owned(),
            scorer_b: b.to_owned(),
            sets: of_pair
                .clone()
                .filter(|r| r.prompt_set != ALL_PROMPT_SETS)
                .cloned()
                .collect(),
            pooled: of_pair
                .clone()
                .find(|r| r.prompt_set == ALL_PROMPT_SETS)
                .cloned(),
        };
        if chart.sets.iter().all(|s| s.cell_shares.is_empty()) {
            outcome.notes.push(format!(
                "agreement chart {a} / {b} skipped: no cell has a sample both scored"
            ));
            continue;
        }
        let stem = format!("agreement-{}-{}", file_part(a), file_part(b));
        outcome.files.extend(save(&chart, dir, &stem)?);
    }
    Ok(())
}

fn figure(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |v| format!("{v:.2}"))
}

const LEGEND_WIDTH: u32 = 420;

impl Figure for AgreementChart {
    fn size(&self) -> (u32, u32) {
        (1180, 720)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (width, _) = root.dim_in_pixel();
        let title = format!("Scorer agreement — {} vs {}", self.scorer_a, self.scorer_b);
        let mut subtitle =
            "One point per cell: share of its samples each scorer calls toxic (samples both scored)"
                .to_owned();
        if let Some(p) = &self.pooled {
            subtitle += &format!(
                "; all sets: κ {}, ρ(cells) {}, {} samples",
                figure(p.cohen_kappa),
                figure(p.cell_spearman),
                p.samples
            );
        }
        let body = draw_header(root, &title, &[subtitle])?;
        let (plot, legend) = body.split_horizontally(width - LEGEND_WIDTH);
        let top = self
            .sets
            .iter()
            .flat_map(|s| &s.cell_shares)
            .map(|c| c.share_a.max(c.share_b))
            .fold(0.0, f64::max);
        let top = (top * 1.08).clamp(0.05, 1.0);
        let mut chart = ChartBuilder::on(&plot)
            .margin(16)
            .x_label_area_size(58)
            .y_label_area_size(76)
            .build_cartesian_2d(0.0..top, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc(format!("toxic-sample share, {}", self.scorer_a))
            .y_desc(format!("toxic-sample share, {}", self.scorer_b))
            .label_style(font(15.0))
            .axis_desc_style(font(16.0))
            .max_light_lines(1)
            .light_line_style(RGBColor(0xF2, 0xF2, 0xF2))
            .bold_line_style(RGBColor(0xDD, 0xDD, 0xDD))
            .x_label_formatter(&|v| format!("{v:.2}"))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .draw()?;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 0.0), (top, top)],
            TEXT_GREY.mix(0.6).stroke_width(1),
        )))?;
        for (i, set) in self.sets.iter().enumerate() {
            let color = palette(i);
            chart.draw_series(
                set.cell_shares
                    .iter()
                    .map(|c| Circle::new((c.share_a, c.share_b), 6, color.mix(0.8).filled())),
            )?;
        }
        // Legend: one line per prompt set with its numbers.
        let mut y = 30;
        legend.draw(&Text::new(
            "prompt set: cells, κ (labels), ρ (cells)",
            (8, y),
            anchored(15.0, HPos::Left, VPos::Center).color(&TEXT_GREY),
        ))?;
        for (i, set) in self.sets.iter().enumerate() {
            y += 30;
            legend.draw(&Circle::new((16, y), 6, palette(i).filled()))?;
            legend.draw(&Text::new(
                format!(
                    "{}: {}, κ {}, ρ {}",
                    set.prompt_set,
                    set.cells,
                    figure(set.cohen_kappa),
                    figure(set.cell_spearman)
                ),
                (30, y),
                anchored(15.0, HPos::Left, VPos::Center),
            ))?;
        }
        y += 36;
        legend.draw(&Text::new(
            "grey line: the two scorers agree",
            (8, y),
            anchored(14.0, HPos::Left, VPos::Center).color(&TEXT_GREY),
        ))?;
        Ok(())
    }
}
