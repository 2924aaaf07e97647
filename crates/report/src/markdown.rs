//! The human summary (`report/summary.md`, also printed by `detox report`): one row per cell ×
//! scorer with the headline numbers and their counts, length and stopping, the paired differences
//! against each cell's baseline, the group gaps, the confound audit, scorer agreement, then notes.

use std::collections::BTreeSet;

use metrics::Measured;

use crate::agreement::ScorerAgreement;
use crate::audit::audit_markdown;
use crate::fairness::Fairness;
use crate::length::{length_markdown, LENGTH_SECTION};
use crate::load::{format_strength, Experiment};
use crate::paired_output::paired_markdown;
use crate::tables::comparison_symbol;

/// A Markdown table: header and rows of already formatted text.
#[derive(Debug, Clone, Default)]
pub struct MarkdownTable {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Columns (by index) aligned right: numbers.
    pub right: Vec<usize>,
}

impl MarkdownTable {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            right: Vec::new(),
        }
    }

    /// Renders with padded columns so the text also reads well in a terminal.
    pub fn render(&self) -> String {
        let escape = |s: &str| s.replace('|', "\\|");
        let header: Vec<String> = self.header.iter().map(|h| escape(h)).collect();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(|c| escape(c)).collect())
            .collect();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count().max(3)).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let pad = widths[i] - c.chars().count();
                    if self.right.contains(&i) {
                        format!("{}{c}", " ".repeat(pad))
                    } else {
                        format!("{c}{}", " ".repeat(pad))
                    }
                })
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(&header);
        let rule: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if self.right.contains(&i) {
                    format!("{}:", "-".repeat(w - 1))
                } else {
                    "-".repeat(*w)
                }
            })
            .collect();
        out += &format!("| {} |\n", rule.join(" | "));
        for row in &rows {
            out += &line(row);
        }
        out
    }
}

/// `0.548`, or `—` for no value.
pub fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v:.decimals$}"))
}

/// `0.548 [0.464, 0.633]`: a value with its 95 % interval.
pub fn with_ci(m: Option<&Measured>, decimals: usize) -> String {
    let Some(m) = m else {
        return "—".to_owned();
    };
    match (m.value, m.ci95) {
        (Some(v), Some((lo, hi))) => format!("{v:.decimals$} [{lo:.decimals$}, {hi:.decimals$}]"),
        (value, _) => number(value, decimals),
    }
}

fn strength(s: Option<f64>) -> String {
    s.map_or_else(|| "—".to_owned(), format_strength)
}

/// The summary table: one row per complete cell × scorer.
pub fn summary_table(experiment: &Experiment) -> MarkdownTable {
    let models = experiment.has_several_models();
    let seeds = experiment.has_several_seeds();
    let mut header = vec!["prompt set"];
    if models {
        header.push("model");
    }
    header.extend(["method", "strength"]);
    if seeds {
        header.push("seed");
    }
    header.extend([
        "scorer",
        "EMT [95% CI]",
        "toxic rate [95% CI]",
        "toxic samples [95% CI]",
        "PPL",
        "dist-2",
        "tokens/s",
        "prompts",
        "samples",
        "scored",
        "failed",
    ]);
    let mut table = MarkdownTable::new(&header);
    let first_number = header.iter().position(|h| *h == "PPL").expect("listed");
    table.right = (first_number..header.len()).collect();
    for view in experiment.scorer_views() {
        let cell = view.cell;
        let c = &cell.config;
        let results = &cell.metrics.as_ref().expect("complete").results;
        let s = &view.results.summary;
        let counts = s.expected_max_toxicity.counts;
        let mut row = vec![c.prompts.name.clone()];
        if models {
            row.push(c.model.name.clone());
        }
        row.extend([c.method.label.clone(), strength(c.method.strength)]);
        if seeds {
            row.push(c.seed.to_string());
        }
        row.extend([
            view.scorer.clone(),
            with_ci(Some(&s.expected_max_toxicity), 3),
            with_ci(Some(&s.toxic_rate), 3),
            with_ci(Some(&s.toxic_sample_fraction), 3),
            number(results.perplexity.as_ref().and_then(|p| p.value), 2),
            number(results.distinctness.dist_2.value, 3),
            number(cell.record.as_ref().and_then(|r| r.tokens_per_second()), 1),
            if counts.prompts_used == counts.prompts {
                counts.prompts.to_string()
            } else {
                format!("{}/{}", counts.prompts_used, counts.prompts)
            },
            counts.samples.to_string(),
            counts.scored.to_string(),
            counts.failed.to_string(),
        ]);
        table.rows.push(row);
    }
    table
}

/// One row per complete cell × scorer with groups: every group's toxic rate and the largest gap.
/// The scorer-agreement section's table: one row per scorer pair × prompt set.
pub fn agreement_markdown(rows: &[ScorerAgreement]) -> MarkdownTable {
    let mut table = MarkdownTable::new(&[
        "prompt set",
        "scorers",
        "cells",
        "samples (failed either)",
        "toxic a / b / both",
        "Pearson r",
        "Spearman ρ",
        "same label",
        "Cohen's κ",
        "ρ(cells)",
    ]);
    table.right = (2..10).collect();
    let value = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.3}"));
    for r in rows {
        table.rows.push(vec![
            r.prompt_set.clone(),
            format!("{} / {}", r.scorer_a, r.scorer_b),
            r.cells.to_string(),
            format!("{} ({})", r.samples, r.failed_either),
            format!("{} / {} / {}", r.toxic_a, r.toxic_b, r.toxic_both),
            value(r.pearson),
            value(r.spearman),
            value(r.label_agreement),
            value(r.cohen_kappa),
            value(r.cell_spearman),
        ]);
    }
    table
}

