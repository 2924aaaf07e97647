//! The confound audit: per cell, what differs from its baseline besides the method, with numbers.
//!
//! A toxicity difference between a method and its baseline is only the method's doing when
//! nothing else differs. Listed, per cell:
//! - **length**: mean length in tokens differs by more than [`LENGTH_TOLERANCE`] (relative to the
//!   baseline's), or the end-of-sequence or empty share by more than [`SHARE_TOLERANCE`]
//!   (absolute): shorter text scores less toxic;
//! - **candidate set**: generation `top_p` / `top_k` differ from the baseline's, or the method
//!   truncates candidates itself (RAD's `top_k`, SASA's `max_candidates` when > 0);
//! - **scored samples**: a scorer scored or failed a different number of samples;
//! - **self-judged perplexity**: the judge LM is the policy model itself (its own text looks
//!   fluent to it).
//!
//! Facts, not verdicts: every cell is listed, and a cell with nothing to flag says "none found".

use crate::load::CellOutputs;
use crate::markdown::MarkdownTable;
use crate::pairing::{Baseline, CellPairing};
use crate::table::{Row, Table};

/// Mean length may differ from the baseline's by this fraction of it before it is flagged.
pub const LENGTH_TOLERANCE: f64 = 0.10;
/// End-of-sequence and empty shares may differ by this much (5 percentage points).
pub const SHARE_TOLERANCE: f64 = 0.05;

/// What an audit item is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    MeanLength,
    EosShare,
    EmptyShare,
    GenerationCandidates,
    MethodCandidates,
    ScoredSamples,
    SelfJudgedPerplexity,
    NoBaseline,
    Incomplete,
    NoneFound,
}

impl AuditKind {
    /// The `item` column of `audit.csv`.
    pub fn name(self) -> &'static str {
        match self {
            AuditKind::MeanLength => "mean_length",
            AuditKind::EosShare => "eos_share",
            AuditKind::EmptyShare => "empty_share",
            AuditKind::GenerationCandidates => "generation_candidates",
            AuditKind::MethodCandidates => "method_candidates",
            AuditKind::ScoredSamples => "scored_samples",
            AuditKind::SelfJudgedPerplexity => "self_judged_perplexity",
            AuditKind::NoBaseline => "no_baseline",
            AuditKind::Incomplete => "incomplete",
            AuditKind::NoneFound => "none_found",
        }
    }

    /// A short tag for chart labels; `None` for what is not a difference from the baseline.
    pub fn chart_tag(self) -> Option<&'static str> {
        match self {
            AuditKind::MeanLength => Some("len"),
            AuditKind::EosShare => Some("eos"),
            AuditKind::EmptyShare => Some("empty"),
            AuditKind::GenerationCandidates | AuditKind::MethodCandidates => Some("cand"),
            AuditKind::ScoredSamples => Some("n"),
            _ => None,
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditItem {
    pub kind: AuditKind,
    /// The scorer, for per-scorer items.
    pub scorer: Option<String>,
    /// The cell's number and the baseline's, where the item is a number.
    pub value: Option<f64>,
    pub baseline_value: Option<f64>,
    pub tolerance: Option<f64>,
    /// The fact in words, with its numbers.
    pub detail: String,
}

impl AuditItem {
    fn fact(kind: AuditKind, detail: String) -> Self {
        Self {
            kind,
            scorer: None,
            value: None,
            baseline_value: None,
            tolerance: None,
            detail,
        }
    }
}

/// One cell's audit.
#[derive(Debug, Clone)]
pub struct CellAudit<'a> {
    pub cell: &'a CellOutputs,
    pub baseline: Option<&'a CellOutputs>,
    /// Never empty: [`AuditKind::NoneFound`] when nothing is flagged.
    pub items: Vec<AuditItem>,
}

impl CellAudit<'_> {
    /// The chart tags of the items, deduplicated (`len`, `eos`, `cand`, …).
    pub fn chart_tags(&self) -> Vec<&'static str> {
        let mut tags: Vec<&'static str> = Vec::new();
        for tag in self.items.iter().filter_map(|i| i.kind.chart_tag()) {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        tags
    }
}

