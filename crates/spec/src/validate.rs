//! Raw spec → typed cells. Every check runs before any model is loaded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::cell::{
    identity_path, normalize, Cell, Experiment, Generation, MethodRef, MethodStep, ModelRef,
    ParamValue, PromptSetRef, Scorer,
};
use crate::error::{closest, SpecError, SpecErrors};
use crate::include::{load_merged, read_mapping, yaml_error, Merged};
use crate::raw::{ModelFormat, OneOrMany, RawFilter, RawModel, RawModelFull, RawSpec};
use crate::SCORER_NAMES;
use method_info::{ParamDefault, ParamInfo, ParamKind, Registry};

/// Where presets live: `configs/models/<name>.yaml` under the project root.
pub fn presets_dir() -> PathBuf {
    paths::project_root().join("configs").join("models")
}

struct Ctx<'a> {
    root: PathBuf,
    origin: BTreeMap<String, PathBuf>,
    registry: &'a Registry,
    errors: Vec<SpecError>,
    /// Optional models and prompt sets that are missing, with why.
    skipped: Vec<String>,
}

impl Ctx<'_> {
    /// The file that set top-level `key`.
    fn file(&self, key: &str) -> PathBuf {
        self.origin.get(key).cloned().unwrap_or(self.root.clone())
    }
    /// Folder that relative paths under `key` resolve against.
    fn base(&self, key: &str) -> PathBuf {
        self.file(key)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
    fn err(&mut self, key: &str, path: impl Into<String>, reason: impl Into<String>) {
        let e = SpecError::new(&self.file(key), path, reason);
        self.errors.push(e);
    }
    fn err_suggest(&mut self, key: &str, path: String, reason: String, s: Option<String>) {
        let e = SpecError::new(&self.file(key), path, reason).suggest(s);
        self.errors.push(e);
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    normalize(&base.join(p))
}

/// Parses the merged document into [`RawSpec`], with serde's field path and a suggestion for
/// unknown keys and variants.
fn parse_raw(root: &Path, merged: &Merged) -> Result<RawSpec, SpecError> {
    let (result, keep_location) = match &merged.root_text {
        Some(text) => (serde_yaml::from_str::<RawSpec>(text), true),
        None => {
            let text = serde_yaml::to_string(&merged.doc).expect("a YAML mapping serializes");
            (serde_yaml::from_str::<RawSpec>(&text), false)
        }
    };
    result.map_err(|e| {
        let mut err = yaml_error(root, &e, keep_location);
        let top = err
            .path
            .split(['.', '['])
            .next()
            .unwrap_or_default()
            .to_string();
        if let Some(file) = merged.origin.get(&top) {
            err.file = file.clone();
        }
        let names: Vec<&str> = err.reason.split('`').skip(1).step_by(2).collect();
        if err.reason.starts_with("unknown field") && !names.is_empty() {
            err.suggestion = closest(names[0], &names[1..]);
            err.path = if err.path.is_empty() {
                names[0].to_string()
            } else {
                format!("{}.{}", err.path, names[0])
            };
        } else if err.reason.starts_with("unknown variant") && !names.is_empty() {
            err.suggestion = closest(names[0], &names[1..]);
        } else if let Some(field) = err.reason.strip_prefix("missing field ") {
            let field = field.trim_matches('`').to_string();
            if err.path.is_empty() {
                err.path = field;
            }
        }
        err
    })
}

/// Loads, merges, parses and validates a spec against `registry`.
pub fn load_with(path: &Path, registry: &Registry) -> Result<Experiment, SpecErrors> {
    let root = normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    let merged = load_merged(&root)?;
    let raw = parse_raw(&root, &merged)?;
    let mut cx = Ctx {
        root: root.clone(),
        origin: merged.origin.clone(),
        registry,
        errors: Vec::new(),
        skipped: Vec::new(),
    };
    let exp = validate(&mut cx, raw);
    if cx.errors.is_empty() {
        Ok(exp.expect("no errors means a complete experiment"))
    } else {
        Err(SpecErrors(cx.errors))
    }
}

fn validate(cx: &mut Ctx, raw: RawSpec) -> Option<Experiment> {
    let name = raw.name.clone().unwrap_or_else(|| {
        cx.root
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "experiment".into())
    });
    let output = validate_output(cx, &raw, &name);
    let (models, judge) = validate_models(cx, &raw);
    let methods = validate_methods(cx, &raw);
    let prompts = validate_prompts(cx, &raw);
    let (generation, seeds) = validate_generation(cx, &raw);
    let scorers = validate_scorers(cx, &raw);
    if let Err(reason) = raw.policy.validate() {
        cx.err("policy", "policy", reason);
    }
    check_filter_names(cx, &raw, &models, &methods, &prompts);
    if !cx.errors.is_empty() {
        return None;
    }
    let axes = Axes {
        models: &models,
        methods: &methods,
        prompts: &prompts,
        seeds: &seeds,
        generation: &generation,
        scorers: &scorers,
        judge: judge.as_ref(),
    };
    let cells = expand(cx, &raw, &axes);
    Some(Experiment {
        name,
        file: cx.root.clone(),
        output,
        cells,
        skipped: cx.skipped.clone(),
    })
}