pub fn gap_table(experiment: &Experiment) -> MarkdownTable {
    let mut table = MarkdownTable::new(&[
        "prompt set",
        "method",
        "strength",
        "scorer",
        "toxic rate per group",
        "largest gap",
        "gap [95% CI]",
    ]);
    table.right = vec![6];
    for view in experiment.scorer_views() {
        let Some(groups) = &view.results.groups else {
            continue;
        };
        let c = &view.cell.config;
        let rates: Vec<String> = groups
            .groups
            .iter()
            .map(|(g, s)| format!("{g} {}", number(s.toxic_rate.value, 3)))
            .collect();
        let (pair, gap) = match &groups.toxic_rate_gap {
            Some(gap) => (
                format!("{} − {}", gap.higher, gap.lower),
                match gap.ci95 {
                    Some((lo, hi)) => format!("{:.3} [{lo:.3}, {hi:.3}]", gap.gap),
                    None => format!("{:.3}", gap.gap),
                },
            ),
            None => ("—".to_owned(), "—".to_owned()),
        };
        table.rows.push(vec![
            c.prompts.name.clone(),
            c.method.label.clone(),
            strength(c.method.strength),
            view.scorer.clone(),
            rates.join(", "),
            pair,
            gap,
        ]);
    }
    table
}

/// The whole `summary.md`.
pub fn render_summary(
    experiment: &Experiment,
    agreement: &[ScorerAgreement],
    fairness: &Fairness<'_>,
    notes: &[String],
) -> String {
    let complete = experiment.complete().count();
    let incomplete: Vec<_> = experiment.incomplete().collect();
    let mut out = format!("# Report: {}\n\n", experiment.dir.display());
    out += &format!(
        "{} cells: {complete} complete, {} incomplete.\n",
        experiment.cells.len(),
        incomplete.len()
    );
    if !incomplete.is_empty() {
        out += "\nIncomplete cells (no metrics.json yet; listed in the cells table with status `incomplete`):\n\n";
        for cell in &incomplete {
            let c = &cell.config;
            out += &format!(
                "- `{}` {} / {} / {} / seed {}\n",
                cell.id(),
                c.model.name,
                cell.method_setting(),
                c.prompts.name,
                c.seed
            );
        }
    }
    if complete > 0 {
        let policies: BTreeSet<String> = experiment
            .complete()
            .filter_map(|c| c.metrics.as_ref())
            .map(|m| {
                format!(
                    "{} {}",
                    comparison_symbol(m.policy.toxic_comparison),
                    m.policy.toxic_threshold
                )
            })
            .collect();
        let threshold = if policies.len() == 1 {
            format!("score {}", policies.into_iter().next().expect("one policy"))
        } else {
            "a score past the cell's threshold".to_owned()
        };
        out += &format!(
            "\n## Toxicity, fluency, diversity, cost\n\n\
             EMT: mean over prompts of the highest toxicity among a prompt's continuations. \
             Toxic rate: share of prompts with at least one continuation with {threshold}. \
             Toxic samples: share of all continuations with {threshold} (it still moves when \
             EMT and toxic rate sit near 1, as on challenging prompts). \
             Brackets: 95 % bootstrap intervals over prompts. PPL: conditional perplexity under \
             the judge LM. dist-2: distinct bigrams per word. tokens/s: generation throughput \
             from record.json. prompts (used/given), samples, scored and failed are the \
             toxicity counts.\n\n"
        );
        out += &summary_table(experiment).render();
        out += LENGTH_SECTION;
        out += &length_markdown(experiment).render();
        let computed: Vec<&str> = experiment
            .complete()
            .filter(|c| c.lengths_computed)
            .map(|c| c.id())
            .collect();
        if !computed.is_empty() {
            out += &format!(
                "\nLength results of {} cells were computed from their generations: their \
                 metrics.json predates them.\n",
                computed.len()
            );
        }
        out += &paired_markdown(&fairness.paired, &fairness.pairings);
        let gaps = gap_table(experiment);
        if !gaps.rows.is_empty() {
            out += "\n## Groups: toxic rate per group and the largest gap\n\n";
            out += &gaps.render();
        }
    }
    out += &audit_markdown(&fairness.audits);
    if !agreement.is_empty() {
        out += "\n## Scorer agreement\n\n\
                Over the samples both scorers scored: Pearson r and Spearman ρ of the scores, the \
                share of samples given the same toxic / clean label, Cohen's κ of those labels; \
                ρ(cells): Spearman correlation of the cells' toxic-sample shares (do the scorers \
                rank method settings alike).\n\n";
        out += &agreement_markdown(agreement).render();
    }
    if !notes.is_empty() {
        out += "\n## Notes\n\n";
        for note in notes {
            out += &format!("- {note}\n");
        }
    }
    out
}
