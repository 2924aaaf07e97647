//! Regularized fine-tuning (Meng et al., EMNLP 2024 Findings, on NADO, NeurIPS 2022): an
//! auxiliary model R(x<t, v) trained on the policy's own labelled samples gives the teacher
//! q ∝ p·R; the policy is fine-tuned on a data mix with λ·CE(q, p_θ) on its samples' prefixes,
//! round after round, sequentially or with the rounds' three jobs overlapped. Also NADO decoding
//! (q at inference, no fine-tuning) and the baselines: plain SFT, SFT on a filtered mix,
//! REINFORCE.
//!
//! This crate holds the models and losses; the `detox` binary drives the schedule (each job a
//! process of its own, see `detox train finetune`).

pub mod lora;
pub mod nado;
pub mod objective;
pub mod plan;
pub mod registration;
pub mod sequences;

pub use lora::{LoraOptions, LoraSet, LoraTargets};
pub use nado::{Auxiliary, AuxiliaryOptions, AuxiliaryRecord, NadoDecoding, NadoParams};
pub use objective::{finetune, Adaptation, FinetuneOptions, FinetuneStats, Regularizer};
pub use registration::{FinetunedMethod, NadoMethod};
pub use plan::{Job, Objective, Plan, Schedule};
pub use sequences::{MixText, SampledText, Sequence};
