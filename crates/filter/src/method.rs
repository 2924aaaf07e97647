//! The `word_filter` method as a spec configures it: mode, lists, retry cap.

use std::str::FromStr;

use anyhow::{bail, Result};
use lm::TextTokenizer;

use crate::list::{load_lists, ListRef, WordList};
use crate::matcher::WordMatcher;
use crate::posthoc::PosthocFilter;
use crate::steering::WordFilter;

/// Redraws per sample in post-hoc mode unless a spec says otherwise.
pub const DEFAULT_MAX_RETRIES: u64 = 10;

/// Where the filter acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterMode {
    /// Ban the token sequences of listed words while decoding.
    #[default]
    Decode,
    /// Reject and redraw finished samples that contain a listed word.
    Posthoc,
    /// Both: banning while decoding, and redrawing what still slips through.
    Both,
}

impl FilterMode {
    pub const NAMES: [&'static str; 3] = ["decode", "posthoc", "both"];

    pub fn name(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Posthoc => "posthoc",
            Self::Both => "both",
        }
    }

    pub fn bans_while_decoding(self) -> bool {
        matches!(self, Self::Decode | Self::Both)
    }

    pub fn redraws_finished_samples(self) -> bool {
        matches!(self, Self::Posthoc | Self::Both)
    }
}

impl FromStr for FilterMode {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        Ok(match text {
            "decode" => Self::Decode,
            "posthoc" => Self::Posthoc,
            "both" => Self::Both,
            other => bail!(
                "unknown word filter mode {other:?} (expected one of {})",
                Self::NAMES.join(", ")
            ),
        })
    }
}

/// The parameters of the `word_filter` method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordFilterConfig {
    pub mode: FilterMode,
    /// Lists to merge; the default is RealToxicityPrompts' list, the one its baseline used.
    pub lists: Vec<ListRef>,
    /// Post-hoc redraws per sample (ignored in `decode` mode).
    pub max_retries: u64,
    /// Decode time: also apply the text rule ([`crate::text_rule`]), which bans a listed word
    /// however it is tokenized. Off gives RealToxicityPrompts' baseline exactly (the token
    /// sequences of the listed spellings only).
    pub text_rule: bool,
}

impl Default for WordFilterConfig {
    fn default() -> Self {
        Self {
            mode: FilterMode::default(),
            lists: vec![ListRef::Rtp],
            max_retries: DEFAULT_MAX_RETRIES,
            text_rule: true,
        }
    }
}

/// The parts a configured filter consists of: the steering for the decoder loop (decode mode)
/// and the rejecter for [`crate::generate_posthoc`] (post-hoc mode), each present only when the
/// mode uses it.
pub struct BuiltWordFilter {
    pub list: WordList,
    pub decode: Option<WordFilter>,
    pub posthoc: Option<PosthocFilter>,
}

impl WordFilterConfig {
    /// Reads the lists and builds what the mode needs, tokenizing with the steered model's
    /// `tokenizer`.
    pub fn build(&self, tokenizer: &TextTokenizer) -> Result<BuiltWordFilter> {
        if self.lists.is_empty() {
            bail!("word_filter: `lists` is empty (named lists: rtp, ldnoobw; or a file path)");
        }
        let list = load_lists(&self.lists)?;
        let decode = if self.mode.bans_while_decoding() {
            Some(if self.text_rule {
                WordFilter::from_list(&list, tokenizer)?
            } else {
                WordFilter::sequences_only(&list, tokenizer)?
            })
        } else {
            None
        };
        let posthoc = if self.mode.redraws_finished_samples() {
            Some(PosthocFilter {
                matcher: WordMatcher::new(&list)?,
                max_retries: self.max_retries,
            })
        } else {
            None
        };
        Ok(BuiltWordFilter {
            list,
            decode,
            posthoc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_say_what_they_do() {
        for name in FilterMode::NAMES {
            assert_eq!(name.parse::<FilterMode>().unwrap().name(), name);
        }
        let error = "post-hoc".parse::<FilterMode>().unwrap_err().to_string();
        assert!(error.contains("decode, posthoc, both"), "{error}");
        assert!(FilterMode::Decode.bans_while_decoding());
        assert!(!FilterMode::Decode.redraws_finished_samples());
        assert!(
            FilterMode::Both.bans_while_decoding() && FilterMode::Both.redraws_finished_samples()
        );
        assert_eq!(FilterMode::default(), FilterMode::Decode);
        let config = WordFilterConfig::default();
        assert_eq!(config.lists, [ListRef::Rtp]);
        assert_eq!(config.max_retries, 10);
        assert!(config.text_rule);
    }
}
