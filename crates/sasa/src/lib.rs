//! SASA — self-disciplined autoregressive sampling (Ko et al., ICLR 2025).
//!
//! Offline, once per model ([`fit`]): the model's own final-norm hidden state at the last token
//! of labelled toxic and non-toxic text; the closed-form linear discriminant of two Gaussian
//! classes with a shared covariance gives a unit direction `w` and a midpoint `b`, and the
//! margin m(h) = wᵀ(h − b) is positive on the non-toxic side. The result is a small JSON file
//! ([`Subspace`]) tied to the checkpoint by a fingerprint; `configs/sasa/` holds the default
//! model's.
//!
//! Online ([`Sasa`], a [`decode::Steering`] method): at every step each row's candidates (what
//! top-k/top-p left, optionally capped) are appended to forks of the row's KV cache and run in
//! one batched forward; each candidate's exact next hidden state gets its margin, and
//! z'_v = z_v + β·transform(m)_v with the transform a softmax over the row's candidates (default)
//! or the raw margin. The forward row of the drawn candidate becomes the next step's state, so a
//! step costs one forward over all candidate rows (ragged across the batch's rows).

pub mod fit;
pub mod registration;
pub mod steering;
pub mod subspace;

// What every fitted artifact shares lives in `artifact`; re-exported so `sasa::SourceTexts` and the
// like keep working for the callers that name them here.
pub use artifact::{checkpoint_fingerprint, ModelIdentity, SourceCounts, SourceTexts};
pub use fit::{
    classifier_metrics, embed_texts, fit_discriminant, fit_subspace, Discriminant, EmbedOptions,
    FitOptions, DEFAULT_EIGEN_CUTOFF,
};
pub use registration::{SasaMethod, SasaSpecParams};
pub use steering::{LoggedRow, LoggedStep, MarginTransform, Sasa, SasaParams, SasaStats};
pub use subspace::{ClassifierMetrics, FitRecord, Subspace};
