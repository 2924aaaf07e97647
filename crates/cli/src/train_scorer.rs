//! `detox train-scorer`: fits the `minilm` scorer's head ([`probe::train_minilm_head`]) and
//! writes it as JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lm::DeviceChoice;
use probe::HeadTraining;

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
    let training = HeadTraining {
        data: args.data.clone(),
        per_label: args.per_label,
        jigsaw_per_label: args.jigsaw_per_label,
        seed: args.seed,
        steps: args.steps,
        hidden: args.hidden,
        device: args.device,
    };
    let head = probe::train_minilm_head(&training, &mut |line| eprintln!("{line}"))?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    head.save(&out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
