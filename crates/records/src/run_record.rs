//! `record.json`: what produced a cell's outputs and what it cost.
//!
//! Written after every stage (whole, by rename), so a killed run keeps the record of the stages it
//! finished. A resumed cell adds to it: wall time and tokens accumulate over the processes that
//! worked on the cell, so tokens/s stays the rate of the generation work actually done. Filling in
//! the process's facts (git commit, versions, host, threads) is the writer's job: this crate knows
//! no libtorch.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::Versioned;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(default = "crate::first_version")]
    pub schema: u32,
    #[serde(default)]
    pub cell_id: String,
    #[serde(default)]
    pub git: GitState,
    #[serde(default)]
    pub versions: Versions,
    /// The device the cell ran on (resolved: `cpu`, `cuda:0`), not the spec's `auto`.
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub dtype: String,
    #[serde(default)]
    pub batch_size: usize,
    #[serde(default)]
    pub seed: u64,
    /// libtorch intra-op threads.
    #[serde(default)]
    pub threads: i32,
    /// Host and its core count, so cost numbers can be compared only where they are comparable.
    #[serde(default)]
    pub host: Host,
    #[serde(default)]
    pub stages: BTreeMap<String, StageRecord>,
    #[serde(default)]
    pub peak_memory: PeakMemory,
    /// Processes that worked on this cell (more than one after a resume).
    #[serde(default)]
    pub runs: usize,
}

impl Default for RunRecord {
    fn default() -> Self {
        RunRecord {
            schema: crate::SCHEMA_VERSION,
            cell_id: String::new(),
            git: GitState::default(),
            versions: Versions::default(),
            device: String::new(),
            dtype: String::new(),
            batch_size: 0,
            seed: 0,
            threads: 0,
            host: Host::default(),
            stages: BTreeMap::new(),
            peak_memory: PeakMemory::default(),
            runs: 0,
        }
    }
}

impl Versioned for RunRecord {
    fn schema(&self) -> u32 {
        self.schema
    }
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
    #[serde(default)]
    pub wall_seconds: f64,
    /// Samples this stage produced (generated, scored or evaluated).
    #[serde(default)]
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
    /// The record already in `path`, or a fresh one; `runs` counts this process.
    pub fn load_or_new(path: &Path) -> Result<Self> {
        let mut record = if path.is_file() {
            crate::read_json(path, "run record")?
        } else {
            RunRecord::default()
        };
        record.schema = crate::SCHEMA_VERSION;
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

    /// Keeps the larger of the recorded and the given peak resident memory.
    pub fn note_peak_rss(&mut self, bytes: Option<u64>) {
        if let Some(peak) = bytes {
            let prev = self.peak_memory.host_rss_bytes.unwrap_or(0);
            self.peak_memory.host_rss_bytes = Some(prev.max(peak));
        }
    }

    /// Writes the record whole, by rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::write_json(path, self)
    }

    /// Generation throughput: the recorded rate, else new tokens ÷ decoding seconds, else new
    /// tokens ÷ the stage's wall seconds.
    pub fn tokens_per_second(&self) -> Option<f64> {
        let generate = self.stages.get("generate")?;
        let rate = |seconds: f64| {
            generate
                .new_tokens
                .filter(|_| seconds > 0.0)
                .map(|tokens| tokens as f64 / seconds)
        };
        generate
            .tokens_per_second
            .or_else(|| generate.decode_seconds.and_then(rate))
            .or_else(|| rate(generate.wall_seconds))
    }

    pub fn stage_seconds(&self, stage: &str) -> Option<f64> {
        self.stages.get(stage).map(|s| s.wall_seconds)
    }

    /// Sum over every recorded stage's wall time.
    pub fn total_seconds(&self) -> Option<f64> {
        (!self.stages.is_empty()).then(|| self.stages.values().map(|s| s.wall_seconds).sum())
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
        let mut first = RunRecord::load_or_new(&path).unwrap();
        first.add_stage("generate", 10.0, 40);
        first.add_tokens(800, 8.0);
        first.save(&path).unwrap();
        let mut second = RunRecord::load_or_new(&path).unwrap();
        second.add_stage("generate", 5.0, 10);
        second.add_tokens(200, 2.0);
        second.note_peak_rss(Some(5 << 20));
        second.save(&path).unwrap();
        let back = RunRecord::load_or_new(&path).unwrap();
        let g = &back.stages["generate"];
        assert_eq!(g.samples, 50);
        assert_eq!(g.wall_seconds, 15.0);
        assert_eq!(g.new_tokens, Some(1000));
        assert_eq!(g.tokens_per_second, Some(100.0));
        assert_eq!(back.runs, 3, "two saved runs plus this load");
        assert_eq!(back.peak_memory.host_rss_bytes, Some(5 << 20));
        assert_eq!(back.total_seconds(), Some(15.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_without_schema_reads_as_version_one() {
        let r: RunRecord = serde_json::from_str(r#"{"cell_id": "x", "runs": 2}"#).unwrap();
        assert_eq!((r.schema, r.runs), (1, 2));
    }
}
