//! Fusion at decoding time: calibration-model fusion and DExperts as [`decode::Steering`]
//! methods. Both read extra models through [`decode::Follower`]s that see every row's whole text, and
//! both change the full logits before truncation (as the papers do), adding to them rather than
//! replacing them so that an earlier method's changes (a word filter's bans) survive.
//!
//! Every extra model must give each token the same id as the target (checked in `prepare`): the
//! follower feeds it the loop's ids as they are. A calibration model built from the target's own
//! base shares its tokenizer by construction; for a target with another tokenizer both methods
//! refuse with an error naming the two folders, rather than re-tokenizing each step (mapping a
//! target position to a calibration position is ambiguous across merges, and the alignment map
//! would be trained on positions that never line up).

use anyhow::{bail, Result};
use decode::{ReadAlong, Request, Steering, Step};
use lm::{CausalLm, LoadedModel, TextTokenizer};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::align::AlignMap;
use crate::readout::{fused_state, MapNorm};

/// The fused logits: `logits` + head(h̃) − head(h) with h̃ = α·norm(readout(h_cal)) + (1 − α)·h,
/// the readout h_cal·A + b through `map`, or h_cal itself without one (the identity readout).
/// The target's head is linear without bias (Llama, GPT-2), so this equals head(h̃) when `logits`
/// are head(h), as the paper computes it, and keeps whatever an earlier method did to them.
pub fn fused_logits(
    target: &dyn CausalLm,
    target_hidden: &Tensor,
    calibration_hidden: &Tensor,
    map: Option<&AlignMap>,
    norm: MapNorm,
    alpha: f64,
    logits: &Tensor,
) -> Tensor {
    let readout = match map {
        Some(map) => map.map(calibration_hidden),
        None => calibration_hidden.to_kind(Kind::Float),
    };
    let shift =
        fused_state(target_hidden, &readout, norm, alpha) - target_hidden.to_kind(Kind::Float);
    logits + target.logits(&shift.to_kind(target_hidden.kind()))
}

/// The tokens of each row inside the nucleus of `logits` `[B, V]` (the smallest set of most
/// likely tokens whose probability reaches `p`, as Hugging Face's top-p filter keeps it): a
/// boolean mask of the same shape.
pub fn nucleus_mask(logits: &Tensor, p: f64) -> Tensor {
    let (sorted, order) = logits.to_kind(Kind::Float).sort(-1, true);
    let probs = sorted.softmax(-1, Kind::Float);
    // A token stays when the mass of the tokens above it is still short of p.
    let keep_sorted = (probs.cumsum(-1, Kind::Float) - &probs).lt(p);
    keep_sorted.zeros_like().scatter(-1, &order, &keep_sorted)
}

/// Checks that `other` gives every token the id the target gives it.
fn check_shared_ids(
    what: &str,
    other: &LoadedModel,
    target: &TextTokenizer,
    target_vocab: i64,
) -> Result<()> {
    if !other.tokenizer.same_ids_as(target) || other.model.info().vocab_size != target_vocab {
        bail!(
            "{what} {} does not share the target's tokenizer (vocabulary of {} tokens, model \
             vocabulary {}): fusion feeds it the target's token ids, so it needs the same \
             tokenizer; build one from the target's own base (`detox train calibration --base`)",
            other.dir.display(),
            other.tokenizer.vocab_size(),
            other.model.info().vocab_size
        );
    }
    Ok(())
}

fn check_device(what: &str, other: &LoadedModel, target: &dyn CausalLm) -> Result<()> {
    let (a, b) = (other.model.info().device, target.info().device);
    if a != b {
        bail!("the {what} is on {a:?} but the target on {b:?}");
    }
    Ok(())
}

/// Fusion's α: 0 leaves the target alone, 1 replaces its state by the mapped calibration state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionParams {
    pub alpha: f64,
    /// Applied to the readout before mixing.
    pub norm: MapNorm,
}

impl FusionParams {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.alpha) {
            bail!(
                "calibration_fusion: alpha must be in [0, 1], got {}",
                self.alpha
            );
        }
        Ok(())
    }
}

pub struct CalibrationFusion {
    calibration: LoadedModel,
    /// `None`: the identity readout.
    map: Option<AlignMap>,
    params: FusionParams,
    reader: ReadAlong,
    steps: usize,
    seconds: f64,
}

impl CalibrationFusion {
    /// `target_tokenizer` is the decoding model's, checked against the calibration model's;
    /// `map` is `None` for the identity readout.
    pub fn new(
        calibration: LoadedModel,
        map: Option<AlignMap>,
        target_tokenizer: &TextTokenizer,
        target_vocab: i64,
        params: FusionParams,
    ) -> Result<Self> {
        params.validate()?;
        check_shared_ids(
            "the calibration model",
            &calibration,
            target_tokenizer,
            target_vocab,
        )?;
        if let Some(map) = &map {
            if map.calibration_width() != calibration.model.info().hidden_size {
                bail!(
                    "{}: the map takes states of width {} but the calibration model {} has {}",
                    map.source
                        .as_ref()
                        .map_or("alignment map".into(), |p| p.display().to_string()),
                    map.calibration_width(),
                    calibration.dir.display(),
                    calibration.model.info().hidden_size
                );
            }
        }
        Ok(Self {
            calibration,
            map,
            params,
            reader: ReadAlong::default(),
            steps: 0,
            seconds: 0.0,
        })
    }
}

impl Steering for CalibrationFusion {
    fn name(&self) -> &str {
        "calibration_fusion"
    }

