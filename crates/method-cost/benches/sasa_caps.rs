//! SASA's cost against plain sampling, by cap on the candidates: a command that prints a table,
//! not a timed test.
//!
//! ```text
//! cargo bench -p method-cost --bench sasa-caps [-- --threads N --tokens N --caps 10,20,50
//!                                                 --beta B --reps N --batches 1,25
//!                                                 --device cpu|cuda]
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

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use decode::measure::{cpu_seconds, load_average, median};
use decode::{Request, Settings};
use lm::{CausalLm, LoadedModel};
use method_cost::{
    batches, encode_prompts, generate_with, load_default_model, measure, median_run, memory_cell,
    parse_list, parse_options, print_batches, print_machine, print_table, settings, Measured,
    Options,
};
use sasa::{MarginTransform, Sasa, SasaParams, SasaStats, Subspace};
use tch::{Device, Tensor};

const USAGE: &str =
    "--threads N, --tokens N, --caps A,B,C, --beta B, --reps N, --batches 1,25, --device D";

/// The shared options and the caps on SASA's candidates.
fn parse() -> Result<(Options, Vec<usize>)> {
    let mut caps = vec![10, 20, 50];
    let options = parse_options(USAGE, |flag, value| {
        if flag != "--caps" {
            return Ok(false);
        }
        caps = parse_list(&value()?)?;
        Ok(true)
    })?;
    if options.tokens < 2 || caps.contains(&0) {
        bail!("caps must be at least 1, --tokens at least 2");
    }
    Ok((options, caps))
}

fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
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

/// One measured call: plain sampling (`None`) or SASA, with SASA's counters.
fn run_once(
    loaded: &LoadedModel,
    requests: &[Request],
    settings: &Settings,
    method: Option<&mut Sasa>,
) -> Result<Measured<Option<SasaStats>>> {
    measure(|| match method {
        None => Ok((generate_with(loaded, requests, settings, None)?, None)),
        Some(sasa) => {
            sasa.take_stats();
            let stats = generate_with(loaded, requests, settings, Some(&mut *sasa))?;
            Ok((stats, Some(sasa.take_stats())))
        }
    })
}

/// SASA's average candidate rows per step.
fn rows_per_step(sasa: &SasaStats) -> usize {
    (sasa.candidate_rows as f64 / sasa.steps as f64).round() as usize
}

/// One cap's median call at a batch size, with the plain forward's rates measured beside it.
struct CapRun {
    cap: usize,
    run: Measured<Option<SasaStats>>,
    /// Per round: a plain cached forward's rows per wall and per CPU second.
    forward: Vec<(f64, f64)>,
}

/// `--reps` rounds on `requests`, each running plain sampling and then every cap, with the plain
/// forward over the same number of rows right after each SASA call; the medians.
fn measure_batch(
    loaded: &LoadedModel,
    requests: &[Request],
    settings: &Settings,
    options: &Options,
    mut methods: Vec<(usize, Sasa)>,
) -> Result<(Measured<Option<SasaStats>>, Vec<CapRun>)> {
    let mut plain = Vec::new();
    let mut runs: Vec<Vec<Measured<Option<SasaStats>>>> =
        methods.iter().map(|_| Vec::new()).collect();
    let mut forward: Vec<Vec<(f64, f64)>> = methods.iter().map(|_| Vec::new()).collect();
    for _ in 0..options.reps {
        plain.push(run_once(loaded, requests, settings, None)?);
        for (i, (_, method)) in methods.iter_mut().enumerate() {
            let run = run_once(loaded, requests, settings, Some(method))?;
            let rows = rows_per_step(run.counters.as_ref().expect("SASA counters"));
            // The same number of rows as SASA's average step, at its average cache length.
            forward[i].push(plain_forward_rows_per_second(
                loaded.model.as_ref(),
                &requests[0].prompt_ids,
                options.tokens / 2,
                rows,
            )?);
            runs[i].push(run);
        }
    }
    let caps = methods
        .into_iter()
        .zip(runs)
        .zip(forward)
        .map(|(((cap, _), runs), forward)| CapRun {
            cap,
            run: median_run(runs),
            forward,
        })
        .collect();
    Ok((median_run(plain), caps))
}

/// One cap against plain sampling and against the plain forward.
struct Comparison {
    /// Decode time per token over plain sampling's, in wall and in CPU time.
    ratio: f64,
    cpu_ratio: f64,
    /// Candidate rows per second over the plain forward's rows per second, wall and CPU.
    share: f64,
    cpu_share: f64,
    rows: usize,
}

fn plain_line(batch: usize, plain: &Measured<Option<SasaStats>>) -> String {
    format!(
        "| {batch} | plain | – | {} | {:.1} | {:.1} | 1.00 / 1.00 | – | – | – | – | – | – | {} |",
        plain.stats.new_tokens,
        plain.stats.tokens_per_second(),
        plain.decode_ms_per_token(),
        memory_cell(plain.memory)
    )
}

