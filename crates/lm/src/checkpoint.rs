//! Writing checkpoints: a Hugging Face folder made from another one, with trained tensors in
//! place of the originals and possibly fewer blocks, that every part of the harness then loads
//! like any model (calibration models, fine-tuned variants).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tch::{Device, Tensor};

use crate::config::{ArchitectureConfig, HEAD_TENSOR, TIE_KEY};
use crate::weights::checkpoint_files;

/// Files copied as they are from the source folder when present.
const CARRIED_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// Writes the folder `out` (which must not exist): the checkpoint in `source` cut to its first
/// `layers` blocks when given (config.json says so), with each of `replacements` (Hugging Face
/// names and layouts, as [`crate::CausalLm::export_tensors`] gives them) in place of the tensor of
/// that name, stored in the original tensor's dtype; the tokenizer and generation files are
/// copied. The folder appears only once complete (written beside it, then renamed).
///
/// A replacement head (`lm_head.weight`) for a checkpoint that ties its head to the embedding
/// unties it: config.json then says `tie_word_embeddings: false` and the head is stored, in the
/// embedding's dtype, whether or not the checkpoint kept a redundant copy of it.
pub fn write_folder(
    source: &Path,
    out: &Path,
    layers: Option<usize>,
    replacements: Vec<(String, Tensor)>,
) -> Result<()> {
    if out.exists() {
        bail!(
            "{}: already exists; choose another folder or remove it",
            out.display()
        );
    }
    let config_path = source.join("config.json");
    let config_text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("{}: cannot read", config_path.display()))?;
    let config = ArchitectureConfig::from_json(&config_text)
        .with_context(|| config_path.display().to_string())?;
    let mut config_json: Value = serde_json::from_str(&config_text)
        .with_context(|| format!("{}: not valid JSON", config_path.display()))?;
    let kept = match layers {
        Some(layers) => {
            config.truncated(layers)?;
            config_json[config.layers_key()] = Value::from(layers);
            layers
        }
        None => config.num_layers(),
    };

    let (files, _) = checkpoint_files(source)?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for file in &files {
        let read = Tensor::read_safetensors(file)
            .with_context(|| format!("{}: cannot read", file.display()))?;
        tensors.extend(
            read.into_iter()
                .filter(|(name, _)| config.block_of_tensor(name).is_none_or(|b| b < kept)),
        );
    }
    let _no_grad = tch::no_grad_guard();
    let unties_head = config.head_tied() && replacements.iter().any(|(n, _)| n == HEAD_TENSOR);
    if unties_head {
        config_json[TIE_KEY] = Value::Bool(false);
        if !tensors.iter().any(|(n, _)| n == HEAD_TENSOR) {
            // A slot shaped and typed like the embedding, which a tied head equals; the
            // replacement fills it below.
            let Some(slot) = tensors
                .iter()
                .find(|(n, _)| config.is_token_embedding(n))
                .map(|(_, t)| t.empty_like())
            else {
                bail!(
                    "{}: no token embedding tensor to untie the head from",
                    source.display()
                );
            };
            tensors.push((HEAD_TENSOR.to_string(), slot));
        }
    }
    for (name, tensor) in replacements {
        let Some(slot) = tensors.iter_mut().find(|(n, _)| *n == name) else {
            bail!(
                "replacement tensor {name:?} is not in the checkpoint {} (first {kept} blocks)",
                source.display()
            );
        };
        if slot.1.size() != tensor.size() {
            bail!(
                "replacement tensor {name:?} has shape {:?}, the checkpoint's has {:?}",
                tensor.size(),
                slot.1.size()
            );
        }
        slot.1 = tensor
            .detach()
            .to_device(Device::Cpu)
            .to_kind(slot.1.kind());
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));

    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{}: cannot create", parent.display()))?;
    }
    let staging = out.with_file_name(format!(
        ".{}.partial-{}",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("{}: cannot create", staging.display()))?;
    std::fs::write(
        staging.join("config.json"),
        serde_json::to_string_pretty(&config_json)? + "\n",
    )
    .with_context(|| format!("{}: cannot write config.json", staging.display()))?;
    Tensor::write_safetensors(&tensors, staging.join("model.safetensors"))
        .with_context(|| format!("{}: cannot write model.safetensors", staging.display()))?;
    for name in CARRIED_FILES {
        let from = source.join(name);
        if from.is_file() {
            std::fs::copy(&from, staging.join(name))
                .with_context(|| format!("{}: cannot copy", from.display()))?;
        }
    }
    std::fs::rename(&staging, out)
        .with_context(|| format!("cannot move {} to {}", staging.display(), out.display()))?;
    Ok(())
}
