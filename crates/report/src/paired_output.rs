//! The paired differences as a table (`paired.csv`) and as the summary's section, with every
//! cell that could not be compared and why.

use metrics::PairedDifference;

use crate::markdown::MarkdownTable;
use crate::paired::PairedRow;
use crate::pairing::{Baseline, CellPairing};
use crate::table::{Row, Table};

/// The five differences of a row with their column names, in table order.
fn differences(row: &PairedRow) -> [(&'static str, Option<&PairedDifference>); 5] {
    [
        ("toxic_samples", Some(&row.toxic_samples)),
        ("emt", Some(&row.emt)),
        ("toxic_rate", Some(&row.toxic_rate)),
        ("ppl", row.perplexity.as_ref()),
        ("length_tokens", Some(&row.length_tokens)),
    ]
}

/// `paired.csv`: one row per paired cell × scorer, then one per cell whose baseline was not
/// found or is ambiguous (differences null, the reason in `note`).
pub fn paired_table(rows: &[PairedRow], pairings: &[CellPairing<'_>]) -> Table {
    let mut out = Vec::new();
    for r in rows {
        let mut row = Row::default();
        row.str("cell_id", &r.cell_id)
            .opt_str("baseline_cell_id", Some(&r.baseline_id))
            .str("model", &r.model)
            .str("prompt_set", &r.prompt_set)
            .u64("seed", Some(r.seed))
            .str("method_setting", &r.method_setting)
            .opt_str("baseline_setting", Some(&r.baseline_setting))
            .opt_str("scorer", Some(&r.scorer))
            .bool("baseline_inferred", Some(r.inferred))
            .u64("prompts_joined", Some(r.prompts_joined as u64))
            .u64("prompts_only_in_cell", Some(r.only_in_cell as u64))
            .u64("prompts_only_in_baseline", Some(r.only_in_baseline as u64));
        for (name, d) in differences(r) {
            difference_columns(&mut row, name, d);
        }
        row.opt_str("note", r.note.clone());
        out.push(row);
    }
    for p in pairings.iter().filter(|p| p.cell.metrics.is_some()) {
        let (Some(reason), false) = (p.why_unpaired(), matches!(p.baseline, Baseline::IsBaseline))
        else {
            continue;
        };
        let c = &p.cell.config;
        let mut row = Row::default();
        row.str("cell_id", p.cell.id())
            .opt_str("baseline_cell_id", None::<String>)
            .str("model", &c.model.name)
            .str("prompt_set", &c.prompts.name)
            .u64("seed", Some(c.seed))
            .str("method_setting", p.cell.method_setting())
            .opt_str("baseline_setting", None::<String>)
            .opt_str("scorer", None::<String>)
            .bool("baseline_inferred", None)
            .u64("prompts_joined", None)
            .u64("prompts_only_in_cell", None)
            .u64("prompts_only_in_baseline", None);
        for name in ["toxic_samples", "emt", "toxic_rate", "ppl", "length_tokens"] {
            difference_columns(&mut row, name, None);
        }
        row.opt_str("note", Some(reason));
        out.push(row);
    }
    Table::new("paired", out)
}

/// `d_{name}`, `d_{name}_ci_low`, `d_{name}_ci_high`, `d_{name}_excludes_zero`.
fn difference_columns(row: &mut Row, name: &str, d: Option<&PairedDifference>) {
    let ci = d.and_then(|d| d.ci95);
    row.f64(&format!("d_{name}"), d.and_then(|d| d.value))
        .f64(&format!("d_{name}_ci_low"), ci.map(|c| c.0))
        .f64(&format!("d_{name}_ci_high"), ci.map(|c| c.1))
        .bool(
            &format!("d_{name}_excludes_zero"),
            ci.map(|_| d.is_some_and(PairedDifference::excludes_zero)),
        );
}

/// `+0.012 [−0.004, +0.031]`, starred when the interval excludes 0.
fn signed(d: Option<&PairedDifference>, decimals: usize) -> String {
    let Some(d) = d else {
        return "—".to_owned();
    };
    let Some(v) = d.value else {
        return "—".to_owned();
    };
    match d.ci95 {
        Some((lo, hi)) => format!(
            "{v:+.decimals$} [{lo:+.decimals$}, {hi:+.decimals$}]{}",
            if d.excludes_zero() { " *" } else { "" }
        ),
        None => format!("{v:+.decimals$}"),
    }
}

/// The summary's section: the table, then every cell that could not be compared and why.
pub fn paired_markdown(rows: &[PairedRow], pairings: &[CellPairing<'_>]) -> String {
    let mut out = String::from(
        "\n## Paired differences against the baseline\n\n\
         Each cell against its baseline (cell.json `method.baseline`; same model, prompt set, \
         seed, samples per prompt, max_new_tokens and min_new_tokens): cell − baseline, with a \
         paired bootstrap 95 % interval over prompts (the same resample of prompts for both \
         cells). `*`: the interval excludes 0. Prompts are joined by id; prompts only one cell \
         has are counted and left out. Length is mean new tokens over all samples.\n\n",
    );
    let mut table = MarkdownTable::new(&[
        "prompt set",
        "method",
        "baseline",
        "scorer",
        "prompts (only cell / only baseline)",
        "Δ toxic samples",
        "Δ EMT",
        "Δ toxic rate",
        "Δ PPL",
        "Δ tokens",
    ]);
    table.right = (4..10).collect();
    let mut notes = Vec::new();
    for r in rows {
        let inferred = if r.inferred { " (inferred)" } else { "" };
        table.rows.push(vec![
            r.prompt_set.clone(),
            r.method_setting.clone(),
            format!("{}{inferred}", r.baseline_setting),
            r.scorer.clone(),
            format!(
                "{} ({} / {})",
                r.prompts_joined, r.only_in_cell, r.only_in_baseline
            ),
            signed(Some(&r.toxic_samples), 3),
            signed(Some(&r.emt), 3),
            signed(Some(&r.toxic_rate), 3),
            signed(r.perplexity.as_ref(), 2),
            signed(Some(&r.length_tokens), 1),
        ]);
        if let Some(note) = &r.note {
            let line = format!("{} / {}: {note}", r.method_setting, r.scorer);
            if !notes.contains(&line) {
                notes.push(line);
            }
        }
    }
    if table.rows.is_empty() {
        out += "No cell has a baseline cell to compare with.\n";
    } else {
        out += &table.render();
    }
    let unpaired: Vec<String> = pairings
        .iter()
        .filter(|p| !matches!(p.baseline, Baseline::IsBaseline | Baseline::Found { .. }))
        .map(|p| {
            format!(
                "`{}` {} / {}: {}",
                p.cell.id(),
                p.cell.method_setting(),
                p.cell.config.prompts.name,
                p.why_unpaired().unwrap_or_default()
            )
        })
        .collect();
    if !unpaired.is_empty() {
        out += "\nNot compared:\n\n";
        for line in unpaired {
            out += &format!("- {line}\n");
        }
    }
    if !notes.is_empty() {
        out += "\n";
        for line in notes {
            out += &format!("- {line}\n");
        }
    }
    out
}
