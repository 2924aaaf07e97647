//! RAD's cost against plain sampling, SASA, and (when their models are trained) calibration
//! fusion and DExperts: a command that prints a table, not a timed test.
//!
//! ```text
//! cargo bench -p rad --bench cost [-- --threads N --tokens N --top-k K --beta B --reps N
//!                                     --batches 1,25 --device cpu|cuda]
//! ```
//!
//! The default model (SmolLM2-135M-Instruct), float32 on the CPU (bfloat16 on CUDA), 20 new
//! tokens, temperature 1, no stop at end-of-sequence; the same two batches as SASA's benchmark
//! (`crates/sasa/benches/cost.rs`):
//!
//! * batch 1: the first 3 prompts of `crates/decode/benches/prompts.txt`, one sample each;
//! * batch 25: 25 samples of the first prompt, one batch.
//!
//! Configurations: plain sampling (top-p 0.9); SASA β = 10 capped at 20 candidates (top-p 0.9,
//! as in the experiments); RAD β = 10, k = 20 with the committed reward head
//! (`configs/rad/<model>.json`) under top-p 0.9 (what the experiment spec runs: the top-20 of the
//! nucleus) and under top-p 1 (RAD's own protocol: always 20 candidates). Columns: new tokens per
//! second over the whole call; decode milliseconds per token and its ratio to plain sampling's
//! (wall and CPU time); candidates scored per row-step; where the method's time went; the mean
//! score of the drawn tokens (SASA: margin, positive = non-toxic side; RAD: reward, a toxicity
//! estimate); peak resident memory during the call, with the resident memory before it. The
//! reward model is loaded once, before any call: its weights show in the "start" figure of every
//! later row, and the line above the table gives what loading it added.
//!
//! One warm-up call, then `--reps` rounds (default 3) each running every configuration once in
//! turn; the table shows each configuration's median decode time (and the highest peak memory).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use decode::measure::{
    bench_prompts, cpu_seconds, load_average, median, peak_resident_mib, reset_peak_resident,
    resident_mib,
};
use decode::{generate_steered, GenerationStats, Request, SamplingParams, Settings, Steering};
use fusion::{AlignMap, CalibrationFusion, DExperts, DExpertsParams, FusionParams};
use lm::{DeviceChoice, DtypeChoice, LoadedModel};
use rad::{Rad, RadParams, RadStats, RewardHead, RewardModel};
use sasa::{MarginTransform, Sasa, SasaParams, SasaStats, Subspace};

struct Options {
    threads: i32,
    tokens: usize,
    top_k: usize,
    beta: f64,
    reps: usize,
    batches: Vec<usize>,
    device: DeviceChoice,
}

fn parse_options() -> Result<Options> {
    let mut options = Options {
        threads: 2,
        tokens: 20,
        top_k: 20,
        beta: 10.0,
        reps: 3,
        batches: vec![1, 25],
        device: DeviceChoice::Cpu,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            "--threads" => options.threads = value("--threads")?.parse()?,
            "--tokens" => options.tokens = value("--tokens")?.parse()?,
            "--top-k" => options.top_k = value("--top-k")?.parse()?,
            "--beta" => options.beta = value("--beta")?.parse()?,
            "--reps" => options.reps = value("--reps")?.parse()?,
            "--device" => options.device = value("--device")?.parse()?,
            "--batches" => {
                options.batches = value("--batches")?
                    .split(',')
                    .map(|b| b.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?;
                if let Some(other) = options.batches.iter().find(|b| ![1, 25].contains(*b)) {
                    bail!("--batches: {other} is not one of the benchmark's batch sizes (1, 25)");
                }
            }
            other => bail!(
                "unknown argument {other:?} (expected --threads N, --tokens N, --top-k K, \
                 --beta B, --reps N, --batches 1,25, --device D)"
            ),
        }
    }
    if options.threads < 1 || options.tokens < 1 || options.reps < 1 || options.top_k < 1 {
        bail!("--threads, --tokens, --reps and --top-k must be at least 1");
    }
    Ok(options)
}

