//! `detox train finetune SPEC`: regularized fine-tuning driven by a YAML spec (see
//! `finetune::plan`), and `detox train finetune-job`, the process each job of a schedule runs in.
//!
//! Every job is a process of its own with its own libtorch thread budget (`threads_per_job`), so a
//! parallel round's three jobs really run at once and a sequential round's run one after another
//! with the same budget each. A job reads only finished outputs, writes its output (a model folder
//! or a samples file) and then `jobs/<name>.done.json` with its wall time and CPU time; that file
//! is what marks it done, so a killed run started again with `--resume` redoes only the jobs
//! without one. `schedule.json` lists every round's jobs and times.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use decode::{Request, SamplingParams, Settings};
use finetune::plan::{self, Job, MixPart, Objective, Plan};
use finetune::sequences::{encode_texts, MixText, SampledText, Sequence};
use finetune::{Adaptation, Auxiliary, LoraSet, Regularizer};
use lm::{DeviceChoice, DtypeChoice, LoadedModel, TrainableSelection};
use serde::{Deserialize, Serialize};

use crate::jsonl;

#[derive(Args, Debug)]
pub struct TrainFinetuneArgs {
    /// The fine-tuning spec (YAML; see experiments/finetune/*.yaml).
    pub spec: PathBuf,
    /// Continue a run whose output folder exists (the spec must be unchanged): finished jobs are
    /// kept, the rest run.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Args, Debug)]
pub struct FinetuneJobArgs {
    /// The run's output folder (holds plan.json and mix.jsonl).
    #[arg(long)]
    pub output: PathBuf,
    /// The job, as JSON (`finetune::plan::Job`).
    #[arg(long)]
    pub job: String,
}

const PLAN_FILE: &str = "plan.json";
const MIX_FILE: &str = "mix.jsonl";
const MIX_RECORD: &str = "mix.json";
const SCHEDULE_FILE: &str = "schedule.json";
pub const FINETUNE_RECORD: &str = "finetune.json";

/// What happened to one source of the mix.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MixCount {
    source: String,
    regularize: bool,
    available: usize,
    chosen: usize,
    /// Dropped by the data filter (scored at or above its threshold).
    filtered: usize,
    /// The filter's scorer failed on them; left out, since they could not be checked.
    filter_failed: usize,
    kept: usize,
}

/// `jobs/<name>.done.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRecord {
    job: Job,
    threads: usize,
    wall_seconds: f64,
    /// User + system CPU time of the job's process (all its threads).
    cpu_seconds: f64,
    details: serde_json::Value,
}

/// One round in `schedule.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoundRecord {
    round: usize,
    /// Jobs started together (parallel) or one after another (sequential).
    concurrent: bool,
    jobs: Vec<JobRecord>,
    /// Measured wall time of the round on this machine (`None` when some of its jobs finished in
    /// an earlier, interrupted invocation).
    wall_seconds: Option<f64>,
    /// The round's time with one worker per job: the slowest job's CPU time divided by its
    /// threads (parallel), or the sum of the jobs' (sequential). An estimate from CPU time,
    /// labelled as such wherever it is reported.
    critical_path_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScheduleRecord {
    plan: String,
    schedule: plan::Schedule,
    threads_per_job: usize,
    machine_cores: usize,
    rounds: Vec<RoundRecord>,
}

/// Resolves a spec's `base`: a path (with a `/`) against the spec's folder, or a model preset.
fn resolve_base(base: &str, dir: &Path) -> Result<PathBuf> {
    let path = if base.contains('/') || base.contains('\\') {
        dir.join(base)
    } else {
        #[derive(Deserialize)]
        struct Preset {
            path: PathBuf,
        }
        let file = spec::validate::presets_dir().join(format!("{base}.yaml"));
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "unknown model preset {base:?} ({} cannot be read); a path needs a `/`",
                file.display()
            )
        })?;
        let preset: Preset =
            serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        file.parent().unwrap_or(Path::new(".")).join(preset.path)
    };
    if !path.join("config.json").is_file() {
        bail!(
            "{}: not a Hugging Face model folder (no config.json)",
            path.display()
        );
    }
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

