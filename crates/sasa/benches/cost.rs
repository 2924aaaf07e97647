//! SASA's cost against plain sampling: a command that prints a table, not a timed test.
//!
//! ```text
//! cargo bench -p sasa --bench cost [-- --threads N --tokens N --caps 10,20,50 --beta B
//!                                      --reps N --batches 1,25 --device cpu|cuda]
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
//! One warm-up call, then `--reps` rounds (default 3), each running every configuration of a
//! batch size once, in turn, with the plain forward right after each SASA run; the table shows
//! each configuration's median. Taking turns keeps a busy machine's slow minutes from landing on
//! one configuration only. Ratios are shown over wall time and over the process's CPU time: on a
//! shared machine the second is the steadier.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use decode::measure::{
    bench_prompts, cpu_seconds, load_average, median, peak_resident_mib, reset_peak_resident,
    resident_mib,
};
use decode::{generate, generate_steered, GenerationStats, Request, SamplingParams, Settings};
use lm::{CausalLm, DeviceChoice, DtypeChoice, LoadedModel};
use sasa::{MarginTransform, Sasa, SasaParams, SasaStats, Subspace};
use tch::{Device, Tensor};

struct Options {
    threads: i32,
    tokens: usize,
    caps: Vec<usize>,
    /// Which of the two batch sizes (1, 25) to run.
    batches: Vec<usize>,
    beta: f64,
    reps: usize,
    device: DeviceChoice,
}

fn parse_options() -> Result<Options> {
    let mut options = Options {
        threads: 2,
        tokens: 20,
        caps: vec![10, 20, 50],
        batches: vec![1, 25],
        beta: 10.0,
        reps: 3,
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
            "--batches" => {
                options.batches = value("--batches")?
                    .split(',')
                    .map(|b| b.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?;
                if let Some(other) = options.batches.iter().find(|b| ![1, 25].contains(*b)) {
                    bail!("--batches: {other} is not one of the benchmark's batch sizes (1, 25)");
                }
            }
            "--caps" => {
                options.caps = value("--caps")?
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?
            }
            other => bail!(
                "unknown argument {other:?} (expected --threads N, --tokens N, --caps A,B,C, \
                 --beta B, --reps N, --batches 1,25, --device D)"
            ),
        }
    }
    if options.threads < 1 || options.tokens < 2 || options.reps < 1 || options.caps.contains(&0) {
        bail!("--threads, --reps and caps must be at least 1, --tokens at least 2");
    }
    Ok(options)
}

fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// One call's measurements.
struct Measured {
    stats: GenerationStats,
    sasa: Option<SasaStats>,
    /// Peak resident MiB during the call and resident MiB before it.
    memory: Option<(f64, f64)>,
    /// CPU seconds of the whole call.
    cpu: f64,
}

fn run_once(
    loaded: &LoadedModel,
    requests: &[Request],
    settings: &Settings,
    method: Option<&mut Sasa>,
) -> Result<Measured> {
    let before = resident_mib();
    let reset = reset_peak_resident();
    let cpu_before = cpu_seconds().unwrap_or(0.0);
    let sink = |_| Ok(());
    let model = loaded.model.as_ref();
    let eos = &loaded.eos_token_ids;
    let (stats, sasa) = match method {
        None => (generate(model, eos, requests, settings, sink)?, None),
        Some(method) => {
            method.take_stats();
            let stats = {
                let mut steering: Vec<Box<dyn decode::Steering + '_>> =
                    vec![Box::new(&mut *method)];
                generate_steered(model, eos, requests, settings, &mut steering, sink)?
            };
            (stats, Some(method.take_stats()))
        }
    };
    let cpu = cpu_seconds().unwrap_or(0.0) - cpu_before;
    let memory = if reset {
        peak_resident_mib().zip(before)
    } else {
        None
    };
    Ok(Measured {
        stats,
        sasa,
        memory,
        cpu,
    })
}