/// A configuration's method counters, as the table shows them.
enum Counters {
    Plain,
    Sasa(SasaStats),
    Rad(RadStats),
    /// A fusion method's seconds in its own work (followers and mixing).
    Fusion(f64),
}

struct Measured {
    stats: GenerationStats,
    counters: Counters,
    /// Peak resident MiB during the call and resident MiB before it.
    memory: Option<(f64, f64)>,
    cpu: f64,
}

enum Method<'a> {
    Plain,
    Sasa(&'a mut Sasa),
    Rad(&'a mut Rad),
    /// Calibration fusion or DExperts: counters `<name>_seconds`.
    Fusion(&'a mut (dyn Steering + 'a)),
}

fn run_once(
    loaded: &LoadedModel,
    requests: &[Request],
    settings: &Settings,
    method: Method,
) -> Result<Measured> {
    let before = resident_mib();
    let reset = reset_peak_resident();
    let cpu_before = cpu_seconds().unwrap_or(0.0);
    let model = loaded.model.as_ref();
    let eos = &loaded.eos_token_ids;
    let (stats, counters) = match method {
        Method::Plain => (
            generate_steered(model, eos, requests, settings, &mut [], |_| Ok(()))?,
            Counters::Plain,
        ),
        Method::Sasa(sasa) => {
            sasa.take_stats();
            let mut steering: Vec<Box<dyn Steering + '_>> = vec![Box::new(&mut *sasa)];
            let stats =
                generate_steered(model, eos, requests, settings, &mut steering, |_| Ok(()))?;
            drop(steering);
            (stats, Counters::Sasa(sasa.take_stats()))
        }
        Method::Rad(rad) => {
            rad.take_stats();
            let mut steering: Vec<Box<dyn Steering + '_>> = vec![Box::new(&mut *rad)];
            let stats =
                generate_steered(model, eos, requests, settings, &mut steering, |_| Ok(()))?;
            drop(steering);
            (stats, Counters::Rad(rad.take_stats()))
        }
        Method::Fusion(method) => {
            let seconds = |m: &dyn Steering| {
                m.counters()
                    .iter()
                    .filter(|(name, _)| name.ends_with("_seconds"))
                    .map(|(_, v)| v)
                    .sum::<f64>()
            };
            let before = seconds(&*method);
            let mut steering: Vec<Box<dyn Steering + '_>> = vec![Box::new(&mut *method)];
            let stats =
                generate_steered(model, eos, requests, settings, &mut steering, |_| Ok(()))?;
            drop(steering);
            (stats, Counters::Fusion(seconds(&*method) - before))
        }
    };
    let cpu = cpu_seconds().unwrap_or(0.0) - cpu_before;
    let memory = match (reset, peak_resident_mib(), before) {
        (true, Some(peak), Some(before)) => Some((peak, before)),
        _ => None,
    };
    Ok(Measured {
        stats,
        counters,
        memory,
        cpu,
    })
}

/// The call with the median decode time, carrying the highest peak of all the calls.
fn median_run(mut runs: Vec<Measured>) -> Measured {
    let peak = runs
        .iter()
        .filter_map(|r| r.memory)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let middle = median(runs.iter().map(|r| r.stats.decode_seconds).collect());
    let index = runs
        .iter()
        .position(|r| r.stats.decode_seconds >= middle)
        .unwrap_or(0);
    let mut run = runs.swap_remove(index);
    run.memory = peak;
    run
}

