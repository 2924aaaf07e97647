//! Labelled toxicity text by source name, as `train-scorer` and `audit-scorer` take it, with the
//! train / held-out split they share (so an audit measures exactly the texts training held out).

use anyhow::{bail, Result};
use clap::Args;
use data::labelled::{self, FileOptions, JigsawOptions};
use data::{LabelledSet, LabelledText};
use sasa::SourceTexts;

/// Source names for `--data` / `--labelled`.
pub const SOURCES: [&str; 5] = ["jigsaw", "davidson", "paradetox", "toxigen", "templates"];

/// Fraction of every source held out of training, and the seed that picks it.
pub const HELD_OUT: f64 = 0.2;
pub const SPLIT_SEED: u64 = 17;

/// Loads one source from the shared data folder, at most `per_label` toxic and `per_label`
/// non-toxic texts (seeded choice).
pub fn load(name: &str, per_label: Option<usize>, seed: u64) -> Result<LabelledSet> {
    let dir = |d: &str| {
        paths::require(&paths::data_dir(d), &format!("data folder {d}")).map_err(anyhow::Error::msg)
    };
    let file = |path| FileOptions {
        per_label,
        seed,
        ..FileOptions::new(path)
    };
    match name {
        "jigsaw" => labelled::load_jigsaw(&JigsawOptions {
            per_label,
            seed,
            ..JigsawOptions::split(&dir("sknlp_detox_jigsaw")?.join("dev"), "dev")
        }),
        "davidson" => labelled::load_davidson(&file(
            dir("davidson_hate_offensive")?.join("labeled_data.csv"),
        )),
        "paradetox" => labelled::load_paradetox(&file(dir("paradetox")?.join("paradetox.tsv"))),
        "toxigen" => {
            labelled::load_toxigen(&file(dir("toxigen")?.join("toxigen_prompt_sentences.tsv")))
        }
        "templates" => labelled::load_templates(&file(
            dir("conversationai_bias")?.join("en_sentence_templates.csv"),
        )),
        other => bail!(
            "unknown labelled source {other:?} (expected one of: {})",
            SOURCES.join(", ")
        ),
    }
}

/// The (train, held-out) parts of a source under the shared split.
pub fn split(set: &LabelledSet) -> (Vec<LabelledText>, Vec<LabelledText>) {
    set.split(HELD_OUT, SPLIT_SEED)
}

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
            let set = load(name, self.per_label, self.seed)?;
            let (mut train, held_out) = split(&set);
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
