//! Calibration-model output-layer fusion (Tian et al., 2025) and DExperts (Liu et al., 2021),
//! through the same code: a [`decode::Follower`] runs each extra model over the whole context on
//! its own KV cache, and a steering method mixes what it reads into the target's logits.
//!
//! - [`calibration`]: the compact calibration LM — a base LM's embeddings, first L blocks, final
//!   norm and head — fine-tuned with next-token loss on non-toxic text (`detox train
//!   calibration`), written as an ordinary model folder.
//! - [`readout`]: how the calibration state reaches the target's width (ridge map, the paper's
//!   InfoNCE map, or identity) and the norm applied before mixing;
//! - [`align`], [`align_fit`]: the map h_cal·A + b, fitted by ridge regression onto the target's
//!   final states or with InfoNCE (on input embeddings, the paper's recipe, or on final states),
//!   and its held-out reconstruction report ([`reconstruction`]) (`detox train align`).
//! - [`steering`]: fusion, h̃ = α·norm(readout(h_cal)) + (1 − α)·h at the target's final normed
//!   hidden state, and DExperts, filter_p(z) + α(z_expert − z_anti).

pub mod align;
pub mod align_fit;
pub mod calibration;
pub mod readout;
pub mod reconstruction;
pub mod registration;
pub mod steering;

pub use align::{AlignMap, AlignOn, AlignOptions, AlignRecord, FusedKl, Reconstruction};
pub use align_fit::{fit_ridge, train_align};
pub use calibration::{
    default_calibration_dir, train_calibration, CalibrationOptions, CalibrationRecord,
    CalibrationTrainable, TrainingText,
};
pub use readout::{fused_state, MapNorm, Readout};
pub use registration::{CalibrationFusionMethod, DExpertsMethod};
pub use steering::{
    fused_logits, nucleus_mask, CalibrationFusion, DExperts, DExpertsParams, FusionParams,
};
