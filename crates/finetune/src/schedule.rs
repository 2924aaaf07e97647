//! The scheduler behind `detox train finetune SPEC`: opens (or resumes) a run's output folder,
//! builds its data mix, and runs the plan's rounds, each job a worker process of its own.
//!
//! Every job gets its own libtorch thread budget (`threads_per_job`), so a parallel round's three
//! jobs really run at once and a sequential round's run one after another with the same budget
//! each. A job's done record is what marks it done (see [`crate::jobs`]), so a killed run started
//! again with `resume` redoes only the jobs without one. `schedule.json` lists every round's jobs
//! and times.
//!
//! The scheduler does not assume which binary it runs in: the caller says how to start a worker
//! ([`Worker`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{bail, Context, Result};
use lm::{DeviceChoice, DtypeChoice, LoadedModel, TrainableSelection};
use serde::{Deserialize, Serialize};

use crate::jobs::JobRecord;
use crate::layout::{self, MIX_FILE, PLAN_FILE, SCHEDULE_FILE};
use crate::lora::LoraSet;
use crate::objective::Adaptation;
use crate::plan::{self, Job, Plan};

/// How to start the process that runs one job: `program` with `args`, to which the scheduler
/// adds `--output <run folder> --job <job as JSON>`. The process hands those to
/// [`crate::jobs::run_job`] (for `detox`: the current executable with `train finetune-job`).
#[derive(Debug, Clone)]
pub struct Worker {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// One round in `schedule.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: usize,
    /// Jobs started together (parallel) or one after another (sequential).
    pub concurrent: bool,
    pub jobs: Vec<JobRecord>,
    /// Measured wall time of the round on this machine (`None` when some of its jobs finished in
    /// an earlier, interrupted invocation).
    pub wall_seconds: Option<f64>,
    /// The round's time with one worker per job: the slowest job's CPU time divided by its
    /// threads (parallel), or the sum of the jobs' (sequential). An estimate from CPU time,
    /// labelled as such wherever it is reported.
    pub critical_path_seconds: f64,
}

/// `schedule.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub plan: String,
    pub schedule: plan::Schedule,
    pub threads_per_job: usize,
    pub machine_cores: usize,
    pub rounds: Vec<RoundRecord>,
}

/// Runs the spec at `spec` to the end: a new run in its output folder, or with `resume` the
/// unfinished jobs of an unchanged one. `resolve_base` turns the spec's `base` into a model
/// folder (see [`plan::load`]). Returns the last policy's folder (the auxiliary model's, for a
/// plan that stops after it).
pub fn train(
    spec: &Path,
    resume: bool,
    resolve_base: impl Fn(&str, &Path) -> Result<PathBuf>,
    worker: &Worker,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let plan = plan::load(spec, resolve_base)?;
    open_run(&plan, resume, log)?;
    let record = run_rounds(&plan, worker, log)?;
    let total_wall: f64 = record.rounds.iter().filter_map(|r| r.wall_seconds).sum();
    let total_critical: f64 = record.rounds.iter().map(|r| r.critical_path_seconds).sum();
    log(&format!(
        "{}: {} rounds; measured wall time {total_wall:.0}s on {} cores; critical path with one worker per job (from CPU time) {total_critical:.0}s",
        plan.name,
        record.rounds.len(),
        record.machine_cores
    ));
    if plan.auxiliary_only {
        return Ok(layout::auxiliary_dir(&plan.output, 1));
    }
    Ok(layout::policy_dir(&plan, plan.iterations))
}

