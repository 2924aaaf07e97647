//! SASA's cost against plain sampling: a command that prints a table, not a timed test.
//!
//! ```text
//! cargo bench -p sasa --bench cost [-- --threads N --tokens N --caps 10,20,50 --beta B
//!                                      --device cpu|cuda]
//! ```
//!
//! The default model (SmolLM2-135M-Instruct), float32 on the CPU (bfloat16 on CUDA), 20 new
//! tokens, top-p 0.9, temperature 1, no stop at end-of-sequence, SASA with β = 10 and the softmax
//! transform:
//!
//! * batch 1: the first 3 prompts of `crates/decode/benches/prompts.txt`, one sample each;
//! * batch 25: 25 samples of the first prompt, one batch.
//!
//! For each batch: plain sampling, then SASA capped at 10, 20 and 50 candidates. Columns: new
//! tokens per second over the whole call; decode milliseconds per token and its ratio to plain
//! sampling's (the goal: ≤ 3× at batch 1 with 20 candidates); candidate rows forwarded and rows
//! per second of decoding; the same number of one-token rows run through a plain cached forward
//! (a cache of that many rows at the prompt's length + half the new tokens, what SASA's forks
//! hold on average) and SASA's share of that rate (the goal: ≥ 80 % at batch 25 — the forks,
//! ragged candidate sets and margins cost under 20 % of the unavoidable forward); where SASA's
//! time went; and peak memory. Peak memory on the CPU is the process's peak resident set
//! (`VmHWM`), reset before each configuration through `/proc/self/clear_refs`; on CUDA it is not
//! reported (tch exposes no allocator statistics).
//!
//! One warm-up call, then one timed call per configuration (`--reps N` for the median of N).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use decode::{generate, generate_steered, GenerationStats, Request, SamplingParams, Settings};
use lm::{CausalLm, DeviceChoice, DtypeChoice, LoadedModel};
use sasa::{MarginTransform, Sasa, SasaParams, SasaStats, Subspace};
use tch::{Device, Tensor};

struct Options {
    threads: i32,
    tokens: usize,
    caps: Vec<usize>,
    beta: f64,
    reps: usize,
    device: DeviceChoice,
}

fn parse_options() -> Result<Options> {
    let mut options = Options {
        threads: 2,
        tokens: 20,
        caps: vec![10, 20, 50],
        beta: 10.0,
        reps: 1,
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
            "--beta" => options.beta = value("--beta")?.parse()?,
            "--reps" => options.reps = value("--reps")?.parse()?,
            "--device" => options.device = value("--device")?.parse()?,
            "--caps" => {
                options.caps = value("--caps")?
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?
            }
            other => bail!(
                "unknown argument {other:?} (expected --threads N, --tokens N, --caps A,B,C, \
                 --beta B, --reps N, --device D)"
            ),
        }
    }
    if options.threads < 1 || options.tokens < 2 || options.reps < 1 || options.caps.contains(&0) {
        bail!("--threads, --reps and caps must be at least 1, --tokens at least 2");
    }
    Ok(options)
}

fn read_prompts() -> Result<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../decode/benches/prompts.txt");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Peak and current resident memory of this process, in MiB, from `/proc/self/status`.
fn memory_mib() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Resets the peak resident set to the current one (Linux ≥ 4.0).
fn reset_peak_memory() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// One configuration's measurements.
struct Measured {
    stats: GenerationStats,
    sasa: Option<SasaStats>,
    /// Peak resident MiB during the call and resident MiB before it.
    memory: Option<(f64, f64)>,
}

fn measure(
    loaded: &LoadedModel,
    requests: &[Request],
    settings: &Settings,
    reps: usize,
    mut method: Option<&mut Sasa>,
) -> Result<Measured> {
    let mut runs = Vec::with_capacity(reps);
    let mut memory = None;
    for _ in 0..reps {
        let before = memory_mib().map(|(_, rss)| rss);
        let reset = reset_peak_memory();
        let sink = |_| Ok(());
        let model = loaded.model.as_ref();
        let stats = match method.as_deref_mut() {
            None => generate(model, &loaded.eos_token_ids, requests, settings, sink)?,
            Some(method) => {
                method.take_stats();
                let mut steering: Vec<Box<dyn decode::Steering + '_>> = vec![Box::new(method)];
                generate_steered(
                    model,
                    &loaded.eos_token_ids,
                    requests,
                    settings,
                    &mut steering,
                    sink,
                )?
            }
        };
        if reset {
            memory = memory_mib()
                .zip(before)
                .map(|((peak, _), before)| (peak, before));
        }
        let sasa = method.as_deref_mut().map(Sasa::take_stats);
        runs.push((stats, sasa));
    }
    // The run with the median decode time.
    runs.sort_by(|a, b| a.0.decode_seconds.total_cmp(&b.0.decode_seconds));
    let (stats, sasa) = runs.swap_remove(runs.len() / 2);
    Ok(Measured {
        stats,
        sasa,
        memory,
    })
}

