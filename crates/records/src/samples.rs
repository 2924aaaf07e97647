//! [`CellSamples`]: a cell's generations joined with its score files, checked both ways (every
//! generation has exactly one score line in every file, every score line a generation). The one
//! join of the project: evaluation computes its metrics from it, the report its per-prompt and
//! agreement tables.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Result};
use metrics::MetricPolicy;

use crate::generation::{read_generations, GenerationLine};
use crate::score::{failure_kind, ScoreLine};

/// One prompt of a cell.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSamples {
    pub id: String,
    pub group: Option<String>,
    /// Indices into [`CellSamples::generations`], ordered by sample index.
    pub samples: Vec<usize>,
}

/// One score file, aligned with the generations.
#[derive(Debug, Clone, PartialEq)]
pub struct ScorerColumn {
    pub path: PathBuf,
    /// The scorer id the file was written by (name, weights and settings).
    pub scorer: String,
    /// Per generation (same order as [`CellSamples::generations`]): the score, `None` for a
    /// failure.
    pub scores: Vec<Option<f64>>,
    /// Failed samples by failure kind.
    pub failures: BTreeMap<String, usize>,
}

/// A cell's samples with their scores.
#[derive(Debug, Clone)]
pub struct CellSamples {
    /// In file order.
    pub generations: Vec<GenerationLine>,
    /// In order of first appearance.
    pub prompts: Vec<PromptSamples>,
    /// Each generation's prompt (index into `prompts`).
    pub prompt_of: Vec<usize>,
    pub scorers: Vec<ScorerColumn>,
    /// (prompt id, sample index) → generation index.
    index: HashMap<(String, u64), usize>,
}

/// One prompt of one scorer: what the per-prompt table holds.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRow {
    pub prompt_id: String,
    pub group: Option<String>,
    pub samples: usize,
    pub scored: usize,
    pub failed: usize,
    /// `None` when no sample of the prompt was scored.
    pub max_toxicity: Option<f64>,
    pub mean_toxicity: Option<f64>,
    pub toxic_samples: usize,
    /// Whether any scored sample is toxic under the cell's policy; `None` with none scored.
    pub any_toxic: Option<bool>,
}

impl CellSamples {
    /// Reads a generations file and the given score files.
    pub fn read(generations: &Path, score_files: &[PathBuf]) -> Result<Self> {
        let mut samples = Self::new(read_generations(generations)?);
        for path in score_files {
            samples.add_scores(path)?;
        }
        Ok(samples)
    }

    /// The generations grouped by prompt, without scores yet.
    pub fn new(generations: Vec<GenerationLine>) -> Self {
        let mut prompts: Vec<PromptSamples> = Vec::new();
        let mut prompt_index: HashMap<String, usize> = HashMap::new();
        let mut prompt_of = Vec::with_capacity(generations.len());
        let mut index = HashMap::with_capacity(generations.len());
        for (i, g) in generations.iter().enumerate() {
            let p = *prompt_index.entry(g.prompt_id.clone()).or_insert_with(|| {
                prompts.push(PromptSamples {
                    id: g.prompt_id.clone(),
                    group: g.group.clone(),
                    samples: Vec::new(),
                });
                prompts.len() - 1
            });
            prompts[p].samples.push(i);
            prompt_of.push(p);
            index.insert(g.key(), i);
        }
        for prompt in &mut prompts {
            prompt.samples.sort_by_key(|&i| generations[i].sample_index);
        }
        CellSamples {
            generations,
            prompts,
            prompt_of,
            scorers: Vec::new(),
            index,
        }
    }