/// Creates the output folder with `plan.json` (or checks a resumed run's plan is unchanged) and
/// builds the data mix if it is not there yet.
fn open_run(plan: &Plan, resume: bool, log: &mut dyn FnMut(&str)) -> Result<()> {
    let out = &plan.output;
    let plan_path = out.join(PLAN_FILE);
    if out.exists() {
        if !resume {
            bail!(
                "{}: output folder {} already exists; pass --resume to continue that run, or remove it",
                plan.spec.display(),
                out.display()
            );
        }
        let stored: Plan = layout::read_json(&plan_path, "a plan")?;
        if stored != *plan {
            bail!(
                "{}: the spec changed since {} was written; resume only an unchanged spec (or use another output)",
                plan.spec.display(),
                plan_path.display()
            );
        }
        log(&format!("resuming {}", out.display()));
    } else {
        check_lora_rank(plan)?;
        let jobs = layout::jobs_dir(out);
        std::fs::create_dir_all(&jobs)
            .with_context(|| format!("{}: cannot create", out.display()))?;
        layout::write_json(&plan_path, plan)?;
    }
    if !out.join(MIX_FILE).is_file() {
        if let Err(e) = crate::mix::build(plan, log) {
            // Nothing was trained: leave no half-made run behind.
            let _ = std::fs::remove_dir_all(out);
            return Err(e);
        }
    }
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

/// Runs every round's pending jobs, writing `schedule.json` after each round.
fn run_rounds(plan: &Plan, worker: &Worker, log: &mut dyn FnMut(&str)) -> Result<ScheduleRecord> {
    let out = &plan.output;
    let rounds = plan.rounds();
    let schedule_path = out.join(SCHEDULE_FILE);
    // A resumed run keeps the wall times its earlier invocations measured for rounds it does not
    // rerun (a round's jobs are all done: nothing to time now).
    let earlier_walls: Vec<Option<f64>> = if schedule_path.is_file() {
        let earlier: ScheduleRecord = layout::read_json(&schedule_path, "a schedule record")?;
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
        let pending: Vec<&Job> = jobs
            .iter()
            .filter(|j| !layout::done_path(out, j).is_file())
            .collect();
        let started = std::time::Instant::now();
        if !pending.is_empty() {
            let names: Vec<String> = pending.iter().map(|j| j.name()).collect();
            let at_once = if concurrent && pending.len() > 1 {
                " (at once)"
            } else {
                ""
            };
            log(&format!(
                "round {}/{}: {}{at_once}",
                i + 1,
                rounds.len(),
                names.join(", ")
            ));
        }
        run_jobs(plan, worker, &pending, concurrent)?;
        // Only a round run whole here has a wall time; a partly resumed one has none.
        let wall_seconds = if pending.len() == jobs.len() {
            Some(started.elapsed().as_secs_f64())
        } else if pending.is_empty() {
            earlier_walls.get(i).copied().flatten()
        } else {
            None
        };
        let round = round_record(out, i + 1, jobs, concurrent, wall_seconds)?;
        for r in &round.jobs {
            log(&format!(
                "  {}: {:.1}s wall, {:.1}s CPU on {} thread(s)",
                r.job.name(),
                r.wall_seconds,
                r.cpu_seconds,
                r.threads
            ));
        }
        record.rounds.push(round);
        layout::write_json(&schedule_path, &record)?;
    }
    Ok(record)
}

/// Runs `jobs` as worker processes, all at once or one after another; fails when any fails.
fn run_jobs(plan: &Plan, worker: &Worker, jobs: &[&Job], concurrent: bool) -> Result<()> {
    let out = &plan.output;
    if concurrent {
        let children: Vec<(&Job, Child)> = jobs
            .iter()
            .map(|job| Ok((*job, spawn_job(plan, worker, job)?)))
            .collect::<Result<_>>()?;
        let mut failed = Vec::new();
        for (job, mut child) in children {
            if !child.wait()?.success() {
                failed.push(job.name());
            }
        }
        if !failed.is_empty() {
            bail!(
                "job(s) {} failed; see {}",
                failed.join(", "),
                layout::jobs_dir(out).display()
            );
        }
    } else {
        for job in jobs {
            if !spawn_job(plan, worker, job)?.wait()?.success() {
                bail!(
                    "job {} failed; see {}",
                    job.name(),
                    layout::log_path(out, job).display()
                );
            }
        }
    }
    Ok(())
}

/// Starts `job` as a worker process with its thread budget, its output going to
/// `jobs/<name>.log`.
fn spawn_job(plan: &Plan, worker: &Worker, job: &Job) -> Result<Child> {
    let out = &plan.output;
    // A job killed half-way may have left its output: it is redone from scratch.
    let target = layout::job_output(out, job);
    if target.is_dir() {
        std::fs::remove_dir_all(&target)?;
    } else if target.is_file() {
        std::fs::remove_file(&target)?;
    }
    let log = std::fs::File::create(layout::log_path(out, job))?;
    let threads = plan.threads_per_job.to_string();
    Command::new(&worker.program)
        .args(&worker.args)
        .arg("--output")
        .arg(out)
        .arg("--job")
        .arg(serde_json::to_string(job)?)
        .env("OMP_NUM_THREADS", &threads)
        .env("MKL_NUM_THREADS", &threads)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start a job process")
}

/// A round's record from its jobs' done records.
fn round_record(
    out: &Path,
    round: usize,
    jobs: &[Job],
    concurrent: bool,
    wall_seconds: Option<f64>,
) -> Result<RoundRecord> {
    let jobs: Vec<JobRecord> = jobs
        .iter()
        .map(|j| layout::read_json(&layout::done_path(out, j), "a job record"))
        .collect::<Result<_>>()?;
    Ok(RoundRecord {
        round,
        concurrent,
        critical_path_seconds: critical_path(&jobs, concurrent),
        jobs,
        wall_seconds,
    })
}

/// The round's time with one worker per job, from each job's CPU time over its threads: the
/// slowest job when they run at once, their sum otherwise.
fn critical_path(jobs: &[JobRecord], concurrent: bool) -> f64 {
    let per_job = jobs.iter().map(|r| r.cpu_seconds / r.threads as f64);
    if concurrent {
        per_job.fold(0.0, f64::max)
    } else {
        per_job.sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cpu_seconds: f64, threads: usize) -> JobRecord {
        JobRecord {
            job: Job::Sample { policy: 0 },
            threads,
            wall_seconds: 1.0,
            cpu_seconds,
            details: serde_json::Value::Null,
        }
    }

    #[test]
    fn critical_path_is_the_slowest_job_at_once_and_the_sum_in_turn() {
        let jobs = [record(4.0, 2), record(3.0, 1), record(1.0, 1)];
        assert_eq!(critical_path(&jobs, true), 3.0);
        assert_eq!(critical_path(&jobs, false), 6.0);
        assert_eq!(critical_path(&[], true), 0.0);
    }
}
