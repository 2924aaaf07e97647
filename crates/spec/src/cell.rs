//! Typed, validated cells and their stable identity.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use data::spec::PromptSourceSpec;
use metrics::MetricPolicy;
use serde::Serialize;
use serde_json::{json, Value};

pub use crate::raw::{Dtype, ModelFormat};

/// A resolved model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRef {
    /// Display name (not part of the identity).
    pub name: String,
    pub format: ModelFormat,
    /// Absolute path of the HF folder or GGUF file.
    pub path: PathBuf,
    /// The preset it came from, if any (not part of the identity).
    pub preset: Option<String>,
}

impl ModelRef {
    fn identity(&self) -> Value {
        json!({ "format": self.format, "path": identity_path(&self.path) })
    }
}

/// A method parameter's resolved value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    /// Absolute path.
    Path(PathBuf),
}

/// One method with every parameter filled in (defaults included) and one strength.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodStep {
    pub name: String,
    pub params: BTreeMap<String, ParamValue>,
    pub strength: Option<f64>,
}

impl MethodStep {
    fn identity(&self) -> Value {
        let params: serde_json::Map<String, Value> = self
            .params
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    ParamValue::Path(p) => Value::String(identity_path(p)),
                    other => serde_json::to_value(other).expect("param serializes"),
                };
                (k.clone(), v)
            })
            .collect();
        json!({ "name": self.name, "params": params, "strength": self.strength })
    }
}

/// What a cell decodes with: one method, or a stack of methods applied in order under one
/// decoder loop.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodRef {
    /// Display label (not part of the identity).
    pub label: String,
    /// In application order; one entry for a plain method.
    pub steps: Vec<MethodStep>,
    /// The label of the entry this one is compared with (not part of the identity).
    pub baseline: Option<String>,
    /// The entry's own top-p for its cells (`Some(None)`: off); `None`: `generation.top_p`. The
    /// cell's generation holds the result, so the identity has it there.
    pub top_p: Option<Option<f64>>,
}

impl MethodRef {
    /// The step names joined by `+` (`none`, `sasa`, `word_filter+sasa`).
    pub fn name(&self) -> String {
        self.steps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join("+")
    }

    /// The cell's strength on the sweep axis: the last step that has one.
    pub fn strength(&self) -> Option<f64> {
        self.steps.iter().rev().find_map(|s| s.strength)
    }

    /// Every step's parameters, keyed `param` for a single method and `step.param` in a stack.
    pub fn flat_params(&self) -> BTreeMap<String, ParamValue> {
        let single = self.steps.len() == 1;
        self.steps
            .iter()
            .flat_map(|step| {
                step.params.iter().map(move |(k, v)| {
                    let key = if single {
                        k.clone()
                    } else {
                        format!("{}.{k}", step.name)
                    };
                    (key, v.clone())
                })
            })
            .collect()
    }

    /// A single method keeps the identity shape it always had (so cell ids of plain methods do
    /// not change); a stack is the list of its steps.
    fn identity(&self) -> Value {
        match self.steps.as_slice() {
            [one] => one.identity(),
            steps => json!({ "stack": steps.iter().map(MethodStep::identity).collect::<Vec<_>>() }),
        }
    }
}

/// `cell.json` shows the method as `{label, name, params, strength, steps}`: the flat fields
/// serve tables and charts, `steps` keeps the full stack.
impl Serialize for MethodRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = serializer.serialize_struct("MethodRef", 6)?;
        m.serialize_field("label", &self.label)?;
        m.serialize_field("name", &self.name())?;
        m.serialize_field("params", &self.flat_params())?;
        m.serialize_field("strength", &self.strength())?;
        m.serialize_field("steps", &self.steps)?;
        if let Some(baseline) = &self.baseline {
            m.serialize_field("baseline", baseline)?;
        } else {
            m.skip_field("baseline")?;
        }
        m.end()
    }
}

/// A named prompt source with absolute paths.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptSetRef {
    /// Display name (not part of the identity).
    pub name: String,
    pub source: PromptSourceSpec,
}