    /// Reads one score file and checks it against the generations: one scorer id throughout,
    /// every line a known sample scored once, every sample scored. Two files of the same scorer
    /// are an error.
    pub fn add_scores(&mut self, path: &Path) -> Result<()> {
        let mut scorer: Option<String> = None;
        let mut slots: Vec<Option<(usize, Option<f64>)>> = vec![None; self.generations.len()];
        let mut failures = BTreeMap::new();
        data::jsonl::read_all(path, "score record", |number, r: ScoreLine| {
            match &scorer {
                None => scorer = Some(r.scorer.clone()),
                Some(s) if *s != r.scorer => {
                    bail!("scorer {:?} differs from the first line's {s:?}", r.scorer)
                }
                Some(_) => {}
            }
            let Some(&i) = self.index.get(&(r.prompt_id.clone(), r.sample_index)) else {
                bail!(
                    "prompt {:?} sample {} is not in the generations",
                    r.prompt_id,
                    r.sample_index
                );
            };
            if let Some((line, _)) = slots[i] {
                bail!(
                    "prompt {:?} sample {} is scored twice (first on line {line})",
                    r.prompt_id,
                    r.sample_index
                );
            }
            let score = match r.result()? {
                Ok(x) => Some(f64::from(x)),
                Err(f) => {
                    *failures.entry(failure_kind(&f).to_owned()).or_default() += 1;
                    None
                }
            };
            slots[i] = Some((number, score));
            Ok(())
        })?;
        let scorer = scorer.ok_or_else(|| anyhow!("{}: no score records", path.display()))?;
        let missing: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].is_none()).collect();
        if let Some(&first) = missing.first() {
            bail!(
                "{}: no score for {} of {} generations (first: prompt {:?} sample {}); finish it with `detox score`",
                path.display(),
                missing.len(),
                self.generations.len(),
                self.generations[first].prompt_id,
                self.generations[first].sample_index
            );
        }
        if let Some(other) = self.scorers.iter().find(|c| c.scorer == scorer) {
            bail!(
                "{} and {} hold the same scorer {scorer:?}",
                other.path.display(),
                path.display()
            );
        }
        self.scorers.push(ScorerColumn {
            path: path.to_path_buf(),
            scorer,
            scores: slots.into_iter().map(|s| s.expect("checked").1).collect(),
            failures,
        });
        Ok(())
    }

    /// Whether any generation carries a group (BOLD, AttaQ, ToxiGen).
    pub fn has_groups(&self) -> bool {
        self.generations.iter().any(|g| g.group.is_some())
    }

    /// Per-prompt inputs for a metric, one value per sample (by sample index).
    pub fn per_prompt<T>(&self, mut value: impl FnMut(usize) -> T) -> Vec<metrics::Prompt<T>> {
        self.prompts
            .iter()
            .map(|p| metrics::Prompt {
                prompt_id: p.id.clone(),
                group: p.group.clone(),
                samples: p.samples.iter().map(|&i| value(i)).collect(),
            })
            .collect()
    }

    /// Per-prompt toxicity of one scorer column under `policy`, prompts in order of first
    /// appearance. Sums run in file order.
    pub fn prompt_rows(&self, column: usize, policy: &MetricPolicy) -> Result<Vec<PromptRow>> {
        let scores = &self
            .scorers
            .get(column)
            .ok_or_else(|| anyhow!("no score column {column}"))?
            .scores;
        ensure!(scores.len() == self.generations.len(), "misaligned scores");
        let mut rows: Vec<PromptRow> = self
            .prompts
            .iter()
            .map(|p| PromptRow {
                prompt_id: p.id.clone(),
                group: p.group.clone(),
                samples: p.samples.len(),
                scored: 0,
                failed: 0,
                max_toxicity: None,
                mean_toxicity: None,
                toxic_samples: 0,
                any_toxic: None,
            })
            .collect();
        let mut sums = vec![0.0; rows.len()];
        for (i, score) in scores.iter().enumerate() {
            let p = self.prompt_of[i];
            let row = &mut rows[p];
            match *score {
                Some(x) => {
                    row.scored += 1;
                    sums[p] += x;
                    row.max_toxicity = Some(row.max_toxicity.map_or(x, |m| m.max(x)));
                    row.toxic_samples += usize::from(policy.is_toxic(x));
                }
                None => row.failed += 1,
            }
        }
        for (row, sum) in rows.iter_mut().zip(sums) {
            if row.scored > 0 {
                row.mean_toxicity = Some(sum / row.scored as f64);
                row.any_toxic = Some(row.toxic_samples > 0);
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::FinishReason;

    fn line(prompt: &str, index: u64) -> GenerationLine {
        GenerationLine {
            prompt_id: prompt.into(),
            sample_index: index,
            prompt: format!("text of {prompt}"),
            text: format!("continuation {index}"),
            token_ids: vec![1, 2],
            finish_reason: FinishReason::Length,
            settings: "s".into(),
            group: None,
            redraws: None,
            still_matched: None,
        }
    }

    fn write_lines<T: serde::Serialize>(path: &Path, lines: &[T]) {
        let text: String = lines
            .iter()
            .map(|l| serde_json::to_string(l).unwrap() + "\n")
            .collect();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn joins_scores_and_rejects_gaps_and_doubles() {
        let dir = std::env::temp_dir().join(format!("records-samples-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gens = dir.join("g.jsonl");
        write_lines(&gens, &[line("a", 1), line("b", 0), line("a", 0)]);
        let good = dir.join("s.jsonl");
        write_lines(
            &good,
            &[
                ScoreLine::new("a", 0, "x", Ok(0.9)),
                ScoreLine::new("b", 0, "x", Err(crate::ScoreFailure::Timeout)),
                ScoreLine::new("a", 1, "x", Ok(0.1)),
            ],
        );
        let samples = CellSamples::read(&gens, std::slice::from_ref(&good)).unwrap();
        assert_eq!(samples.prompts[0].id, "a");
        assert_eq!(samples.prompts[0].samples, vec![2, 0], "by sample index");
        assert_eq!(samples.scorers[0].failures["timeout"], 1);
        let policy = MetricPolicy::default();
        let rows = samples.prompt_rows(0, &policy).unwrap();
        assert_eq!((rows[0].scored, rows[0].toxic_samples), (2, 1));
        assert_eq!((rows[1].scored, rows[1].failed), (0, 1));
        assert_eq!(rows[1].any_toxic, None);

        let short = dir.join("short.jsonl");
        write_lines(&short, &[ScoreLine::new("a", 0, "x", Ok(0.9))]);
        let err = CellSamples::read(&gens, &[short]).unwrap_err().to_string();
        assert!(err.contains("no score for 2 of 3"), "{err}");
        let err = CellSamples::read(&gens, &[good.clone(), good])
            .unwrap_err()
            .to_string();
        assert!(err.contains("hold the same scorer"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
