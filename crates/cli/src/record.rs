//! The run record of a cell (`record.json`): what produced its outputs and what it cost.
//!
//! Written after every stage (whole, by rename), so a killed run keeps the record of the stages it
//! finished. A resumed cell adds to it: wall time and tokens accumulate over the processes that
//! worked on the cell, so tokens/s stays the rate of the generation work actually done.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub cell_id: String,
    pub git: GitState,
    pub versions: Versions,
    /// The device the cell ran on (resolved: `cpu`, `cuda:0`), not the spec's `auto`.
    pub device: String,
    pub dtype: String,
    pub batch_size: usize,
    pub seed: u64,
    /// libtorch intra-op threads.
    pub threads: i32,
    /// Host and its core count, so cost numbers can be compared only where they are comparable.
    pub host: Host,
    pub stages: BTreeMap<String, StageRecord>,
    pub peak_memory: PeakMemory,
    /// Processes that worked on this cell (more than one after a resume).
    pub runs: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GitState {
    pub commit: Option<String>,
    /// Uncommitted changes to tracked files when the cell last ran.
    pub dirty: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    pub detox: String,
    pub libtorch: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    pub cpus: usize,
}

/// One stage's cost, summed over the processes that ran it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub wall_seconds: f64,
    /// Samples this stage produced (generated, scored or evaluated).
    pub samples: usize,
    /// Generation only: new tokens and the seconds spent producing them (model loading excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// Method-specific counts summed over runs (e.g. `posthoc_redraws`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeakMemory {
    /// Peak resident set size of the process while it worked on this cell (Linux `VmHWM`, reset
    /// at the start of each cell); the largest over resumed runs.
    pub host_rss_bytes: Option<u64>,
    /// Accelerator memory; not measured (libtorch's allocator statistics are not reachable
    /// through tch), so `null` rather than a guess.
    pub device_bytes: Option<u64>,
}

impl RunRecord {
    /// The record already in `path`, or a fresh one.
    pub fn load_or_new(path: &Path, cell_id: &str) -> Result<Self> {
        let mut record = if path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not a run record", path.display()))?
        } else {
            RunRecord::default()
        };
        record.cell_id = cell_id.to_string();
        record.git = git_state();
        record.versions = Versions {
            detox: env!("CARGO_PKG_VERSION").to_string(),
            libtorch: env!("DETOX_LIBTORCH_VERSION").to_string(),
        };
        record.host = Host {
            name: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        };
        record.threads = tch::get_num_threads();
        record.runs += 1;
        Ok(record)
    }

    /// Adds one process's work on a stage.
    pub fn add_stage(
        &mut self,
        stage: &str,
        wall_seconds: f64,
        samples: usize,
    ) -> &mut StageRecord {
        let s = self.stages.entry(stage.to_string()).or_default();
        s.wall_seconds += wall_seconds;
        s.samples += samples;
        s
    }

    /// Adds generated tokens and their decoding time to the `generate` stage.
    pub fn add_tokens(&mut self, new_tokens: usize, decode_seconds: f64) {
        let s = self.stages.entry("generate".into()).or_default();
        let tokens = s.new_tokens.unwrap_or(0) + new_tokens;
        let seconds = s.decode_seconds.unwrap_or(0.0) + decode_seconds;
        s.new_tokens = Some(tokens);
        s.decode_seconds = Some(seconds);
        s.tokens_per_second = (seconds > 0.0).then(|| tokens as f64 / seconds);
    }

    /// Adds to a method-specific count of the `generate` stage.
    pub fn add_counter(&mut self, name: &str, value: f64) {
        let s = self.stages.entry("generate".into()).or_default();
        *s.counters.entry(name.to_string()).or_default() += value;
    }

    /// Takes the process's peak RSS since the cell started into the record (keeping the larger).
    pub fn note_peak_memory(&mut self) {
        if let Some(peak) = peak_rss_bytes() {
            let prev = self.peak_memory.host_rss_bytes.unwrap_or(0);
            self.peak_memory.host_rss_bytes = Some(prev.max(peak));
        }
    }

    /// Writes the record whole, by rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        let partial = path.with_extension("json.part");
        std::fs::write(&partial, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("{}: cannot write", partial.display()))?;
        std::fs::rename(&partial, path)
            .with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(())
    }
}

/// Resets the kernel's peak-RSS mark of this process (Linux; elsewhere a no-op), so the next
/// reading covers only what follows.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The project checkout's commit and whether tracked files differ from it.
fn git_state() -> GitState {
    let root = paths::project_root();
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    GitState {
        commit: git(&["rev-parse", "HEAD"]),
        dirty: git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_accumulate_over_resumed_runs() {
        let dir = std::env::temp_dir().join(format!("record-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("record.json");
        let mut first = RunRecord::load_or_new(&path, "abc").unwrap();
        first.add_stage("generate", 10.0, 40);
        first.add_tokens(800, 8.0);
        first.save(&path).unwrap();
        let mut second = RunRecord::load_or_new(&path, "abc").unwrap();
        second.add_stage("generate", 5.0, 10);
        second.add_tokens(200, 2.0);
        second.note_peak_memory();
        second.save(&path).unwrap();
        let back = RunRecord::load_or_new(&path, "abc").unwrap();
        let g = &back.stages["generate"];
        assert_eq!(g.samples, 50);
        assert_eq!(g.wall_seconds, 15.0);
        assert_eq!(g.new_tokens, Some(1000));
        assert_eq!(g.tokens_per_second, Some(100.0));
        assert_eq!(back.runs, 3, "two saved runs plus this load");
        assert!(back.peak_memory.host_rss_bytes.unwrap() > 1 << 20);
        assert_eq!(back.versions.detox, env!("CARGO_PKG_VERSION"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