/// Audits every cell (complete or not), in the experiment's order.
pub fn audit_cells<'a>(pairings: &[CellPairing<'a>]) -> Vec<CellAudit<'a>> {
    pairings
        .iter()
        .map(|p| {
            let baseline = match &p.baseline {
                Baseline::Found { cell, .. } => Some(*cell),
                _ => None,
            };
            let mut items = Vec::new();
            if p.cell.metrics.is_none() {
                items.push(AuditItem::fact(
                    AuditKind::Incomplete,
                    "not evaluated yet: nothing to audit".into(),
                ));
            } else {
                if let Some(base) = baseline {
                    items.extend(crate::audit_checks::against_baseline(p.cell, base));
                } else if !matches!(p.baseline, Baseline::IsBaseline) {
                    items.push(AuditItem::fact(
                        AuditKind::NoBaseline,
                        format!("not compared: {}", p.why_unpaired().unwrap_or_default()),
                    ));
                }
                items.extend(crate::audit_checks::method_truncation(p.cell));
                items.extend(crate::audit_checks::self_judged(p.cell));
            }
            if items.is_empty() {
                items.push(AuditItem::fact(AuditKind::NoneFound, "none found".into()));
            }
            CellAudit {
                cell: p.cell,
                baseline,
                items,
            }
        })
        .collect()
}

/// `audit.csv`: one row per cell × item.
pub fn audit_table(audits: &[CellAudit<'_>]) -> Table {
    let mut rows = Vec::new();
    for a in audits {
        let c = &a.cell.config;
        for item in &a.items {
            let mut row = Row::default();
            let difference = item.value.zip(item.baseline_value).map(|(v, b)| v - b);
            row.str("cell_id", a.cell.id())
                .str("status", a.cell.status().as_str())
                .str("model", &c.model.name)
                .str("prompt_set", &c.prompts.name)
                .u64("seed", Some(c.seed))
                .str("method_setting", a.cell.method_setting())
                .opt_str("baseline_cell_id", a.baseline.map(|b| b.id().to_owned()))
                .opt_str("baseline_setting", a.baseline.map(|b| b.method_setting()))
                .str("item", item.kind.name())
                .opt_str("scorer", item.scorer.clone())
                .f64("value", item.value)
                .f64("baseline_value", item.baseline_value)
                .f64("difference", difference)
                .f64("tolerance", item.tolerance)
                .str("detail", &item.detail);
            rows.push(row);
        }
    }
    Table::new("audit", rows)
}

/// The summary's section.
pub fn audit_markdown(audits: &[CellAudit<'_>]) -> String {
    let mut out = format!(
        "\n## Confound audit\n\n\
         What differs from each cell's baseline besides the method. Flagged: mean length \
         (tokens) more than {:.0} % apart, end-of-sequence or empty share more than {:.0} \
         percentage points apart, a different candidate set (generation top_p / top_k, or a \
         method that truncates or partly re-weights candidates: RAD top_k, SASA max_candidates), a different \
         number of scored or failed samples, perplexity judged by the policy model itself. \
         Chart labels carry the tags in brackets (len, eos, empty, cand, n).\n\n",
        100.0 * LENGTH_TOLERANCE,
        100.0 * SHARE_TOLERANCE
    );
    let mut table = MarkdownTable::new(&["prompt set", "method", "baseline", "what else differs"]);
    for a in audits {
        let c = &a.cell.config;
        let details: Vec<String> = a.items.iter().map(|i| i.detail.clone()).collect();
        table.rows.push(vec![
            c.prompts.name.clone(),
            format!("{} (`{}`)", a.cell.method_setting(), a.cell.id()),
            a.baseline.map_or("—".to_owned(), |b| b.method_setting()),
            details.join("; "),
        ]);
    }
    out += &table.render();
    out
}

/// A share difference in percentage points, signed.
pub(crate) fn points(delta: f64) -> String {
    format!("{:+.1} pp", 100.0 * delta)
}