/// The output folder: given (relative to the file that set it) or `results/<name>`, and
/// writable or creatable.
fn validate_output(cx: &mut Ctx, raw: &RawSpec, name: &str) -> PathBuf {
    let output = match &raw.output {
        Some(o) => resolve(&cx.base("output"), o),
        None => paths::project_root().join("results").join(name),
    };
    if let Err(reason) = check_writable(&output) {
        cx.err("output", "output", reason);
    }

    output
}

/// The models (optional missing ones skipped) and the judge (`None`: each cell's own model).
fn validate_models(cx: &mut Ctx, raw: &RawSpec) -> (Vec<ModelRef>, Option<ModelRef>) {
    if raw.models.is_empty() {
        cx.err("models", "models", "at least one model is required");
    }
    let mut models = Vec::new();
    for (i, m) in raw.models.iter().enumerate() {
        if let Some(m) = resolve_model(cx, "models", &format!("models[{i}]"), m) {
            models.push(m);
        }
    }
    if models.is_empty() && !raw.models.is_empty() && cx.errors.is_empty() {
        cx.err(
            "models",
            "models",
            "none of the models is present (all are optional and missing)",
        );
    }
    unique(
        cx,
        "models",
        models.iter().map(|m| m.name.clone()),
        "model name",
        "name",
    );
    let judge = match &raw.judge {
        None => None,
        Some(RawModel::Short(s)) if s == "same" => None,
        Some(j) => {
            let judge = resolve_model(cx, "judge", "judge", j);
            if let Some(last) = cx.skipped.last_mut().filter(|s| s.starts_with("judge")) {
                last.push_str(": each cell's own model judges instead");
            }
            judge
        }
    };

    (models, judge)
}

/// Per method entry, its expansion: one [`MethodRef`] per strength (per combination of the
/// steps' strengths, for a stack).
fn validate_methods(cx: &mut Ctx, raw: &RawSpec) -> Vec<Vec<MethodRef>> {
    if raw.methods.is_empty() {
        cx.err("methods", "methods", "at least one method is required");
    }
    // Per entry, its expansion: one MethodRef per strength (per combination, for a stack).
    let mut methods: Vec<Vec<MethodRef>> = Vec::new();
    // Per element of `methods`: its index in the spec and the baseline it names.
    let mut entries: Vec<(usize, Option<String>)> = Vec::new();
    for (i, m) in raw.methods.iter().enumerate() {
        let at = format!("methods[{i}]");
        let steps: Vec<(MethodStep, Vec<Option<f64>>)> = match (&m.name, &m.stack) {
            (Some(name), None) => {
                match validate_step(cx, &at, name, &m.params, m.strength.as_ref()) {
                    Some(step) => vec![step],
                    None => continue,
                }
            }
            (None, Some(stack)) => {
                if !m.params.is_empty() || m.strength.is_some() {
                    cx.err(
                        "methods",
                        at.clone(),
                        "a stack takes params and strength inside its steps, not beside them",
                    );
                }
                if stack.len() < 2 {
                    cx.err(
                        "methods",
                        format!("{at}.stack"),
                        "a stack needs at least two methods (write a single one with `name:`)",
                    );
                }
                let mut steps = Vec::new();
                for (j, step) in stack.iter().enumerate() {
                    let step_at = format!("{at}.stack[{j}]");
                    if let Some(s) = validate_step(
                        cx,
                        &step_at,
                        &step.name,
                        &step.params,
                        step.strength.as_ref(),
                    ) {
                        steps.push(s);
                    }
                }
                if steps.len() != stack.len() {
                    continue;
                }
                steps
            }
            (Some(_), Some(_)) => {
                cx.err("methods", at, "give either `name` or `stack`, not both");
                continue;
            }
            (None, None) => {
                cx.err("methods", at, "a method entry needs `name` (or `stack`)");
                continue;
            }
        };
        let label = m.label.clone().unwrap_or_else(|| {
            steps
                .iter()
                .map(|(s, _)| default_step_label(cx.registry, s))
                .collect::<Vec<_>>()
                .join("+")
        });
        // The product of the steps' strength lists, first step outermost.
        let mut expanded: Vec<Vec<MethodStep>> = vec![Vec::new()];
        for (step, strengths) in &steps {
            expanded = expanded
                .into_iter()
                .flat_map(|prefix| {
                    strengths.iter().map(move |strength| {
                        let mut next = prefix.clone();
                        next.push(MethodStep {
                            strength: *strength,
                            ..step.clone()
                        });
                        next
                    })
                })
                .collect();
        }
        let top_p = entry_top_p(cx, &at, m.top_p, &steps);
        methods.push(
            expanded
                .into_iter()
                .map(|steps| MethodRef {
                    label: label.clone(),
                    steps,
                    baseline: None,
                    top_p,
                })
                .collect(),
        );
        entries.push((i, m.baseline.clone()));
    }
    unique(
        cx,
        "methods",
        methods
            .iter()
            .filter_map(|m| m.first().map(|m| m.label.clone())),
        "method label",
        "label",
    );
    resolve_baselines(cx, &mut methods, &entries);

    methods
}

