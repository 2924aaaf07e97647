//! The three tables of a report:
//!
//! - `cells`: one row per cell × scorer (an incomplete cell, or one evaluated without scorers,
//!   gets one row with the scorer's columns null): the cell's settings, every toxicity metric of
//!   the scorer, perplexity and dist-n, each with its interval and counts, length and stopping
//!   (all samples, `length_*`; the scorer's scored samples, `scored_length_*`), toxicity over the
//!   samples at the length limit (`full_length_*`), and the run record.
//! - `groups`: one row per cell × scorer × group (BOLD group, AttaQ category, ToxiGen group) with
//!   the group's metrics and the cell's largest toxic-rate gap repeated on each row.
//! - `per_prompt`: one row per cell × scorer × prompt, built from the generations and score files.

use anyhow::Result;
use serde_json::Value as Json;

use crate::length::length_columns;
use crate::load::{per_prompt_toxicity, CellOutputs, Experiment, ScorerResults};
use crate::table::{Row, Table};

/// The report's tables, ready to write.
#[derive(Debug, Clone)]
pub struct Tables {
    pub cells: Table,
    pub groups: Table,
    pub per_prompt: Table,
}

pub fn build_tables(experiment: &Experiment) -> Result<Tables> {
    let mut cells = Vec::new();
    let mut groups = Vec::new();
    let mut per_prompt = Vec::new();
    for cell in &experiment.cells {
        let Some(metrics) = &cell.metrics else {
            cells.push(cells_row(cell, None));
            continue;
        };
        let names = cell.scorer_names();
        if metrics.results.toxicity.is_empty() {
            cells.push(cells_row(cell, None));
        }
        for (scorer, name) in metrics.results.toxicity.iter().zip(&names) {
            cells.push(cells_row(cell, Some((name, scorer))));
            groups.extend(group_rows(cell, name, scorer));
        }
        let prompts = per_prompt_toxicity(cell)?;
        for (rows, name) in prompts.iter().zip(&names) {
            for p in rows {
                let mut row = Row::default();
                row.str("cell_id", cell.id())
                    .str("model", &cell.config.model.name)
                    .str("method_label", &cell.config.method.label)
                    .f64("strength", cell.config.method.strength)
                    .str("prompt_set", &cell.config.prompts.name)
                    .u64("seed", Some(cell.config.seed))
                    .str("scorer", name)
                    .str("prompt_id", &p.prompt_id)
                    .opt_str("group", p.group.clone())
                    .count("samples", p.samples)
                    .count("scored", p.scored)
                    .count("failed", p.failed)
                    .f64("max_toxicity", p.max_toxicity)
                    .f64("mean_toxicity", p.mean_toxicity)
                    .count("toxic_samples", p.toxic_samples)
                    .bool("any_toxic", p.any_toxic);
                per_prompt.push(row);
            }
        }
    }
    Ok(Tables {
        cells: Table::new("cells", cells),
        groups: Table::new("groups", groups),
        per_prompt: Table::new("per_prompt", per_prompt),
    })
}

/// The columns that identify a cell, first in every table.
fn identity_columns(row: &mut Row, cell: &CellOutputs) {
    let c = &cell.config;
    row.str("cell_id", cell.id())
        .str("status", cell.status().as_str())
        .str("model", &c.model.name)
        .str("method", &c.method.name)
        .str("method_label", &c.method.label)
        .f64("strength", c.method.strength)
        .str("method_setting", cell.method_setting())
        .str("params", compact_json(&c.method.params))
        .str("prompt_set", &c.prompts.name)
        .u64("seed", Some(c.seed))
        .opt_str("baseline", c.method.baseline.clone());
}

/// `>=` or `>`, as policies spell the comparison.
pub(crate) fn comparison_symbol(comparison: metrics::ThresholdComparison) -> String {
    match serde_json::to_value(comparison) {
        Ok(Json::String(s)) => s,
        _ => format!("{comparison:?}"),
    }
}

fn compact_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("JSON values serialize")
}

