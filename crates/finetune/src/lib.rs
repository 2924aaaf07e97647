//! Regularized fine-tuning (Meng et al., EMNLP 2024 Findings, on NADO, NeurIPS 2022): an
//! auxiliary model R(x<t, v) trained on the policy's own labelled samples gives the teacher
//! q ∝ p·R; the policy is fine-tuned on a data mix with λ·CE(q, p_θ) on its samples' prefixes,
//! round after round, sequentially or with the rounds' three jobs overlapped. Also NADO decoding
//! (q at inference, no fine-tuning) and the baselines: plain SFT, SFT on a filtered mix,
//! REINFORCE.
//!
//! What is where:
//! - [`plan`]: the YAML spec, validated, and the job graph of its schedule;
//! - [`schedule`]: runs a plan's rounds, each job a worker process (`detox train finetune`);
//! - [`jobs`]: the body of one worker process (`detox train finetune-job`);
//! - [`mix`]: the data mix; [`label`]: the policy's scored and labelled samples;
//! - [`layout`]: the files of a run's output folder;
//! - [`objective`], [`nado`], [`lora`], [`sequences`]: the losses, models and training data.

pub mod jobs;
pub mod label;
pub mod layout;
pub mod lora;
pub mod mix;
pub mod nado;
pub mod objective;
pub mod plan;
pub mod registration;
pub mod schedule;
pub mod sequences;

pub use lora::{LoraOptions, LoraSet, LoraTargets};
pub use nado::{Auxiliary, AuxiliaryOptions, AuxiliaryRecord, NadoDecoding, NadoParams};
pub use objective::{finetune, Adaptation, FinetuneOptions, FinetuneStats, Regularizer};
pub use plan::{Job, Objective, Plan, Schedule};
pub use registration::{FinetunedMethod, NadoMethod};
pub use sequences::{MixText, SampledText, Sequence};
