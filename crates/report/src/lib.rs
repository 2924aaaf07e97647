//! Tables and charts from an experiment's stored outputs, without a model or libtorch.
//!
//! [`write_report`] is the whole of `detox report DIR` (and what `detox merge` calls after joining
//! shard folders): it reads every cell folder ([`Experiment::load`]), builds the tables
//! ([`build_tables`]) and writes into `<dir>/report/`:
//!
//! ```text
//! cells.parquet, cells.csv            one row per cell × scorer (incomplete cells included)
//! groups.parquet, groups.csv          one row per cell × scorer × group
//! per_prompt.parquet, per_prompt.csv  one row per cell × scorer × prompt
//! agreement.parquet, agreement.csv    one row per scorer pair × prompt set (and all sets)
//! paired.parquet, paired.csv          one row per cell × scorer against its baseline: paired
//!                                     differences with bootstrap intervals (and one per cell
//!                                     whose baseline is missing or ambiguous, with the reason)
//! audit.parquet, audit.csv            one row per cell × confound found ("none_found" if none)
//! summary.md                          the human summary, with notes on what was skipped
//! charts/*.png, charts/*.svg          frontier, group, cost and scorer-agreement charts
//! ```
//!
//! [`compare`] matches two experiments' cells by meaning (model, method label, strength, prompt
//! set, scorer) for `detox compare`.

mod agreement;
mod audit;
mod audit_checks;
mod charts;
mod compare;
mod fairness;
#[cfg(any(test, feature = "fixture"))]
pub mod fixture;
mod length;
mod load;
mod markdown;
mod paired;
mod paired_output;
mod pairing;
mod table;
mod tables;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fair;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub use agreement::{
    agreement_table, scorer_agreement, CellShares, ScorerAgreement, ALL_PROMPT_SETS,
};
pub use audit::{
    audit_markdown, audit_table, AuditItem, AuditKind, CellAudit, LENGTH_TOLERANCE, SHARE_TOLERANCE,
};
pub use charts::{write_charts, ChartsOutcome};
pub use compare::{compare, default_compare_dir, CompareRow, Compared, Comparison, MatchKey, Side};
pub use fairness::Fairness;
pub use load::{
    format_strength, per_prompt_toxicity, sample_scores, CellConfig, CellOutputs, CellStatus,
    Experiment, MetricsRecord, PromptRow, RunRecord, ScorerResults, ScorerView,
};
pub use markdown::{render_summary, MarkdownTable};
pub use paired::PairedRow;
pub use paired_output::{paired_markdown, paired_table};
pub use pairing::{pair_cells, Baseline, CellPairing};
pub use table::{read_csv, read_parquet, write_csv, write_parquet, Row, Table, Value};
pub use tables::{build_tables, Tables};

/// The folder inside an experiment that a report writes.
pub const REPORT_DIR: &str = "report";
pub const CHARTS_DIR: &str = "charts";
/// The summary file inside [`REPORT_DIR`].
pub const SUMMARY_FILE: &str = "summary.md";
/// Table names; each is written as `<name>.parquet` and `<name>.csv`.
pub const TABLES: [&str; 6] = [
    "cells",
    "groups",
    "per_prompt",
    "agreement",
    "paired",
    "audit",
];

/// What [`write_report`] did.
#[derive(Debug, Clone)]
pub struct ReportOutput {
    /// `<dir>/report`.
    pub report_dir: PathBuf,
    /// The summary as written to `summary.md`.
    pub markdown: String,
    /// Every file written (tables, summary, charts).
    pub files: Vec<PathBuf>,
    pub complete_cells: usize,
    pub incomplete_cells: usize,
    /// What was skipped and why (also in the summary).
    pub notes: Vec<String>,
}

/// Rebuilds `<dir>/report/` from the stored outputs of every cell: tables, charts, summary.
/// Outputs of an earlier report that this one would not write again (a table that is empty now,
/// a chart of a prompt set that is gone) are removed, so the folder always matches the cells.
pub fn write_report(dir: &Path) -> Result<ReportOutput> {
    let experiment = Experiment::load(dir)?;
    let tables = build_tables(&experiment)?;
    let agreement = scorer_agreement(&experiment)?;
    let agreement_rows = agreement_table(&agreement);
    let fairness = Fairness::of(&experiment)?;
    let paired_rows = paired_table(&fairness.paired, &fairness.pairings);
    let audit_rows = audit_table(&fairness.audits);
    let report_dir = dir.join(REPORT_DIR);
    let charts_dir = report_dir.join(CHARTS_DIR);
    remove_previous_outputs(&report_dir, &charts_dir)?;
    std::fs::create_dir_all(&report_dir)
        .with_context(|| format!("{}: cannot create", report_dir.display()))?;

    let mut files = Vec::new();
    let mut notes = Vec::new();
    for table in [
        &tables.cells,
        &tables.groups,
        &tables.per_prompt,
        &agreement_rows,
        &paired_rows,
        &audit_rows,
    ] {
        let mut df = table.to_dataframe()?;
        if df.height() == 0 {
            notes.push(format!(
                "table {} not written: no rows ({})",
                table.name,
                match table.name {
                    "groups" => "no prompt set has groups",
                    "agreement" => "no cell has two scorers",
                    "paired" => "no cell has a baseline",
                    _ => "no complete cell",
                }
            ));
            continue;
        }
        let parquet = report_dir.join(format!("{}.parquet", table.name));
        let csv = report_dir.join(format!("{}.csv", table.name));
        write_parquet(&mut df, &parquet)?;
        write_csv(&mut df, &csv)?;
        files.extend([parquet, csv]);
    }
    let charts = write_charts(&experiment, &agreement, &fairness, &charts_dir)?;
    files.extend(charts.files);
    notes.extend(charts.notes);

    let markdown = render_summary(&experiment, &agreement, &fairness, &notes);
    let summary = report_dir.join(SUMMARY_FILE);
    std::fs::write(&summary, &markdown)
        .with_context(|| format!("{}: cannot write", summary.display()))?;
    files.push(summary);
    Ok(ReportOutput {
        report_dir,
        markdown,
        files,
        complete_cells: experiment.complete().count(),
        incomplete_cells: experiment.incomplete().count(),
        notes,
    })
}

/// Removes the files a report writes (and nothing else a person may have put there).
fn remove_previous_outputs(report_dir: &Path, charts_dir: &Path) -> Result<()> {
    let mut stale: Vec<PathBuf> = TABLES
        .iter()
        .flat_map(|t| ["parquet", "csv"].map(|ext| report_dir.join(format!("{t}.{ext}"))))
        .collect();
    stale.push(report_dir.join(SUMMARY_FILE));
    if charts_dir.is_dir() {
        for entry in std::fs::read_dir(charts_dir)
            .with_context(|| format!("{}: cannot list", charts_dir.display()))?
        {
            let path = entry
                .with_context(|| format!("{}: cannot list", charts_dir.display()))?
                .path();
            if path.extension().is_some_and(|e| e == "png" || e == "svg") {
                stale.push(path);
            }
        }
    }
    for path in stale.iter().filter(|p| p.exists()) {
        std::fs::remove_file(path).with_context(|| {
            format!(
                "{}: cannot remove the previous report's file",
                path.display()
            )
        })?;
    }
    Ok(())
}
