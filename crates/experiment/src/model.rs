//! Loading models the way every stage does: a device, a dtype and a libtorch thread budget, and a
//! spec's model reference turned into a Hugging Face folder (a GGUF is imported once beside it).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use lm::{DeviceChoice, DtypeChoice, LoadedModel};
use spec::ModelFormat;

use crate::monitor::Monitor;

/// Where and how models are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelOptions {
    pub device: DeviceChoice,
    pub dtype: DtypeChoice,
    /// libtorch intra-op threads (`None`: libtorch's choice, one per core).
    pub threads: Option<i32>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            device: DeviceChoice::Auto,
            dtype: DtypeChoice::Auto,
            threads: None,
        }
    }
}

impl ModelOptions {
    /// Applies the thread budget (process-wide in libtorch).
    pub fn apply_threads(&self) -> Result<()> {
        if let Some(threads) = self.threads {
            ensure!(threads >= 1, "--threads must be at least 1");
            tch::set_num_threads(threads);
        }
        Ok(())
    }

    pub fn load(&self, dir: &Path) -> Result<LoadedModel> {
        self.load_layers(dir, None)
    }

    /// [`ModelOptions::load`] keeping only the first `layers` blocks when given.
    pub fn load_layers(&self, dir: &Path, layers: Option<usize>) -> Result<LoadedModel> {
        self.apply_threads()?;
        LoadedModel::load_layers(dir, self.device, self.dtype, layers)
    }
}

/// The default model's folder, or an error that says how to make it.
pub fn default_model() -> Result<PathBuf> {
    let dir = paths::default_model_dir();
    ensure!(
        dir.exists(),
        "the default model is not imported yet at {} (run scripts/setup.sh)",
        dir.display()
    );
    Ok(dir)
}

/// A spec model's Hugging Face folder; a GGUF is imported once next to it (`<file>.hf/`).
pub fn hf_folder(model: &spec::ModelRef, monitor: &dyn Monitor) -> Result<PathBuf> {
    match model.format {
        ModelFormat::Hf => Ok(model.path.clone()),
        ModelFormat::Gguf => {
            let folder = model.path.with_extension("hf");
            if !folder.join("model.safetensors").is_file() {
                let partial = model.path.with_extension("hf.part");
                let _ = std::fs::remove_dir_all(&partial);
                monitor.note(&format!(
                    "  importing {} → {}",
                    model.path.display(),
                    folder.display()
                ));
                gguf::import_to_hf_folder(&model.path, &partial)?;
                std::fs::rename(&partial, &folder)?;
            }
            Ok(folder)
        }
    }
}
