//! Weights from a Hugging Face folder: `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`, converted to the requested device and dtype as they are read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

/// Named tensors of one checkpoint. Architectures take what they need by Hugging Face name.
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    /// Where the weights came from, for error messages.
    source: PathBuf,
}

impl Weights {
    /// Reads every tensor of the checkpoint in `dir`.
    pub fn from_hf_folder(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let (files, source) = checkpoint_files(dir)?;
        let mut tensors = HashMap::new();
        for file in &files {
            read_safetensors_into(file, device, kind, &mut tensors)?;
        }
        Ok(Self { tensors, source })
    }

    /// Builds weights from tensors already in memory (tests, converted checkpoints).
    pub fn from_tensors(tensors: HashMap<String, Tensor>, source: impl Into<PathBuf>) -> Self {
        Self {
            tensors,
            source: source.into(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Removes and returns a tensor, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let tensor = self
            .tensors
            .remove(name)
            .with_context(|| format!("{}: missing tensor {name:?}", self.source.display()))?;
        if tensor.size() != shape {
            bail!(
                "{}: tensor {name:?} has shape {:?}, the config implies {shape:?}",
                self.source.display(),
                tensor.size()
            );
        }
        Ok(tensor)
    }

    /// Replaces tensors by those of the safetensors `file` (converted like the checkpoint's).
    /// Every tensor of the file must name a tensor of the checkpoint with the same shape.
    pub fn override_from(&mut self, file: &Path, device: Device, kind: Kind) -> Result<()> {
        let mut replacements = HashMap::new();
        read_safetensors_into(file, device, kind, &mut replacements)?;
        for (name, tensor) in replacements {
            let Some(old) = self.tensors.get(&name) else {
                bail!(
                    "{}: tensor {name:?} is not in the checkpoint {}",
                    file.display(),
                    self.source.display()
                );
            };
            if old.size() != tensor.size() {
                bail!(
                    "{}: tensor {name:?} has shape {:?} but the checkpoint's has {:?}",
                    file.display(),
                    tensor.size(),
                    old.size()
                );
            }
            self.tensors.insert(name, tensor);
        }
        Ok(())
    }

    /// Drops every tensor whose name `unused` accepts (the blocks a truncated model leaves out),
    /// so the architecture's check for leftover tensors still catches everything else.
    pub fn drop_where(&mut self, unused: impl Fn(&str) -> bool) {
        self.tensors.retain(|name, _| !unused(name));
    }

    /// Names not taken by the architecture: a sign of a mismatched checkpoint.
    pub fn remaining(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn source(&self) -> &Path {
        &self.source
    }
}

/// The safetensors files of the checkpoint in `dir` (one file, or the shards its index lists, in
/// name order) and the file that names them (for errors).
pub fn checkpoint_files(dir: &Path) -> Result<(Vec<PathBuf>, PathBuf)> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if single.is_file() {
        Ok((vec![single.clone()], single))
    } else if index.is_file() {
        Ok((shard_files(&index)?, index))
    } else {
        bail!(
            "{}: no model.safetensors or model.safetensors.index.json",
            dir.display()
        );
    }
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index)
        .with_context(|| format!("{}: cannot read shard index", index.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", index.display()))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{}: no \"weight_map\" object", index.display()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = map
        .values()
        .filter_map(|v| v.as_str())
        .map(|name| dir.join(name))
        .collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        bail!("{}: the weight map names no files", index.display());
    }
    Ok(files)
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

fn read_safetensors_into(
    file: &Path,
    device: Device,
    kind: Kind,
    out: &mut HashMap<String, Tensor>,
) -> Result<()> {
    let handle =
        std::fs::File::open(file).with_context(|| format!("{}: cannot open", file.display()))?;
    // SAFETY: the map is read-only and dropped before this function returns; the tensors are
    // copied out of it. A file truncated underneath us is the usual mmap caveat.
    let map = unsafe { memmap2::Mmap::map(&handle) }
        .with_context(|| format!("{}: cannot map", file.display()))?;
    let st = SafeTensors::deserialize(&map)
        .with_context(|| format!("{}: not a valid safetensors file", file.display()))?;
    for (name, view) in st.tensors() {
        let file_kind = kind_of(view.dtype()).with_context(|| {
            format!(
                "{}: tensor {name:?} has unsupported dtype {:?}",
                file.display(),
                view.dtype()
            )
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(view.data(), &shape, file_kind)
            .with_context(|| format!("{}: cannot read tensor {name:?}", file.display()))?;
        // Integer buffers (e.g. GPT-2's attention bias masks) keep their kind.
        let target_kind = if is_float(file_kind) { kind } else { file_kind };
        out.insert(name, tensor.to_device(device).to_kind(target_kind));
    }
    Ok(())
}

/// Whether a tch kind is a floating-point type (converted to the requested dtype on load).
fn is_float(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double
    )
}