/// A parameter's default as the value a spec would have written.
fn default_value(p: &ParamInfo, d: &ParamDefault) -> ParamValue {
    match d {
        ParamDefault::Float(x) => ParamValue::Float(*x),
        ParamDefault::Int(x) => ParamValue::Int(*x),
        ParamDefault::Bool(x) => ParamValue::Bool(*x),
        // A default path is relative to the project root (the files the project ships).
        ParamDefault::Str(s) if p.kind == ParamKind::Path => {
            ParamValue::Path(paths::project_root().join(s))
        }
        ParamDefault::Str(s) => ParamValue::String(s.clone()),
    }
}

/// A step's part of a default label: its name, and the labelled parameters set away from their
/// defaults (`word_filter[text_rule=true]`), so a variant never shares the plain method's label.
fn default_step_label(registry: &Registry, step: &MethodStep) -> String {
    let Some(info) = registry.method(&step.name) else {
        return step.name.clone();
    };
    let changed: Vec<String> = info
        .params
        .iter()
        .filter(|p| p.labelled)
        .filter_map(|p| {
            let value = step.params.get(p.name)?;
            let default = p.default.as_ref().map(|d| default_value(p, d));
            let text = match value {
                ParamValue::Bool(x) => x.to_string(),
                ParamValue::Int(x) => x.to_string(),
                ParamValue::Float(x) => x.to_string(),
                ParamValue::String(x) => x.clone(),
                ParamValue::Path(x) => identity_path(x),
            };
            (default.as_ref() != Some(value)).then(|| format!("{}={text}", p.name))
        })
        .collect();
    if changed.is_empty() {
        step.name.clone()
    } else {
        format!("{}[{}]", step.name, changed.join(","))
    }
}

/// An entry's top-p for its cells: its own `top_p` (1 turns it off), else off for a method that
/// draws from the full distribution, else `None` (the spec's `generation.top_p`).
fn entry_top_p(
    cx: &mut Ctx,
    at: &str,
    top_p: Option<f64>,
    steps: &[(MethodStep, Vec<Option<f64>>)],
) -> Option<Option<f64>> {
    match top_p {
        Some(p) if !(p > 0.0 && p <= 1.0) => {
            cx.err(
                "methods",
                format!("{at}.top_p"),
                format!("must be in (0, 1], got {p}"),
            );
            None
        }
        Some(p) => Some((p < 1.0).then_some(p)),
        None => {
            let full = steps.iter().any(|(step, _)| {
                cx.registry
                    .method(&step.name)
                    .is_some_and(|info| info.full_distribution)
            });
            full.then_some(None)
        }
    }
}

