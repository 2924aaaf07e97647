//! Synthetic experiment folders in the exact layout `detox run` writes (`cell.json`,
//! `generations.jsonl`, `scores-<scorer>.jsonl`, `policy.json`, `metrics.json`, `record.json`),
//! for the report's tests and the CLI's. The metrics record is computed with the `metrics` crate
//! from the synthetic scores, as `detox evaluate` does, so tables built from the record and from
//! the per-sample files agree.
//!
//! Only compiled for tests and with the `fixture` feature.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use metrics::{
    MetricPolicy, PplSample, Prompt, PromptScores, PromptTexts, SampleLength, ScoredStop, Stop,
};
use serde_json::{json, Value};

/// One sample of a fixture cell.
#[derive(Debug, Clone)]
pub struct FixtureSample {
    pub text: String,
    /// One entry per scorer: `Some(score)` or `None` for a failed scoring (`http_status` 429).
    pub scores: Vec<Option<f64>>,
    /// Perplexity under the judge; `None` when the cell has no judge.
    pub perplexity: Option<f64>,
    /// New tokens (`token_ids` gets this many ids).
    pub tokens: usize,
    /// `true`: stopped at end-of-sequence; `false`: at the length limit.
    pub eos: bool,
}

impl FixtureSample {
    /// A sample of one scorer that ran to the 20-token limit.
    pub fn at_limit(text: &str, score: Option<f64>, perplexity: Option<f64>) -> Self {
        Self {
            text: text.into(),
            scores: vec![score],
            perplexity,
            tokens: FIXTURE_MAX_NEW_TOKENS,
            eos: false,
        }
    }

    fn length(&self) -> SampleLength {
        let stop = if self.eos { Stop::Eos } else { Stop::Length };
        SampleLength::of(self.tokens, &self.text, stop)
    }
}

/// `max_new_tokens` of every fixture cell.
pub const FIXTURE_MAX_NEW_TOKENS: usize = 20;

#[derive(Debug, Clone)]
pub struct FixturePrompt {
    pub id: String,
    pub group: Option<String>,
    pub samples: Vec<FixtureSample>,
}

/// A run record's numbers (`record.json`).
#[derive(Debug, Clone)]
pub struct FixtureRecord {
    pub generate_seconds: f64,
    pub new_tokens: u64,
    pub score_seconds: f64,
    pub evaluate_seconds: f64,
    pub host_rss_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct FixtureCell {
    pub model: String,
    pub method: String,
    pub label: String,
    pub strength: Option<f64>,
    pub params: BTreeMap<String, Value>,
    pub prompt_set: String,
    pub seed: u64,
    /// `(spec kind, scorer id)` per scorer, e.g. `("minilm", "minilm-head:…")`.
    pub scorers: Vec<(String, String)>,
    pub prompts: Vec<FixturePrompt>,
    pub record: Option<FixtureRecord>,
    /// `false`: write `cell.json` and generations only, as a run stopped before evaluation.
    pub evaluated: bool,
    pub policy: MetricPolicy,
    /// `method.baseline` of `cell.json` (the label of the entry this cell is compared with).
    pub baseline: Option<String>,
    /// The judge LM's name; `None`: the policy model judges itself (as `judge: same`).
    pub judge: Option<String>,
}

impl FixtureCell {
    /// A stable id from the settings, 16 hex digits like `spec::Cell::cell_id` (not the same
    /// hash: the report never recomputes ids, it reads them).
    pub fn cell_id(&self) -> String {
        let mut key = json!({
            "model": self.model, "method": self.method, "params": self.params,
            "strength": self.strength, "prompts": self.prompt_set, "seed": self.seed,
            "scorers": self.scorers,
        });
        // Only when set, so ids of cells without a baseline stay what they were.
        if let Some(b) = &self.baseline {
            key["baseline"] = json!(b);
        }
        let key = key.to_string();
        let hash = paths::stable_hash(key.as_bytes());
        format!("{hash:016x}")
    }

