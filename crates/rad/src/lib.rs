//! RAD — reward-augmented decoding (Deng & Raffel, EMNLP 2023).
//!
//! The reward model ([`RewardModel`]) is a unidirectional scorer: a causal LM of the harness cut
//! to its first N blocks, followed by its own final norm, and a linear head r = wᵀh + b read at
//! every position, so every prefix of a text has a reward. Its head is fitted offline ([`fit`])
//! with RAD's cumulative squared loss over prefixes,
//! L = 2/(l(l+1)) · Σₜ t·(r(x₁..ₜ) − y)², which with the backbone frozen is a weighted
//! least-squares problem solved exactly. The head lives in a small JSON file ([`RewardHead`])
//! tied to the backbone checkpoint by a fingerprint; `configs/rad/` holds the default model's.
//!
//! Online ([`Rad`], a [`decode::Steering`] method): each step keeps the top-k candidates by logit,
//! scores each continuation with the reward model and sets z'_v = z_v + β·(1 − clamp(r_v, 0, 1))
//! on them and −∞ elsewhere. The reward model keeps its own KV cache: the chosen row's cache is
//! forked to the k candidate rows and only the new token is run. A reward model with another
//! vocabulary re-tokenizes each candidate's decoded text and scores it from scratch instead.

pub mod artifact;
pub mod fit;
pub mod registration;
pub mod reward;
pub mod steering;
pub mod train;

pub use artifact::{RewardFitRecord, RewardHead, RewardMetrics, TrainedBlocks, FEATURES, FORMAT};
pub use fit::{
    accumulate_prefixes, fit_reward, prefix_features, reward_metrics, solve_head, FeatureOptions,
    FitOptions, PrefixFeatures, DEFAULT_RIDGE,
};
pub use registration::{RadMethod, RadSpecParams};
pub use reward::RewardModel;
pub use steering::{Rad, RadParams, RadStats, RewardLogRow, RewardLogStep, RewardPath};
pub use train::{train_top_blocks, TopBlockOptions, TrainedHead};
