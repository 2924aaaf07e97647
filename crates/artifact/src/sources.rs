//! The labelled texts an artifact is fitted on, split, and the counts its file records of them.

use data::LabelledText;
use serde::{Deserialize, Serialize};

/// Texts of one labelled source, by class and by part of the shared split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceCounts {
    pub toxic: usize,
    pub non_toxic: usize,
    pub train: usize,
    pub held_out: usize,
}

/// Labelled texts of one source, split.
pub struct SourceTexts {
    pub name: String,
    pub train: Vec<LabelledText>,
    pub held_out: Vec<LabelledText>,
}
