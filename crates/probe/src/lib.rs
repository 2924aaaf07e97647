//! Linear probes on model embeddings. Today: the toxicity head of the `minilm` scorer, a
//! small classifier (one hidden layer) on all-MiniLM-L6-v2 sentence embeddings, trained by `detox train-scorer`
//! and shipped as a small JSON artifact so a fresh machine scores without the training data.

pub mod classifier;
pub mod embed;
pub mod head;
pub mod registry;
pub mod scorer;
pub mod training;

pub use classifier::HfClassifierScorer;
pub use embed::MiniLmEmbedder;
pub use head::{ProbeHead, TrainOptions};
pub use registry::{build as build_scorer, SCORER_NAMES};
pub use scorer::MiniLmScorer;
pub use training::{train_minilm_head, HeadTraining};