    fn cell_json(&self) -> Value {
        let policy = serde_json::to_value(&self.policy).expect("policy serializes");
        let generation = json!({
            "batch_size": 32, "device": "auto", "dtype": "f32", "max_new_tokens": FIXTURE_MAX_NEW_TOKENS,
            "samples_per_prompt": self.prompts.first().map_or(0, |p| p.samples.len()),
            "temperature": 1.0, "top_k": null, "top_p": 0.9
        });
        let scorers: Vec<Value> = self
            .scorers
            .iter()
            .map(|(kind, _)| json!({ "kind": kind }))
            .collect();
        let model = json!({
            "format": "hf", "name": self.model,
            "path": format!("/models/{}", self.model), "preset": self.model
        });
        let source = json!({
            "format": "auto", "groups": [], "kind": "user", "lenient": false,
            "path": format!("/data/{}.jsonl", self.prompt_set), "per_group": null,
            "sample": null, "seed": 0
        });
        let mut method = json!({
            "label": self.label, "name": self.method, "params": self.params, "strength": self.strength
        });
        if let Some(b) = &self.baseline {
            method["baseline"] = json!(b);
        }
        json!({
            "cell_id": self.cell_id(),
            "generation": generation,
            "identity": { "method": { "name": self.method, "params": self.params, "strength": self.strength } },
            "judge": match &self.judge {
                Some(name) => json!({
                    "format": "hf", "name": name, "path": format!("/models/{name}"), "preset": name
                }),
                None => model.clone(),
            },
            "method": method,
            "model": model,
            "policy": policy,
            "prompts": { "name": self.prompt_set, "source": source },
            "scorers": scorers,
            "seed": self.seed,
        })
    }

    /// Writes the cell into `<experiment>/<cell id>/`; returns the id.
    pub fn write(&self, experiment: &Path) -> Result<String> {
        let id = self.cell_id();
        let dir = experiment.join(&id);
        std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        write(
            &dir.join("cell.json"),
            &serde_json::to_string_pretty(&self.cell_json())?,
        )?;

        let mut generations = String::new();
        for p in &self.prompts {
            for (i, s) in p.samples.iter().enumerate() {
                let mut record = json!({
                    "prompt_id": p.id, "sample_index": i, "prompt": format!("Prompt {}", p.id),
                    "text": s.text, "token_ids": vec![1; s.tokens],
                    "finish_reason": if s.eos { "eos" } else { "length" },
                    "settings": "fixture"
                });
                if let Some(g) = &p.group {
                    record["group"] = json!(g);
                }
                writeln!(generations, "{record}").expect("string");
            }
        }
        write(&dir.join("generations.jsonl"), &generations)?;
        if !self.evaluated {
            return Ok(id);
        }

        let mut score_files = Vec::new();
        for (k, (kind, scorer_id)) in self.scorers.iter().enumerate() {
            let mut lines = String::new();
            for p in &self.prompts {
                for (i, s) in p.samples.iter().enumerate() {
                    let record = match s.scores[k] {
                        Some(x) => json!({
                            "prompt_id": p.id, "sample_index": i, "scorer": scorer_id,
                            "score": x, "failure": null
                        }),
                        None => json!({
                            "prompt_id": p.id, "sample_index": i, "scorer": scorer_id,
                            "score": null, "failure": { "kind": "http_status", "detail": 429 }
                        }),
                    };
                    writeln!(lines, "{record}").expect("string");
                }
            }
            // The absolute path of another machine, as a copied or merged cell would carry.
            let name = format!("scores-{kind}.jsonl");
            write(&dir.join(&name), &lines)?;
            score_files.push(format!("/elsewhere/{id}/{name}"));
        }
        write(
            &dir.join("policy.json"),
            &serde_json::to_string_pretty(&self.policy)?,
        )?;
        write(
            &dir.join("metrics.json"),
            &serde_json::to_string_pretty(&self.metrics_json(&score_files))?,
        )?;
        if let Some(r) = &self.record {
            let samples: usize = self.prompts.iter().map(|p| p.samples.len()).sum();
            let record = json!({
                "cell_id": id,
                "git": { "commit": "0123456789abcdef0123456789abcdef01234567", "dirty": false },
                "versions": { "detox": "0.1.0", "libtorch": "2.13.0" },
                "device": "cpu", "dtype": "f32", "batch_size": 32, "seed": self.seed, "threads": 2,
                "stages": {
                    "generate": {
                        "wall_seconds": r.generate_seconds, "samples": samples,
                        "new_tokens": r.new_tokens,
                        "tokens_per_second": r.new_tokens as f64 / r.generate_seconds
                    },
                    "score": { "wall_seconds": r.score_seconds },
                    "evaluate": { "wall_seconds": r.evaluate_seconds }
                },
                "peak_memory": { "host_rss_bytes": r.host_rss_bytes, "device_bytes": null }
            });
            write(
                &dir.join("record.json"),
                &serde_json::to_string_pretty(&record)?,
            )?;
        }
        Ok(id)
    }

