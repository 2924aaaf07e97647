//! One job of a schedule, as the worker process the scheduler starts runs it ([`run_job`]): sample
//! and label, train the auxiliary model, or fine-tune the policy. A job reads only finished
//! outputs, writes its own, and then its done record (`jobs/<name>.done.json`) with its wall and
//! CPU time: the record's presence is what marks the job done.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lm::{DeviceChoice, DtypeChoice, LoadedModel, TrainableSelection};
use serde::{Deserialize, Serialize};

use crate::layout::{self, FINETUNE_RECORD, PLAN_FILE};
use crate::nado::Auxiliary;
use crate::objective::{FinetuneStats, LoraFactors, Regularizer};
use crate::plan::{Job, Objective, Plan, Schedule};
use crate::sequences::{encode_texts, Sequence};

/// `jobs/<name>.done.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: Job,
    pub threads: usize,
    pub wall_seconds: f64,
    /// User + system CPU time of the job's process (all its threads).
    pub cpu_seconds: f64,
    /// What the job measured (its samples' tally, the auxiliary's or the fine-tuning's record).
    pub details: serde_json::Value,
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
    pub schedule: Schedule,
    pub auxiliary: Option<PathBuf>,
    pub samples: Option<PathBuf>,
    pub data_texts: usize,
    pub data_sequences: usize,
    pub stats: FinetuneStats,
}

/// Runs `job` (as JSON, the way the scheduler passes it) of the run in `out`, then writes its done
/// record. Uses the plan's thread budget for libtorch.
pub fn run_job(out: &Path, job: &str, log: &mut dyn FnMut(&str)) -> Result<()> {
    let plan: Plan = layout::read_json(&out.join(PLAN_FILE), "a plan")?;
    let job: Job = serde_json::from_str(job).context("--job is not a job")?;
    tch::set_num_threads(plan.threads_per_job as i32);
    let started = std::time::Instant::now();
    let device: DeviceChoice = plan.device.parse()?;
    let details = match &job {
        Job::Sample { policy } => crate::label::sample_and_label(&plan, *policy, device, log)?,
        Job::Auxiliary { out: k, samples } => auxiliary_job(&plan, *k, *samples, device, log)?,
        Job::Finetune {
            out: k,
            auxiliary,
            samples,
        } => finetune_job(&plan, *k, *auxiliary, *samples, device, log)?,
    };
    let record = JobRecord {
        job: job.clone(),
        threads: plan.threads_per_job,
        wall_seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds(),
        details,
    };
    layout::write_json(&layout::done_path(out, &job), &record)
}

/// CPU time (user + system) of this process so far: the job's own, since each job is a process.
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

/// auxiliary-K ← train(auxiliary-(K−1), or for K = 1 a fresh one from the base's first blocks
/// with its head's bias at logit(mean label), on samples-`samples`). The consistency regularizer
/// and the KL measurement read policy-`samples`, the policy that drew those samples (the base in
/// round 1): R is the chance of a non-toxic ending under the distribution the samples come from.
fn auxiliary_job(
    plan: &Plan,
    k: usize,
    samples: usize,
    device: DeviceChoice,
    log: &mut dyn FnMut(&str),
) -> Result<serde_json::Value> {
    let out = &plan.output;
    let options = plan
        .auxiliary
        .clone()
        .context("plan has no auxiliary section")?;
    let sequences = layout::read_samples(out, samples)?;
    let (mut auxiliary, started_from) = if k == 1 {
        (
            Auxiliary::fresh(
                &plan.base,
                options.layers,
                device,
                crate::nado::mean_label(&sequences),
            )?,
            plan.base.display().to_string(),
        )
    } else {
        let from = layout::auxiliary_dir(out, k - 1);
        (
            Auxiliary::load(&from, device, DtypeChoice::F32)?,
            from.display().to_string(),
        )
    };
    let sampler = LoadedModel::load(&layout::policy_dir(plan, samples), device, DtypeChoice::F32)?;
    let record = auxiliary.train(
        &sequences,
        &options,
        sampler.model.as_ref(),
        plan.seed.wrapping_add(k as u64),
        started_from,
        log,
    )?;
    auxiliary.save(&layout::auxiliary_dir(out, k), &record)?;
    Ok(serde_json::to_value(&record)?)
}

