//! The model a fitted artifact belongs to, and the checkpoint fingerprint that keeps the artifact
//! from being used with another model.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, Context, Result};
use lm::ModelInfo;
use serde::{Deserialize, Serialize};

/// The model an artifact belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelIdentity {
    /// The model folder's name, for people reading the file (not checked: folders move).
    pub folder: String,
    pub architecture: String,
    pub hidden_size: i64,
    pub vocab_size: i64,
    /// [`checkpoint_fingerprint`] of the folder: what is checked before decoding.
    pub fingerprint: String,
}

impl ModelIdentity {
    /// The identity of the model loaded from `dir`.
    pub fn of_folder(dir: &Path, info: &ModelInfo) -> Result<Self> {
        Ok(Self {
            folder: dir
                .file_name()
                .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into()),
            architecture: info.architecture.to_string(),
            hidden_size: info.hidden_size,
            vocab_size: info.vocab_size,
            fingerprint: checkpoint_fingerprint(dir)?,
        })
    }
}

/// Windows sampled from each tensor's bytes for the fingerprint: start, middle and end.
const WINDOWS_PER_TENSOR: u64 = 3;
const WINDOW_BYTES: u64 = 256;

/// A fingerprint of the checkpoint in `dir` that does not depend on where it lies or how its
/// tensors are ordered in the files: every tensor's name, dtype and shape, and three 256-byte
/// windows of its data (start, middle, end), sorted by name and hashed. It tells another
/// checkpoint (a fine-tune, another import, another size) from this one in well under a second,
/// without reading every weight; it does not promise to notice a single edited byte.
pub fn checkpoint_fingerprint(dir: &Path) -> Result<String> {
    let (files, _) = lm::weights::checkpoint_files(dir)?;
    // (name, description, absolute data range, file index)
    let mut tensors: Vec<(String, String, u64, u64, usize)> = Vec::new();
    for (file_index, path) in files.iter().enumerate() {
        let mut file =
            File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let mut length = [0u8; 8];
        file.read_exact(&mut length)
            .with_context(|| format!("{}: no safetensors header", path.display()))?;
        let header_len = u64::from_le_bytes(length);
        let file_len = file.metadata()?.len();
        if header_len > file_len.saturating_sub(8) {
            bail!(
                "{}: safetensors header length {header_len} exceeds the file",
                path.display()
            );
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)?;
        let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
            .with_context(|| format!("{}: safetensors header is not JSON", path.display()))?;
        let data_start = 8 + header_len;
        for (name, entry) in header {
            if name == "__metadata__" {
                continue;
            }
            let offsets = entry
                .get("data_offsets")
                .and_then(|o| o.as_array())
                .filter(|o| o.len() == 2)
                .and_then(|o| Some((o[0].as_u64()?, o[1].as_u64()?)))
                .with_context(|| {
                    format!("{}: tensor {name:?} has no data_offsets", path.display())
                })?;
            let description = format!(
                "{}|{}",
                entry.get("dtype").map_or(String::new(), |d| d.to_string()),
                entry.get("shape").map_or(String::new(), |s| s.to_string())
            );
            tensors.push((
                name,
                description,
                data_start + offsets.0,
                data_start + offsets.1,
                file_index,
            ));
        }
    }
    tensors.sort();
    let mut open: Vec<Option<File>> = files.iter().map(|_| None).collect();
    let mut bytes = Vec::new();
    let mut window = vec![0u8; WINDOW_BYTES as usize];
    for (name, description, start, end, file_index) in &tensors {
        bytes.extend_from_slice(&(name.len() as u64).to_le_bytes());
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(&(description.len() as u64).to_le_bytes());
        bytes.extend_from_slice(description.as_bytes());
        let path = &files[*file_index];
        let file = match &mut open[*file_index] {
            Some(file) => file,
            slot => slot.insert(File::open(path)?),
        };
        let len = end.saturating_sub(*start);
        let take = len.min(WINDOW_BYTES);
        for i in 0..WINDOWS_PER_TENSOR {
            let offset = start + (len - take) * i / (WINDOWS_PER_TENSOR - 1);
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut window[..take as usize])
                .with_context(|| format!("{}: tensor {name:?} is cut short", path.display()))?;
            bytes.extend_from_slice(&window[..take as usize]);
        }
    }
    Ok(format!("{:016x}", paths::stable_hash(&bytes)))
}