    fn prepare(&mut self, model: &dyn CausalLm) -> Result<()> {
        check_device("calibration model", &self.calibration, model)?;
        let target_width = model.info().hidden_size;
        match &mut self.map {
            Some(map) => {
                map.move_to(model.info().device);
                if map.target_width() != target_width {
                    bail!(
                        "the alignment map gives states of width {} but the target's are \
                         {target_width}",
                        map.target_width()
                    );
                }
            }
            None => {
                let width = self.calibration.model.info().hidden_size;
                if width != target_width {
                    bail!(
                        "the identity readout needs the calibration model {} to have the \
                         target's width, but it has {width} and the target {target_width}; use a \
                         ridge or infonce map (`detox train align`)",
                        self.calibration.dir.display()
                    );
                }
            }
        }
        Ok(())
    }

    fn begin(&mut self, rows: &[&Request]) -> Result<()> {
        self.reader.begin(self.calibration.model.as_ref(), rows)
    }

    fn adjust_logits(&mut self, step: &Step, logits: &mut Tensor) -> Result<()> {
        let started = std::time::Instant::now();
        *logits = fused_logits(
            step.model,
            step.hidden,
            self.reader.hidden()?,
            self.map.as_ref(),
            self.params.norm,
            self.params.alpha,
            logits,
        );
        self.steps += 1;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    fn observe(&mut self, _step: &Step, tokens: &[i64]) -> Result<()> {
        self.reader.advance(self.calibration.model.as_ref(), tokens)
    }

    fn retain_rows(&mut self, keep: &[usize]) -> Result<()> {
        self.reader.retain(keep);
        Ok(())
    }

    fn counters(&self) -> Vec<(String, f64)> {
        vec![
            ("fusion_steps".into(), self.steps as f64),
            (
                "fusion_seconds".into(),
                self.seconds + self.reader.seconds(),
            ),
        ]
    }
}

/// DExperts' α (paper: 2.0): how far the logits move along z_expert − z_anti; and the nucleus
/// the base logits are cut to first (the reference's `filter_p`, 0.9; 1 cuts nothing, leaving
/// truncation to the loop's top-p after the experts, as this harness did before).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DExpertsParams {
    pub alpha: f64,
    pub filter_p: f64,
}

impl DExpertsParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            bail!(
                "dexperts: alpha must be a finite number >= 0, got {}",
                self.alpha
            );
        }
        if !(self.filter_p > 0.0 && self.filter_p <= 1.0) {
            bail!(
                "dexperts: filter_p must be in (0, 1], got {}",
                self.filter_p
            );
        }
        Ok(())
    }
}

/// z = filter(z_base) + α(z_expert − z_anti), the expert and anti-expert each reading the whole
/// text on its own cache, the filter keeping the base's nucleus of `filter_p` (tokens outside it
/// get −∞, so no expert can promote a token the base model rules out).
pub struct DExperts {
    expert: LoadedModel,
    anti_expert: LoadedModel,
    params: DExpertsParams,
    expert_reader: ReadAlong,
    anti_reader: ReadAlong,
    steps: usize,
    seconds: f64,
}

impl DExperts {
    pub fn new(
        expert: LoadedModel,
        anti_expert: LoadedModel,
        target_tokenizer: &TextTokenizer,
        target_vocab: i64,
        params: DExpertsParams,
    ) -> Result<Self> {
        params.validate()?;
        check_shared_ids("the expert", &expert, target_tokenizer, target_vocab)?;
        check_shared_ids(
            "the anti-expert",
            &anti_expert,
            target_tokenizer,
            target_vocab,
        )?;
        Ok(Self {
            expert,
            anti_expert,
            params,
            expert_reader: ReadAlong::default(),
            anti_reader: ReadAlong::default(),
            steps: 0,
            seconds: 0.0,
        })
    }
}

impl Steering for DExperts {
    fn name(&self) -> &str {
        "dexperts"
    }

    fn prepare(&mut self, model: &dyn CausalLm) -> Result<()> {
        check_device("expert", &self.expert, model)?;
        check_device("anti-expert", &self.anti_expert, model)
    }

    fn begin(&mut self, rows: &[&Request]) -> Result<()> {
        self.expert_reader.begin(self.expert.model.as_ref(), rows)?;
        self.anti_reader
            .begin(self.anti_expert.model.as_ref(), rows)
    }

    fn adjust_logits(&mut self, _step: &Step, logits: &mut Tensor) -> Result<()> {
        let started = std::time::Instant::now();
        let z_expert = self.expert.model.logits(self.expert_reader.hidden()?);
        let z_anti = self.anti_expert.model.logits(self.anti_reader.hidden()?);
        let base = if self.params.filter_p < 1.0 {
            let outside = nucleus_mask(logits, self.params.filter_p).logical_not();
            logits.masked_fill(&outside, f64::NEG_INFINITY)
        } else {
            logits.shallow_clone()
        };
        *logits = base + (z_expert - z_anti) * self.params.alpha;
        self.steps += 1;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    fn observe(&mut self, _step: &Step, tokens: &[i64]) -> Result<()> {
        self.expert_reader
            .advance(self.expert.model.as_ref(), tokens)?;
        self.anti_reader
            .advance(self.anti_expert.model.as_ref(), tokens)
    }

    fn retain_rows(&mut self, keep: &[usize]) -> Result<()> {
        self.expert_reader.retain(keep);
        self.anti_reader.retain(keep);
        Ok(())
    }

    fn counters(&self) -> Vec<(String, f64)> {
        vec![
            ("dexperts_steps".into(), self.steps as f64),
            (
                "dexperts_seconds".into(),
                self.seconds + self.expert_reader.seconds() + self.anti_reader.seconds(),
            ),
        ]
    }
}