/// The call with the median decoding time, with the highest peak memory of all of them.
fn median_run(mut runs: Vec<Measured>) -> Measured {
    let peak = runs
        .iter()
        .filter_map(|r| r.memory)
        .fold(None, |best: Option<(f64, f64)>, m| match best {
            Some(b) if b.0 >= m.0 => Some(b),
            _ => Some(m),
        });
    runs.sort_by(|a, b| a.stats.decode_seconds.total_cmp(&b.stats.decode_seconds));
    let mut middle = runs.swap_remove(runs.len() / 2);
    middle.memory = peak;
    middle
}

/// Rows per second of a plain cached forward of one token on each of `rows` rows, the cache
/// holding `prompt` followed by `extra` tokens in every row (built once, then forked): per wall
/// second and per CPU second, over enough forwards to last about half a second (the CPU clock
/// ticks at 10 ms).
fn plain_forward_rows_per_second(
    model: &dyn CausalLm,
    prompt: &[i64],
    extra: usize,
    rows: usize,
) -> Result<(f64, f64)> {
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
    // Two untimed steps: a fork has room for one more position, so the second grows the cache
    // to its usual 64-position capacity; the timed steps below then only write a position each,
    // as decoding does.
    let _ = model.forward_hidden(&step, &mask, &mut cache);
    let _ = model.forward_hidden(&step, &mask, &mut cache);
    synchronize(device);
    let started = Instant::now();
    let _ = model.forward_hidden(&step, &mask, &mut cache);
    synchronize(device);
    let first = started.elapsed().as_secs_f64();
    let room = (64 - cache.seq_len() % 64) as usize;
    let count = ((0.5 / first.max(1e-6)).ceil() as usize).clamp(2, room.max(2));
    synchronize(device);
    let started = Instant::now();
    let cpu_before = cpu_seconds().unwrap_or(0.0);
    for _ in 0..count {
        let _ = model.forward_hidden(&step, &mask, &mut cache);
    }
    synchronize(device);
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds().unwrap_or(0.0) - cpu_before;
    let total = (rows * count) as f64;
    Ok((total / seconds, total / cpu.max(0.01)))
}