    fn samples(&self) -> impl Iterator<Item = &FixtureSample> {
        self.prompts.iter().flat_map(|p| &p.samples)
    }

    /// The record `detox evaluate` would write for these samples.
    fn metrics_json(&self, score_files: &[String]) -> Value {
        let policy = &self.policy;
        let has_groups = self.prompts.iter().any(|p| p.group.is_some());
        let toxicity: Vec<Value> = self
            .scorers
            .iter()
            .enumerate()
            .map(|(k, (_, scorer_id))| {
                let prompts: Vec<PromptScores> = self
                    .prompts
                    .iter()
                    .map(|p| Prompt {
                        prompt_id: p.id.clone(),
                        group: p.group.clone(),
                        // As evaluation reads them: the f32 a score line holds.
                        samples: p
                            .samples
                            .iter()
                            .map(|s| s.scores[k].map(|x| f64::from(x as f32)))
                            .collect(),
                    })
                    .collect();
                let failed = prompts
                    .iter()
                    .flat_map(|p| &p.samples)
                    .filter(|s| s.is_none())
                    .count();
                let mut failures = serde_json::Map::new();
                if failed > 0 {
                    failures.insert("http_status".into(), json!(failed));
                }
                let mut entry = serde_json::to_value(metrics::toxicity_summary(&prompts, policy))
                    .expect("summary serializes");
                entry["scorer"] = json!(scorer_id);
                entry["scores"] = json!(score_files[k]);
                entry["failures"] = Value::Object(failures);
                let scored: Vec<SampleLength> = self
                    .samples()
                    .filter(|s| s.scores[k].is_some())
                    .map(FixtureSample::length)
                    .collect();
                entry["length"] =
                    serde_json::to_value(metrics::length_summary(&scored)).expect("serializes");
                let stops: Vec<Prompt<ScoredStop>> = prompts
                    .iter()
                    .zip(&self.prompts)
                    .map(|(scores, p)| Prompt {
                        prompt_id: p.id.clone(),
                        group: p.group.clone(),
                        samples: scores
                            .samples
                            .iter()
                            .zip(&p.samples)
                            .map(|(score, s)| (*score, s.length().stop))
                            .collect(),
                    })
                    .collect();
                entry["full_length"] =
                    serde_json::to_value(metrics::length_controlled_toxicity(&stops, policy))
                        .expect("serializes");
                if has_groups {
                    entry["groups"] =
                        serde_json::to_value(metrics::toxicity_by_group(&prompts, policy))
                            .expect("groups serialize");
                }
                entry
            })
            .collect();
        let texts: Vec<PromptTexts> = self
            .prompts
            .iter()
            .map(|p| Prompt {
                prompt_id: p.id.clone(),
                group: p.group.clone(),
                samples: p.samples.iter().map(|s| s.text.clone()).collect(),
            })
            .collect();
        let mut results = serde_json::to_value(metrics::distinctness(&texts, policy))
            .expect("distinctness serializes");
        results["toxicity"] = Value::Array(toxicity);
        results["agreement"] = json!([]);
        let lengths: Vec<SampleLength> = self.samples().map(FixtureSample::length).collect();
        results["length"] =
            serde_json::to_value(metrics::length_summary(&lengths)).expect("serializes");
        if self
            .prompts
            .iter()
            .all(|p| p.samples.iter().all(|s| s.perplexity.is_some()))
        {
            let ppl: Vec<Prompt<PplSample>> = self
                .prompts
                .iter()
                .map(|p| Prompt {
                    prompt_id: p.id.clone(),
                    group: p.group.clone(),
                    samples: p
                        .samples
                        .iter()
                        .map(|s| PplSample::Perplexity(s.perplexity.expect("checked")))
                        .collect(),
                })
                .collect();
            results["perplexity"] =
                serde_json::to_value(metrics::mean_perplexity(&ppl, policy)).expect("serializes");
            results["perplexity_by_prompt"] =
                serde_json::to_value(metrics::perplexity_by_prompt(&ppl, policy))
                    .expect("serializes");
        }
        json!({
            "inputs": { "generations": "/elsewhere/generations.jsonl", "generation_settings": "fixture",
                        "scores": score_files, "judge": null, "policy": null },
            "policy": policy,
            "prompts": self.prompts.len(),
            "samples": self.prompts.iter().map(|p| p.samples.len()).sum::<usize>(),
            "results": results,
        })
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))
}

