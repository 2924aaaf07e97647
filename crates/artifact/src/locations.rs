//! Where every fitted artifact lives by default: where the `detox train …` commands write it and
//! where decoding (and the benchmarks) look for it when no path is given. One place, so a writer
//! and its readers cannot drift apart.
//!
//! | artifact | default location |
//! |---|---|
//! | SASA subspace | `configs/sasa/<model folder>.json` in the checkout |
//! | RAD reward head | `configs/rad/<model folder>.json` in the checkout |
//! | calibration model (DExperts expert) | `.detox/calibration/<base folder>/` |
//! | DExperts anti-expert | `.detox/calibration/<base folder>-toxic/` |
//! | alignment map | `<calibration folder>/align-<target folder>-<fit>.json` |
//! | fine-tuning outputs | `<run output>/policy-K/`, `auxiliary-K/`, `samples-K.jsonl` |

use std::path::{Path, PathBuf};

/// The last component of `dir`, or `fallback` when it has none (`/`, `..`).
fn folder_name(dir: &Path, fallback: &str) -> String {
    dir.file_name()
        .map_or_else(|| fallback.into(), |n| n.to_string_lossy().into_owned())
}

/// SASA's subspace for the model in `model_dir`: `configs/sasa/<model folder name>.json`.
pub fn sasa_subspace(model_dir: &Path) -> PathBuf {
    paths::fitted_method_file("sasa", model_dir)
}

/// RAD's reward head for the backbone in `model_dir`: `configs/rad/<model folder name>.json`.
pub fn rad_reward_head(model_dir: &Path) -> PathBuf {
    paths::fitted_method_file("rad", model_dir)
}

/// A calibration model built from `base` (calibration fusion's model, DExperts' expert):
/// `.detox/calibration/<base folder name>`; `toxic` (DExperts' anti-expert, trained on the toxic
/// texts) adds a `-toxic` suffix.
pub fn calibration_dir(base: &Path, toxic: bool) -> PathBuf {
    let suffix = if toxic { "-toxic" } else { "" };
    paths::state_dir()
        .join("calibration")
        .join(format!("{}{suffix}", folder_name(base, "model")))
}

/// The map of fit `fit` (`ridge`, `infonce`) from a calibration model's final hidden state to a
/// target's: `<calibration folder>/align-<target folder name>-<fit>.json` (its tensors lie
/// beside it).
pub fn align_map(calibration_dir: &Path, target_dir: &Path, fit: &str) -> PathBuf {
    calibration_dir.join(format!(
        "align-{}-{fit}.json",
        folder_name(target_dir, "target")
    ))
}

/// The name, under a fine-tuning run's output folder, of the model folder of policy K (the
/// fine-tuned model after round K).
pub fn finetune_policy_name(k: usize) -> String {
    format!("policy-{k}")
}

/// The name, under a fine-tuning run's output folder, of the NADO auxiliary model of round K.
pub fn finetune_auxiliary_name(k: usize) -> String {
    format!("auxiliary-{k}")
}

/// The name, under a fine-tuning run's output folder, of the samples drawn from policy K (the
/// file adds `.jsonl`; see [`finetune_samples_file`]).
pub fn finetune_samples_name(k: usize) -> String {
    format!("samples-{k}")
}

/// The model folder of policy K of a run writing to `output`: policy 0 is the `base` model itself
/// (never copied), policy K > 0 is `<output>/policy-K`.
pub fn finetune_policy_dir(base: &Path, output: &Path, k: usize) -> PathBuf {
    if k == 0 {
        base.to_path_buf()
    } else {
        output.join(finetune_policy_name(k))
    }
}

/// The auxiliary model folder of round K: `<output>/auxiliary-K`.
pub fn finetune_auxiliary_dir(output: &Path, k: usize) -> PathBuf {
    output.join(finetune_auxiliary_name(k))
}

/// The scored, labelled samples drawn from policy K: `<output>/samples-K.jsonl`.
pub fn finetune_samples_file(output: &Path, k: usize) -> PathBuf {
    output.join(format!("{}.jsonl", finetune_samples_name(k)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_follow_the_folder_names() {
        let model = Path::new("/m/smollm2-135m-instruct");
        assert!(sasa_subspace(model).ends_with("configs/sasa/smollm2-135m-instruct.json"));
        assert!(rad_reward_head(model).ends_with("configs/rad/smollm2-135m-instruct.json"));
        assert!(calibration_dir(model, false).ends_with("calibration/smollm2-135m-instruct"));
        assert!(calibration_dir(model, true).ends_with("calibration/smollm2-135m-instruct-toxic"));
        assert_eq!(
            align_map(Path::new("/c/cal"), model, "ridge"),
            Path::new("/c/cal/align-smollm2-135m-instruct-ridge.json")
        );
        assert_eq!(
            align_map(Path::new("c"), Path::new("/"), "infonce"),
            Path::new("c/align-target-infonce.json")
        );
        let out = Path::new("/run");
        assert_eq!(finetune_policy_dir(model, out, 0), model);
        assert_eq!(
            finetune_policy_dir(model, out, 2),
            Path::new("/run/policy-2")
        );
        assert_eq!(
            finetune_auxiliary_dir(out, 1),
            Path::new("/run/auxiliary-1")
        );
        assert_eq!(
            finetune_samples_file(out, 0),
            Path::new("/run/samples-0.jsonl")
        );
    }
}
