//! The files of a fine-tuning run's output folder, named in one place: the scheduler, the job
//! processes and the data mix all read and write them (see [`crate::plan`] for what each output
//! holds).
//!
//! ```text
//! plan.json              the validated plan (a resumed run must match it)
//! mix.jsonl, mix.json    the data mix and what happened to each of its sources
//! samples-K.jsonl        policy K's scored and labelled samples
//! auxiliary-K/           round K's NADO auxiliary model
//! policy-K/              round K's fine-tuned model, with finetune.json
//! jobs/<name>.log        a job process's output
//! jobs/<name>.done.json  written last by a job: its presence marks the job done
//! schedule.json          every round's jobs and times
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use data::jsonl;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::plan::{Job, Plan};
use crate::sequences::{MixText, SampledText, Sequence};

pub const PLAN_FILE: &str = "plan.json";
pub const MIX_FILE: &str = "mix.jsonl";
pub const MIX_RECORD: &str = "mix.json";
pub const SCHEDULE_FILE: &str = "schedule.json";
/// In a fine-tuned policy's folder: what produced it.
pub const FINETUNE_RECORD: &str = "finetune.json";

/// `jobs/`: the jobs' logs and done records.
pub fn jobs_dir(out: &Path) -> PathBuf {
    out.join("jobs")
}

/// `jobs/<name>.done.json`.
pub fn done_path(out: &Path, job: &Job) -> PathBuf {
    jobs_dir(out).join(format!("{}.done.json", job.name()))
}

/// `jobs/<name>.log`.
pub fn log_path(out: &Path, job: &Job) -> PathBuf {
    jobs_dir(out).join(format!("{}.log", job.name()))
}

/// `samples-K.jsonl`.
pub fn samples_path(out: &Path, k: usize) -> PathBuf {
    out.join(format!("samples-{k}.jsonl"))
}

/// `auxiliary-K/`.
pub fn auxiliary_dir(out: &Path, k: usize) -> PathBuf {
    out.join(format!("auxiliary-{k}"))
}

/// The file or folder a job writes.
pub fn job_output(out: &Path, job: &Job) -> PathBuf {
    match job {
        Job::Sample { policy } => samples_path(out, *policy),
        other => out.join(other.name()),
    }
}

/// The model folder of policy K (policy 0 is the base, not copied).
pub fn policy_dir(plan: &Plan, k: usize) -> PathBuf {
    if k == 0 {
        plan.base.clone()
    } else {
        plan.output.join(format!("policy-{k}"))
    }
}

/// Reads a JSON file written by this module's callers; `what` names it in errors.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not {what}", path.display()))
}

/// Writes `value` as pretty JSON with a final newline.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("{}: cannot write", path.display()))
}

/// Writes `rows` as a JSON-lines file that appears only complete: a job's output, whose presence
/// a rerun trusts.
pub fn write_jsonl_atomically<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let staging = path.with_extension("jsonl.partial");
    let _ = std::fs::remove_file(&staging);
    let mut file = jsonl::open_append(&staging)?;
    jsonl::append(&mut file, &staging, rows)?;
    file.sync_all()?;
    std::fs::rename(&staging, path)
        .with_context(|| format!("cannot move {} to {}", staging.display(), path.display()))
}

/// The data mix, in the order it was written.
pub fn read_mix(out: &Path) -> Result<Vec<MixText>> {
    let mut mix = Vec::new();
    jsonl::read_all(&out.join(MIX_FILE), "mix text", |_, t: MixText| {
        mix.push(t);
        Ok(())
    })?;
    Ok(mix)
}

/// Policy K's samples as training sequences (unscored and empty ones left out).
pub fn read_samples(out: &Path, k: usize) -> Result<Vec<Sequence>> {
    let mut sequences = Vec::new();
    jsonl::read_all(&samples_path(out, k), "sample", |_, s: SampledText| {
        sequences.extend(s.sequence());
        Ok(())
    })?;
    Ok(sequences)
}
