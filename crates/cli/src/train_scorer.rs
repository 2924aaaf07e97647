//! `detox train-scorer`: fits the `minilm` scorer's logistic head on MiniLM embeddings of
//! labelled toxicity text, reports held-out ROC-AUC per source, and writes the head as JSON.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use data::labelled;
use lm::DeviceChoice;
use probe::{MiniLmEmbedder, ProbeHead, TrainOptions};
use tch::{Kind, Tensor};

#[derive(Args, Debug)]
pub struct TrainScorerArgs {
    /// Labelled sources to train on (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "jigsaw,davidson,paradetox,toxigen"
    )]
    pub data: Vec<String>,
    /// At most this many toxic and this many non-toxic texts per source (seeded choice)…
    #[arg(long, default_value_t = 3000)]
    pub per_label: usize,
    /// …except the Jigsaw-style sentences, the acceptance domain: by default all 6,648 of each.
    #[arg(long, default_value_t = 6648)]
    pub jigsaw_per_label: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Full-batch AdamW steps.
    #[arg(long, default_value_t = 1500)]
    pub steps: usize,
    /// Hidden layer width of the head (0: logistic regression).
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Where to write the head (default: the one the `minilm` scorer loads).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &TrainScorerArgs) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(probe::MiniLmScorer::default_head);
    let encoder =
        paths::require(&paths::minilm_dir(), "the MiniLM encoder").map_err(anyhow::Error::msg)?;
    let embedder = MiniLmEmbedder::load(&encoder, args.device)?;
    let mut train = Vec::new();
    let mut held_out = Vec::new();
    let mut sources = serde_json::Map::new();
    for name in &args.data {
        let per_label = if name == "jigsaw" {
            args.jigsaw_per_label
        } else {
            args.per_label
        };
        let set = labelled::load_source(name, Some(per_label), args.seed)?;
        let (fit, test) = labelled::shared_split(&set);
        let (toxic, clean) = set.toxic_and_clean();
        eprintln!(
            "{name}: {} texts ({toxic} toxic, {clean} non-toxic): {} train, {} held out",
            set.len(),
            fit.len(),
            test.len()
        );
        sources.insert(
            name.clone(),
            serde_json::json!({ "texts": set.len(), "toxic": toxic, "non_toxic": clean, "train": fit.len(), "held_out": test.len() }),
        );
        train.extend(fit);
        held_out.push((name.clone(), test));
    }
    if train.is_empty() {
        bail!("no training texts in {:?}", args.data);
    }
    let embed = |items: &[data::LabelledText]| -> Result<(Tensor, Tensor)> {
        let texts: Vec<&str> = items.iter().map(|t| t.text.as_str()).collect();
        let labels: Vec<f32> = items.iter().map(|t| t.label).collect();
        Ok((embedder.embed(&texts, 64)?, Tensor::from_slice(&labels)))
    };
    let started = std::time::Instant::now();
    let (x, y) = embed(&train)?;
    eprintln!(
        "embedded {} training texts in {:.0}s",
        train.len(),
        started.elapsed().as_secs_f64()
    );
    let options = TrainOptions {
        seed: args.seed as i64,
        steps: args.steps,
        hidden: args.hidden,
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
        eprintln!(
            "held-out {name}: ROC-AUC {} accuracy {accuracy:.3} over {} texts",
            auc.map_or("n/a".into(), |a| format!("{a:.4}")),
            labels.len()
        );
        report.insert(
            name.clone(),
            serde_json::json!({ "roc_auc": auc, "accuracy": accuracy, "texts": labels.len() }),
        );
    }
    head.training = serde_json::json!({
        "command": "detox train-scorer",
        "sources": sources,
        "per_label": args.per_label,
        "jigsaw_per_label": args.jigsaw_per_label,
        "seed": args.seed,
        "split": { "held_out": labelled::HELD_OUT, "seed": labelled::SPLIT_SEED },
        "options": options,
        "held_out_metrics": report,
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    head.save(&out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
