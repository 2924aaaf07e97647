//! The harness the cost benchmarks (`benches/cost.rs`, `benches/sasa_caps.rs`) share: their
//! command-line options, the default model and the benchmark prompts, the two batches they
//! measure, one measured generation call (wall, CPU and peak memory around it) and the median of
//! several, and the lines of the tables they print. A benchmark keeps only what it measures and
//! how it shows it.
//!
//! Both are commands that print a Markdown table, not timed tests:
//! `cargo bench -p method-cost --bench cost` and `cargo bench -p method-cost --bench sasa-caps`.

use anyhow::{bail, Context, Result};
use decode::measure::{
    bench_prompts, cpu_seconds, load_average, peak_resident_mib, reset_peak_resident, resident_mib,
};
use decode::{generate_steered, GenerationStats, Request, SamplingParams, Settings, Steering};
use lm::{DeviceChoice, DtypeChoice, LoadedModel, ModelInfo};

/// The options every cost benchmark takes.
#[derive(Debug, Clone)]
pub struct Options {
    /// libtorch's intra-op threads.
    pub threads: i32,
    /// New tokens per sample.
    pub tokens: usize,
    /// The steering strength of SASA and RAD.
    pub beta: f64,
    /// Rounds of every configuration after the warm-up; the table shows the median.
    pub reps: usize,
    /// Which of the two batch sizes (1, 25) to run.
    pub batches: Vec<usize>,
    pub device: DeviceChoice,
}

/// The batch sizes [`batches`] builds.
pub const BATCH_SIZES: [usize; 2] = [1, 25];

/// Parses the command line (`cargo bench` passes `--bench`, which is skipped): the flags of
/// [`Options`], and the benchmark's own through `own`, which is given each other flag and a way
/// to take its value, and returns false for a flag it does not know. `usage` lists every flag
/// for the error message.
pub fn parse_options(
    usage: &str,
    mut own: impl FnMut(&str, &mut dyn FnMut() -> Result<String>) -> Result<bool>,
) -> Result<Options> {
    let mut options = Options {
        threads: 2,
        tokens: 20,
        beta: 10.0,
        reps: 3,
        batches: BATCH_SIZES.to_vec(),
        device: DeviceChoice::Cpu,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--threads" => options.threads = value()?.parse()?,
            "--tokens" => options.tokens = value()?.parse()?,
            "--beta" => options.beta = value()?.parse()?,
            "--reps" => options.reps = value()?.parse()?,
            "--device" => options.device = value()?.parse()?,
            "--batches" => options.batches = parse_list(&value()?)?,
            other => {
                if !own(other, &mut value)? {
                    bail!("unknown argument {other:?} (expected {usage})");
                }
            }
        }
    }
    if let Some(other) = options.batches.iter().find(|b| !BATCH_SIZES.contains(b)) {
        bail!("--batches: {other} is not one of the benchmark's batch sizes (1, 25)");
    }
    if options.threads < 1 || options.tokens < 1 || options.reps < 1 {
        bail!("--threads, --tokens and --reps must be at least 1");
    }
    Ok(options)
}

/// A comma-separated list of whole numbers (`1,25`).
pub fn parse_list(text: &str) -> Result<Vec<usize>> {
    Ok(text
        .split(',')
        .map(|b| b.trim().parse::<usize>())
        .collect::<Result<_, _>>()?)
}

/// The default model, loaded on `options.device` (float32 on the CPU, bfloat16 on CUDA) after
/// setting the thread count.
pub fn load_default_model(options: &Options) -> Result<LoadedModel> {
    tch::set_num_threads(options.threads);
    let dir = paths::require(&paths::default_model_dir(), "the default model")
        .map_err(anyhow::Error::msg)?;
    LoadedModel::load(&dir, options.device, DtypeChoice::Auto)
}

/// The first 3 prompts of `crates/decode/benches/prompts.txt`, tokenized.
pub fn encode_prompts(loaded: &LoadedModel) -> Result<Vec<Vec<i64>>> {
    bench_prompts()?
        .iter()
        .take(3)
        .map(|p| loaded.tokenizer.encode(p))
        .collect()
}

/// Sampling at temperature 1 with `top_p` (none: the whole vocabulary), `tokens` new tokens, no
/// stop at end-of-sequence, a fixed seed.
pub fn settings(tokens: usize, batch_size: usize, top_p: Option<f64>) -> Settings {
    Settings {
        max_new_tokens: tokens,
        min_new_tokens: 0,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p,
        },
        seed: 1234,
        batch_size,
        stop_at_eos: false,
    }
}

