//! The `--data` / `--evaluate` arguments of the fits (`train sasa`, `train rad-reward`, `train
//! fusion`): labelled sources by name, split as `data::labelled::registry` splits them for every
//! consumer.

use anyhow::{bail, Result};
use clap::Args;
use data::labelled;
use sasa::SourceTexts;

/// Which labelled texts a fit uses (`train sasa`, `train rad-reward`).
#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// Labelled sources to fit on (comma-separated): jigsaw, davidson, paradetox, toxigen,
    /// templates. Each is split into train and held-out parts as `train-scorer` splits it.
    #[arg(long, value_delimiter = ',', default_value = "jigsaw")]
    pub data: Vec<String>,
    /// Sources whose held-out part is only measured on, not fitted on (comma-separated): how
    /// the fit carries over to other kinds of text.
    #[arg(long, value_delimiter = ',')]
    pub evaluate: Vec<String>,
    /// At most this many toxic and this many non-toxic texts per source (seeded choice; default
    /// all of them).
    #[arg(long)]
    pub per_label: Option<usize>,
    /// Seed of the per-label choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SourceArgs {
    /// Every named source, split; sources named by `--evaluate` keep no training texts. Prints a
    /// line per source.
    pub fn load(&self) -> Result<Vec<SourceTexts>> {
        if self.data.is_empty() {
            bail!("--data names no source");
        }
        if let Some(both) = self.evaluate.iter().find(|e| self.data.contains(e)) {
            bail!("{both:?} is named in both --data and --evaluate");
        }
        let named = self.data.iter().map(|n| (n, true));
        let mut sources = Vec::with_capacity(self.data.len() + self.evaluate.len());
        for (name, fitted) in named.chain(self.evaluate.iter().map(|n| (n, false))) {
            let set = labelled::load_source(name, self.per_label, self.seed)?;
            let (mut train, held_out) = labelled::shared_split(&set);
            let (toxic, clean) = set.toxic_and_clean();
            eprintln!(
                "{name}: {} texts ({toxic} toxic, {clean} non-toxic): {} train{}, {} held out",
                set.len(),
                train.len(),
                if fitted { "" } else { " (not used)" },
                held_out.len()
            );
            if !fitted {
                train.clear();
            }
            sources.push(SourceTexts {
                name: name.clone(),
                train,
                held_out,
            });
        }
        Ok(sources)
    }

    /// `<command> --data … [--evaluate …]`, for the fitted file's record.
    pub fn procedure(&self, command: &str) -> String {
        let mut line = format!("{command} --data {}", self.data.join(","));
        if !self.evaluate.is_empty() {
            line.push_str(&format!(" --evaluate {}", self.evaluate.join(",")));
        }
        line
    }
}
