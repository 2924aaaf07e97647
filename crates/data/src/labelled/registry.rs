//! The labelled sources of the shared data folder by name (`jigsaw`, `davidson`, `paradetox`,
//! `toxigen`, `templates`), and the train / held-out split every consumer shares: the scorer's
//! training and audit, SASA's and RAD's fits, and fine-tuning's data mix. One split for all of
//! them, so an audit measures exactly the texts a fit held out.

use anyhow::{bail, Result};

use super::{FileOptions, JigsawOptions, LabelledSet, LabelledText};
use crate::spec::LabelledSourceSpec;

/// The names [`load_source`] knows.
pub const SOURCES: [&str; 5] = ["jigsaw", "davidson", "paradetox", "toxigen", "templates"];

/// Fraction of every source held out of training.
pub const HELD_OUT: f64 = 0.2;
/// The seed that picks the held-out texts.
pub const SPLIT_SEED: u64 = 17;

/// Where a named source lives in the shared data folder, with at most `per_label` toxic and
/// `per_label` non-toxic texts (a seeded choice). Fails when the data folder is missing.
pub fn source_spec(name: &str, per_label: Option<usize>, seed: u64) -> Result<LabelledSourceSpec> {
    let dir = |d: &str| {
        paths::require(&paths::data_dir(d), &format!("data folder {d}")).map_err(anyhow::Error::msg)
    };
    let file = |path| FileOptions {
        per_label,
        seed,
        ..FileOptions::new(path)
    };
    Ok(match name {
        "jigsaw" => LabelledSourceSpec::Jigsaw(JigsawOptions {
            per_label,
            seed,
            ..JigsawOptions::split(&dir("sknlp_detox_jigsaw")?.join("dev"), "dev")
        }),
        "davidson" => LabelledSourceSpec::Davidson(file(
            dir("davidson_hate_offensive")?.join("labeled_data.csv"),
        )),
        "paradetox" => LabelledSourceSpec::Paradetox(file(dir("paradetox")?.join("paradetox.tsv"))),
        "toxigen" => {
            LabelledSourceSpec::Toxigen(file(dir("toxigen")?.join("toxigen_prompt_sentences.tsv")))
        }
        "templates" => LabelledSourceSpec::Templates(file(
            dir("conversationai_bias")?.join("en_sentence_templates.csv"),
        )),
        // Not in SOURCES (the classifiers' binary mix): continuous Perspective targets for RAD's
        // reward model. The non-toxic-prompt file trains; the challenging file, from which the
        // experiments draw their prompts, is only ever held out.
        "rtp-nontoxic" => LabelledSourceSpec::Rtp(file(
            dir("realtoxicityprompts")?.join("decodingtrust/nontoxic.jsonl"),
        )),
        "rtp-challenging" => LabelledSourceSpec::Rtp(file(
            dir("realtoxicityprompts")?.join("decodingtrust/toxic.jsonl"),
        )),
        other => bail!(
            "unknown labelled source {other:?} (expected one of: {}, rtp-nontoxic, rtp-challenging)",
            SOURCES.join(", ")
        ),
    })
}

/// Loads a named source (see [`source_spec`]). An empty result is not an error here: callers
/// report the counts.
pub fn load_source(name: &str, per_label: Option<usize>, seed: u64) -> Result<LabelledSet> {
    crate::spec::load_labelled_set(&source_spec(name, per_label, seed)?)
}

/// The (train, held-out) parts of a set under the shared split ([`HELD_OUT`], [`SPLIT_SEED`]).
pub fn shared_split(set: &LabelledSet) -> (Vec<LabelledText>, Vec<LabelledText>) {
    set.split(HELD_OUT, SPLIT_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = source_spec("reddit", None, 0).unwrap_err().to_string();
        assert!(err.contains("unknown labelled source \"reddit\""), "{err}");
        assert!(err.contains(&SOURCES.join(", ")), "{err}");
    }
}