/// The batches of `wanted` (of [`BATCH_SIZES`]): batch 1 is every prompt of `encoded`, one sample
/// each; batch 25 is 25 samples of the first prompt.
pub fn batches(encoded: &[Vec<i64>], wanted: &[usize]) -> Vec<(usize, Vec<Request>)> {
    let one: Vec<Request> = encoded
        .iter()
        .enumerate()
        .flat_map(|(i, ids)| Request::samples(&format!("p{i}"), ids, 1))
        .collect();
    [(1, one), (25, Request::samples("p0", &encoded[0], 25))]
        .into_iter()
        .filter(|(batch, _)| wanted.contains(batch))
        .collect()
}

/// One generation call's measurements, with the method's counters `C`.
pub struct Measured<C> {
    pub stats: GenerationStats,
    pub counters: C,
    /// Peak resident MiB during the call and resident MiB before it.
    pub memory: Option<(f64, f64)>,
    /// CPU seconds of the whole call.
    pub cpu: f64,
}

impl<C> Measured<C> {
    /// Wall milliseconds of decoding per new token.
    pub fn decode_ms_per_token(&self) -> f64 {
        self.stats.decode_seconds * 1e3 / self.stats.new_tokens as f64
    }

    /// CPU seconds of the whole call per new token.
    pub fn cpu_per_token(&self) -> f64 {
        self.cpu / self.stats.new_tokens as f64
    }
}

/// Measures `call` (one generation, returning its statistics and the method's counters): CPU
/// time, and peak resident memory where the kernel lets the peak be reset first.
pub fn measure<C>(call: impl FnOnce() -> Result<(GenerationStats, C)>) -> Result<Measured<C>> {
    let before = resident_mib();
    let reset = reset_peak_resident();
    let cpu_before = cpu_seconds().unwrap_or(0.0);
    let (stats, counters) = call()?;
    let cpu = cpu_seconds().unwrap_or(0.0) - cpu_before;
    let memory = if reset {
        peak_resident_mib().zip(before)
    } else {
        None
    };
    Ok(Measured {
        stats,
        counters,
        memory,
        cpu,
    })
}

/// Generates `requests` with `method` as the only steering (none: plain sampling), dropping the
/// generations.
pub fn generate_with(
    loaded: &LoadedModel,
    requests: &[Request],
    settings: &Settings,
    method: Option<&mut dyn Steering>,
) -> Result<GenerationStats> {
    let mut steering: Vec<Box<dyn Steering + '_>> = method
        .into_iter()
        .map(|m| Box::new(m) as Box<dyn Steering + '_>)
        .collect();
    generate_steered(
        loaded.model.as_ref(),
        &loaded.eos_token_ids,
        requests,
        settings,
        &mut steering,
        |_| Ok(()),
    )
}

/// The call with the median decoding time (the upper middle one of an even count), carrying the
/// highest peak memory of all the calls.
pub fn median_run<C>(mut runs: Vec<Measured<C>>) -> Measured<C> {
    let peak = runs
        .iter()
        .filter_map(|r| r.memory)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    runs.sort_by(|a, b| a.stats.decode_seconds.total_cmp(&b.stats.decode_seconds));
    let mut middle = runs.swap_remove(runs.len() / 2);
    middle.memory = peak;
    middle
}

/// The table cell of a call's memory: `peak (start)` MiB, or `n/a`.
pub fn memory_cell(memory: Option<(f64, f64)>) -> String {
    match memory {
        Some((peak, start)) => format!("{peak:.0} ({start:.0})"),
        None => "n/a".into(),
    }
}

/// The report's `- machine:` line: cores, threads, device and dtype.
pub fn print_machine(info: &ModelInfo) {
    println!(
        "- machine: {} logical cores; intra-op threads {}; device {:?}, {:?}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        tch::get_num_threads(),
        info.device,
        info.kind
    );
}

/// The report's line on the two batches and the rounds.
pub fn print_batches(encoded: &[Vec<i64>], reps: usize) {
    println!(
        "- batch 1: prompts {:?} tokens long, one sample each; batch 25: 25 samples of the \
         first; median of {reps} rounds after one warm-up",
        encoded.iter().map(Vec::len).collect::<Vec<_>>(),
    );
}

/// The load averages before the measurements (`load_before`) and now, then the table.
pub fn print_table(load_before: &str, header: &str, alignment: &str, lines: &[String]) {
    println!(
        "- load average (1, 5, 15 min) before: {load_before}; after: {}",
        load_average()
    );
    println!();
    println!("{header}");
    println!("{alignment}");
    for line in lines {
        println!("{line}");
    }
}