/// Fills each entry's baseline: the label it names (checked to exist and not to be its own), or
/// `none` when the spec has a `none` entry. `entries`: (index in the spec, `baseline` as written),
/// one per element of `methods`.
fn resolve_baselines(
    cx: &mut Ctx,
    methods: &mut [Vec<MethodRef>],
    entries: &[(usize, Option<String>)],
) {
    let labels: Vec<String> = methods
        .iter()
        .filter_map(|m| m.first().map(|m| m.label.clone()))
        .collect();
    for (expanded, (i, written)) in methods.iter_mut().zip(entries) {
        let Some(label) = expanded.first().map(|m| m.label.clone()) else {
            continue;
        };
        let baseline = match written {
            Some(b) if !labels.contains(b) => {
                let s = closest(b, labels.iter().map(String::as_str));
                cx.err_suggest(
                    "methods",
                    format!("methods[{i}].baseline"),
                    format!("\"{b}\" is not the label of any method entry"),
                    s,
                );
                None
            }
            Some(b) if *b == label => {
                cx.err(
                    "methods",
                    format!("methods[{i}].baseline"),
                    "an entry cannot be its own baseline",
                );
                None
            }
            Some(b) => Some(b.clone()),
            None => (label != "none" && labels.iter().any(|l| l == "none")).then(|| "none".into()),
        };
        for method in expanded.iter_mut() {
            method.baseline = baseline.clone();
        }
    }
}

/// The prompt sets (optional missing ones skipped), their paths resolved.
fn validate_prompts(cx: &mut Ctx, raw: &RawSpec) -> Vec<PromptSetRef> {
    if raw.prompts.is_empty() {
        cx.err("prompts", "prompts", "at least one prompt set is required");
    }
    let skipped_before = cx.skipped.len();
    let base = cx.base("prompts");
    let mut prompts = Vec::new();
    for (i, p) in raw.prompts.iter().enumerate() {
        let mut source = p.source.clone();
        let path = source.path_mut();
        *path = resolve(&base, path);
        if p.optional && !path.exists() {
            cx.skipped.push(format!(
                "prompts[{i}]: optional prompt source {} not found",
                path.display()
            ));
            continue;
        }
        if !path.exists() {
            cx.err(
                "prompts",
                format!("prompts[{i}].path"),
                format!("prompt file {} not found", path.display()),
            );
        }
        let name = p.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        prompts.push(PromptSetRef { name, source });
    }
    if prompts.is_empty() && cx.skipped.len() > skipped_before {
        cx.err(
            "prompts",
            "prompts",
            "none of the prompt sets is present (all are optional and missing)",
        );
    }
    unique(
        cx,
        "prompts",
        prompts.iter().map(|p| p.name.clone()),
        "prompt set name",
        "name",
    );

    prompts
}

/// The generation settings every cell shares, and the seeds axis.
fn validate_generation(cx: &mut Ctx, raw: &RawSpec) -> (Generation, Vec<u64>) {
    let g = &raw.generation;
    let mut gen_err =
        |field: &str, reason: String| cx.err("generation", format!("generation.{field}"), reason);
    if g.samples_per_prompt == 0 {
        gen_err("samples_per_prompt", "must be at least 1".into());
    }
    if g.max_new_tokens == 0 {
        gen_err("max_new_tokens", "must be at least 1".into());
    }
    if g.min_new_tokens > g.max_new_tokens {
        gen_err(
            "min_new_tokens",
            format!(
                "{} is above max_new_tokens ({})",
                g.min_new_tokens, g.max_new_tokens
            ),
        );
    }
    if g.batch_size == 0 {
        gen_err("batch_size", "must be at least 1".into());
    }
    if !(g.temperature.is_finite() && g.temperature >= 0.0) {
        gen_err(
            "temperature",
            format!("must be finite and >= 0, got {}", g.temperature),
        );
    }
    if let Some(p) = g.top_p {
        if !(p > 0.0 && p <= 1.0) {
            gen_err("top_p", format!("must be in (0, 1], got {p}"));
        }
    }
    if g.top_k == Some(0) {
        gen_err("top_k", "must be at least 1 (omit it to disable)".into());
    }
    if !valid_device(&g.device) {
        let s = closest(&g.device, ["auto", "cpu", "cuda", "mps"]);
        cx.err_suggest(
            "generation",
            "generation.device".into(),
            format!(
                "unknown device \"{}\" (auto, cpu, cuda, cuda:N, mps)",
                g.device
            ),
            s,
        );
    }
    let seeds: Vec<u64> = g.seed.as_ref().map_or(vec![0], |s| s.values.clone());
    if seeds.is_empty() {
        cx.err("generation", "generation.seed", "empty seed list");
    }
    unique(
        cx,
        "generation",
        seeds.iter().map(u64::to_string),
        "seed",
        "seed",
    );
    let generation = Generation {
        samples_per_prompt: g.samples_per_prompt,
        max_new_tokens: g.max_new_tokens,
        min_new_tokens: g.min_new_tokens,
        temperature: g.temperature,
        top_p: g.top_p,
        top_k: g.top_k,
        batch_size: g.batch_size,
        device: g.device.clone(),
        dtype: g.dtype,
    };

    (generation, seeds)
}

