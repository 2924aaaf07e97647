//! The calibration model: a base LM cut to its embeddings, first L blocks, final norm and head,
//! then fine-tuned with next-token loss on non-toxic text, so its next-token distribution leans
//! towards what non-toxic text continues with. By default only the blocks and the final norm are
//! trained: the embeddings and the (tied) head stay the base's, which keeps the model in the
//! base's token space. [`CalibrationTrainable::All`] trains every parameter, as the paper's
//! released code does; a tied head is then untied. Written as an ordinary Hugging Face folder,
//! with a `calibration.json` record of how it was made.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use lm::sequences::{batches, perplexity, summed_nll, Sequence};
use lm::train::{epoch_order, AdamW};
use lm::{CausalLm, DeviceChoice, DtypeChoice, LoadedModel, TrainableSelection};
use serde::{Deserialize, Serialize};

/// One training text: the loss counts only the completion's tokens (the whole text when the
/// prompt is empty), each predicted from everything before it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingText {
    pub prompt: String,
    pub completion: String,
}

/// Which of the cut model's parameters train.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibrationTrainable {
    /// The kept blocks and the final norm; embeddings and head stay the base's.
    #[default]
    Blocks,
    /// Every parameter: blocks, final norm, embeddings and the head, untied from the embedding
    /// when the base ties them (the paper's code fine-tunes the whole model).
    All,
}

impl CalibrationTrainable {
    /// The name records and the `--train` flag use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blocks => "blocks",
            Self::All => "all",
        }
    }

    /// The selection of a model cut to `layers` blocks.
    pub fn selection(self, layers: usize) -> TrainableSelection {
        match self {
            Self::Blocks => TrainableSelection {
                blocks: 0..layers,
                final_norm: true,
                embeddings: false,
                head: false,
            },
            Self::All => TrainableSelection::everything(layers),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationOptions {
    /// Blocks of the base kept (the paper's code keeps 3).
    pub layers: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    /// AdamW weight decay on the trained weight matrices (not the norms).
    pub weight_decay: f64,
    pub batch_size: usize,
    /// Texts are cut to this many tokens (prompt and completion together).
    pub max_tokens: usize,
    /// Seeds the batch order of each epoch.
    pub seed: u64,
    /// What trained; records written before the option existed trained the blocks.
    #[serde(default)]
    pub train: CalibrationTrainable,
}

impl CalibrationOptions {
    pub fn validate(&self, base_layers: usize) -> Result<()> {
        if self.layers == 0 || self.layers > base_layers {
            bail!(
                "--layers is {} but the base has {base_layers} blocks (expected 1..={base_layers})",
                self.layers
            );
        }
        if self.epochs == 0 || self.batch_size == 0 || self.max_tokens < 2 {
            bail!("--epochs and --batch-size must be at least 1 and --max-tokens at least 2");
        }
        lm::train::check_rates(self.learning_rate, self.weight_decay)?;
        Ok(())
    }
}

/// What `calibration.json` in the model folder says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationRecord {
    pub format: String,
    /// The command that made it.
    pub procedure: String,
    /// The base model's folder name and checkpoint fingerprint.
    pub base: artifact::ModelIdentity,
    pub options: CalibrationOptions,
    /// Where the texts came from, in words (sources, label filter, counts).
    pub data: String,
    pub train_texts: usize,
    pub held_out_texts: usize,
    /// Completion tokens the loss counted per epoch.
    pub train_tokens: usize,
    /// Mean next-token loss (nats per completion token) over each epoch, as it trained.
    pub epoch_losses: Vec<f64>,
    /// Perplexity on the held-out texts' completions of the cut base before training, and of the
    /// trained calibration model.
    pub held_out_perplexity_before: Option<f64>,
    pub held_out_perplexity_after: Option<f64>,
    pub device: String,
    pub seconds: f64,
}

pub const RECORD_FILE: &str = "calibration.json";
pub const FORMAT: &str = "detox-calibration/1";

/// Encodes texts as sequences whose loss counts the completion's tokens (the whole text, less
/// its first token, when the prompt is empty), cut to `max_tokens`; texts left with nothing to
/// count are dropped.
fn encode(
    loaded: &LoadedModel,
    texts: &[TrainingText],
    max_tokens: usize,
) -> Result<Vec<Sequence>> {
    let mut out = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let prompt = if text.prompt.is_empty() {
            Vec::new()
        } else {
            loaded.tokenizer.encode(&text.prompt)?
        };
        let completion = loaded.tokenizer.encode(&text.completion)?;
        let mut ids = prompt.clone();
        ids.extend(&completion);
        ids.truncate(max_tokens);
        let sequence = Sequence {
            ids,
            counted_from: prompt.len(),
            label: 1.0,
            regularize: false,
        };
        if sequence.counted() > 0 {
            lm::check_token_ids(&sequence.ids, loaded.model.info().vocab_size)
                .with_context(|| format!("training text {i}"))?;
            out.push(sequence);
        }
    }
    if out.is_empty() {
        bail!("no training text has a completion token to learn from");
    }
    Ok(out)
}

/// Perplexity of `model` on the counted tokens of `sequences` (`None` without any).
fn held_out_perplexity(
    model: &dyn CausalLm,
    sequences: &[Sequence],
    batch_size: usize,
) -> Option<f64> {
    let (ppl, tokens) = perplexity(model, sequences, batch_size);
    (tokens > 0).then_some(ppl)
}

/// Where `detox train calibration` writes a calibration model built from `base` by default, and
/// where fusion and DExperts look for it: `.detox/calibration/<base folder name>`, with a `-toxic`
/// suffix for an anti-expert trained on toxic text (see [`artifact::locations::calibration_dir`]).
pub fn default_calibration_dir(base: &Path, toxic: bool) -> PathBuf {
    artifact::locations::calibration_dir(base, toxic)
}

