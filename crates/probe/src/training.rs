//! Training the `minilm` scorer's head: MiniLM embeddings of labelled toxicity text (the shared
//! train / held-out split of every named source), a small classifier fitted on them, and held-out
//! ROC-AUC and accuracy per source recorded in the head's `training` field.

use anyhow::{bail, Result};
use data::labelled;
use lm::DeviceChoice;
use tch::{Kind, Tensor};

use crate::{MiniLmEmbedder, ProbeHead, TrainOptions};

/// What `detox train-scorer` trains on and how.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadTraining {
    /// Labelled sources (`data::labelled::SOURCES`).
    pub data: Vec<String>,
    /// At most this many toxic and this many non-toxic texts per source (seeded choice)…
    pub per_label: usize,
    /// …except the Jigsaw-style sentences, the acceptance domain.
    pub jigsaw_per_label: usize,
    pub seed: u64,
    /// Full-batch AdamW steps.
    pub steps: usize,
    /// Hidden layer width of the head (0: logistic regression).
    pub hidden: usize,
    pub device: DeviceChoice,
}

/// Trains the head; progress and held-out figures go to `log`.
pub fn train_minilm_head(training: &HeadTraining, log: &mut dyn FnMut(&str)) -> Result<ProbeHead> {
    let encoder =
        paths::require(&paths::minilm_dir(), "the MiniLM encoder").map_err(anyhow::Error::msg)?;
    let embedder = MiniLmEmbedder::load(&encoder, training.device)?;
    let mut train = Vec::new();
    let mut held_out = Vec::new();
    let mut sources = serde_json::Map::new();
    for name in &training.data {
        let per_label = if name == "jigsaw" {
            training.jigsaw_per_label
        } else {
            training.per_label
        };
        let set = labelled::load_source(name, Some(per_label), training.seed)?;
        let (fit, test) = labelled::shared_split(&set);
        let (toxic, clean) = set.toxic_and_clean();
        log(&format!(
            "{name}: {} texts ({toxic} toxic, {clean} non-toxic): {} train, {} held out",
            set.len(),
            fit.len(),
            test.len()
        ));
        sources.insert(
            name.clone(),
            serde_json::json!({ "texts": set.len(), "toxic": toxic, "non_toxic": clean, "train": fit.len(), "held_out": test.len() }),
        );
        train.extend(fit);
        held_out.push((name.clone(), test));
    }
    if train.is_empty() {
        bail!("no training texts in {:?}", training.data);
    }
    let embed = |items: &[data::LabelledText]| -> Result<(Tensor, Tensor)> {
        let texts: Vec<&str> = items.iter().map(|t| t.text.as_str()).collect();
        let labels: Vec<f32> = items.iter().map(|t| t.label).collect();
        Ok((embedder.embed(&texts, 64)?, Tensor::from_slice(&labels)))
    };
    let started = std::time::Instant::now();
    let (x, y) = embed(&train)?;
    log(&format!(
        "embedded {} training texts in {:.0}s",
        train.len(),
        started.elapsed().as_secs_f64()
    ));
    let options = TrainOptions {
        seed: training.seed as i64,
        steps: training.steps,
        hidden: training.hidden,
        ..TrainOptions::default()
    };
    let mut head = ProbeHead::train(
        &x,
        &y,
        "all-MiniLM-L6-v2, mean-pooled over the mask, L2-normalised",
        &options,
    )?;

    let mut report = serde_json::Map::new();
    for (name, test) in &held_out {
        if test.is_empty() {
            continue;
        }
        let (x, y) = embed(test)?;
        let scores = Vec::<f64>::try_from(head.predict(&x).to_kind(Kind::Double))?;
        let labels: Vec<bool> = Vec::<f32>::try_from(&y)?
            .iter()
            .map(|&l| l >= 0.5)
            .collect();
        let auc = metrics::roc_auc(&scores, &labels);
        let accuracy = scores
            .iter()
            .zip(&labels)
            .filter(|(s, l)| (**s >= 0.5) == **l)
            .count() as f64
            / labels.len() as f64;
        log(&format!(
            "held-out {name}: ROC-AUC {} accuracy {accuracy:.3} over {} texts",
            auc.map_or("n/a".into(), |a| format!("{a:.4}")),
            labels.len()
        ));
        report.insert(
            name.clone(),
            serde_json::json!({ "roc_auc": auc, "accuracy": accuracy, "texts": labels.len() }),
        );
    }
    head.training = serde_json::json!({
        "command": "detox train-scorer",
        "sources": sources,
        "per_label": training.per_label,
        "jigsaw_per_label": training.jigsaw_per_label,
        "seed": training.seed,
        "split": { "held_out": labelled::HELD_OUT, "seed": labelled::SPLIT_SEED },
        "options": options,
        "held_out_metrics": report,
    });
    Ok(head)
}