fn main() -> Result<()> {
    let options = parse_options()?;
    tch::set_num_threads(options.threads);
    let dir = paths::require(&paths::default_model_dir(), "the default model")
        .map_err(anyhow::Error::msg)?;
    let loaded = LoadedModel::load(&dir, options.device, DtypeChoice::Auto)?;
    let info = loaded.model.info().clone();
    let subspace_path = Subspace::default_path(&dir);
    let head_path = RewardHead::default_path(&dir);
    let resident_before_reward = resident_mib();
    let reward_load = Instant::now();
    let reward = RewardModel::load(
        &head_path,
        &dir,
        options.device,
        DtypeChoice::of_kind(info.kind)?,
    )?;
    let reward_seconds = reward_load.elapsed().as_secs_f64();
    let reward_mib = resident_mib()
        .zip(resident_before_reward)
        .map(|(after, before)| after - before);
    let head = reward.head().clone();
    let mut rad = Rad::new(
        reward,
        &loaded.tokenizer,
        RadParams {
            beta: options.beta,
            top_k: options.top_k,
        },
    )?;
    let mut sasa = Sasa::load(
        &subspace_path,
        &dir,
        SasaParams {
            beta: options.beta,
            margin_transform: MarginTransform::Softmax,
            max_candidates: Some(options.top_k),
        },
    )?;
    // Calibration fusion (α 0.3) and DExperts (α 2) when their models were trained (see
    // experiments/word-filter-sasa-fusion.yaml); rows are skipped, and say so, otherwise.
    let calibration_dir = paths::state_dir().join("calibration").join(
        dir.file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned()),
    );
    let anti_dir = calibration_dir.with_file_name(format!(
        "{}-toxic",
        calibration_dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    let align_path = AlignMap::default_path(&calibration_dir, &dir);
    let beside = |d: &std::path::Path| {
        LoadedModel::load(d, options.device, DtypeChoice::of_kind(info.kind)?)
    };
    let mut fusion_methods: Vec<(&str, Box<dyn Steering>)> = Vec::new();
    if calibration_dir.is_dir() && align_path.is_file() {
        fusion_methods.push((
            "fusion α 0.3",
            Box::new(CalibrationFusion::new(
                beside(&calibration_dir)?,
                AlignMap::load(&align_path, &calibration_dir, &dir)?,
                &loaded.tokenizer,
                info.vocab_size,
                FusionParams { alpha: 0.3 },
            )?),
        ));
    } else {
        println!(
            "(no calibration fusion rows: {} or {} is missing)",
            calibration_dir.display(),
            align_path.display()
        );
    }
    if calibration_dir.is_dir() && anti_dir.is_dir() {
        fusion_methods.push((
            "DExperts α 2",
            Box::new(DExperts::new(
                beside(&calibration_dir)?,
                beside(&anti_dir)?,
                &loaded.tokenizer,
                info.vocab_size,
                DExpertsParams { alpha: 2.0 },
            )?),
        ));
    } else {
        println!(
            "(no DExperts rows: {} or {} is missing)",
            calibration_dir.display(),
            anti_dir.display()
        );
    }
    let prompts = bench_prompts()?;
    let encoded: Vec<Vec<i64>> = prompts
        .iter()
        .take(3)
        .map(|p| loaded.tokenizer.encode(p))
        .collect::<Result<_>>()?;
    let settings = |batch_size, top_p: Option<f64>| Settings {
        max_new_tokens: options.tokens,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p,
        },
        seed: 1234,
        batch_size,
        stop_at_eos: false,
    };

    println!("## RAD cost benchmark (Rust, tch)\n");
    println!(
        "- machine: {} logical cores; intra-op threads {}; device {:?}, {:?}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        tch::get_num_threads(),
        info.device,
        info.kind
    );
    println!(
        "- model: {}; {} new tokens, temperature 1, no stop at EOS; β = {} for SASA (softmax, \
         cap {k}) and RAD (k = {k})",
        dir.display(),
        options.tokens,
        options.beta,
        k = options.top_k
    );
    println!(
        "- RAD reward model: {} — first {} of {} blocks of {}; loading it took {reward_seconds:.1} s \
         and {} MiB resident",
        head_path.display(),
        head.layers,
        head.total_layers,
        head.backbone.folder,
        reward_mib.map_or("n/a".into(), |m| format!("{m:.0}"))
    );
    println!(
        "- batch 1: prompts {:?} tokens long, one sample each; batch 25: 25 samples of the \
         first; median of {} rounds after one warm-up",
        encoded.iter().map(Vec::len).collect::<Vec<_>>(),
        options.reps
    );

    {
        let warm = Request::samples("warm", &encoded[0], 2);
        let short = Settings {
            max_new_tokens: 3,
            ..settings(2, Some(0.9))
        };
        run_once(&loaded, &warm, &short, Method::Plain)?;
        run_once(&loaded, &warm, &short, Method::Sasa(&mut sasa))?;
        run_once(&loaded, &warm, &short, Method::Rad(&mut rad))?;
        for (_, method) in &mut fusion_methods {
            run_once(&loaded, &warm, &short, Method::Fusion(method.as_mut()))?;
        }
    }

    let batches: [(usize, Vec<Request>); 2] = [
        (
            1,
            encoded
                .iter()
                .enumerate()
                .flat_map(|(i, ids)| Request::samples(&format!("p{i}"), ids, 1))
                .collect(),
        ),
        (25, Request::samples("p0", &encoded[0], 25)),
    ];
    let load_before = load_average();
    let mut names = vec!["plain", "SASA", "RAD", "RAD"];
    let mut top_ps = vec![Some(0.9), Some(0.9), Some(0.9), None];
    for (name, _) in &fusion_methods {
        names.push(name);
        top_ps.push(Some(0.9));
    }
    let mut lines = Vec::new();
    for (batch, requests) in batches.iter().filter(|(b, _)| options.batches.contains(b)) {
        let mut runs: Vec<Vec<Measured>> = (0..names.len()).map(|_| Vec::new()).collect();
        for _ in 0..options.reps {
            for (i, top_p) in top_ps.iter().enumerate() {
                let settings = settings(*batch, *top_p);
                let method = match i {
                    0 => Method::Plain,
                    1 => Method::Sasa(&mut sasa),
                    2 | 3 => Method::Rad(&mut rad),
                    _ => Method::Fusion(fusion_methods[i - 4].1.as_mut()),
                };
                runs[i].push(run_once(&loaded, requests, &settings, method)?);
            }
        }
        let runs: Vec<Measured> = runs.into_iter().map(median_run).collect();
        let plain_ms = runs[0].stats.decode_seconds * 1e3 / runs[0].stats.new_tokens as f64;
        let plain_cpu = runs[0].cpu / runs[0].stats.new_tokens as f64;
        for ((run, name), top_p) in runs.iter().zip(&names).zip(&top_ps) {
            let decode = run.stats.decode_seconds;
            let ms = decode * 1e3 / run.stats.new_tokens as f64;
            let cpu_ratio = run.cpu / run.stats.new_tokens as f64 / plain_cpu;
            let share = |s: f64| format!("{:.0}", s / decode * 100.0);
            let (candidates, split, drawn) = match &run.counters {
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
                    let rest = decode
                        - s.prefill_seconds
                        - s.fork_seconds
                        - s.forward_seconds
                        - s.reward_seconds;
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
            };
            lines.push(format!(
                "| {batch} | {name} | {} | {} | {:.1} | {ms:.1} | {:.2} / {cpu_ratio:.2} | \
                 {candidates} | {split} | {drawn} | {} |",
                top_p.map_or("1".into(), |p| p.to_string()),
                run.stats.new_tokens,
                run.stats.tokens_per_second(),
                ms / plain_ms,
                run.memory.map_or("n/a".into(), |(peak, start)| format!(
                    "{peak:.0} ({start:.0})"
                ))
            ));
        }
    }
    println!(
        "- load average (1, 5, 15 min) before: {load_before}; after: {}",
        load_average()
    );
    println!();
    println!(
        "| batch | method | top-p | new tokens | tok/s | decode ms/token | × plain per token (wall \
         / CPU) | candidates per row-step | reward prefill / fork / forward / score / rest of \
         decode | mean drawn score | peak RSS MiB (start) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---|---:|---|---|---|");
    for line in &lines {
        println!("{line}");
    }
    println!(
        "\n(tok/s over the whole call, prefill included; wall ratios over decoding only, CPU \
         ratios over the whole call. SASA's split has no prefill of its own (its forward is the \
         LM's, reused as the next state); RAD's score column is the head, the copy to the CPU \
         and the re-weighting; \"rest of decode\" is the loop's own work, which plain sampling \
         has too.)"
    );
    Ok(())
}
