//! Prompt sources and labelled toxicity text for the detoxification harness.
//!
//! * [`prompts`]: RealToxicityPrompts, BOLD, AttaQ, ToxiGen and users' own files, each prompt with a
//!   stable id and its group kept, loaded through a [`PromptSourceSpec`] with filters, caps and seeded
//!   subsampling.
//! * [`labelled`]: text with a toxicity label in \[0, 1\] for training classifiers (s-nlp Jigsaw
//!   sentences, Davidson, ParaDetox, ToxiGen seeds, identity templates), through a
//!   [`LabelledSourceSpec`].
//!
//! The data sets themselves are not shipped (tests read them from the shared data folder, see
//! `paths::data_dir`). Official sources: RealToxicityPrompts from AllenAI (allenai/real-toxicity-prompts;
//! the DecodingTrust samples from AI-secure/DecodingTrust), BOLD from amazon-science/bold, AttaQ
//! from IBM (ibm/AttaQ on Hugging Face), ToxiGen from microsoft/TOXIGEN, Davidson from
//! t-davidson/hate-speech-and-offensive-language, ParaDetox and the Jigsaw sentences from
//! s-nlp/paradetox and s-nlp/detox, the identity templates from
//! conversationai/unintended-ml-bias-analysis.
//!
//! Every loader is strict by default: a malformed row is an error naming the file and its 1-based
//! line. With `lenient: true` such rows are skipped and counted in [`Counts::malformed`] instead, so
//! a run over a slightly broken file still says how much it dropped.

pub mod inspect;
pub mod jsonl;
pub mod labelled;
pub mod prompts;
mod read;
mod sample;
pub mod spec;
pub mod wikitext;

pub use labelled::{LabelledSet, LabelledText, TemplateSentence};
pub use prompts::{Prompt, PromptSet};
pub use spec::{load, load_labelled, LabelledSourceSpec, PromptSourceSpec, PROMPT_SOURCE_KINDS};

use serde::{Deserialize, Serialize};

/// What a loader did with the rows of its source. Every row read ends in exactly one of
/// `malformed`, `filtered`, `sampled_out` or `kept` (see [`Counts::is_consistent`]). Rows are
/// records of the file (a JSONL line, a CSV record, a BOLD prompt); blank lines are not rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Rows found in the source.
    pub read: usize,
    /// Rows skipped as malformed (only with `lenient: true`; strict loading errors instead).
    pub malformed: usize,
    /// Rows removed by a filter (group, label, challenging flag, toxicity range).
    pub filtered: usize,
    /// Rows that passed the filters but were left out by a cap or a seeded sample.
    pub sampled_out: usize,
    /// Rows returned.
    pub kept: usize,
}

impl Counts {
    /// `read == malformed + filtered + sampled_out + kept`.
    pub fn is_consistent(&self) -> bool {
        self.read == self.malformed + self.filtered + self.sampled_out + self.kept
    }

    /// Adds another source's counts (for sources made of several files).
    pub fn add(&mut self, other: &Counts) {
        self.read += other.read;
        self.malformed += other.malformed;
        self.filtered += other.filtered;
        self.sampled_out += other.sampled_out;
        self.kept += other.kept;
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read {}, kept {}, filtered {}, sampled out {}, malformed {}",
            self.read, self.kept, self.filtered, self.sampled_out, self.malformed
        )
    }
}