/// splitmix64 ([`paths::hash::SplitMix64`]): fixtures are the same on every machine.
struct Random(paths::hash::SplitMix64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The BOLD-like groups of the synthetic experiment.
pub const BOLD_GROUPS: [&str; 2] = ["American_actors", "American_actresses"];
/// The AttaQ-like categories of the synthetic experiment.
pub const ATTAQ_CATEGORIES: [&str; 7] = [
    "deception",
    "discrimination",
    "explicit_content",
    "harmful_info",
    "pii",
    "substance_abuse",
    "violence",
];

/// What [`write_synthetic_experiment`] wrote.
#[derive(Debug, Clone)]
pub struct SyntheticExperiment {
    /// Ids of the evaluated cells.
    pub complete: Vec<String>,
    /// Ids of the cells stopped before evaluation.
    pub incomplete: Vec<String>,
    /// Prompts per prompt set name.
    pub prompts: BTreeMap<String, usize>,
    pub samples_per_prompt: usize,
    pub scorers: usize,
}

/// How a synthetic method behaves, per unit of strength.
struct MethodProfile {
    name: &'static str,
    label: &'static str,
    strengths: &'static [f64],
    /// Toxicity reduction (scores are `u^(a·(1 + this·strength))` for uniform `u`).
    toxicity: f64,
    /// Relative perplexity increase.
    perplexity: f64,
    /// Vocabulary shrink (less diverse text).
    vocabulary: f64,
}

const BASELINE: MethodProfile = MethodProfile {
    name: "none",
    label: "none",
    strengths: &[],
    toxicity: 0.0,
    perplexity: 0.0,
    vocabulary: 0.0,
};

const METHODS: [MethodProfile; 3] = [
    MethodProfile {
        name: "dexperts",
        label: "DExperts",
        strengths: &[0.5, 1.0, 2.0, 4.0],
        toxicity: 0.9,
        perplexity: 0.18,
        vocabulary: 0.15,
    },
    MethodProfile {
        name: "rad",
        label: "RAD",
        strengths: &[10.0, 20.0, 50.0],
        toxicity: 0.045,
        perplexity: 0.006,
        vocabulary: 0.004,
    },
    MethodProfile {
        name: "sasa",
        label: "SASA",
        strengths: &[2.0, 4.0, 8.0, 16.0],
        toxicity: 0.16,
        perplexity: 0.07,
        vocabulary: 0.02,
    },
];

/// A realistic experiment: the `none` baseline and three methods with 3–4 strengths each, on a
/// BOLD-like prompt set (2 groups × 10 prompts) and an AttaQ-like one (7 categories × 5
/// prompts), 5 samples per prompt, two scorers (one with a few failed samples), perplexity
/// (one sample above the cap in the strongest DExperts cells), run records on every cell, plus
/// one cell per prompt set that stopped before evaluation.
pub fn write_synthetic_experiment(dir: &Path) -> Result<SyntheticExperiment> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let samples_per_prompt = 5;
    let sets: [(&str, Vec<(String, f64)>); 2] = [
        (
            "bold-gender",
            // (group, baseline toxicity exponent: lower = more toxic)
            vec![(BOLD_GROUPS[0].into(), 4.0), (BOLD_GROUPS[1].into(), 2.6)],
        ),
        (
            "attaq",
            ATTAQ_CATEGORIES
                .iter()
                .enumerate()
                .map(|(i, c)| (c.to_string(), 1.6 + 0.5 * i as f64))
                .collect(),
        ),
    ];
    let prompts_per_group = |set: &str| if set == "attaq" { 5 } else { 10 };
    let mut out = SyntheticExperiment {
        complete: Vec::new(),
        incomplete: Vec::new(),
        prompts: BTreeMap::new(),
        samples_per_prompt,
        scorers: 2,
    };
    let mut settings: Vec<(&MethodProfile, Option<f64>)> = vec![(&BASELINE, None)];
    for method in &METHODS {
        settings.extend(method.strengths.iter().map(|&s| (method, Some(s))));
    }
    let vocabulary: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
    for (set_index, (set, groups)) in sets.iter().enumerate() {
        out.prompts
            .insert(set.to_string(), groups.len() * prompts_per_group(set));
        for (setting_index, &(profile, strength)) in settings.iter().enumerate() {
            let method = profile.name;
            let mut random = Random(paths::hash::SplitMix64(
                1000 * set_index as u64 + setting_index as u64,
            ));
            let s = strength.unwrap_or(0.0);
            let mut prompts = Vec::new();
            for (group, exponent) in groups {
                for p in 0..prompts_per_group(set) {
                    let samples = (0..samples_per_prompt)
                        .map(|_| {
                            let a = exponent * (1.0 + profile.toxicity * s);
                            let minilm = random.unit().powf(a);
                            // The second scorer disagrees a little, and fails on ~3 % of samples.
                            let profanity = (minilm * 0.8 + 0.15 * random.unit()).min(1.0);
                            let failed = random.unit() < 0.03;
                            let words = ((vocabulary.len() as f64) / (1.0 + profile.vocabulary * s))
                                as usize;
                            let text: Vec<&str> = (0..8)
                                .map(|_| {
                                    vocabulary[(random.next() % words as u64) as usize].as_str()
                                })
                                .collect();
                            let mut perplexity =
                                16.0 * (1.0 + profile.perplexity * s) * (0.7 + 0.6 * random.unit());
                            if method == "dexperts" && s >= 4.0 && p == 0 {
                                perplexity = 25_000.0;
                            }
                            FixtureSample {
                                text: text.join(" "),
                                scores: vec![Some(minilm), (!failed).then_some(profanity)],
                                perplexity: Some(perplexity),
                                tokens: FIXTURE_MAX_NEW_TOKENS,
                                eos: false,
                            }
                        })
                        .collect();
                    prompts.push(FixturePrompt {
                        id: format!("{set}-{group}-{p:02}"),
                        group: Some(group.clone()),
                        samples,
                    });
                }
            }
            let new_tokens = (prompts.len() * samples_per_prompt * 20) as u64;
            let cell = FixtureCell {
                model: "smollm2-135m".into(),
                method: method.into(),
                label: profile.label.into(),
                strength,
                params: if method == "none" {
                    BTreeMap::new()
                } else {
                    BTreeMap::from([("expert".to_string(), json!("/models/expert"))])
                },
                prompt_set: set.to_string(),
                seed: 0,
                scorers: vec![
                    ("minilm".into(), "minilm-head:fixture0001".into()),
                    ("profanity".into(), "alt-profanity-check:fixture".into()),
                ],
                record: Some(FixtureRecord {
                    // Steering costs time: more for lookahead methods, growing with strength
                    // only through the method's own work.
                    generate_seconds: new_tokens as f64 / 350.0
                        * match method {
                            "none" => 1.0,
                            "dexperts" => 2.9,
                            "rad" => 4.2,
                            _ => 1.6,
                        },
                    new_tokens,
                    score_seconds: 2.5,
                    evaluate_seconds: 6.0,
                    host_rss_bytes: match method {
                        "none" => 900,
                        "dexperts" => 2_300,
                        "rad" => 1_700,
                        _ => 1_100,
                    } * 1024
                        * 1024,
                }),
                evaluated: true,
                policy: MetricPolicy {
                    bootstrap_resamples: 200,
                    ..MetricPolicy::default()
                },
                prompts,
                baseline: (method != "none").then(|| "none".to_owned()),
                judge: None,
            };
            out.complete.push(cell.write(dir)?);
        }
        // A cell stopped after generation: counted as incomplete, never silently skipped.
        let stopped = FixtureCell {
            model: "smollm2-135m".into(),
            method: "rad".into(),
            label: "RAD".into(),
            strength: Some(100.0),
            params: BTreeMap::new(),
            prompt_set: set.to_string(),
            seed: 0,
            scorers: vec![("minilm".into(), "minilm-head:fixture0001".into())],
            prompts: vec![FixturePrompt {
                id: format!("{set}-only"),
                group: None,
                samples: vec![FixtureSample::at_limit("partial", None, None)],
            }],
            record: None,
            evaluated: false,
            policy: MetricPolicy::default(),
            baseline: Some("none".into()),
            judge: None,
        };
        out.incomplete.push(stopped.write(dir)?);
    }
    Ok(out)
}
