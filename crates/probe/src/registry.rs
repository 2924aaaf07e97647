//! The scorer registry: every toxicity scorer a spec or command can name, built by that name.
//! One place for the experiment pipeline, fine-tuning's labelling and the audit.

use anyhow::{bail, Result};
use lm::DeviceChoice;
use score::ToxicityScorer;

/// Names accepted by `--scorer` (plus `hf:DIR[#label]`).
pub const SCORER_NAMES: [&str; 4] = ["minilm", "profanity", "perspective", "hf:DIR[#label]"];

/// Builds a scorer: `minilm` (MiniLM encoder + the committed head), `profanity`
/// (alt-profanity-check reimplemented), `perspective` (Perspective API; key from
/// `PERSPECTIVE_API_KEY`), `hf:DIR[#label]` (a Hugging Face BERT/RoBERTa sequence classifier;
/// the label defaults to the one named `toxic`).
pub fn build(name: &str, device: DeviceChoice) -> Result<Box<dyn ToxicityScorer>> {
    Ok(match name {
        "minilm" => {
            let encoder = paths::require(&paths::minilm_dir(), "the MiniLM encoder")
                .map_err(anyhow::Error::msg)?;
            Box::new(crate::MiniLmScorer::load(
                &encoder,
                &crate::MiniLmScorer::default_head(),
                device,
            )?)
        }
        "profanity" => Box::new(score::profanity::ProfanityScorer::load_default()?),
        "perspective" => Box::new(score::perspective::PerspectiveScorer::new(
            Default::default(),
        )?),
        other if other.starts_with("hf:") => {
            let spec = &other[3..];
            let (dir, label) = match spec.split_once('#') {
                Some((dir, label)) => (dir, Some(label)),
                None => (spec, None),
            };
            Box::new(crate::HfClassifierScorer::load(
                std::path::Path::new(dir),
                label,
                device,
            )?)
        }
        other => bail!(
            "unknown scorer {other:?} (expected one of: {})",
            SCORER_NAMES.join(", ")
        ),
    })
}