/// NADO's frozen teacher: the policy as the round starts, and the round's auxiliary model.
struct Teacher {
    reference: LoadedModel,
    auxiliary: Auxiliary,
}

impl Teacher {
    fn load(auxiliary: Option<&Path>, start: &Path, device: DeviceChoice) -> Result<Self> {
        let dir = auxiliary.context("a NADO round needs an auxiliary model")?;
        let auxiliary = Auxiliary::load(dir, device, DtypeChoice::F32)?;
        let reference = LoadedModel::load(start, device, DtypeChoice::F32)?;
        Ok(Teacher {
            reference,
            auxiliary,
        })
    }
}

/// The objective's regularizer over `samples` (`teacher` is loaded for NADO only).
fn regularizer<'a>(
    objective: Objective,
    teacher: Option<&'a Teacher>,
    samples: &'a [Sequence],
) -> Regularizer<'a> {
    match (objective, teacher) {
        (Objective::Nado, Some(teacher)) => Regularizer::Nado {
            reference: teacher.reference.model.as_ref(),
            auxiliary: &teacher.auxiliary,
            samples,
        },
        (Objective::Reinforce, _) => Regularizer::Reinforce { samples },
        _ => Regularizer::None,
    }
}

/// policy-K ← fine-tune(policy-(K−1)) on the mix, regularized on samples-`samples` (and, for
/// NADO, towards the teacher with auxiliary-`auxiliary`).
fn finetune_job(
    plan: &Plan,
    k: usize,
    auxiliary: Option<usize>,
    samples: Option<usize>,
    device: DeviceChoice,
    log: &mut dyn FnMut(&str),
) -> Result<serde_json::Value> {
    let out = &plan.output;
    let start = layout::policy_dir(plan, k - 1);
    let policy = LoadedModel::load(&start, device, DtypeChoice::F32)?;
    let mix = layout::read_mix(out)?;
    let info = policy.model.info().clone();
    let data = encode_texts(
        &policy.tokenizer,
        &mix,
        plan.finetune.max_tokens,
        info.vocab_size,
    )?;
    let sample_sequences = match samples {
        Some(s) => layout::read_samples(out, s)?,
        None => Vec::new(),
    };
    let auxiliary_dir = auxiliary.map(|a| layout::auxiliary_dir(out, a));
    let teacher = match plan.objective {
        Objective::Nado => Some(Teacher::load(auxiliary_dir.as_deref(), &start, device)?),
        Objective::Sft | Objective::Reinforce => None,
    };
    let (stats, factors) = crate::finetune(
        policy.model.as_ref(),
        &data,
        &regularizer(plan.objective, teacher.as_ref(), &sample_sequences),
        plan.lambda,
        &plan.finetune.options(),
        plan.seed.wrapping_add(k as u64),
        log,
    )?;
    let target = layout::policy_dir(plan, k);
    write_policy(&start, &target, &policy, factors)?;
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
        samples: samples.map(|s| layout::samples_path(out, s)),
        data_texts: mix.len(),
        data_sequences: data.len(),
        stats,
    };
    layout::write_json(&target.join(FINETUNE_RECORD), &record)?;
    Ok(serde_json::to_value(&record.stats)?)
}

/// Writes the fine-tuned `policy` as a Hugging Face folder beside its `start`'s files, with the
/// LoRA adapters when there are some (the weights already have them merged).
fn write_policy(
    start: &Path,
    target: &Path,
    policy: &LoadedModel,
    factors: Option<LoraFactors>,
) -> Result<()> {
    let layers = policy.model.info().num_layers;
    lm::checkpoint::write_folder(
        start,
        target,
        None,
        policy
            .model
            .export_tensors(&TrainableSelection::top(layers, layers)),
    )?;
    if let Some(factors) = factors {
        tch::Tensor::write_safetensors(&factors, target.join("lora-adapters.safetensors"))?;
    }
    Ok(())
}
