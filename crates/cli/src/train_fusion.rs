//! `detox train calibration` (the compact calibration LM of calibration-model fusion, or an expert
//! / anti-expert for DExperts) and `detox train align` (the map from its final hidden state to a
//! target's).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use fusion::{
    AlignMap, AlignOn, AlignOptions, CalibrationOptions, CalibrationTrainable, Readout,
    TrainingText,
};

use crate::labelled::SourceArgs;
use crate::ModelArgs;

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum CalibrationTrainArg {
    /// The kept blocks and the final norm; embeddings and head stay the base's.
    Blocks,
    /// Every parameter, embeddings and head too (a tied head is untied), as the paper's code.
    All,
}

#[derive(Args, Debug)]
#[command(mut_arg("model", |a| a.long("base").visible_alias("model").value_name("DIR")))]
pub struct TrainCalibrationArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Labelled sources whose non-toxic texts (label < 0.5) are trained on; e.g. paradetox
    /// (its neutral paraphrases) and jigsaw. Each source's held-out part measures perplexity.
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Train on the toxic texts (label >= 0.5) instead: an anti-expert for DExperts.
    #[arg(long)]
    pub toxic: bool,
    /// Blocks of the base kept.
    #[arg(long, default_value_t = 3)]
    pub layers: usize,
    /// Which parameters train.
    #[arg(long, value_enum, default_value = "blocks")]
    pub train: CalibrationTrainArg,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[arg(long, default_value_t = 1e-4)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// The model folder to write (must not exist). Default: .detox/calibration/<base folder>
    /// (with -toxic for --toxic), where calibration_fusion looks for it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run_calibration(args: &TrainCalibrationArgs) -> Result<()> {
    let base = args.model.model_dir();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| fusion::default_calibration_dir(&base, args.toxic));
    if out.exists() {
        bail!(
            "{}: already exists; choose another --out or remove it",
            out.display()
        );
    }
    let options = CalibrationOptions {
        layers: args.layers,
        epochs: args.epochs,
        learning_rate: args.learning_rate,
        weight_decay: args.weight_decay,
        batch_size: args.batch_size,
        max_tokens: args.max_tokens,
        seed: args.sources.seed,
        train: match args.train {
            CalibrationTrainArg::Blocks => CalibrationTrainable::Blocks,
            CalibrationTrainArg::All => CalibrationTrainable::All,
        },
    };
    // Before any data is read.
    options.validate(lm::ArchitectureConfig::from_file(&base.join("config.json"))?.num_layers())?;
    if let Some(threads) = args.model.threads {
        anyhow::ensure!(threads >= 1, "--threads must be at least 1");
        tch::set_num_threads(threads);
    }
    let sources = args.sources.load()?;
    let wanted = |label: f32| (label >= 0.5) == args.toxic;
    let pick = |items: &[data::LabelledText]| -> Vec<TrainingText> {
        items
            .iter()
            .filter(|t| wanted(t.label))
            .map(|t| TrainingText {
                prompt: String::new(),
                completion: t.text.clone(),
            })
            .collect()
    };
    let train: Vec<TrainingText> = sources.iter().flat_map(|s| pick(&s.train)).collect();
    let held_out: Vec<TrainingText> = sources.iter().flat_map(|s| pick(&s.held_out)).collect();
    let kind = if args.toxic { "toxic" } else { "non-toxic" };
    if train.is_empty() {
        bail!(
            "no {kind} training texts in --data {}",
            args.sources.data.join(",")
        );
    }
    let mut procedure = args.sources.procedure("detox train calibration");
    procedure.push_str(&format!(
        " --layers {} --epochs {} --learning-rate {:e} --batch-size {} --max-tokens {}",
        args.layers, args.epochs, args.learning_rate, args.batch_size, args.max_tokens
    ));
    if let Some(n) = args.sources.per_label {
        procedure.push_str(&format!(" --per-label {n}"));
    }
    if args.toxic {
        procedure.push_str(" --toxic");
    }
    if options.train != CalibrationTrainable::Blocks {
        procedure.push_str(&format!(" --train {}", options.train.name()));
    }
    let data = format!(
        "the {kind} texts of {} ({} train, {} held out; per-label cap {:?}, seed {})",
        args.sources.data.join(", "),
        train.len(),
        held_out.len(),
        args.sources.per_label,
        args.sources.seed
    );
    eprintln!("training on {data}");
    let record = fusion::train_calibration(
        &base,
        args.model.device,
        &train,
        &held_out,
        &options,
        procedure,
        data,
        &out,
        |line| eprintln!("{line}"),
    )?;
    println!(
        "held-out perplexity: {} before, {} after ({} texts); {:.0}s",
        record
            .held_out_perplexity_before
            .map_or("n/a".into(), |p| format!("{p:.2}")),
        record
            .held_out_perplexity_after
            .map_or("n/a".into(), |p| format!("{p:.2}")),
        record.held_out_texts,
        record.seconds
    );
    eprintln!("wrote {}", out.display());
    Ok(())
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum AlignFitArg {
    /// Least squares (with intercept) onto the target's final states: the map reconstructs them.
    Ridge,
    /// The paper's contrastive map (no bias); see --on.
    Infonce,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum AlignOnArg {
    /// Final hidden states of both models on the same texts.
    Hidden,
    /// Input embeddings of the tokens both vocabularies share (the paper's recipe).
    Embeddings,
}

#[derive(Args, Debug)]
#[command(mut_arg("model", |a| a.long("target").visible_alias("model").value_name("DIR")))]
pub struct TrainAlignArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The calibration model folder (default: .detox/calibration/<target folder>).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Texts the pairs come from: every text of the named sources' training parts, toxic or
    /// not; a seeded tenth of them is held out to measure the map.
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Default: the paper's InfoNCE map on embeddings, which fusion uses by default.
    #[arg(long, value_enum, default_value = "infonce")]
    pub fit: AlignFitArg,
    /// What InfoNCE pairs are (the paper: embeddings); a ridge fit always uses final states.
    #[arg(long, value_enum, default_value = "embeddings")]
    pub on: AlignOnArg,
    /// Ridge penalty, relative to the calibration states' mean variance.
    #[arg(long, default_value_t = 1e-3)]
    pub ridge: f64,
    #[arg(long, default_value_t = 10)]
    pub negatives: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0.1)]
    pub temperature: f64,
    #[arg(long, default_value_t = 50_000)]
    pub max_pairs: usize,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Where to write the map (JSON, tensors beside it). Default:
    /// <calibration folder>/align-<target folder>-<fit>.json, where calibration_fusion looks
    /// for it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run_align(args: &TrainAlignArgs) -> Result<()> {
    let fit = match args.fit {
        AlignFitArg::Ridge => Readout::Ridge,
        AlignFitArg::Infonce => Readout::InfoNce,
    };
    let options = AlignOptions {
        fit,
        ridge: args.ridge,
        on: match args.on {
            AlignOnArg::Hidden => AlignOn::HiddenStates,
            AlignOnArg::Embeddings => AlignOn::Embeddings,
        },
        negatives: args.negatives,
        learning_rate: args.learning_rate,
        batch_size: args.batch_size,
        epochs: args.epochs,
        temperature: args.temperature,
        max_pairs: args.max_pairs,
        max_tokens: args.max_tokens,
        seed: args.sources.seed,
    };
    options.validate()?;
    let target = args.model.load()?;
    let calibration_dir = args
        .calibration
        .clone()
        .unwrap_or_else(|| fusion::default_calibration_dir(&target.dir, false));
    let calibration = lm::LoadedModel::load(&calibration_dir, args.model.device, args.model.dtype)?;
    let sources = args.sources.load()?;
    let texts: Vec<&str> = sources
        .iter()
        .flat_map(|s| s.train.iter().map(|t| t.text.as_str()))
        .collect();
    let mut procedure = args.sources.procedure("detox train align");
    procedure.push_str(&format!(" --fit {}", fit.name()));
    match fit {
        Readout::Ridge => procedure.push_str(&format!(" --ridge {:e}", args.ridge)),
        _ => procedure.push_str(&format!(" --on {:?}", args.on).to_lowercase()),
    }
    let mut map =
        fusion::train_align(&calibration, &target, &texts, &options, procedure, |line| {
            eprintln!("{line}")
        })?;
    if let (Some(loss), Some(accuracy)) = (map.record.held_out_loss, map.record.held_out_accuracy) {
        println!(
            "held-out pairs: InfoNCE loss {loss:.4}, partner ranked first {:.1} % (chance {:.1} \
             %) over {} pairs",
            100.0 * accuracy,
            100.0 / (options.negatives + 1) as f64,
            map.record.held_out_pairs
        );
    }
    if let Some(r) = &map.record.reconstruction {
        print!("{}", reconstruction_table(r));
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| AlignMap::default_path(&calibration_dir, &target.dir, fit));
    map.save(&out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// The held-out reconstruction as a markdown table: per norm and α, KL(p ‖ p_fused) and top-1
/// agreement with this map and with a perfect one.
fn reconstruction_table(r: &fusion::Reconstruction) -> String {
    let mut out = format!(
        "held-out texts, {} positions: cosine(h_cal·A + b, h) {:.3}, relative squared error {:.3}\n\n\
         | norm | α | KL(p‖p_fused), this map | top-1 agreement | KL, perfect map | top-1 agreement |\n\
         |---|---:|---:|---:|---:|---:|\n",
        r.positions, r.cosine, r.relative_error
    );
    for perfect in &r.perfect_map_kl {
        let mapped = r
            .fused_kl
            .iter()
            .find(|k| k.norm == perfect.norm && k.alpha == perfect.alpha);
        let (kl, agree) = mapped.map_or(("–".into(), "–".into()), |k| {
            (format!("{:.4}", k.kl), format!("{:.3}", k.top1_agreement))
        });
        out.push_str(&format!(
            "| {} | {} | {kl} | {agree} | {:.4} | {:.3} |\n",
            perfect.norm, perfect.alpha, perfect.kl, perfect.top1_agreement
        ));
    }
    for identity in &r.identity_kl {
        out.push_str(&format!(
            "| identity readout (no map), none | {} | {:.4} | {:.3} | – | – |\n",
            identity.alpha, identity.kl, identity.top1_agreement
        ));
    }
    out
}