pub fn run(args: &TrainFinetuneArgs) -> Result<()> {
    let plan = plan::load(&args.spec, resolve_base)?;
    let out = &plan.output;
    let plan_path = out.join(PLAN_FILE);
    if out.exists() {
        if !args.resume {
            bail!(
                "{}: output folder {} already exists; pass --resume to continue that run, or remove it",
                args.spec.display(),
                out.display()
            );
        }
        let stored: Plan = serde_json::from_str(
            &std::fs::read_to_string(&plan_path)
                .with_context(|| format!("{}: cannot read", plan_path.display()))?,
        )
        .with_context(|| format!("{}: not a plan", plan_path.display()))?;
        if stored != plan {
            bail!(
                "{}: the spec changed since {} was written; resume only an unchanged spec (or use another output)",
                args.spec.display(),
                plan_path.display()
            );
        }
        note!("resuming {}", out.display());
    } else {
        check_lora_rank(&plan)?;
        std::fs::create_dir_all(out.join("jobs"))
            .with_context(|| format!("{}: cannot create", out.display()))?;
        std::fs::write(&plan_path, serde_json::to_string_pretty(&plan)? + "\n")
            .with_context(|| format!("{}: cannot write", plan_path.display()))?;
    }
    if !out.join(MIX_FILE).is_file() {
        if let Err(e) = build_mix(&plan) {
            // Nothing was trained: leave no half-made run behind.
            let _ = std::fs::remove_dir_all(out);
            return Err(e);
        }
    }

    let rounds = plan::rounds(plan.objective, plan.schedule, plan.iterations);
    let schedule_path = out.join(SCHEDULE_FILE);
    // A resumed run keeps the wall times its earlier invocations measured for rounds it does not
    // rerun (a round's jobs are all done: nothing to time now).
    let earlier_walls: Vec<Option<f64>> = if schedule_path.is_file() {
        let text = std::fs::read_to_string(&schedule_path)
            .with_context(|| format!("{}: cannot read", schedule_path.display()))?;
        let earlier: ScheduleRecord = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a schedule record", schedule_path.display()))?;
        earlier.rounds.iter().map(|r| r.wall_seconds).collect()
    } else {
        Vec::new()
    };
    let mut record = ScheduleRecord {
        plan: plan.name.clone(),
        schedule: plan.schedule,
        threads_per_job: plan.threads_per_job,
        machine_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rounds: Vec::new(),
    };
    for (i, jobs) in rounds.iter().enumerate() {
        // A parallel schedule's first round runs as a sequential one: its jobs feed each other.
        let concurrent = plan.schedule == plan::Schedule::Parallel && plan::independent(jobs);
        let pending: Vec<&Job> = jobs.iter().filter(|j| !is_done(out, j)).collect();
        let started = std::time::Instant::now();
        if !pending.is_empty() {
            note!(
                "round {}/{}: {}{}",
                i + 1,
                rounds.len(),
                pending
                    .iter()
                    .map(|j| j.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                if concurrent && pending.len() > 1 {
                    " (at once)"
                } else {
                    ""
                }
            );
        }
        if concurrent {
            let children: Vec<_> = pending
                .iter()
                .map(|job| Ok((*job, spawn_job(&plan, job)?)))
                .collect::<Result<_>>()?;
            let mut failed = Vec::new();
            for (job, mut child) in children {
                let status = child.wait()?;
                if !status.success() {
                    failed.push(job.name());
                }
            }
            if !failed.is_empty() {
                bail!(
                    "job(s) {} failed; see {}",
                    failed.join(", "),
                    out.join("jobs").display()
                );
            }
        } else {
            for job in &pending {
                let status = spawn_job(&plan, job)?.wait()?;
                if !status.success() {
                    bail!(
                        "job {} failed; see {}",
                        job.name(),
                        log_path(out, job).display()
                    );
                }
            }
        }
        let job_records: Vec<JobRecord> = jobs
            .iter()
            .map(|j| read_done(out, j))
            .collect::<Result<_>>()?;
        let per_job = |r: &JobRecord| r.cpu_seconds / r.threads as f64;
        let critical_path_seconds = if concurrent {
            job_records.iter().map(per_job).fold(0.0, f64::max)
        } else {
            job_records.iter().map(per_job).sum()
        };
        // Only a round run whole here has a wall time; a partly resumed one has none.
        let wall_seconds = if pending.len() == jobs.len() {
            Some(started.elapsed().as_secs_f64())
        } else if pending.is_empty() {
            earlier_walls.get(i).copied().flatten()
        } else {
            None
        };
        for r in &job_records {
            note!(
                "  {}: {:.1}s wall, {:.1}s CPU on {} thread(s)",
                r.job.name(),
                r.wall_seconds,
                r.cpu_seconds,
                r.threads
            );
        }
        record.rounds.push(RoundRecord {
            round: i + 1,
            concurrent,
            jobs: job_records,
            wall_seconds,
            critical_path_seconds,
        });
        std::fs::write(
            &schedule_path,
            serde_json::to_string_pretty(&record)? + "\n",
        )
        .with_context(|| format!("{}: cannot write", schedule_path.display()))?;
    }
    let total_wall: f64 = record.rounds.iter().filter_map(|r| r.wall_seconds).sum();
    let total_critical: f64 = record.rounds.iter().map(|r| r.critical_path_seconds).sum();
    note!(
        "{}: {} rounds; measured wall time {total_wall:.0}s on {} cores; critical path with one worker per job (from CPU time) {total_critical:.0}s",
        plan.name,
        record.rounds.len(),
        record.machine_cores
    );
    println!(
        "{}",
        out.join(format!("policy-{}", plan.iterations)).display()
    );
    Ok(())
}

/// A LoRA rank larger than a matrix's width is an error before anything trains.
fn check_lora_rank(plan: &Plan) -> Result<()> {
    let Adaptation::Lora(lora) = &plan.finetune.adaptation else {
        return Ok(());
    };
    let base = LoadedModel::load(&plan.base, DeviceChoice::Cpu, DtypeChoice::F32)?;
    let layers = base.model.info().num_layers;
    let tensors = base
        .model
        .trainable_tensors(&TrainableSelection::top(layers, layers));
    LoraSet::new(&tensors, lora, 0)
        .map(drop)
        .map_err(|e| anyhow::anyhow!("{}: finetune.adaptation: {e:#}", plan.spec.display()))
}

fn is_done(out: &Path, job: &Job) -> bool {
    done_path(out, job).is_file()
}

fn done_path(out: &Path, job: &Job) -> PathBuf {
    out.join("jobs").join(format!("{}.done.json", job.name()))
}

fn log_path(out: &Path, job: &Job) -> PathBuf {
    out.join("jobs").join(format!("{}.log", job.name()))
}

fn read_done(out: &Path, job: &Job) -> Result<JobRecord> {
    let path = done_path(out, job);
    serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?,
    )
    .with_context(|| format!("{}: not a job record", path.display()))
}