fn cells_row(cell: &CellOutputs, scorer: Option<(&String, &ScorerResults)>) -> Row {
    let mut row = Row::default();
    identity_columns(&mut row, cell);
    let c = &cell.config;
    let g = c.generation.as_ref();
    // The policy evaluation used; before evaluation, the one the cell will use.
    let policy = cell
        .metrics
        .as_ref()
        .map(|m| &m.policy)
        .or(c.policy.as_ref());
    row.u64("samples_per_prompt", g.and_then(|g| g.samples_per_prompt))
        .u64("max_new_tokens", g.and_then(|g| g.max_new_tokens))
        .u64("min_new_tokens", g.and_then(|g| g.min_new_tokens))
        .f64("temperature", g.and_then(|g| g.temperature))
        .f64("top_p", g.and_then(|g| g.top_p))
        .u64("top_k", g.and_then(|g| g.top_k))
        .opt_str("judge", c.judge.as_ref().map(|j| j.name.clone()))
        .f64("toxic_threshold", policy.map(|p| p.toxic_threshold))
        .opt_str(
            "toxic_comparison",
            policy.map(|p| comparison_symbol(p.toxic_comparison)),
        )
        .f64("ppl_cap", policy.and_then(|p| p.ppl_cap));

    row.opt_str("scorer", scorer.map(|(name, _)| name.clone()))
        .opt_str("scorer_id", scorer.map(|(_, s)| s.scorer.clone()))
        .opt_str(
            "score_failures",
            scorer.map(|(_, s)| compact_json(&s.failures)),
        );
    let summary = scorer.map(|(_, s)| &s.summary);
    row.measured("emt", summary.map(|s| &s.expected_max_toxicity))
        .measured("toxic_rate", summary.map(|s| &s.toxic_rate))
        .measured(
            "toxic_sample_fraction",
            summary.map(|s| &s.toxic_sample_fraction),
        )
        .measured("mean_toxicity", summary.map(|s| &s.mean_toxicity));
    // Length over all samples, then over this scorer's scored samples, then toxicity over the
    // samples that reached the length limit.
    let results = cell.metrics.as_ref().map(|m| &m.results);
    length_columns(&mut row, "length_", results.and_then(|r| r.length.as_ref()));
    length_columns(
        &mut row,
        "scored_length_",
        scorer.and_then(|(_, s)| s.length.as_ref()),
    );
    let full = scorer.and_then(|(_, s)| s.full_length.as_ref());
    row.measured(
        "full_length_toxic_sample_fraction",
        full.map(|f| &f.toxic_sample_fraction),
    )
    .measured("full_length_mean_toxicity", full.map(|f| &f.mean_toxicity))
    .bool("length_from_generations", Some(cell.lengths_computed));

    let results = cell.metrics.as_ref().map(|m| &m.results);
    row.measured("ppl", results.and_then(|r| r.perplexity.as_ref()))
        .measured("dist_1", results.map(|r| &r.distinctness.dist_1))
        .measured("dist_2", results.map(|r| &r.distinctness.dist_2))
        .measured("dist_3", results.map(|r| &r.distinctness.dist_3));

    let record = cell.record.as_ref();
    let stage = |name: &str| record.and_then(|r| r.stages.get(name));
    let git = record.map(|r| &r.git);
    let peak = record.map(|r| &r.peak_memory);
    let known = |s: &String| (!s.is_empty()).then(|| s.clone());
    row.bool("has_record", Some(record.is_some()))
        .opt_str("git_commit", git.and_then(|g| g.commit.clone()))
        .bool("git_dirty", git.and_then(|g| g.dirty))
        .opt_str("versions", record.map(|r| compact_json(&r.versions)))
        .opt_str("device", record.and_then(|r| known(&r.device)))
        .opt_str("dtype", record.and_then(|r| known(&r.dtype)))
        .u64("batch_size", record.map(|r| r.batch_size as u64))
        .u64("threads", record.map(|r| r.threads as u64))
        .opt_str("host", record.and_then(|r| known(&r.host.name)))
        .u64("host_cpus", record.map(|r| r.host.cpus as u64))
        .u64("runs", record.map(|r| r.runs as u64))
        .u64(
            "generate_samples",
            stage("generate").map(|s| s.samples as u64),
        )
        .u64(
            "generate_new_tokens",
            stage("generate").and_then(|s| s.new_tokens.map(|t| t as u64)),
        )
        .f64(
            "tokens_per_second",
            record.and_then(|r| r.tokens_per_second()),
        )
        .f64(
            "decode_seconds",
            stage("generate").and_then(|s| s.decode_seconds),
        )
        .f64(
            "generate_seconds",
            record.and_then(|r| r.stage_seconds("generate")),
        )
        .f64(
            "score_seconds",
            record.and_then(|r| r.stage_seconds("score")),
        )
        .f64(
            "evaluate_seconds",
            record.and_then(|r| r.stage_seconds("evaluate")),
        )
        .f64("total_seconds", record.and_then(|r| r.total_seconds()))
        .u64("peak_host_rss_bytes", peak.and_then(|p| p.host_rss_bytes))
        .u64("peak_device_bytes", peak.and_then(|p| p.device_bytes));
    row
}

fn group_rows(cell: &CellOutputs, scorer_name: &str, scorer: &ScorerResults) -> Vec<Row> {
    let Some(report) = &scorer.groups else {
        return Vec::new();
    };
    let gap = report.toxic_rate_gap.as_ref();
    report
        .groups
        .iter()
        .map(|(group, summary)| {
            let mut row = Row::default();
            identity_columns(&mut row, cell);
            row.str("scorer", scorer_name)
                .str("scorer_id", &scorer.scorer)
                .str("group", group)
                .measured("toxic_rate", Some(&summary.toxic_rate))
                .measured("emt", Some(&summary.expected_max_toxicity))
                .measured("mean_toxicity", Some(&summary.mean_toxicity))
                .measured(
                    "toxic_sample_fraction",
                    Some(&summary.toxic_sample_fraction),
                )
                .count("ungrouped_prompts", report.ungrouped_prompts)
                .opt_str("gap_higher", gap.map(|g| g.higher.clone()))
                .opt_str("gap_lower", gap.map(|g| g.lower.clone()))
                .f64("gap", gap.map(|g| g.gap))
                .f64("gap_ci_low", gap.and_then(|g| g.ci95).map(|c| c.0))
                .f64("gap_ci_high", gap.and_then(|g| g.ci95).map(|c| c.1))
                .bool("is_gap_higher", gap.map(|g| &g.higher == group))
                .bool("is_gap_lower", gap.map(|g| &g.lower == group));
            row
        })
        .collect()
}
