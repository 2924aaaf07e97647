//! Experiment specs: YAML → merged document → raw types → validated, expanded [`Cell`]s.
//!
//! ```yaml
//! include: [../configs/generation/papers.yaml]   # fragments, merged first; this file wins
//! name: quickstart                                # default: the file stem
//! output: ../results/quickstart                   # default: <project>/results/<name>
//! models:
//!   - smollm2-135m                                # preset configs/models/smollm2-135m.yaml
//!   - { name: local, path: ../.detox/models/smollm2-135m-instruct }   # or a GGUF file
//! methods:
//!   - name: none                                  # `detox list` shows every method
//!   # - { name: sasa, label: sasa-fast, params: { ... }, strength: [0.5, 1, 2] }
//! prompts:
//!   - { name: rtp, kind: user, path: ../configs/prompts/rtp-style.jsonl }
//! generation: { samples_per_prompt: 25, max_new_tokens: 20, top_p: 0.9, seed: [0, 1] }
//! scorers: [minilm, profanity]                    # also perspective, hf:DIR[#label]
//! judge: same                                     # or a model entry
//! policy: { toxic_threshold: 0.5 }                # metrics::MetricPolicy
//! only: [{ method: none, prompts: rtp }]          # keep cells matching any entry
//! exclude: [{ model: local, seed: 1 }]            # then drop cells matching any entry
//! ```
//!
//! Rules:
//! - Unknown keys anywhere are errors. Every error names the file, the field path
//!   (`methods[2].strength[1]`) and the reason, with the closest valid name for a typo; YAML syntax
//!   errors (and type errors in a spec without includes) carry line and column.
//! - **Includes**: see [`include`]: fragments first in order, the including file last and winning;
//!   maps merge recursively, lists and scalars are replaced; cycles are errors.
//! - **Relative paths** resolve against the folder of the file that wrote them (the spec, the
//!   fragment that set that top-level key, or the model preset file).
//! - **Expansion**: models × methods × strengths × prompt sets × seeds, nested in that order and in
//!   spec order; then `only` (a cell is kept if it matches any entry; none means all) and `exclude`.
//!   A filter field compares with the model name, method label, strength, prompt-set name or seed;
//!   a filter that matches no cell is an error.
//! - **Identity**: [`Cell::cell_id`] hashes the canonical JSON (sorted keys) of [`Cell::identity`],
//!   which leaves out display names, labels, batch size and the output folder and writes paths
//!   relative to the project root.
//! - Validation checks model folders/files, presets, prompt files, scorer folders and that the output
//!   folder is writable or creatable (it creates nothing), so every mistake surfaces before a model
//!   is loaded.

pub mod cell;
pub mod error;
pub mod include;
pub mod raw;
pub mod validate;

use std::path::Path;

pub use cell::{
    canonical_json, Cell, Experiment, Generation, MethodRef, MethodStep, ModelRef, ParamValue,
    PromptSetRef, Scorer,
};
pub use error::{closest, SpecError, SpecErrors};
pub use method_info::{
    MethodInfo, ParamDefault, ParamInfo, ParamKind, Range, Registry, StrengthInfo,
};
pub use raw::{Dtype, ModelFormat};

/// Scorer names the spec accepts; `hf:DIR[#label]` takes a classifier folder and an optional
/// label to read (default: the classifier's toxic label).
pub static SCORER_NAMES: &[&str] = &["minilm", "profanity", "perspective", "hf:DIR[#label]"];
pub use validate::{check_writable, load_with};

/// Loads and validates a spec knowing only the `none` method: enough for specs of plain
/// sampling and for this crate's tests. A binary validates against the methods it links
/// (`experiment::registry`) with [`load_with`].
pub fn load(path: impl AsRef<Path>) -> Result<Experiment, SpecErrors> {
    load_with(path.as_ref(), &Registry::builtin())
}

/// What `detox validate SPEC` prints: the expanded cells, or every problem found.
pub fn validate_report(path: impl AsRef<Path>, registry: &Registry) -> Result<String, SpecErrors> {
    load_with(path.as_ref(), registry).map(|e| e.table())
}
