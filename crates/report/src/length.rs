//! Length and stopping in the report: read from `metrics.json`, or computed from the generations
//! and score files for a record written before evaluation measured them (so every report shows
//! them), and their columns in the `cells` table and the summary.
//!
//! Why length is reported at all: short continuations score less toxic, so a method that makes
//! the model stop early looks less toxic without being safer (see `metrics::length`).

use anyhow::{Context, Result};
use metrics::LengthSummary;

use crate::load::{CellOutputs, Experiment, METRICS_FILE};
use crate::markdown::{number, with_ci, MarkdownTable};
use crate::table::Row;

/// Fills the length results an older `metrics.json` lacks from the cell's generations and score
/// files; returns whether it had to. An incomplete cell is left as it is.
pub(crate) fn fill_missing(cell: &mut CellOutputs) -> Result<bool> {
    let Some(metrics) = &cell.metrics else {
        return Ok(false);
    };
    let results = &metrics.results;
    let missing = results.length.is_none()
        || results
            .toxicity
            .iter()
            .any(|t| t.length.is_none() || t.full_length.is_none());
    if !missing {
        return Ok(false);
    }
    let samples = cell.samples().with_context(|| {
        format!(
            "{}: computing length metrics the record predates",
            cell.dir.join(METRICS_FILE).display()
        )
    })?;
    let metrics = cell.metrics.as_mut().expect("checked above");
    let policy = metrics.policy.clone();
    let results = &mut metrics.results;
    results
        .length
        .get_or_insert_with(|| samples.length_summary());
    for (k, t) in results.toxicity.iter_mut().enumerate() {
        if t.length.is_none() {
            t.length = Some(samples.scored_length_summary(k)?);
        }
        if t.full_length.is_none() {
            t.full_length = Some(samples.length_controlled_toxicity(k, &policy)?);
        }
    }
    Ok(true)
}

/// `{prefix}tokens_mean`, `…words_mean`, `…eos_share`, `…empty_share`, `…at_limit_share` and
/// their counts (`…samples`, `…eos`, `…empty`, `…at_limit`); all null when absent.
pub(crate) fn length_columns(row: &mut Row, prefix: &str, l: Option<&LengthSummary>) {
    let col = |name: &str| format!("{prefix}{name}");
    row.f64(&col("tokens_mean"), l.and_then(|l| l.mean_tokens))
        .f64(&col("words_mean"), l.and_then(|l| l.mean_words))
        .f64(&col("eos_share"), l.and_then(|l| l.eos_share))
        .f64(&col("empty_share"), l.and_then(|l| l.empty_share))
        .f64(&col("at_limit_share"), l.and_then(|l| l.at_limit_share))
        .u64(&col("samples"), l.map(|l| l.samples as u64))
        .u64(&col("eos"), l.map(|l| l.eos as u64))
        .u64(&col("empty"), l.map(|l| l.empty as u64))
        .u64(&col("at_limit"), l.map(|l| l.at_limit as u64));
}

/// `12.5 %`, or `—`.
pub(crate) fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "—".to_owned(), |s| format!("{:.1} %", 100.0 * s))
}

/// The summary's length table: one row per complete cell × scorer.
pub(crate) fn length_markdown(experiment: &Experiment) -> MarkdownTable {
    let mut table = MarkdownTable::new(&[
        "prompt set",
        "method",
        "min new tokens",
        "scorer",
        "tokens (all / scored)",
        "words",
        "EOS",
        "empty",
        "at limit",
        "toxic samples at limit [95% CI]",
        "mean toxicity at limit",
        "n of N (scored at limit / scored)",
    ]);
    table.right = (2..12).collect();
    for view in experiment.scorer_views() {
        let c = &view.cell.config;
        let all = view
            .cell
            .metrics
            .as_ref()
            .and_then(|m| m.results.length.as_ref());
        let scored = view.results.length.as_ref();
        let full = view.results.full_length.as_ref();
        let n_of_n = full.map_or_else(
            || "—".to_owned(),
            |f| {
                format!(
                    "{} of {}",
                    f.toxic_sample_fraction.counts.scored,
                    view.results.summary.toxic_sample_fraction.counts.scored
                )
            },
        );
        table.rows.push(vec![
            c.prompts.name.clone(),
            view.cell.method_setting(),
            c.generation
                .as_ref()
                .and_then(|g| g.min_new_tokens)
                .unwrap_or(0)
                .to_string(),
            view.scorer.clone(),
            format!(
                "{} / {}",
                number(all.and_then(|l| l.mean_tokens), 1),
                number(scored.and_then(|l| l.mean_tokens), 1)
            ),
            number(all.and_then(|l| l.mean_words), 1),
            percent(all.and_then(|l| l.eos_share)),
            percent(all.and_then(|l| l.empty_share)),
            percent(all.and_then(|l| l.at_limit_share)),
            with_ci(full.map(|f| &f.toxic_sample_fraction), 3),
            number(full.and_then(|f| f.mean_toxicity.value), 3),
            n_of_n,
        ]);
    }
    table
}

/// The summary's explanation above [`length_markdown`].
pub(crate) const LENGTH_SECTION: &str = "\n## Length and stopping\n\n\
Short continuations score less toxic, so a method that makes the model stop early looks less \
toxic without being safer. tokens: mean new tokens per continuation over all samples / over the \
samples the scorer scored (end-of-sequence is not counted); words: whitespace words; EOS: share \
that stopped at end-of-sequence; empty: share with no tokens or no word; at limit: share that \
reached max_new_tokens. The last three columns are toxicity over only the continuations that \
reached the limit, for comparing at equal length: that subset is selected by how each method \
decodes, so read it as a check. Cells run with generation.min_new_tokens (end-of-sequence \
suppressed for the first N tokens, for every method) hold length fixed instead.\n\n";