fn validate_scorers(cx: &mut Ctx, raw: &RawSpec) -> Vec<Scorer> {
    if raw.scorers.is_empty() {
        cx.err("scorers", "scorers", "at least one scorer is required");
    }
    let mut scorers = Vec::new();
    let base = cx.base("scorers");
    for (i, s) in raw.scorers.iter().enumerate() {
        match parse_scorer(&base, s) {
            Ok(sc) => scorers.push(sc),
            Err((reason, sugg)) => cx.err_suggest("scorers", format!("scorers[{i}]"), reason, sugg),
        }
    }
    unique(
        cx,
        "scorers",
        scorers.iter().map(Scorer::spec_name),
        "scorer",
        "entry",
    );

    scorers
}

/// Every name an `only` / `exclude` filter gives must exist in the spec.
fn check_filter_names(
    cx: &mut Ctx,
    raw: &RawSpec,
    models: &[ModelRef],
    methods: &[Vec<MethodRef>],
    prompts: &[PromptSetRef],
) {
    let model_names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    let method_labels: Vec<String> = methods
        .iter()
        .filter_map(|m| m.first().map(|m| m.label.clone()))
        .collect();
    let prompt_names: Vec<String> = prompts.iter().map(|p| p.name.clone()).collect();
    for (key, filters) in [("only", &raw.only), ("exclude", &raw.exclude)] {
        for (i, f) in filters.iter().enumerate() {
            if *f == RawFilter::default() {
                cx.err(
                    key,
                    format!("{key}[{i}]"),
                    "an empty filter matches every cell",
                );
            }
            for (field, value, names) in [
                ("model", &f.model, &model_names),
                ("method", &f.method, &method_labels),
                ("prompts", &f.prompts, &prompt_names),
            ] {
                if let Some(v) = value {
                    if !names.contains(v) {
                        let s = closest(v, names);
                        cx.err_suggest(
                            key,
                            format!("{key}[{i}].{field}"),
                            format!("no {field} named \"{v}\" in this spec"),
                            s,
                        );
                    }
                }
            }
        }
    }
}

/// The validated axes a spec expands over.
struct Axes<'a> {
    models: &'a [ModelRef],
    methods: &'a [Vec<MethodRef>],
    prompts: &'a [PromptSetRef],
    seeds: &'a [u64],
    generation: &'a Generation,
    scorers: &'a [Scorer],
    judge: Option<&'a ModelRef>,
}

/// Models × methods × strengths × prompt sets × seeds, in spec order, then `only` and `exclude`;
/// two cells with the same resolved config are an error.
fn expand(cx: &mut Ctx, raw: &RawSpec, axes: &Axes<'_>) -> Vec<Cell> {
    let mut all = Vec::new();
    for model in axes.models {
        for entry in axes.methods {
            for method in entry {
                for p in axes.prompts {
                    for seed in axes.seeds {
                        let mut generation = axes.generation.clone();
                        if let Some(top_p) = method.top_p {
                            generation.top_p = top_p;
                        }
                        all.push(Cell {
                            model: model.clone(),
                            method: method.clone(),
                            prompts: p.clone(),
                            generation,
                            seed: *seed,
                            scorers: axes.scorers.to_vec(),
                            judge: axes.judge.unwrap_or(model).clone(),
                            policy: raw.policy.clone(),
                        });
                    }
                }
            }
        }
    }
    for (key, filters) in [("only", &raw.only), ("exclude", &raw.exclude)] {
        for (i, f) in filters.iter().enumerate() {
            if !all.iter().any(|c| matches(f, c)) {
                cx.err(key, format!("{key}[{i}]"), "matches no cell");
            }
        }
    }
    let cells: Vec<Cell> = all
        .into_iter()
        .filter(|c| raw.only.is_empty() || raw.only.iter().any(|f| matches(f, c)))
        .filter(|c| !raw.exclude.iter().any(|f| matches(f, c)))
        .collect();
    if cells.is_empty() && cx.errors.is_empty() {
        cx.err("only", "only", "`only` and `exclude` leave no cells");
    }
    let mut seen = BTreeMap::new();
    for c in &cells {
        if let Some(prev) = seen.insert(c.cell_id(), c.label()) {
            cx.err(
                "methods",
                "",
                format!(
                    "cells \"{prev}\" and \"{}\" have the same resolved config",
                    c.label()
                ),
            );
        }
    }
    cells
}

