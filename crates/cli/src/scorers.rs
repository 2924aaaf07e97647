//! The scorers `detox` can build by name.

use anyhow::{bail, Result};
use lm::DeviceChoice;
use score::ToxicityScorer;

/// Names accepted by `--scorer`.
pub const SCORER_NAMES: [&str; 3] = ["minilm", "profanity", "perspective"];

/// Builds a scorer: `minilm` (MiniLM encoder + the committed head), `profanity`
/// (alt-profanity-check reimplemented), `perspective` (Perspective API; key from
/// `PERSPECTIVE_API_KEY`).
pub fn build(name: &str, device: DeviceChoice) -> Result<Box<dyn ToxicityScorer>> {
    Ok(match name {
        "minilm" => {
            let encoder = paths::require(&paths::minilm_dir(), "the MiniLM encoder")
                .map_err(anyhow::Error::msg)?;
            Box::new(probe::MiniLmScorer::load(
                &encoder,
                &probe::MiniLmScorer::default_head(),
                device,
            )?)
        }
        "profanity" => Box::new(score::profanity::ProfanityScorer::load_default()?),
        "perspective" => Box::new(score::perspective::PerspectiveScorer::new(
            Default::default(),
        )?),
        other => bail!(
            "unknown scorer {other:?} (expected one of: {})",
            SCORER_NAMES.join(", ")
        ),
    })
}
