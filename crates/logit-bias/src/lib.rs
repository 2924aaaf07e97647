//! `logit_bias`: adds a fixed bias (the strength; negative pushes away) to the next-token logits
//! of every token that starts one of the listed words, written with and without a leading space.
//! A blunt baseline: unlike word filtering it neither bans nor follows multi-token words, it only
//! makes their first tokens more or less likely.
//!
//! This crate is the worked example of `docs/adding-a-method.md`: a parameter struct, its
//! [`Method`] (metadata derived from the struct, a check, a factory) and a [`Steering`]
//! implementation are everything a decoding-time method needs.

use anyhow::{ensure, Result};
use decode::{Method, MethodParts, Steering, Step, StepParams};
use lm::{LoadedModel, TextTokenizer};
use method_info::{derive_params, MethodInfo, ParamDoc, StrengthInfo};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// What a spec may give `logit_bias` (the strength is the bias, in logits).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogitBiasParams {
    /// Comma-separated words whose first tokens get the bias.
    pub words: String,
}

const DOCS: &[ParamDoc] = &[ParamDoc::new(
    "words",
    "comma-separated words; the first token of each (with and without a leading space) gets the bias",
)];

impl LogitBiasParams {
    fn words(&self) -> Vec<&str> {
        self.words
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .collect()
    }
}

/// The method as the harness registers it.
pub struct LogitBiasMethod;

impl Method for LogitBiasMethod {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "logit_bias",
            description: "a fixed bias (the strength; negative pushes away) on the logits of the first token of each listed word",
            params: derive_params::<LogitBiasParams>(DOCS),
            strength: Some(StrengthInfo::new(-100.0, 100.0, -10.0)),
            full_distribution: false,
        }
    }

    fn check(&self, step: &StepParams) -> Result<()> {
        let params: LogitBiasParams = step.parse()?;
        ensure!(
            !params.words().is_empty(),
            "logit_bias: `words` lists no word"
        );
        Ok(())
    }

    fn build<'m>(&self, model: &'m LoadedModel, step: &StepParams) -> Result<MethodParts<'m>> {
        let params: LogitBiasParams = step.parse()?;
        let bias = step.required_strength("bias")?;
        Ok(MethodParts::steering(LogitBias::new(
            &model.tokenizer,
            &params.words(),
            bias,
        )?))
    }
}

/// The steering step: `logits[:, tokens] += bias` at every step.
pub struct LogitBias {
    tokens: Vec<i64>,
    bias: f64,
}

impl LogitBias {
    pub fn new(tokenizer: &TextTokenizer, words: &[&str], bias: f64) -> Result<Self> {
        let mut tokens = Vec::new();
        for word in words {
            for spelling in [word.to_string(), format!(" {word}")] {
                if let Some(&first) = tokenizer.encode(&spelling)?.first() {
                    tokens.push(first);
                }
            }
        }
        tokens.sort_unstable();
        tokens.dedup();
        Ok(LogitBias { tokens, bias })
    }

    /// The token ids that get the bias.
    pub fn tokens(&self) -> &[i64] {
        &self.tokens
    }
}

impl Steering for LogitBias {
    fn name(&self) -> &str {
        "logit_bias"
    }

    fn adjust_logits(&mut self, _step: &Step, logits: &mut Tensor) -> Result<()> {
        if self.tokens.is_empty() || self.bias == 0.0 {
            return Ok(());
        }
        let index = Tensor::from_slice(&self.tokens).to_device(logits.device());
        let columns = logits.index_select(1, &index) + self.bias;
        let _ = logits.index_copy_(1, &index, &columns);
        Ok(())
    }

    fn counters(&self) -> Vec<(String, f64)> {
        vec![("logit_bias_tokens".into(), self.tokens.len() as f64)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_derives_the_parameter() {
        let info = LogitBiasMethod.info();
        assert_eq!(info.params.len(), 1);
        assert_eq!(info.params[0].name, "words");
    }
}