fn main() -> Result<()> {
    let options = parse_options()?;
    tch::set_num_threads(options.threads);
    let dir = paths::require(&paths::default_model_dir(), "the default model")
        .map_err(anyhow::Error::msg)?;
    let loaded = LoadedModel::load(&dir, options.device, DtypeChoice::Auto)?;
    let model = loaded.model.as_ref();
    let subspace_path = Subspace::default_path(&dir);
    let prompts = bench_prompts()?;
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
         first; median of {} rounds after one warm-up",
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
    let load_before = load_average();
    let mut lines = Vec::new();
    let mut goals = Vec::new();
    let verdict = |met: bool| if met { "met" } else { "missed" };
    for (batch, requests) in batches.iter().filter(|(b, _)| options.batches.contains(b)) {
        let settings = settings(*batch);
        let mut methods: Vec<Sasa> = options
            .caps
            .iter()
            .map(|&cap| sasa_for(cap))
            .collect::<Result<_>>()?;
        // Per configuration (plain first, then each cap): its calls; per cap, the plain
        // forward's rates.
        let mut runs: Vec<Vec<Measured>> = (0..=methods.len()).map(|_| Vec::new()).collect();
        let mut forward: Vec<Vec<(f64, f64)>> = methods.iter().map(|_| Vec::new()).collect();
        for _ in 0..options.reps {
            runs[0].push(run_once(&loaded, requests, &settings, None)?);
            for (i, method) in methods.iter_mut().enumerate() {
                let run = run_once(&loaded, requests, &settings, Some(method))?;
                let sasa = run.sasa.as_ref().expect("SASA counters");
                // The same number of rows as SASA's average step, at its average cache length.
                let rows = (sasa.candidate_rows as f64 / sasa.steps as f64).round() as usize;
                forward[i].push(plain_forward_rows_per_second(
                    model,
                    &requests[0].prompt_ids,
                    options.tokens / 2,
                    rows,
                )?);
                runs[i + 1].push(run);
            }
        }
        let mut runs = runs.into_iter().map(median_run);
        let plain = runs.next().expect("plain runs");
        let plain_ms = plain.stats.decode_seconds * 1e3 / plain.stats.new_tokens as f64;
        let plain_cpu_per_token = plain.cpu / plain.stats.new_tokens as f64;
        lines.push(format!(
            "| {batch} | plain | – | {} | {:.1} | {plain_ms:.1} | 1.00 / 1.00 | – | – | – | – | – \
             | – | {} |",
            plain.stats.new_tokens,
            plain.stats.tokens_per_second(),
            memory_cell(plain.memory)
        ));
        for ((run, &cap), rates) in runs.zip(&options.caps).zip(forward) {
            let sasa = run.sasa.expect("SASA counters");
            let decode = run.stats.decode_seconds;
            let ms = decode * 1e3 / run.stats.new_tokens as f64;
            let ratio = ms / plain_ms;
            let cpu_ratio = run.cpu / run.stats.new_tokens as f64 / plain_cpu_per_token;
            let rows_per_second = sasa.candidate_rows as f64 / decode;
            let rows_per_cpu_second = sasa.candidate_rows as f64 / run.cpu;
            let rows = (sasa.candidate_rows as f64 / sasa.steps as f64).round() as usize;
            let forward_rate = median(rates.iter().map(|r| r.0).collect());
            let forward_cpu_rate = median(rates.iter().map(|r| r.1).collect());
            let share = rows_per_second / forward_rate;
            let cpu_share = rows_per_cpu_second / forward_cpu_rate;
            let other = decode - sasa.fork_seconds - sasa.forward_seconds - sasa.margin_seconds;
            lines.push(format!(
                "| {batch} | SASA | {cap} | {} | {:.1} | {ms:.1} | {ratio:.2} / {cpu_ratio:.2} | \
                 {} ({:.1}) | {rows_per_second:.0} / {rows_per_cpu_second:.0} | {rows}: \
                 {forward_rate:.0} / {forward_cpu_rate:.0} | {:.0} % / {:.0} % | {:.0} / {:.0} / \
                 {:.0} / {:.0} % | {} | {} |",
                run.stats.new_tokens,
                run.stats.tokens_per_second(),
                sasa.candidate_rows,
                sasa.mean_candidates(),
                share * 100.0,
                cpu_share * 100.0,
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
                    "- batch 1, 20 candidates: SASA costs {ratio:.2}× plain decoding per token in \
                     wall time ({}), {cpu_ratio:.2}× in CPU time ({}) (goal ≤ 3×)",
                    verdict(ratio <= 3.0),
                    verdict(cpu_ratio <= 3.0)
                ));
            }
            if *batch == 25 {
                goals.push(format!(
                    "- batch 25, cap {cap}: candidate rows/s at {:.0} % of a plain cached forward \
                     over {rows} rows in wall time ({}), {:.0} % in CPU time ({}) (goal ≥ 80 %)",
                    share * 100.0,
                    verdict(share >= 0.8),
                    cpu_share * 100.0,
                    verdict(cpu_share >= 0.8)
                ));
            }
        }
    }
    println!(
        "- load average (1, 5, 15 min) before: {load_before}; after: {}",
        load_average()
    );
    println!();
    println!(
        "| batch | method | cap | new tokens | tok/s | decode ms/token | × plain per token (wall / \
         CPU) | candidate rows (per row-step) | cand. rows/s (wall / CPU) | plain cached forward: \
         rows, rows/s (wall / CPU) | SASA ÷ forward (wall / CPU) | fork / forward / margins / rest \
         of decode | mean drawn margin | peak RSS MiB (start) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---|---:|---|---|---|---|---:|---|");
    for line in &lines {
        println!("{line}");
    }
    println!();
    for goal in &goals {
        println!("{goal}");
    }
    println!(
        "\n(tok/s over the whole call, prefill included; wall ratios over decoding only, CPU \
         ratios over the whole call. \"rest of decode\" is the loop's own work — LM head, top-p, \
         draws, taking the drawn rows — which plain sampling has too. The time split is SASA's \
         share of wall-clock decoding.)"
    );
    Ok(())
}

fn memory_cell(memory: Option<(f64, f64)>) -> String {
    match memory {
        Some((peak, start)) => format!("{peak:.0} ({start:.0})"),
        None => "n/a".into(),
    }
}