/// Rows per second of a plain cached forward of one token on each of `rows` rows, the cache
/// holding `prompt` followed by `extra` tokens in every row (built once, then forked).
fn plain_forward_rows_per_second(
    model: &dyn CausalLm,
    prompt: &[i64],
    extra: usize,
    rows: usize,
    reps: usize,
) -> Result<f64> {
    let _no_grad = tch::no_grad_guard();
    let device = model.info().device;
    let mut ids = prompt.to_vec();
    ids.extend((0..extra as i64).map(|i| 1000 + 37 * i));
    let input = Tensor::from_slice(&ids).unsqueeze(0).to_device(device);
    let mut single = model.new_cache();
    let _ = model.forward_hidden(&input, &input.ones_like(), &mut single);
    let mut cache = single.fork_rows(&Tensor::zeros([rows as i64], (tch::Kind::Int64, device)));
    let step = Tensor::full([rows as i64, 1], 2024, (tch::Kind::Int64, device));
    let mask = step.ones_like();
    // A warm-up step (it also moves the cache past the fork's single spare position).
    let _ = model.forward_hidden(&step, &mask, &mut cache);
    let mut seconds = Vec::with_capacity(reps);
    for _ in 0..reps.max(3) {
        synchronize(device);
        let started = Instant::now();
        let hidden = model.forward_hidden(&step, &mask, &mut cache);
        synchronize(device);
        seconds.push(started.elapsed().as_secs_f64());
        drop(hidden);
    }
    Ok(rows as f64 / median(seconds))
}