/// The table line of `cap` at `batch`, and how it compares.
fn cap_line(
    batch: usize,
    cap: &CapRun,
    plain: &Measured<Option<SasaStats>>,
) -> (String, Comparison) {
    let run = &cap.run;
    let sasa = run.counters.as_ref().expect("SASA counters");
    let decode = run.stats.decode_seconds;
    let ms = run.decode_ms_per_token();
    let rows_per_second = sasa.candidate_rows as f64 / decode;
    let rows_per_cpu_second = sasa.candidate_rows as f64 / run.cpu;
    let forward_rate = median(cap.forward.iter().map(|r| r.0).collect());
    let forward_cpu_rate = median(cap.forward.iter().map(|r| r.1).collect());
    let c = Comparison {
        ratio: ms / plain.decode_ms_per_token(),
        cpu_ratio: run.cpu_per_token() / plain.cpu_per_token(),
        share: rows_per_second / forward_rate,
        cpu_share: rows_per_cpu_second / forward_cpu_rate,
        rows: rows_per_step(sasa),
    };
    let other = decode - sasa.fork_seconds - sasa.forward_seconds - sasa.margin_seconds;
    let line = format!(
        "| {batch} | SASA | {} | {} | {:.1} | {ms:.1} | {:.2} / {:.2} | {} ({:.1}) | \
         {rows_per_second:.0} / {rows_per_cpu_second:.0} | {}: {forward_rate:.0} / \
         {forward_cpu_rate:.0} | {:.0} % / {:.0} % | {:.0} / {:.0} / {:.0} / {:.0} % | {} | {} |",
        cap.cap,
        run.stats.new_tokens,
        run.stats.tokens_per_second(),
        c.ratio,
        c.cpu_ratio,
        sasa.candidate_rows,
        sasa.mean_candidates(),
        c.rows,
        c.share * 100.0,
        c.cpu_share * 100.0,
        sasa.fork_seconds / decode * 100.0,
        sasa.forward_seconds / decode * 100.0,
        sasa.margin_seconds / decode * 100.0,
        other / decode * 100.0,
        sasa.mean_drawn_margin()
            .map_or("–".into(), |m| format!("{m:+.3}")),
        memory_cell(run.memory)
    );
    (line, c)
}

/// The goal a cap at a batch size is judged against, if any: ≤ 3× plain per token at batch 1
/// with 20 candidates; ≥ 80 % of the plain forward's rows per second at batch 25.
fn goal(batch: usize, cap: usize, c: &Comparison) -> Option<String> {
    let verdict = |met: bool| if met { "met" } else { "missed" };
    if batch == 1 && cap == 20 {
        return Some(format!(
            "- batch 1, 20 candidates: SASA costs {:.2}× plain decoding per token in wall time \
             ({}), {:.2}× in CPU time ({}) (goal ≤ 3×)",
            c.ratio,
            verdict(c.ratio <= 3.0),
            c.cpu_ratio,
            verdict(c.cpu_ratio <= 3.0)
        ));
    }
    (batch == 25).then(|| {
        format!(
            "- batch 25, cap {cap}: candidate rows/s at {:.0} % of a plain cached forward over {} \
             rows in wall time ({}), {:.0} % in CPU time ({}) (goal ≥ 80 %)",
            c.share * 100.0,
            c.rows,
            verdict(c.share >= 0.8),
            c.cpu_share * 100.0,
            verdict(c.cpu_share >= 0.8)
        )
    })
}

/// One short plain call and one SASA call: libtorch's first calls allocate and pick kernels.
fn warm_up(loaded: &LoadedModel, encoded: &[Vec<i64>], mut sasa: Sasa) -> Result<()> {
    let warm = Request::samples("warm", &encoded[0], 2);
    let short = settings(3, 2, Some(0.9));
    generate_with(loaded, &warm, &short, None)?;
    generate_with(loaded, &warm, &short, Some(&mut sasa))?;
    Ok(())
}

fn print_preamble(loaded: &LoadedModel, subspace: &Path, options: &Options, encoded: &[Vec<i64>]) {
    println!("## SASA cost benchmark (Rust, tch)\n");
    print_machine(loaded.model.info());
    println!(
        "- model: {}; subspace {}; {} new tokens, top-p 0.9, temperature 1, no stop at EOS; SASA \
         β = {}, softmax",
        loaded.dir.display(),
        subspace.display(),
        options.tokens,
        options.beta
    );
    print_batches(encoded, options.reps);
}

fn main() -> Result<()> {
    let (options, caps) = parse()?;
    let loaded = load_default_model(&options)?;
    let subspace = Subspace::default_path(&loaded.dir);
    let sasa_for = |cap| -> Result<Sasa> {
        let params = SasaParams {
            beta: options.beta,
            margin_transform: MarginTransform::Softmax,
            max_candidates: Some(cap),
            eos_bonus: true,
        };
        Sasa::load(&subspace, &loaded.dir, params)
    };
    let encoded = encode_prompts(&loaded)?;
    print_preamble(&loaded, &subspace, &options, &encoded);
    warm_up(&loaded, &encoded, sasa_for(10)?)?;

    let load_before = load_average();
    let mut lines = Vec::new();
    let mut goals = Vec::new();
    for (batch, requests) in batches(&encoded, &options.batches) {
        let settings = settings(options.tokens, batch, Some(0.9));
        let methods = caps
            .iter()
            .map(|&cap| Ok((cap, sasa_for(cap)?)))
            .collect::<Result<_>>()?;
        let (plain, runs) = measure_batch(&loaded, &requests, &settings, &options, methods)?;
        lines.push(plain_line(batch, &plain));
        for cap in &runs {
            let (line, comparison) = cap_line(batch, cap, &plain);
            lines.push(line);
            goals.extend(goal(batch, cap.cap, &comparison));
        }
    }
    print_table(
        &load_before,
        "| batch | method | cap | new tokens | tok/s | decode ms/token | × plain per token (wall / \
         CPU) | candidate rows (per row-step) | cand. rows/s (wall / CPU) | plain cached forward: \
         rows, rows/s (wall / CPU) | SASA ÷ forward (wall / CPU) | fork / forward / margins / rest \
         of decode | mean drawn margin | peak RSS MiB (start) |",
        "|---:|---|---:|---:|---:|---:|---|---:|---|---|---|---|---:|---|",
        &lines,
    );
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
