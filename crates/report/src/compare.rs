//! `detox compare A B`: two experiments side by side.
//!
//! Cells are matched by what they mean, not by id (an id changes with any setting, and the point
//! of comparing is often that a setting changed): model, method label, strength, prompt set and
//! scorer. When one side has several cells for a key (several seeds), they are paired by seed.
//! Rows present on one side only are kept and marked. Differences are B − A.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::load::{format_strength, Experiment, ScorerView};
use crate::markdown::{number, MarkdownTable};
use crate::table::{write_csv, write_parquet, Row, Table};

/// What a comparison row matches on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MatchKey {
    pub model: String,
    pub method_label: String,
    /// As the spec writes it (`0.5`, `2`); `None` without a strength.
    pub strength: Option<String>,
    pub prompt_set: String,
    pub scorer: String,
}

/// The numbers compared for one side of a row.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Compared {
    pub emt: Option<f64>,
    pub toxic_rate: Option<f64>,
    pub ppl: Option<f64>,
    pub dist_2: Option<f64>,
    pub tokens_per_second: Option<f64>,
}

/// One side's cell of a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    pub cell_id: String,
    pub seed: u64,
    pub values: Compared,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    pub key: MatchKey,
    pub a: Option<Side>,
    pub b: Option<Side>,
}