/// Generation settings of a cell (mirrors `decode::SamplingParams` plus run settings).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    pub samples_per_prompt: usize,
    pub max_new_tokens: usize,
    /// End-of-sequence suppressed for the first this-many new tokens (0: never).
    pub min_new_tokens: usize,
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    /// Not part of the identity: samples are seeded per (run seed, prompt id, sample index).
    pub batch_size: usize,
    pub device: String,
    pub dtype: Dtype,
}

/// A toxicity scorer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scorer {
    Minilm,
    Profanity,
    Perspective,
    /// A Hugging Face classifier folder and the label to read (`None`: its toxic label).
    Hf {
        dir: PathBuf,
        label: Option<String>,
    },
}

impl Scorer {
    /// The name as a spec writes it.
    pub fn spec_name(&self) -> String {
        match self {
            Scorer::Minilm => "minilm".into(),
            Scorer::Profanity => "profanity".into(),
            Scorer::Perspective => "perspective".into(),
            Scorer::Hf { dir, label } => match label {
                Some(l) => format!("hf:{}#{l}", identity_path(dir)),
                None => format!("hf:{}", identity_path(dir)),
            },
        }
    }

    /// The scorer as its records name it (`records::ScorerRef::short_name` for tables).
    pub fn record(&self) -> records::ScorerRef {
        match self {
            Scorer::Minilm => records::ScorerRef::Minilm,
            Scorer::Profanity => records::ScorerRef::Profanity,
            Scorer::Perspective => records::ScorerRef::Perspective,
            Scorer::Hf { dir, label } => records::ScorerRef::Hf {
                dir: dir.clone(),
                label: label.clone(),
            },
        }
    }

    fn identity(&self) -> Value {
        match self {
            Scorer::Hf { dir, label } => {
                json!({ "kind": "hf", "dir": identity_path(dir), "label": label })
            }
            other => serde_json::to_value(other).expect("scorer serializes"),
        }
    }
}

/// One unit of work: one model × method (with one strength) × prompt set × seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub model: ModelRef,
    pub method: MethodRef,
    pub prompts: PromptSetRef,
    pub generation: Generation,
    pub seed: u64,
    pub scorers: Vec<Scorer>,
    /// The LM that scores perplexity (the cell's own model unless the spec names another).
    pub judge: ModelRef,
    pub policy: MetricPolicy,
}

impl Cell {
    /// The resolved config that defines the cell: everything that can change its outputs, without
    /// display names, labels, batch size, or the output folder. Paths inside the project root are
    /// written relative to it (with `.`/`..` removed), so the identity does not depend on where the
    /// checkout lives or how a path was spelt.
    pub fn identity(&self) -> Value {
        let mut source = self.prompts.source.clone();
        let p = source.path_mut();
        *p = PathBuf::from(identity_path(p));
        let g = &self.generation;
        let mut generation = json!({
            "samples_per_prompt": g.samples_per_prompt,
            "max_new_tokens": g.max_new_tokens,
            "temperature": g.temperature,
            "top_p": g.top_p,
            "top_k": g.top_k,
            "device": g.device,
            "dtype": g.dtype,
        });
        // Only when set, so the ids of cells from before the setting existed do not change.
        if g.min_new_tokens > 0 {
            generation["min_new_tokens"] = g.min_new_tokens.into();
        }
        json!({
            "model": self.model.identity(),
            "method": self.method.identity(),
            "prompts": source,
            "generation": generation,
            "seed": self.seed,
            "scorers": self.scorers.iter().map(Scorer::identity).collect::<Vec<_>>(),
            "judge": self.judge.identity(),
            "policy": self.policy,
        })
    }

    /// [`Cell::identity`] as canonical JSON (sorted keys, no whitespace).
    pub fn canonical_json(&self) -> String {
        canonical_json(&self.identity())
    }

    /// 16 hex digits of FNV-1a-128 over [`Cell::canonical_json`]: stable across runs, platforms and
    /// the order keys were written in the spec.
    pub fn cell_id(&self) -> String {
        let h = fnv1a_128(self.canonical_json().as_bytes());
        format!("{:016x}", (h >> 64) as u64)
    }

