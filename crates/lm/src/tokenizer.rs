//! A thin wrapper over Hugging Face `tokenizers` with errors that name the file.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use tokenizers::Tokenizer;

#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(anyhow!("{}: tokenizer file does not exist", path.display()));
        }
        let inner = Tokenizer::from_file(path)
            .map_err(|e| anyhow!("{}: cannot load tokenizer: {e}", path.display()))?;
        Ok(Self {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// For encoders: special tokens added by the tokenizer's template (e.g. `[CLS] … [SEP]`),
    /// truncation at `max_len`, and no padding (batches are padded by the caller). Bundled
    /// sentence-transformers tokenizers fix padding and truncation at 128; this overrides them.
    pub fn for_encoder(path: &Path, max_len: usize) -> Result<Self> {
        let mut tokenizer = Self::from_file(path)?;
        tokenizer.inner.with_padding(None);
        tokenizer
            .inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| anyhow!("{}: cannot set truncation: {e}", path.display()))?;
        Ok(tokenizer)
    }

    /// Token ids of `text` with the tokenizer's special tokens (encoder input).
    pub fn encode_with_special(&self, text: &str) -> Result<Vec<i64>> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| anyhow!("{}: cannot encode text: {e}", self.path.display()))?;
        Ok(encoding.get_ids().iter().map(|&id| id as i64).collect())
    }

    /// Token ids of `text`. No special tokens are added: prompts are continued as written, which
    /// is what the toxicity benchmarks do (and chat markers in the text stay single tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("{}: cannot encode text: {e}", self.path.display()))?;
        Ok(encoding.get_ids().iter().map(|&id| id as i64).collect())
    }

    /// Text of `ids`, with special tokens (end-of-sequence, chat markers) dropped.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&id| id as u32).collect();
        self.inner
            .decode(&ids, true)
            .map_err(|e| anyhow!("{}: cannot decode ids: {e}", self.path.display()))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Every token string (added tokens included) with its id.
    pub fn vocabulary(&self) -> std::collections::HashMap<String, u32> {
        self.inner.get_vocab(true)
    }

    /// Whether `other` gives every token the same id: then one model's ids can be fed to the
    /// other as they are. Compared through the vocabularies (string → id), not file paths.
    pub fn same_ids_as(&self, other: &TextTokenizer) -> bool {
        self.vocab_size() == other.vocab_size() && self.vocabulary() == other.vocabulary()
    }

    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// A conventional end-of-sequence token, when the vocabulary has one.
    pub fn eos_token_id(&self) -> Option<i64> {
        ["<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"]
            .iter()
            .find_map(|t| self.token_to_id(t))
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}