/// Cuts the base in `base_dir` to `options.layers` blocks, trains it on `train` (measuring
/// held-out perplexity on `held_out` before and after), and writes the folder `out` with its
/// record. `out` must not exist; nothing is written unless training finishes.
#[allow(clippy::too_many_arguments)]
pub fn train_calibration(
    base_dir: &Path,
    device: DeviceChoice,
    train: &[TrainingText],
    held_out: &[TrainingText],
    options: &CalibrationOptions,
    procedure: String,
    data: String,
    out: &Path,
    mut log: impl FnMut(&str),
) -> Result<CalibrationRecord> {
    if out.exists() {
        bail!(
            "{}: already exists; choose another folder or remove it",
            out.display()
        );
    }
    let base_layers =
        lm::ArchitectureConfig::from_file(&base_dir.join("config.json"))?.num_layers();
    options.validate(base_layers)?;
    let started = std::time::Instant::now();
    // Trained in float32 whatever the device: half-precision AdamW states lose small updates.
    let loaded =
        LoadedModel::load_layers(base_dir, device, DtypeChoice::F32, Some(options.layers))?;
    let model = loaded.model.as_ref();
    let info = model.info().clone();
    let base = artifact::ModelIdentity::of_folder(base_dir, &info)?;
    let train_encoded = encode(&loaded, train, options.max_tokens)?;
    let held_encoded = if held_out.is_empty() {
        Vec::new()
    } else {
        encode(&loaded, held_out, options.max_tokens)?
    };
    let before = held_out_perplexity(model, &held_encoded, options.batch_size);
    log(&format!(
        "first {} of {base_layers} blocks of {} (training {}): held-out perplexity before \
         training {}",
        options.layers,
        base_dir.display(),
        options.train.name(),
        before.map_or("n/a".into(), |p| format!("{p:.2}"))
    ));

    let selection = options.train.selection(options.layers);
    let train_batches = batches(&train_encoded, options.batch_size, info.device);
    let train_tokens: usize = train_encoded.iter().map(Sequence::counted).sum();
    // Dropped once training ends, whatever happens: the model is frozen again.
    let mut optimizer = AdamW::new(
        model
            .trainable_tensors(&selection)
            .into_iter()
            .map(|(_, t)| t)
            .collect(),
        options.learning_rate,
        options.weight_decay,
        options.epochs * train_batches.len(),
    )?;
    let mut epoch_losses = Vec::new();
    for epoch in 0..options.epochs {
        let order = epoch_order(train_batches.len(), options.seed, epoch)?;
        let epoch_started = std::time::Instant::now();
        let (mut total, mut count) = (0.0, 0.0);
        for (done, &i) in order.iter().enumerate() {
            let (loss, n) = summed_nll(model, &train_batches[i]);
            if n == 0.0 {
                continue;
            }
            total += loss.double_value(&[]);
            count += n;
            optimizer.minimize(&(loss / n))?;
            if (done + 1) % 50 == 0 {
                log(&format!(
                    "  epoch {}: {}/{} batches, loss {:.4}",
                    epoch + 1,
                    done + 1,
                    order.len(),
                    total / count
                ));
            }
        }
        let mean = total / count.max(1.0);
        if !mean.is_finite() {
            bail!("training diverged in epoch {} (loss {mean})", epoch + 1);
        }
        log(&format!(
            "epoch {}/{}: next-token loss {mean:.4} ({:.0}s)",
            epoch + 1,
            options.epochs,
            epoch_started.elapsed().as_secs_f64()
        ));
        epoch_losses.push(mean);
    }
    drop(optimizer);
    let after = held_out_perplexity(model, &held_encoded, options.batch_size);
    log(&format!(
        "held-out perplexity after training {}",
        after.map_or("n/a".into(), |p| format!("{p:.2}"))
    ));
    let record = CalibrationRecord {
        format: FORMAT.into(),
        procedure,
        base,
        options: options.clone(),
        data,
        train_texts: train_encoded.len(),
        held_out_texts: held_encoded.len(),
        train_tokens,
        epoch_losses,
        held_out_perplexity_before: before,
        held_out_perplexity_after: after,
        device: format!("{:?}", info.device).to_lowercase(),
        seconds: started.elapsed().as_secs_f64(),
    };
    lm::checkpoint::write_folder(
        base_dir,
        out,
        Some(options.layers),
        model.export_tensors(&selection),
    )?;
    let record_path = out.join(RECORD_FILE);
    std::fs::write(&record_path, serde_json::to_string_pretty(&record)? + "\n")
        .with_context(|| format!("{}: cannot write", record_path.display()))?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_recorded_before_the_train_choice_read_as_blocks() {
        let old = r#"{"layers":3,"epochs":1,"learning_rate":0.0001,"weight_decay":0.01,
            "batch_size":16,"max_tokens":64,"seed":0}"#;
        let options: CalibrationOptions = serde_json::from_str(old).unwrap();
        assert_eq!(options.train, CalibrationTrainable::Blocks);

        let all = CalibrationOptions {
            train: CalibrationTrainable::All,
            ..options
        };
        let text = serde_json::to_string(&all).unwrap();
        assert!(text.contains(r#""train":"all""#), "{text}");
        assert_eq!(
            serde_json::from_str::<CalibrationOptions>(&text).unwrap(),
            all
        );
    }

    #[test]
    fn each_choice_selects_what_it_names() {
        let blocks = CalibrationTrainable::Blocks.selection(3);
        assert_eq!(blocks.blocks, 0..3);
        assert!(blocks.final_norm && !blocks.embeddings && !blocks.head);
        let all = CalibrationTrainable::All.selection(3);
        assert_eq!(all, TrainableSelection::everything(3));
    }
}
