//! Labelled toxicity text by source name, as `train-scorer` and `audit-scorer` take it, with the
//! train / held-out split they share (so an audit measures exactly the texts training held out).

use anyhow::{bail, Result};
use data::labelled::{self, FileOptions, JigsawOptions};
use data::{LabelledSet, LabelledText};

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
