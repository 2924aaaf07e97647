//! Calibration-model output-layer fusion (Tian et al., 2025) and DExperts (Liu et al., 2021),
//! through the same code: a [`decode::Follower`] runs each extra model over the whole context on
//! its own KV cache, and a steering method mixes what it reads into the target's logits.
//!
//! - [`calibration`]: the compact calibration LM — a base LM's embeddings, first L blocks, final
//!   norm and head — fine-tuned with next-token loss on non-toxic text (`detox train
//!   calibration`), written as an ordinary model folder.
//! - [`align`]: the map A from the calibration model's width to the target's, trained with InfoNCE
//!   on paired final hidden states of the same text (default) or on the input embeddings of the
//!   tokens both vocabularies share (the paper's choice) (`detox train align`).
//! - [`steering`]: fusion, h̃ = α·LN(h_cal A) + (1 − α)·h at the target's final normed hidden
//!   state, and DExperts, z + α(z_expert − z_anti).

pub mod align;
pub mod calibration;
pub mod registration;
pub mod steering;

pub use align::train_align;
pub use align::{AlignMap, AlignOn, AlignOptions, AlignRecord};
pub use calibration::{
    default_calibration_dir, train_calibration, CalibrationOptions, CalibrationRecord,
    CalibrationTrainable, TrainingText,
};
pub use registration::{CalibrationFusionMethod, DExpertsMethod};
pub use steering::{fused_logits, CalibrationFusion, DExperts, DExpertsParams, FusionParams};
