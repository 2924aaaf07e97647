//! `detox train sasa`: fits SASA's linear discriminant on the model's own hidden states of
//! labelled toxicity text, prints its held-out accuracy and ROC-AUC, and writes the subspace file
//! that SASA decoding loads.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use data::labelled;
use sasa::{EmbedOptions, FitOptions, FitRecord, Subspace};

use crate::labelled::SourceArgs;
use crate::ModelArgs;

#[derive(Args, Debug)]
pub struct TrainSasaArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Texts run through the model together.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Texts are cut to their first this-many tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Eigenvalues of the pooled covariance below this fraction of the largest are dropped from
    /// its pseudo-inverse.
    #[arg(long, default_value_t = sasa::DEFAULT_EIGEN_CUTOFF)]
    pub eigen_cutoff: f64,
    /// Keep the hidden states of every source's train and held-out texts in this folder and
    /// reuse them on the next run (another cut-off, another mix of sources) with the same model.
    #[arg(long)]
    pub embedding_cache: Option<PathBuf>,
    /// Where to write the subspace (default: configs/sasa/<model folder name>.json, where SASA
    /// decoding looks for it).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &TrainSasaArgs) -> Result<()> {
    let sources = args.sources.load()?;
    let loaded = args.model.load()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Subspace::default_path(&loaded.dir));
    let options = FitOptions {
        embed: EmbedOptions {
            batch_size: args.batch_size,
            max_tokens: args.max_tokens,
        },
        eigen_cutoff: args.eigen_cutoff,
        record: FitRecord {
            procedure: args.sources.procedure("detox train sasa"),
            per_label: args.sources.per_label,
            seed: args.sources.seed,
            held_out_fraction: labelled::HELD_OUT,
            split_seed: labelled::SPLIT_SEED,
            ..FitRecord::default()
        },
        embedding_cache: args.embedding_cache.clone(),
    };
    let subspace = sasa::fit_subspace(&loaded, &sources, &options, |line| eprintln!("{line}"))?;
    let fit = &subspace.fit;
    eprintln!(
        "kept {} of {} eigenvalues (cut-off {:e} of the largest); {} toxic and {} non-toxic \
         training texts",
        fit.eigenvalues_kept,
        fit.eigenvalues_total,
        fit.eigen_cutoff,
        fit.train_toxic,
        fit.train_non_toxic
    );
    let show = |what: &str, m: &sasa::ClassifierMetrics| {
        println!(
            "{what}: accuracy {:.4}, ROC-AUC {} over {} texts",
            m.accuracy,
            m.roc_auc.map_or("n/a".into(), |a| format!("{a:.4}")),
            m.texts
        );
    };
    if let Some(train) = &fit.train_metrics {
        show("train", train);
    }
    for (name, metrics) in &fit.held_out_by_source {
        show(&format!("held-out {name}"), metrics);
    }
    match &fit.held_out {
        Some(fitted) => show("held-out, sources fitted on", fitted),
        None => eprintln!("no held-out texts of the sources fitted on"),
    }
    if let Some(all) = &fit.held_out_all_sources {
        show("held-out, every source", all);
    }
    subspace.save(&out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