/// Starts `job` as `detox train finetune-job` with its thread budget, its output going to
/// `jobs/<name>.log`.
fn spawn_job(plan: &Plan, job: &Job) -> Result<std::process::Child> {
    let out = &plan.output;
    // A job killed half-way may have left its output: it is redone from scratch.
    let target = out.join(job_output(job));
    if target.is_dir() {
        std::fs::remove_dir_all(&target)?;
    } else if target.is_file() {
        std::fs::remove_file(&target)?;
    }
    let log = std::fs::File::create(log_path(out, job))?;
    let threads = plan.threads_per_job.to_string();
    let child = Command::new(std::env::current_exe()?)
        .args(["train", "finetune-job", "--output"])
        .arg(out)
        .arg("--job")
        .arg(serde_json::to_string(job)?)
        .env("OMP_NUM_THREADS", &threads)
        .env("MKL_NUM_THREADS", &threads)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start a job process")?;
    Ok(child)
}

fn job_output(job: &Job) -> String {
    match job {
        Job::Sample { policy } => format!("samples-{policy}.jsonl"),
        other => other.name(),
    }
}

/// The model folder of policy K (policy 0 is the base).
fn policy_dir(plan: &Plan, k: usize) -> PathBuf {
    if k == 0 {
        plan.base.clone()
    } else {
        plan.output.join(format!("policy-{k}"))
    }
}

