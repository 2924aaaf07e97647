//! What each detoxification method costs at decoding time, side by side: plain sampling, SASA,
//! RAD and (when their models are trained) calibration fusion and DExperts. A command that prints
//! a table, not a timed test.
//!
//! ```text
//! cargo bench -p method-cost --bench cost [-- --threads N --tokens N --top-k K --beta B --reps N
//!                                            --batches 1,25 --device cpu|cuda]
//! ```
//!
//! The default model (SmolLM2-135M-Instruct), float32 on the CPU (bfloat16 on CUDA), 20 new
//! tokens, temperature 1, no stop at end-of-sequence; the same two batches as SASA's cap sweep
//! (`benches/sasa_caps.rs`):
//!
//! * batch 1: the first 3 prompts of `crates/decode/benches/prompts.txt`, one sample each;
//! * batch 25: 25 samples of the first prompt, one batch.
//!
//! Configurations: plain sampling (top-p 0.9); SASA β = 10 capped at 20 candidates (top-p 0.9,
//! as in the experiments); RAD β = 10, k = 20 with the committed reward head
//! (`configs/rad/<model>.json`) under top-p 0.9 (what the experiment spec runs: the top-20 of the
//! nucleus) and under top-p 1 (RAD's own protocol: always 20 candidates); calibration fusion
//! (α 0.3) and DExperts (α 2) when their models lie at their default locations. Columns: new
//! tokens per second over the whole call; decode milliseconds per token and its ratio to plain
//! sampling's (wall and CPU time); candidates scored per row-step; where the method's time went;
//! the mean score of the drawn tokens (SASA: margin, positive = non-toxic side; RAD: reward, a
//! toxicity estimate); peak resident memory during the call, with the resident memory before it.
//! The reward model is loaded once, before any call: its weights show in the "start" figure of
//! every later row, and the line above the table gives what loading it added.
//!
//! One warm-up call, then `--reps` rounds (default 3) each running every configuration once in
//! turn; the table shows each configuration's median decode time (and the highest peak memory).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use artifact::locations;
use decode::measure::{load_average, resident_mib};
use decode::{Request, Settings, Steering};
use fusion::{CalibrationFusion, DExperts, DExpertsParams, FusionParams, MapNorm};
use lm::{DtypeChoice, LoadedModel};
use method_cost::{
    batches, encode_prompts, generate_with, load_default_model, measure, median_run, memory_cell,
    parse_options, print_batches, print_machine, print_table, settings, Measured, Options,
};
use rad::{Rad, RadParams, RadStats, RewardHead, RewardModel};
use sasa::{MarginTransform, Sasa, SasaParams, SasaStats, Subspace};

const USAGE: &str =
    "--threads N, --tokens N, --top-k K, --beta B, --reps N, --batches 1,25, --device D";

/// The shared options and RAD's k (also SASA's cap on candidates).
fn parse() -> Result<(Options, usize)> {
    let mut top_k = 20;
    let options = parse_options(USAGE, |flag, value| {
        if flag != "--top-k" {
            return Ok(false);
        }
        top_k = value()?.parse()?;
        Ok(true)
    })?;
    if top_k < 1 {
        bail!("--top-k must be at least 1");
    }
    Ok((options, top_k))
}

/// A configuration's method counters, as the table shows them.
enum Counters {
    Plain,
    Sasa(SasaStats),
    Rad(RadStats),
    /// A fusion method's seconds in its own work (followers and mixing).
    Fusion(f64),
}

