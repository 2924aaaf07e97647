//! `detox train rad-reward`: fits RAD's reward head on a backbone's first N blocks with the
//! cumulative squared loss over prefixes (closed form, backbone frozen), prints held-out MSE and
//! ROC-AUC per source, and writes the head file RAD decoding loads.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use data::labelled;
use rad::{FeatureOptions, FitOptions, RewardFitRecord, RewardHead, RewardMetrics};

use crate::labelled::SourceArgs;
use crate::ModelArgs;

#[derive(Args, Debug)]
// The backbone is a model folder like any other; `--backbone` names it here (`--model` works too).
#[command(mut_arg("model", |a| a.long("backbone").visible_alias("model").value_name("DIR")))]
pub struct TrainRadArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Run the backbone's first this-many blocks (the final norm is applied to the last kept
    /// block's output); default all of them.
    #[arg(long)]
    pub layers: Option<usize>,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Texts run through the backbone together.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Texts are cut to their first this-many tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Ridge on w, relative to the mean diagonal of the features' weighted second moments.
    #[arg(long, default_value_t = rad::DEFAULT_RIDGE)]
    pub ridge: f64,
    /// Keep each source part's prefix statistics in this folder and reuse them on the next run
    /// (another ridge or mix of sources) with the same backbone and layers.
    #[arg(long)]
    pub feature_cache: Option<PathBuf>,
    /// Also train the last this-many blocks the reward model runs (and its final norm) together
    /// with the head, by AdamW on the same loss, starting from the closed-form head. 0 (the
    /// default) fits the head alone on the frozen backbone. The trained blocks are written beside
    /// the head as `<name>.blocks.safetensors`.
    #[arg(long, default_value_t = 0)]
    pub train_blocks: usize,
    /// Passes over the training texts when training blocks.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    #[arg(long, default_value_t = 3e-5)]
    pub learning_rate: f64,
    /// AdamW weight decay on the trained blocks' weight matrices.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Texts per optimiser step when training blocks.
    #[arg(long, default_value_t = 16)]
    pub train_batch_size: usize,
    /// Where to write the head (default: configs/rad/<backbone folder name>.json, where RAD
    /// decoding with that model looks for it).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &TrainRadArgs) -> Result<()> {
    let sources = args.sources.load()?;
    let loaded = args.model.load_layers(args.layers)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| RewardHead::default_path(&loaded.dir));
    let mut procedure = args.sources.procedure("detox train rad-reward");
    if let Some(layers) = args.layers {
        procedure.push_str(&format!(" --layers {layers}"));
    }
    let top_blocks = (args.train_blocks > 0).then_some(rad::TopBlockOptions {
        blocks: args.train_blocks,
        epochs: args.epochs,
        learning_rate: args.learning_rate,
        weight_decay: args.weight_decay,
        batch_size: args.train_batch_size,
        seed: args.sources.seed,
    });
    if let Some(top) = &top_blocks {
        // Before any text runs through the backbone.
        top.validate(loaded.model.info().num_layers)?;
        procedure.push_str(&format!(
            " --train-blocks {} --epochs {} --learning-rate {:e} --weight-decay {} \
             --train-batch-size {}",
            top.blocks, top.epochs, top.learning_rate, top.weight_decay, top.batch_size
        ));
    }
    let options = FitOptions {
        features: FeatureOptions {
            batch_size: args.batch_size,
            max_tokens: args.max_tokens,
        },
        ridge: args.ridge,
        record: RewardFitRecord {
            procedure,
            per_label: args.sources.per_label,
            seed: args.sources.seed,
            held_out_fraction: labelled::HELD_OUT,
            split_seed: labelled::SPLIT_SEED,
            ..RewardFitRecord::default()
        },
        feature_cache: args.feature_cache.clone(),
        top_blocks,
    };
    let head = rad::fit_reward(&loaded, &sources, &options, |line| eprintln!("{line}"))?;
    let fit = &head.fit;
    eprintln!(
        "first {} of {} blocks; {} training texts ({} prefixes); ridge {:e}",
        head.layers, head.total_layers, fit.train_texts, fit.train_prefixes, fit.ridge
    );
    let show = |what: &str, m: &RewardMetrics| {
        println!(
            "{what}: MSE {:.4} (last token), prefix loss {:.4}, ROC-AUC {}, Spearman {} over {} texts",
            m.mse,
            m.prefix_loss,
            m.roc_auc.map_or("n/a".into(), |a| format!("{a:.4}")),
            m.spearman.map_or("n/a".into(), |r| format!("{r:.4}")),
            m.texts
        );
    };
    if let Some(train) = &fit.train_metrics {
        show("train", train);
    }
    for (name, metrics) in &fit.held_out_by_source {
        show(&format!("held-out {name}"), metrics);
    }
    if let Some(trained) = &fit.trained_blocks {
        if let Some(frozen) = &trained.frozen_held_out {
            show(
                "held-out, sources fitted on, closed-form head on the frozen backbone",
                frozen,
            );
        }
        eprintln!(
            "trained blocks {}..{} with the head: epoch losses {:?}",
            trained.first_block, head.layers, trained.epoch_losses
        );
    }
    match &fit.held_out {
        Some(fitted) => show("held-out, sources fitted on", fitted),
        None => eprintln!("no held-out texts of the sources fitted on"),
    }
    if let Some(all) = &fit.held_out_all_sources {
        show("held-out, every source", all);
    }
    head.save_with_blocks(&out, loaded.model.as_ref())?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