impl CompareRow {
    pub fn presence(&self) -> &'static str {
        match (&self.a, &self.b) {
            (Some(_), Some(_)) => "both",
            (Some(_), None) => "only A",
            (None, Some(_)) => "only B",
            (None, None) => unreachable!("a row has at least one side"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Comparison {
    pub a: PathBuf,
    pub b: PathBuf,
    pub rows: Vec<CompareRow>,
    /// Incomplete cells (not compared) on each side.
    pub incomplete_a: usize,
    pub incomplete_b: usize,
}

/// The compared metrics: column stem, Markdown header, decimals, accessor.
type MetricColumn = (
    &'static str,
    &'static str,
    usize,
    fn(&Compared) -> Option<f64>,
);
const METRICS: [MetricColumn; 5] = [
    ("emt", "EMT", 3, |c| c.emt),
    ("toxic_rate", "toxic rate", 3, |c| c.toxic_rate),
    ("ppl", "PPL", 2, |c| c.ppl),
    ("dist_2", "dist-2", 3, |c| c.dist_2),
    ("tokens_per_second", "tokens/s", 1, |c| c.tokens_per_second),
];

fn key_of(view: &ScorerView) -> MatchKey {
    let c = &view.cell.config;
    MatchKey {
        model: c.model.name.clone(),
        method_label: c.method.label.clone(),
        strength: c.method.strength.map(format_strength),
        prompt_set: c.prompts.name.clone(),
        scorer: view.scorer.clone(),
    }
}

fn side_of(view: &ScorerView) -> Side {
    let cell = view.cell;
    let results = &cell.metrics.as_ref().expect("complete").results;
    Side {
        cell_id: cell.id().to_owned(),
        seed: cell.config.seed,
        values: Compared {
            emt: view.results.summary.expected_max_toxicity.value,
            toxic_rate: view.results.summary.toxic_rate.value,
            ppl: results.perplexity.as_ref().and_then(|p| p.value),
            dist_2: results.distinctness.dist_2.value,
            tokens_per_second: cell.record.as_ref().and_then(|r| r.tokens_per_second()),
        },
    }
}

/// Matches the complete cells of `a` and `b` (see the module documentation).
pub fn compare(a: &Experiment, b: &Experiment) -> Comparison {
    let group = |e: &Experiment| {
        let mut keys: Vec<MatchKey> = Vec::new();
        let mut sides: HashMap<MatchKey, Vec<Side>> = HashMap::new();
        for view in e.scorer_views() {
            let key = key_of(&view);
            if !sides.contains_key(&key) {
                keys.push(key.clone());
            }
            sides.entry(key).or_default().push(side_of(&view));
        }
        (keys, sides)
    };
    let (keys_a, mut sides_a) = group(a);
    let (keys_b, mut sides_b) = group(b);
    let mut rows = Vec::new();
    let mut keys = keys_a;
    keys.extend(keys_b.into_iter().filter(|k| !sides_a.contains_key(k)));
    for key in keys {
        let mut left = sides_a.remove(&key).unwrap_or_default();
        let mut right = sides_b.remove(&key).unwrap_or_default();
        if left.len() == 1 && right.len() == 1 {
            rows.push(CompareRow {
                key,
                a: left.pop(),
                b: right.pop(),
            });
            continue;
        }
        for l in left {
            let partner = right.iter().position(|r| r.seed == l.seed);
            rows.push(CompareRow {
                key: key.clone(),
                a: Some(l),
                b: partner.map(|i| right.remove(i)),
            });
        }
        for r in right {
            rows.push(CompareRow {
                key: key.clone(),
                a: None,
                b: Some(r),
            });
        }
    }
    Comparison {
        a: a.dir.clone(),
        b: b.dir.clone(),
        rows,
        incomplete_a: a.incomplete().count(),
        incomplete_b: b.incomplete().count(),
    }
}

impl Comparison {
    /// Long-form table: the key, both cell ids and seeds, and per metric `_a`, `_b`, `_diff`.
    pub fn table(&self) -> Table {
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let mut row = Row::default();
                row.str("presence", r.presence())
                    .str("model", &r.key.model)
                    .str("method_label", &r.key.method_label)
                    .f64(
                        "strength",
                        r.key.strength.as_ref().and_then(|s| s.parse().ok()),
                    )
                    .str("prompt_set", &r.key.prompt_set)
                    .str("scorer", &r.key.scorer)
                    .opt_str("cell_id_a", r.a.as_ref().map(|s| s.cell_id.clone()))
                    .opt_str("cell_id_b", r.b.as_ref().map(|s| s.cell_id.clone()))
                    .u64("seed_a", r.a.as_ref().map(|s| s.seed))
                    .u64("seed_b", r.b.as_ref().map(|s| s.seed));
                for (stem, _, _, get) in METRICS {
                    let va = r.a.as_ref().and_then(|s| get(&s.values));
                    let vb = r.b.as_ref().and_then(|s| get(&s.values));
                    row.f64(&format!("{stem}_a"), va)
                        .f64(&format!("{stem}_b"), vb)
                        .f64(&format!("{stem}_diff"), difference(va, vb));
                }
                row
            })
            .collect();
        Table::new("compare", rows)
    }

    /// The Markdown view: per metric A, B and B − A.
    pub fn markdown(&self) -> String {
        let models = self
            .rows
            .iter()
            .any(|r| r.key.model != self.rows[0].key.model);
        let mut header: Vec<String> = vec!["prompt set".into()];
        if models {
            header.push("model".into());
        }
        header.extend(["method", "strength", "scorer", "in"].map(String::from));
        let first_number = header.len();
        for (_, name, _, _) in METRICS {
            header.push(format!("{name} A"));
            header.push(format!("{name} B"));
            header.push("B − A".into());
        }
        let mut table = MarkdownTable {
            header,
            rows: Vec::new(),
            right: Vec::new(),
        };
        table.right = (first_number..table.header.len()).collect();
        for r in &self.rows {
            let mut row = vec![r.key.prompt_set.clone()];
            if models {
                row.push(r.key.model.clone());
            }
            row.push(r.key.method_label.clone());
            row.push(r.key.strength.clone().unwrap_or_else(|| "—".into()));
            row.push(r.key.scorer.clone());
            row.push(r.presence().to_owned());
            for (_, _, decimals, get) in METRICS {
                let va = r.a.as_ref().and_then(|s| get(&s.values));
                let vb = r.b.as_ref().and_then(|s| get(&s.values));
                row.push(number(va, decimals));
                row.push(number(vb, decimals));
                row.push(match difference(va, vb) {
                    Some(d) => format!("{d:+.decimals$}"),
                    None => "—".into(),
                });
            }
            table.rows.push(row);
        }
        let both = self.rows.iter().filter(|r| r.presence() == "both").count();
        let mut out = format!(
            "# Comparison\n\nA: {}\nB: {}\n\n{} rows matched by model, method label, strength, prompt set and scorer; {} only in A, {} only in B. Differences are B − A.\n",
            self.a.display(),
            self.b.display(),
            both,
            self.rows.iter().filter(|r| r.presence() == "only A").count(),
            self.rows.iter().filter(|r| r.presence() == "only B").count(),
        );
        if self.incomplete_a + self.incomplete_b > 0 {
            out += &format!(
                "Incomplete cells are not compared: {} in A, {} in B.\n",
                self.incomplete_a, self.incomplete_b
            );
        }
        out.push('\n');
        out += &table.render();
        out
    }

    /// Writes `compare.parquet`, `compare.csv` and `compare.md` into `out_dir` (created).
    pub fn write(&self, out_dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(out_dir)
            .with_context(|| format!("{}: cannot create", out_dir.display()))?;
        let mut df = self.table().to_dataframe()?;
        let parquet = out_dir.join("compare.parquet");
        let csv = out_dir.join("compare.csv");
        let md = out_dir.join("compare.md");
        let mut written = Vec::new();
        if df.width() > 0 {
            write_parquet(&mut df, &parquet)?;
            write_csv(&mut df, &csv)?;
            written.extend([parquet, csv]);
        }
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("{}: cannot write", md.display()))?;
        written.push(md);
        Ok(written)
    }
}

fn difference(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

/// Where `detox compare A B` writes by default: `<B>/report/compare-<folder name of A>`.
pub fn default_compare_dir(a: &std::path::Path, b: &std::path::Path) -> std::path::PathBuf {
    let name = a
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "a".to_owned());
    b.join(crate::REPORT_DIR).join(format!("compare-{name}"))
}