/// Every method measured, built once before any call.
struct Methods {
    sasa: Sasa,
    rad: Rad,
    /// Calibration fusion and DExperts, those whose models were trained.
    fusion: Vec<(&'static str, Box<dyn Steering>)>,
}

/// What loading RAD's reward model took, for the report.
struct RewardLoad {
    path: PathBuf,
    head: RewardHead,
    seconds: f64,
    /// Resident MiB it added.
    mib: Option<f64>,
}

fn load_rad(loaded: &LoadedModel, options: &Options, top_k: usize) -> Result<(Rad, RewardLoad)> {
    let path = RewardHead::default_path(&loaded.dir);
    let resident_before = resident_mib();
    let started = Instant::now();
    let dtype = DtypeChoice::of_kind(loaded.model.info().kind)?;
    let reward = RewardModel::load(&path, &loaded.dir, options.device, dtype)?;
    let seconds = started.elapsed().as_secs_f64();
    let mib = resident_mib()
        .zip(resident_before)
        .map(|(after, before)| after - before);
    let head = reward.head().clone();
    let params = RadParams {
        beta: options.beta,
        top_k,
    };
    let rad = Rad::new(reward, &loaded.tokenizer, params)?;
    Ok((
        rad,
        RewardLoad {
            path,
            head,
            seconds,
            mib,
        },
    ))
}

/// Calibration fusion (α 0.3) and DExperts (α 2) when their models were trained (see
/// experiments/word-filter-sasa-fusion.yaml); rows are skipped, and say so, otherwise.
fn load_fusion(
    loaded: &LoadedModel,
    options: &Options,
) -> Result<Vec<(&'static str, Box<dyn Steering>)>> {
    let dir = &loaded.dir;
    let info = loaded.model.info();
    let calibration_dir = locations::calibration_dir(dir, false);
    let anti_dir = locations::calibration_dir(dir, true);
    let beside = |d: &Path| LoadedModel::load(d, options.device, DtypeChoice::of_kind(info.kind)?);
    let mut methods: Vec<(&'static str, Box<dyn Steering>)> = Vec::new();
    // The identity readout: a ridge or InfoNCE map adds one small matrix product per step.
    if calibration_dir.is_dir() {
        methods.push((
            "fusion α 0.3",
            Box::new(CalibrationFusion::new(
                beside(&calibration_dir)?,
                None,
                &loaded.tokenizer,
                info.vocab_size,
                FusionParams {
                    alpha: 0.3,
                    norm: MapNorm::None,
                },
            )?),
        ));
    } else {
        println!(
            "(no calibration fusion rows: {} is missing)",
            calibration_dir.display()
        );
    }
    if calibration_dir.is_dir() && anti_dir.is_dir() {
        methods.push((
            "DExperts α 2",
            Box::new(DExperts::new(
                beside(&calibration_dir)?,
                beside(&anti_dir)?,
                &loaded.tokenizer,
                info.vocab_size,
                DExpertsParams {
                    alpha: 2.0,
                    filter_p: 0.9,
                },
            )?),
        ));
    } else {
        println!(
            "(no DExperts rows: {} or {} is missing)",
            calibration_dir.display(),
            anti_dir.display()
        );
    }
    Ok(methods)
}

/// Which method a configuration runs.
#[derive(Clone, Copy)]
enum Method {
    Plain,
    Sasa,
    Rad,
    /// The index into [`Methods::fusion`].
    Fusion(usize),
}

/// A row of the table: its name, top-p (none: 1) and method.
struct Configuration {
    name: &'static str,
    top_p: Option<f64>,
    method: Method,
}

/// Plain, SASA, RAD under the nucleus and on its own protocol, then the fusion methods.
fn configurations(methods: &Methods) -> Vec<Configuration> {
    let row = |name, top_p, method| Configuration {
        name,
        top_p,
        method,
    };
    let mut rows = vec![
        row("plain", Some(0.9), Method::Plain),
        row("SASA", Some(0.9), Method::Sasa),
        row("RAD", Some(0.9), Method::Rad),
        row("RAD", None, Method::Rad),
    ];
    for (i, (name, _)) in methods.fusion.iter().enumerate() {
        rows.push(row(name, Some(0.9), Method::Fusion(i)));
    }
    rows
}

/// A fusion method's seconds in its own work so far (its `<name>_seconds` counters).
fn fusion_seconds(method: &dyn Steering) -> f64 {
    method
        .counters()
        .iter()
        .filter(|(name, _)| name.ends_with("_seconds"))
        .map(|(_, v)| v)
        .sum()
}

/// One measured call of `method`.
fn run_once(
    loaded: &LoadedModel,
    requests: &[Request],
    settings: &Settings,
    methods: &mut Methods,
    method: Method,
) -> Result<Measured<Counters>> {
    measure(|| match method {
        Method::Plain => Ok((
            generate_with(loaded, requests, settings, None)?,
            Counters::Plain,
        )),
        Method::Sasa => {
            let sasa = &mut methods.sasa;
            sasa.take_stats();
            let stats = generate_with(loaded, requests, settings, Some(&mut *sasa))?;
            Ok((stats, Counters::Sasa(sasa.take_stats())))
        }
        Method::Rad => {
            let rad = &mut methods.rad;
            rad.take_stats();
            let stats = generate_with(loaded, requests, settings, Some(&mut *rad))?;
            Ok((stats, Counters::Rad(rad.take_stats())))
        }
        Method::Fusion(i) => {
            let fusion = methods.fusion[i].1.as_mut();
            let before = fusion_seconds(fusion);
            let stats = generate_with(loaded, requests, settings, Some(&mut *fusion))?;
            Ok((stats, Counters::Fusion(fusion_seconds(fusion) - before)))
        }
    })
}

/// The report's lines above the table.
fn print_preamble(
    loaded: &LoadedModel,
    options: &Options,
    top_k: usize,
    reward: &RewardLoad,
    encoded: &[Vec<i64>],
) {
    println!("## RAD cost benchmark (Rust, tch)\n");
    print_machine(loaded.model.info());
    println!(
        "- model: {}; {} new tokens, temperature 1, no stop at EOS; β = {} for SASA (softmax, \
         cap {top_k}) and RAD (k = {top_k})",
        loaded.dir.display(),
        options.tokens,
        options.beta,
    );
    println!(
        "- RAD reward model: {} — first {} of {} blocks of {}; loading it took {:.1} s and {} MiB \
         resident",
        reward.path.display(),
        reward.head.layers,
        reward.head.total_layers,
        reward.head.backbone.folder,
        reward.seconds,
        reward.mib.map_or("n/a".into(), |m| format!("{m:.0}"))
    );
    print_batches(encoded, options.reps);
}

/// The (candidates per row-step, time split, mean drawn score) cells of a call.
fn method_cells(run: &Measured<Counters>) -> (String, String, String) {
    let decode = run.stats.decode_seconds;
    let share = |s: f64| format!("{:.0}", s / decode * 100.0);
    match &run.counters {
        Counters::Plain => ("–".into(), "–".into(), "–".into()),
        Counters::Sasa(s) => {
            let rest = decode - s.fork_seconds - s.forward_seconds - s.margin_seconds;
            (
                format!("{:.1}", s.mean_candidates()),
                format!(
                    "– / {} / {} / {} / {} %",
                    share(s.fork_seconds),
                    share(s.forward_seconds),
                    share(s.margin_seconds),
                    share(rest)
                ),
                s.mean_drawn_margin()
                    .map_or("–".into(), |m| format!("margin {m:+.3}")),
            )
        }
        Counters::Fusion(seconds) => (
            "–".into(),
            format!("{} % in the method's followers and mixing", share(*seconds)),
            "–".into(),
        ),
        Counters::Rad(s) => {
            // The reward prefill runs inside the loop's decode time (in `begin`).
            let rest =
                decode - s.prefill_seconds - s.fork_seconds - s.forward_seconds - s.reward_seconds;
            (
                format!("{:.1}", s.mean_candidates()),
                format!(
                    "{} / {} / {} / {} / {} %",
                    share(s.prefill_seconds),
                    share(s.fork_seconds),
                    share(s.forward_seconds),
                    share(s.reward_seconds),
                    share(rest)
                ),
                s.mean_drawn_reward()
                    .map_or("–".into(), |r| format!("reward {r:.3}")),
            )
        }
    }
}

/// A table line: `run` of `configuration` at `batch`, its ratios against `plain`.
fn table_line(
    batch: usize,
    configuration: &Configuration,
    run: &Measured<Counters>,
    plain: &Measured<Counters>,
) -> String {
    let ms = run.decode_ms_per_token();
    let cpu_ratio = run.cpu_per_token() / plain.cpu_per_token();
    let (candidates, split, drawn) = method_cells(run);
    format!(
        "| {batch} | {} | {} | {} | {:.1} | {ms:.1} | {:.2} / {cpu_ratio:.2} | {candidates} | \
         {split} | {drawn} | {} |",
        configuration.name,
        configuration.top_p.map_or("1".into(), |p| p.to_string()),
        run.stats.new_tokens,
        run.stats.tokens_per_second(),
        ms / plain.decode_ms_per_token(),
        memory_cell(run.memory)
    )
}

/// `--reps` rounds of every configuration in turn on `requests` (at batch size `batch`); each
/// configuration's median.
fn measure_batch(
    loaded: &LoadedModel,
    batch: usize,
    requests: &[Request],
    options: &Options,
    methods: &mut Methods,
    configurations: &[Configuration],
) -> Result<Vec<Measured<Counters>>> {
    let mut runs: Vec<Vec<Measured<Counters>>> =
        configurations.iter().map(|_| Vec::new()).collect();
    for _ in 0..options.reps {
        for (configuration, runs) in configurations.iter().zip(&mut runs) {
            let settings = settings(options.tokens, batch, configuration.top_p);
            runs.push(run_once(
                loaded,
                requests,
                &settings,
                methods,
                configuration.method,
            )?);
        }
    }
    Ok(runs.into_iter().map(median_run).collect())
}

/// One short call of each method: libtorch's first calls allocate and pick kernels.
fn warm_up(loaded: &LoadedModel, encoded: &[Vec<i64>], methods: &mut Methods) -> Result<()> {
    let warm = Request::samples("warm", &encoded[0], 2);
    let short = settings(3, 2, Some(0.9));
    let fusion = (0..methods.fusion.len()).map(Method::Fusion);
    for method in [Method::Plain, Method::Sasa, Method::Rad]
        .into_iter()
        .chain(fusion)
    {
        run_once(loaded, &warm, &short, methods, method)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let (options, top_k) = parse()?;
    let loaded = load_default_model(&options)?;
    let (rad, reward) = load_rad(&loaded, &options, top_k)?;
    let sasa = Sasa::load(
        &Subspace::default_path(&loaded.dir),
        &loaded.dir,
        SasaParams {
            beta: options.beta,
            margin_transform: MarginTransform::Softmax,
            max_candidates: Some(top_k),
            eos_bonus: true,
        },
    )?;
    let fusion = load_fusion(&loaded, &options)?;
    let mut methods = Methods { sasa, rad, fusion };
    let configurations = configurations(&methods);
    let encoded = encode_prompts(&loaded)?;
    print_preamble(&loaded, &options, top_k, &reward, &encoded);
    warm_up(&loaded, &encoded, &mut methods)?;

    let load_before = load_average();
    let mut lines = Vec::new();
    for (batch, requests) in batches(&encoded, &options.batches) {
        let runs = measure_batch(
            &loaded,
            batch,
            &requests,
            &options,
            &mut methods,
            &configurations,
        )?;
        for (configuration, run) in configurations.iter().zip(&runs) {
            lines.push(table_line(batch, configuration, run, &runs[0]));
        }
    }
    print_table(
        &load_before,
        "| batch | method | top-p | new tokens | tok/s | decode ms/token | × plain per token (wall \
         / CPU) | candidates per row-step | reward prefill / fork / forward / score / rest of \
         decode | mean drawn score | peak RSS MiB (start) |",
        "|---:|---|---:|---:|---:|---:|---|---:|---|---|---|",
        &lines,
    );
    println!(
        "\n(tok/s over the whole call, prefill included; wall ratios over decoding only, CPU \
         ratios over the whole call. SASA's split has no prefill of its own (its forward is the \
         LM's, reused as the next state); RAD's score column is the head, the copy to the CPU \
         and the re-weighting; \"rest of decode\" is the loop's own work, which plain sampling \
         has too.)"
    );
    Ok(())
}