    /// The full resolved cell (display names and absolute paths included) as its record,
    /// `cell.json`.
    pub fn record(&self) -> records::CellRecord {
        let mut v = serde_json::to_value(self).expect("cell serializes");
        if let Value::Object(m) = &mut v {
            m.insert("cell_id".into(), Value::String(self.cell_id()));
            m.insert("identity".into(), self.identity());
            m.insert("schema".into(), records::SCHEMA_VERSION.into());
        }
        serde_json::from_value(v).expect("a cell fits its record")
    }

    /// [`Cell::record`] as pretty JSON with sorted keys: what a run writes next to the cell's
    /// outputs.
    pub fn resolved_json(&self) -> String {
        let v = serde_json::to_value(self.record()).expect("record serializes");
        let sorted: Value = serde_json::from_str(&canonical_json(&v)).expect("valid json");
        serde_json::to_string_pretty(&sorted).expect("json")
    }

    /// One-line summary: `model / method[@strength] / prompts / seed`.
    pub fn label(&self) -> String {
        let strength = self
            .method
            .strength()
            .map(|s| format!("@{s}"))
            .unwrap_or_default();
        format!(
            "{} / {}{} / {} / seed {}",
            self.model.name, self.method.label, strength, self.prompts.name, self.seed
        )
    }
}

/// JSON with object keys sorted at every level and no whitespace.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("string"));
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).expect("scalar")),
    }
}

/// FNV-1a, 128-bit ([`paths::hash::fnv1a_128`]).
pub use paths::hash::fnv1a_128;

/// Removes `.` and resolves `..` lexically (no file-system access).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A path as it enters the identity: relative to the project root when inside it, `/`-separated.
pub fn identity_path(path: &Path) -> String {
    let path = normalize(path);
    let root = normalize(&paths::project_root());
    let rel = path.strip_prefix(&root).unwrap_or(&path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
        .replace("//", "/")
}

/// The expanded experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub name: String,
    /// The spec file, absolute.
    pub file: PathBuf,
    /// Output folder (absolute; not created by validation).
    pub output: PathBuf,
    pub cells: Vec<Cell>,
    /// Optional models and prompt sets that were missing (their cells are not in `cells`).
    pub skipped: Vec<String>,
}

impl Experiment {
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// The `detox validate` table: a header and one row per cell.
    pub fn table(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Experiment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "experiment {} ({})", self.name, self.file.display())?;
        writeln!(f, "output     {}", self.output.display())?;
        if let Some(c) = self.cells.first() {
            let g = &c.generation;
            writeln!(
                f,
                "generation {} samples x {} tokens{}, temperature {}, top-p {}, top-k {}, batch {}, device {}, dtype {}",
                g.samples_per_prompt,
                g.max_new_tokens,
                if g.min_new_tokens > 0 {
                    format!(" (end-of-sequence suppressed for the first {})", g.min_new_tokens)
                } else {
                    String::new()
                },
                g.temperature,
                g.top_p.map_or("-".into(), |p| p.to_string()),
                g.top_k.map_or("-".into(), |k| k.to_string()),
                g.batch_size,
                g.device,
                format!("{:?}", g.dtype).to_lowercase()
            )?;
            let scorers: Vec<String> = c.scorers.iter().map(Scorer::spec_name).collect();
            writeln!(f, "scorers    {}", scorers.join(", "))?;
        }
        for s in &self.skipped {
            writeln!(f, "skipped    {s}")?;
        }
        writeln!(f, "{} cells", self.cells.len())?;
        let header = [
            "cell_id", "model", "method", "strength", "prompts", "seed", "judge", "top-p",
        ];
        let rows: Vec<[String; 8]> = self
            .cells
            .iter()
            .map(|c| {
                [
                    c.cell_id(),
                    c.model.name.clone(),
                    c.method.label.clone(),
                    c.method.strength().map_or("-".into(), |s| s.to_string()),
                    c.prompts.name.clone(),
                    c.seed.to_string(),
                    c.judge.name.clone(),
                    c.generation.top_p.map_or("off".into(), |p| p.to_string()),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cols: &[String]| -> String {
            cols.iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        writeln!(f, "{}", line(&header.map(String::from)))?;
        for r in &rows {
            writeln!(f, "{}", line(r))?;
        }
        Ok(())
    }
}
