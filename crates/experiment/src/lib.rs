//! Runs experiments. The `detox` binary is this crate's command line: argument parsing, progress
//! bars and calls into the functions below, each callable from Rust and from tests without it.
//!
//! ```text
//! spec.yaml ──registry::load_spec──▶ spec::Experiment ──run::run_experiment──▶ per cell:
//!   generate::generate ──▶ generations.jsonl
//!   score::score       ──▶ scores-<scorer>.jsonl   (through the experiment's score cache)
//!   evaluate::evaluate ──▶ metrics.json            (records::MetricsRecord)
//!   process::stamp     ──▶ record.json             (records::RunRecord: versions, cost)
//! merge::merge joins the shares of a sweep split with run::Shard; `report` writes the tables.
//! ```
//!
//! What is on disk is [`records`]' schema; which methods exist is [`registry`]'s one list.

pub mod catalog;
pub mod evaluate;
pub mod generate;
pub mod merge;
pub mod method;
pub mod model;
pub mod monitor;
pub mod process;
pub mod registry;
pub mod run;
pub mod score;
pub mod utility;

pub use evaluate::{evaluate, EvaluateInputs, Judge, ScoreInput};
pub use generate::{generate, GenerateOptions, GenerateOutcome};
pub use merge::{merge, MergeSummary};
pub use method::{Decoding, ResolvedMethod};
pub use model::{default_model, hf_folder, ModelOptions};
pub use monitor::{Count, Monitor, Progress, Quiet};
pub use registry::{load_spec, methods, spec_registry};
pub use run::{check_writable, run_cell, run_experiment, RunOptions, RunSummary, Shard};
pub use score::{score, CacheChoice, ScoreOutcome};