/// Whether a cell matches every field a filter gives.
pub fn matches(f: &RawFilter, c: &Cell) -> bool {
    f.model.as_ref().is_none_or(|m| *m == c.model.name)
        && f.method.as_ref().is_none_or(|m| *m == c.method.label)
        && f.strength.is_none_or(|s| Some(s) == c.method.strength())
        && f.prompts.as_ref().is_none_or(|p| *p == c.prompts.name)
        && f.seed.is_none_or(|s| s == c.seed)
}

fn unique(cx: &mut Ctx, key: &str, names: impl Iterator<Item = String>, what: &str, field: &str) {
    let mut seen = BTreeSet::new();
    for (i, n) in names.enumerate() {
        if !seen.insert(n.clone()) {
            cx.err(
                key,
                format!("{key}[{i}]"),
                format!("duplicate {what} \"{n}\" (give each entry a distinct `{field}`)"),
            );
        }
    }
}

fn valid_device(d: &str) -> bool {
    matches!(d, "auto" | "cpu" | "cuda" | "mps")
        || d.strip_prefix("cuda:")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One method's name, parameters and strength, checked against the registry. `at` is the field
/// path of the entry (`methods[2]`, `methods[1].stack[0]`). Returns the step (strength unset) and
/// its strengths, or `None` after recording errors.
fn validate_step(
    cx: &mut Ctx,
    at: &str,
    name: &str,
    raw_params: &BTreeMap<String, Value>,
    raw_strength: Option<&OneOrMany<f64>>,
) -> Option<(MethodStep, Vec<Option<f64>>)> {
    let Some(info) = cx.registry.method(name).cloned() else {
        let s = closest(name, cx.registry.method_names());
        cx.err_suggest(
            "methods",
            format!("{at}.name"),
            format!("unknown method \"{name}\""),
            s,
        );
        return None;
    };
    let mut params = BTreeMap::new();
    for (k, v) in raw_params {
        let Some(p) = info.param(k) else {
            let s = closest(k, info.params.iter().map(|p| p.name));
            cx.err_suggest(
                "methods",
                format!("{at}.params.{k}"),
                format!("method \"{}\" has no parameter \"{k}\"", info.name),
                s,
            );
            continue;
        };
        match param_value(cx, p.kind, v) {
            Err(reason) => cx.err("methods", format!("{at}.params.{k}"), reason),
            Ok(val) => {
                let x = match val {
                    ParamValue::Float(x) => Some(x),
                    ParamValue::Int(x) => Some(x as f64),
                    _ => None,
                };
                if let (Some(x), Some(r)) = (x, p.range) {
                    if !r.contains(x) {
                        cx.err(
                            "methods",
                            format!("{at}.params.{k}"),
                            format!("{x} is outside [{}, {}]", r.min, r.max),
                        );
                    }
                }
                if let (ParamValue::String(v), Some(choices)) = (&val, p.choices) {
                    if !choices.contains(&v.as_str()) {
                        let s = closest(v, choices.iter().copied());
                        cx.err_suggest(
                            "methods",
                            format!("{at}.params.{k}"),
                            format!("\"{v}\" is not one of: {}", choices.join(", ")),
                            s,
                        );
                    }
                }
                params.insert(k.clone(), val);
            }
        }
    }
    for p in &info.params {
        if params.contains_key(p.name) || raw_params.contains_key(p.name) {
            continue;
        }
        match &p.default {
            Some(d) => {
                params.insert(p.name.to_string(), default_value(p, d));
            }
            None => cx.err(
                "methods",
                format!("{at}.params"),
                format!("method \"{}\" requires parameter \"{}\"", info.name, p.name),
            ),
        }
    }
    let strengths: Vec<Option<f64>> = match (raw_strength, info.strength) {
        (None, None) => vec![None],
        (None, Some(s)) => vec![Some(s.default)],
        (Some(_), None) => {
            cx.err(
                "methods",
                format!("{at}.strength"),
                format!("method \"{}\" takes no strength", info.name),
            );
            return None;
        }
        (Some(OneOrMany { values, is_list }), Some(s)) => {
            if values.is_empty() {
                cx.err("methods", format!("{at}.strength"), "empty strength list");
            }
            for (j, x) in values.iter().enumerate() {
                if !s.range.contains(*x) {
                    let p = if *is_list {
                        format!("{at}.strength[{j}]")
                    } else {
                        format!("{at}.strength")
                    };
                    cx.err(
                        "methods",
                        p,
                        format!(
                            "strength {x} is outside the valid range [{}, {}] of method \"{}\"",
                            s.range.min, s.range.max, info.name
                        ),
                    );
                }
            }
            values.iter().map(|x| Some(*x)).collect()
        }
    };
    let step = MethodStep {
        name: info.name.to_string(),
        params,
        strength: None,
    };
    Some((step, strengths))
}

fn param_value(cx: &Ctx, kind: ParamKind, v: &Value) -> Result<ParamValue, String> {
    let got = || {
        format!(
            "expected {kind:?} value, found {}",
            serde_yaml::to_string(v).unwrap_or_default().trim()
        )
    };
    match kind {
        ParamKind::Float => v
            .as_f64()
            .filter(|x| x.is_finite())
            .map(ParamValue::Float)
            .ok_or_else(got),
        ParamKind::Int => v.as_i64().map(ParamValue::Int).ok_or_else(got),
        ParamKind::Bool => v.as_bool().map(ParamValue::Bool).ok_or_else(got),
        ParamKind::String => v
            .as_str()
            .map(|s| ParamValue::String(s.into()))
            .ok_or_else(got),
        ParamKind::Path => {
            let s = v.as_str().ok_or_else(got)?;
            let p = resolve(&cx.base("methods"), Path::new(s));
            if p.exists() {
                Ok(ParamValue::Path(p))
            } else {
                Err(format!("path {} not found", p.display()))
            }
        }
    }
}

fn parse_scorer(base: &Path, s: &str) -> Result<Scorer, (String, Option<String>)> {
    match s {
        "minilm" => return Ok(Scorer::Minilm),
        "profanity" => return Ok(Scorer::Profanity),
        "perspective" => return Ok(Scorer::Perspective),
        _ => {}
    }
    if let Some(rest) = s.strip_prefix("hf:") {
        let (dir, label) = match rest.split_once('#') {
            Some((d, l)) => (d, Some(l.to_string())),
            None => (rest, None),
        };
        if dir.is_empty() || label.as_deref() == Some("") {
            return Err((format!("expected hf:DIR[#label], got \"{s}\""), None));
        }
        let dir = resolve(base, Path::new(dir));
        if !dir.is_dir() {
            return Err((
                format!("classifier folder {} not found", dir.display()),
                None,
            ));
        }
        return Ok(Scorer::Hf { dir, label });
    }
    let names = SCORER_NAMES
        .iter()
        .map(|n| n.split(':').next().unwrap_or(n));
    Err((
        format!(
            "unknown scorer \"{s}\" (valid: {})",
            SCORER_NAMES.join(", ")
        ),
        closest(s, names),
    ))
}

fn known_presets() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(presets_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn resolve_model(cx: &mut Ctx, key: &str, at: &str, m: &RawModel) -> Option<ModelRef> {
    let full = match m {
        RawModel::Short(s) if s.contains('/') || s.contains('\\') || s.ends_with(".gguf") => {
            RawModelFull {
                name: None,
                preset: None,
                path: Some(PathBuf::from(s)),
                format: None,
                optional: false,
            }
        }
        RawModel::Short(s) => RawModelFull {
            name: None,
            preset: Some(s.clone()),
            path: None,
            format: None,
            optional: false,
        },
        RawModel::Full(f) => f.clone(),
    };
    let base = cx.base(key);
    match (&full.preset, &full.path) {
        (Some(_), Some(_)) | (None, None) => {
            cx.err(key, at, "give exactly one of `preset` and `path`");
            None
        }
        (None, Some(p)) => {
            let path = resolve(&base, p);
            if full.optional && !path.exists() {
                cx.skipped
                    .push(format!("{at}: optional model {} not found", path.display()));
                return None;
            }
            let file = cx.file(key);
            match check_model(&path, full.format) {
                Ok(format) => Some(ModelRef {
                    name: full.name.clone().unwrap_or_else(|| default_name(&path)),
                    format,
                    path,
                    preset: None,
                }),
                Err(reason) => {
                    cx.errors
                        .push(SpecError::new(&file, format!("{at}.path"), reason));
                    None
                }
            }
        }
        (Some(preset), None) => {
            let field = if matches!(m, RawModel::Short(_)) {
                at.to_string()
            } else {
                format!("{at}.preset")
            };
            let file = presets_dir().join(format!("{preset}.yaml"));
            if !file.is_file() {
                let known = known_presets();
                let s = closest(preset, &known);
                cx.err_suggest(
                    key,
                    field,
                    format!(
                        "unknown model preset \"{preset}\" (no {}; known: {}; a path needs a `/`)",
                        file.display(),
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                    s,
                );
                return None;
            }
            let parsed = read_mapping(&file).and_then(|map| {
                let text = serde_yaml::to_string(&map).expect("mapping serializes");
                serde_yaml::from_str::<RawModelFull>(&text)
                    .map_err(|e| yaml_error(&file, &e, false))
            });
            let pf = match parsed {
                Ok(pf) => pf,
                Err(e) => {
                    cx.errors.push(e);
                    return None;
                }
            };
            let Some(p) = pf.path.as_ref().filter(|_| pf.preset.is_none()) else {
                cx.errors.push(SpecError::new(
                    &file,
                    "path",
                    "a preset needs `path` (and no `preset`)",
                ));
                return None;
            };
            let path = resolve(file.parent().unwrap_or(Path::new(".")), p);
            if (full.optional || pf.optional) && !path.exists() {
                cx.skipped.push(format!(
                    "{at}: optional model {} (preset \"{preset}\") not found",
                    path.display()
                ));
                return None;
            }
            match check_model(&path, full.format.or(pf.format)) {
                Ok(format) => Some(ModelRef {
                    name: full
                        .name
                        .clone()
                        .or(pf.name.clone())
                        .unwrap_or(preset.clone()),
                    format,
                    path,
                    preset: Some(preset.clone()),
                }),
                Err(reason) => {
                    cx.errors.push(SpecError::new(
                        &file,
                        "path",
                        format!("{reason} (preset \"{preset}\" used at {at})"),
                    ));
                    None
                }
            }
        }
    }
}

fn default_name(path: &Path) -> String {
    let n = if path.extension().is_some_and(|e| e == "gguf") {
        path.file_stem()
    } else {
        path.file_name()
    };
    n.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn check_model(path: &Path, format: Option<ModelFormat>) -> Result<ModelFormat, String> {
    if !path.exists() {
        return Err(format!("model {} not found", path.display()));
    }
    let format = match format {
        Some(f) => f,
        None if path.is_dir() => ModelFormat::Hf,
        None if path.extension().is_some_and(|e| e == "gguf") => ModelFormat::Gguf,
        None => {
            return Err(format!(
                "cannot tell the format of {} (give `format: hf` or `format: gguf`)",
                path.display()
            ))
        }
    };
    match format {
        ModelFormat::Hf if !path.join("config.json").is_file() => Err(format!(
            "{} is not a Hugging Face model folder (no config.json)",
            path.display()
        )),
        ModelFormat::Gguf if !path.is_file() => {
            Err(format!("{} is not a GGUF file", path.display()))
        }
        f => Ok(f),
    }
}

/// Checks that `dir` exists as a writable folder, or could be created: the nearest existing
/// ancestor must be a writable folder. Writes and removes one probe file; creates nothing that stays.
pub fn check_writable(dir: &Path) -> Result<(), String> {
    let mut probe_dir = dir;
    loop {
        if probe_dir.exists() {
            break;
        }
        match probe_dir.parent() {
            Some(p) => probe_dir = p,
            None => return Err(format!("no existing parent folder for {}", dir.display())),
        }
    }
    if !probe_dir.is_dir() {
        return Err(format!(
            "output folder {} cannot be created: {} is not a folder",
            dir.display(),
            probe_dir.display()
        ));
    }
    let probe = probe_dir.join(format!(".detox-write-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "output folder {} is not writable ({}: {e})",
            dir.display(),
            probe_dir.display()
        )),
    }
}