/// A seeded order of `items` by their ids: the same for the same seed.
fn seeded_order<T>(items: &mut [T], seed: u64, id: impl Fn(&T) -> &str) {
    // FNV-1a alone leaves ids with a long common prefix (`wikitext2:valid-17`) close together in
    // its top bits, so sorting by it would cluster a source; splitmix64's finaliser spreads them.
    items.sort_by_key(|item| {
        paths::hash::splitmix64(paths::stable_hash(
            format!("{seed}|{}", id(item)).as_bytes(),
        ))
    });
}

fn load_part(part: &MixPart, seed: u64) -> Result<Vec<MixText>> {
    let mut texts: Vec<MixText> = if part.source == "wikitext2" {
        let path = paths::require(&paths::data_dir("wikitext2"), "data folder wikitext2")
            .map_err(anyhow::Error::msg)?
            .join("tokens")
            .join("valid.txt");
        data::wikitext::paragraphs(&path, 8)?
            .into_iter()
            .enumerate()
            .map(|(i, text)| MixText {
                id: format!("wikitext2:valid-{i}"),
                source: part.source.clone(),
                text,
                regularize: part.regularize,
            })
            .collect()
    } else {
        let set = data::labelled::load_source(&part.source, None, seed)?;
        let (train, _held_out) = data::labelled::shared_split(&set);
        train
            .into_iter()
            .map(|t| MixText {
                id: format!("{}:{}", t.source, t.id),
                source: part.source.clone(),
                text: t.text,
                regularize: part.regularize,
            })
            .collect()
    };
    seeded_order(&mut texts, seed, |t| &t.id);
    Ok(texts)
}