fn main() -> Result<()> {
    let options = parse_options()?;
    tch::set_num_threads(options.threads);
    let dir = paths::require(&paths::default_model_dir(), "the default model")
        .map_err(anyhow::Error::msg)?;
    let loaded = LoadedModel::load(&dir, options.device, DtypeChoice::Auto)?;
    let model = loaded.model.as_ref();
    let subspace_path = Subspace::default_path(&dir);
    let prompts = read_prompts()?;
    let encoded: Vec<Vec<i64>> = prompts
        .iter()
        .take(3)
        .map(|p| loaded.tokenizer.encode(p))
        .collect::<Result<_>>()?;
    let settings = |batch_size| Settings {
        max_new_tokens: options.tokens,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.9),
        },
        seed: 1234,
        batch_size,
        stop_at_eos: false,
    };
    let sasa_for = |cap| -> Result<Sasa> {
        Sasa::load(
            &subspace_path,
            &dir,
            SasaParams {
                beta: options.beta,
                margin_transform: MarginTransform::Softmax,
                max_candidates: Some(cap),
            },
        )
    };

    println!("## SASA cost benchmark (Rust, tch)\n");
    println!(
        "- machine: {} logical cores; intra-op threads {}; device {:?}, {:?}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        tch::get_num_threads(),
        model.info().device,
        model.info().kind
    );
    println!(
        "- model: {}; subspace {}; {} new tokens, top-p 0.9, temperature 1, no stop at EOS; SASA \
         β = {}, softmax",
        dir.display(),
        subspace_path.display(),
        options.tokens,
        options.beta
    );
    println!(
        "- batch 1: prompts {:?} tokens long, one sample each; batch 25: 25 samples of the \
         first; {} timed run(s) per configuration after one warm-up",
        encoded.iter().map(Vec::len).collect::<Vec<_>>(),
        options.reps
    );

    // Warm-up: libtorch's first calls allocate and pick kernels.
    {
        let warm = Request::samples("warm", &encoded[0], 2);
        let short = Settings {
            max_new_tokens: 3,
            ..settings(2)
        };
        generate(model, &[], &warm, &short, |_| Ok(()))?;
        let mut method = sasa_for(10)?;
        let mut steering: Vec<Box<dyn decode::Steering + '_>> = vec![Box::new(&mut method)];
        generate_steered(model, &[], &warm, &short, &mut steering, |_| Ok(()))?;
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
    let mut lines = Vec::new();
    let mut goals = Vec::new();
    for (batch, requests) in &batches {
        let settings = settings(*batch);
        let plain = measure(&loaded, requests, &settings, options.reps, None)?;
        let plain_ms = plain.stats.decode_seconds * 1e3 / plain.stats.new_tokens as f64;
        lines.push(format!(
            "| {batch} | plain | – | {} | {:.1} | {plain_ms:.1} | 1.00 | – | – | – | – | – | – | {} |",
            plain.stats.new_tokens,
            plain.stats.tokens_per_second(),
            memory_cell(plain.memory)
        ));
        for &cap in &options.caps {
            let mut method = sasa_for(cap)?;
            let run = measure(
                &loaded,
                requests,
                &settings,
                options.reps,
                Some(&mut method),
            )?;
            let sasa = run.sasa.expect("SASA counters");
            let ms = run.stats.decode_seconds * 1e3 / run.stats.new_tokens as f64;
            let ratio = ms / plain_ms;
            let rows_per_second = sasa.candidate_rows as f64 / run.stats.decode_seconds;
            // The same number of rows as SASA's average step, at its average cache length.
            let rows = (sasa.candidate_rows as f64 / sasa.steps as f64).round() as usize;
            let prompt = &requests[0].prompt_ids;
            let forward_rate = plain_forward_rows_per_second(
                model,
                prompt,
                options.tokens / 2,
                rows,
                options.reps,
            )?;
            let share = rows_per_second / forward_rate;
            let decode = run.stats.decode_seconds;
            let other = decode - sasa.fork_seconds - sasa.forward_seconds - sasa.margin_seconds;
            lines.push(format!(
                "| {batch} | SASA | {cap} | {} | {:.1} | {ms:.1} | {ratio:.2} | {} ({:.1}/row) | \
                 {rows_per_second:.0} | {rows} rows: {forward_rate:.0} | {:.0} % | {:.0} / {:.0} / \
                 {:.0} / {:.0} % | {} | {} |",
                run.stats.new_tokens,
                run.stats.tokens_per_second(),
                sasa.candidate_rows,
                sasa.mean_candidates(),
                share * 100.0,
                sasa.fork_seconds / decode * 100.0,
                sasa.forward_seconds / decode * 100.0,
                sasa.margin_seconds / decode * 100.0,
                other / decode * 100.0,
                sasa.mean_drawn_margin()
                    .map_or("–".into(), |m| format!("{m:+.3}")),
                memory_cell(run.memory)
            ));
            if *batch == 1 && cap == 20 {
                goals.push(format!(
                    "- batch 1, 20 candidates: SASA costs {ratio:.2}× plain decoding per token \
                     (goal ≤ 3×): {}",
                    if ratio <= 3.0 { "met" } else { "missed" }
                ));
            }
            if *batch == 25 {
                goals.push(format!(
                    "- batch 25, cap {cap}: candidate rows/s at {:.0} % of a plain cached forward \
                     over {rows} rows (goal ≥ 80 %): {}",
                    share * 100.0,
                    if share >= 0.8 { "met" } else { "missed" }
                ));
            }
        }
    }
    println!();
    println!(
        "| batch | method | cap | new tokens | tok/s | decode ms/token | × plain | candidate rows \
         | cand. rows/s | plain cached forward rows/s | SASA ÷ forward | fork / forward / margins \
         / rest of decode | mean drawn margin | peak RSS MiB (start) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---|");
    for line in &lines {
        println!("{line}");
    }
    println!();
    for goal in &goals {
        println!("{goal}");
    }
    println!(
        "\n(tok/s over the whole call, prefill included; ms/token and the ratios over decoding \
         only. \"rest of decode\" is the loop's own work — LM head, top-p, draws, taking the drawn \
         rows — which plain sampling has too.)"
    );
    Ok(())
}

fn memory_cell(memory: Option<(f64, f64)>) -> String {
    match memory {
        Some((peak, start)) => format!("{peak:.0} ({start:.0})"),
        None => "n/a".into(),
    }
}