/// Loads, caps and (for the filtering baseline) filters the data mix, and writes it.
fn build_mix(plan: &Plan) -> Result<()> {
    let mut scorer = match &plan.filter {
        Some(rule) => Some(probe::build_scorer(&rule.scorer, plan.device.parse()?)?),
        None => None,
    };
    let mut mix = Vec::new();
    let mut counts = Vec::new();
    for part in &plan.data {
        let texts = load_part(part, plan.seed)?;
        let available = texts.len();
        let chosen: Vec<MixText> = texts.into_iter().take(part.limit).collect();
        let mut count = MixCount {
            source: part.source.clone(),
            regularize: part.regularize,
            available,
            chosen: chosen.len(),
            filtered: 0,
            filter_failed: 0,
            kept: 0,
        };
        let kept: Vec<MixText> = match (&mut scorer, &plan.filter) {
            (Some(scorer), Some(rule)) => {
                let refs: Vec<&str> = chosen.iter().map(|t| t.text.as_str()).collect();
                let scores = scorer.score_batch(&refs);
                chosen
                    .into_iter()
                    .zip(scores)
                    .filter(|(_, score)| match score {
                        Ok(s) if f64::from(*s) < rule.threshold => true,
                        Ok(_) => {
                            count.filtered += 1;
                            false
                        }
                        Err(_) => {
                            count.filter_failed += 1;
                            false
                        }
                    })
                    .map(|(t, _)| t)
                    .collect()
            }
            _ => chosen,
        };
        count.kept = kept.len();
        mix.extend(kept);
        counts.push(count);
    }
    let summary = counts
        .iter()
        .map(|c| {
            format!(
                "{}: {} of {} chosen, {} kept ({} filtered, {} unscored)",
                c.source, c.chosen, c.available, c.kept, c.filtered, c.filter_failed
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    if mix.is_empty() {
        bail!(
            "{}: data: the mix is empty after filtering ({summary})",
            plan.spec.display()
        );
    }
    note!("data mix: {} texts ({summary})", mix.len());
    let path = plan.output.join(MIX_FILE);
    write_jsonl_atomically(&path, &mix)?;
    std::fs::write(
        plan.output.join(MIX_RECORD),
        serde_json::to_string_pretty(&counts)? + "\n",
    )?;
    Ok(())
}

/// Writes `rows` as a JSON-lines file that appears only complete: a job's output, whose presence
/// a rerun trusts.
fn write_jsonl_atomically<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let staging = path.with_extension("jsonl.partial");
    let _ = std::fs::remove_file(&staging);
    let mut file = jsonl::open_append(&staging)?;
    jsonl::append(&mut file, &staging, rows)?;
    file.sync_all()?;
    std::fs::rename(&staging, path)
        .with_context(|| format!("cannot move {} to {}", staging.display(), path.display()))
}

fn read_mix(out: &Path) -> Result<Vec<MixText>> {
    let mut mix = Vec::new();
    jsonl::read_all(&out.join(MIX_FILE), "mix text", |_, t: MixText| {
        mix.push(t);
        Ok(())
    })?;
    Ok(mix)
}

fn read_samples(out: &Path, k: usize) -> Result<Vec<Sequence>> {
    let path = out.join(format!("samples-{k}.jsonl"));
    let mut sequences = Vec::new();
    jsonl::read_all(&path, "sample", |_, s: SampledText| {
        sequences.extend(s.sequence());
        Ok(())
    })?;
    Ok(sequences)
}

/// CPU time (user + system) of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return f64::NAN;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The body of `detox train finetune-job`.
pub fn run_job(args: &FinetuneJobArgs) -> Result<()> {
    let out = &args.output;
    let plan: Plan = serde_json::from_str(
        &std::fs::read_to_string(out.join(PLAN_FILE))
            .with_context(|| format!("{}: cannot read {PLAN_FILE}", out.display()))?,
    )?;
    let job: Job = serde_json::from_str(&args.job).context("--job is not a job")?;
    tch::set_num_threads(plan.threads_per_job as i32);
    let started = std::time::Instant::now();
    let device: DeviceChoice = plan.device.parse()?;
    let seed = plan.seed;
    let details = match &job {
        Job::Sample { policy } => sample_job(&plan, *policy, device)?,
        Job::Auxiliary { out: k, samples } => {
            let options = plan
                .auxiliary
                .clone()
                .context("plan has no auxiliary section")?;
            let (mut auxiliary, started_from) = if *k == 1 {
                (
                    Auxiliary::fresh(&plan.base, options.layers, device)?,
                    plan.base.display().to_string(),
                )
            } else {
                let from = out.join(format!("auxiliary-{}", k - 1));
                (
                    Auxiliary::load(&from, device, DtypeChoice::F32)?,
                    from.display().to_string(),
                )
            };
            let sequences = read_samples(out, *samples)?;
            let record = auxiliary.train(
                &sequences,
                &options,
                seed.wrapping_add(*k as u64),
                started_from,
                |line| note!("{line}"),
            )?;
            auxiliary.save(&out.join(format!("auxiliary-{k}")), &record)?;
            serde_json::to_value(&record)?
        }
        Job::Finetune {
            out: k,
            auxiliary,
            samples,
        } => finetune_job(&plan, *k, *auxiliary, *samples, device)?,
    };
    let record = JobRecord {
        job: job.clone(),
        threads: plan.threads_per_job,
        wall_seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds(),
        details,
    };
    let path = done_path(out, &job);
    std::fs::write(&path, serde_json::to_string_pretty(&record)? + "\n")
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// Samples continuations of the beginnings of a seeded choice of mix texts from policy K,
/// scores and labels them, and writes `samples-K.jsonl`.
fn sample_job(plan: &Plan, k: usize, device: DeviceChoice) -> Result<serde_json::Value> {
    let sampling = plan
        .sampling
        .as_ref()
        .context("plan has no sampling section")?;
    let label = plan.label.as_ref().context("plan has no label section")?;
    let mut mix = read_mix(&plan.output)?;
    seeded_order(&mut mix, plan.seed.wrapping_add(k as u64 + 1), |t| &t.id);
    let loaded = LoadedModel::load(&policy_dir(plan, k), device, DtypeChoice::F32)?;
    let mut requests = Vec::new();
    let mut chosen = std::collections::HashMap::new();
    for text in &mix {
        if chosen.len() == sampling.prompts {
            break;
        }
        let ids = loaded.tokenizer.encode(&text.text)?;
        // A prompt needs a token to continue from and the text must go on after it.
        if ids.len() <= sampling.prompt_tokens {
            continue;
        }
        let prompt = &ids[..sampling.prompt_tokens];
        requests.extend(Request::samples(
            &text.id,
            prompt,
            sampling.samples_per_prompt,
        ));
        chosen.insert(text.id.clone(), (text, prompt.to_vec()));
    }
    if requests.is_empty() {
        bail!(
            "no mix text is longer than sampling.prompt_tokens ({}) tokens",
            sampling.prompt_tokens
        );
    }
    let settings = Settings {
        max_new_tokens: sampling.max_new_tokens,
        sampling: SamplingParams {
            temperature: sampling.temperature,
            top_k: None,
            top_p: (sampling.top_p < 1.0).then_some(sampling.top_p),
        },
        seed: plan.seed.wrapping_add(k as u64),
        batch_size: sampling.batch_size,
        stop_at_eos: true,
    };
    let generations = decode::generate_all(
        loaded.model.as_ref(),
        &loaded.eos_token_ids,
        &requests,
        &settings,
        &mut [],
    )?;
    let texts: Vec<String> = generations
        .iter()
        .map(|g| loaded.tokenizer.decode(&g.token_ids))
        .collect::<Result<_>>()?;
    let mut scorer = probe::build_scorer(&label.scorer, device)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let scores = scorer.score_batch(&refs);
    let mut rows = Vec::with_capacity(generations.len());
    let (mut failed, mut toxic, mut total_toxicity) = (0usize, 0usize, 0.0);
    for ((g, text), score) in generations.into_iter().zip(texts).zip(scores) {
        let (source_text, prompt_ids) = &chosen[&g.prompt_id];
        let toxicity = score.ok();
        match toxicity {
            None => failed += 1,
            Some(t) => {
                total_toxicity += f64::from(t);
                toxic += usize::from(t >= 0.5);
            }
        }
        rows.push(SampledText {
            text_id: g.prompt_id.clone(),
            source: source_text.source.clone(),
            regularize: source_text.regularize,
            prompt_ids: prompt_ids.clone(),
            continuation_ids: g.token_ids,
            continuation: text,
            toxicity,
            label: toxicity.map(|t| label.label(t)),
        });
    }
    let scored = rows.len() - failed;
    note!(
        "policy-{k}: {} samples, {scored} scored ({failed} failed), mean toxicity {:.3}, {toxic} at or above 0.5",
        rows.len(),
        total_toxicity / scored.max(1) as f64
    );
    write_jsonl_atomically(&plan.output.join(format!("samples-{k}.jsonl")), &rows)?;
    Ok(serde_json::json!({
        "samples": rows.len(),
        "scored": scored,
        "failed": failed,
        "scorer": scorer.id(),
        "mean_toxicity": total_toxicity / scored.max(1) as f64,
        "toxic_samples": toxic,
    }))
}

/// What `finetune.json` in a fine-tuned policy's folder records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneRecord {
    pub format: String,
    pub plan: String,
    pub spec: PathBuf,
    pub base: PathBuf,
    /// The folder this round started from.
    pub started_from: PathBuf,
    pub round: usize,
    pub objective: Objective,
    pub lambda: f64,
    pub schedule: plan::Schedule,
    pub auxiliary: Option<PathBuf>,
    pub samples: Option<PathBuf>,
    pub data_texts: usize,
    pub data_sequences: usize,
    pub stats: finetune::FinetuneStats,
}

fn finetune_job(
    plan: &Plan,
    k: usize,
    auxiliary: Option<usize>,
    samples: Option<usize>,
    device: DeviceChoice,
) -> Result<serde_json::Value> {
    let out = &plan.output;
    let start = policy_dir(plan, k - 1);
    let policy = LoadedModel::load(&start, device, DtypeChoice::F32)?;
    let mix = read_mix(out)?;
    let info = policy.model.info().clone();
    let data = encode_texts(
        &policy.tokenizer,
        &mix,
        plan.finetune.max_tokens,
        info.vocab_size,
    )?;
    let sample_sequences = match samples {
        Some(s) => read_samples(out, s)?,
        None => Vec::new(),
    };
    let auxiliary_dir = auxiliary.map(|a| out.join(format!("auxiliary-{a}")));
    let reference;
    let aux_model;
    let regularizer = match plan.objective {
        Objective::Sft => Regularizer::None,
        Objective::Reinforce => Regularizer::Reinforce {
            samples: &sample_sequences,
        },
        Objective::Nado => {
            let dir = auxiliary_dir
                .as_ref()
                .context("a NADO round needs an auxiliary model")?;
            aux_model = Auxiliary::load(dir, device, DtypeChoice::F32)?;
            // The teacher's p is the policy as this round starts, frozen.
            reference = LoadedModel::load(&start, device, DtypeChoice::F32)?;
            Regularizer::Nado {
                reference: reference.model.as_ref(),
                auxiliary: &aux_model,
                samples: &sample_sequences,
            }
        }
    };
    let (stats, factors) = finetune::finetune(
        policy.model.as_ref(),
        &data,
        &regularizer,
        plan.lambda,
        &plan.finetune.options(),
        plan.seed.wrapping_add(k as u64),
        |line| note!("{line}"),
    )?;
    let target = out.join(format!("policy-{k}"));
    let layers = info.num_layers;
    lm::checkpoint::write_folder(
        &start,
        &target,
        None,
        policy
            .model
            .export_tensors(&TrainableSelection::top(layers, layers)),
    )?;
    if let Some(factors) = factors {
        tch::Tensor::write_safetensors(&factors, target.join("lora-adapters.safetensors"))?;
    }
    let record = FinetuneRecord {
        format: "detox-finetune/1".into(),
        plan: plan.name.clone(),
        spec: plan.spec.clone(),
        base: plan.base.clone(),
        started_from: start,
        round: k,
        objective: plan.objective,
        lambda: plan.lambda,
        schedule: plan.schedule,
        auxiliary: auxiliary_dir,
        samples: samples.map(|s| out.join(format!("samples-{s}.jsonl"))),
        data_texts: mix.len(),
        data_sequences: data.len(),
        stats,
    };
    std::fs::write(
        target.join(FINETUNE_RECORD),
        serde_json::to_string_pretty(&record)? + "\n",
    )?;
    Ok(serde_json::to_value(&record.stats)?)
}
