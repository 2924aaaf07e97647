//! Fitting the reward head with the backbone frozen.
//!
//! RAD trains its reward model with the cumulative squared loss over prefixes: for a text of l
//! tokens with target y, L = 2/(l(l+1)) · Σₜ t·(r(x₁..ₜ) − y)², so every prefix predicts the final
//! label and later prefixes weigh more (the weights 2t/(l(l+1)) sum to 1 per text). With
//! r = θᵀx, x = [h, 1], that is weighted least squares in θ: summed over texts,
//!
//! Σ L = θᵀGθ − 2θᵀc + Σ y²,  G = Σᵢ Σₜ wᵢₜ xᵢₜ xᵢₜᵀ,  c = Σᵢ yᵢ x̄ᵢ,  x̄ᵢ = Σₜ wᵢₜ xᵢₜ,
//!
//! minimised exactly by (G + λD)θ = c (λ a small ridge on w, D the identity without the bias).
//! G ([H+1]²) and the per-text x̄ᵢ are accumulated in float64 while texts stream through the
//! backbone, so no per-position feature is ever stored; the same statistics give the held-out
//! prefix loss, and the last-token features give the reward decoding reads.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use artifact::{ModelIdentity, SourceCounts, SourceTexts};
use data::LabelledText;
use lm::{check_token_ids, left_pad, ArchitectureConfig, CausalLm, LoadedModel, TextTokenizer};
use tch::{Device, Kind, Tensor};

use crate::artifact::{RewardFitRecord, RewardHead, RewardMetrics, TrainedBlocks};
use crate::train::{train_top_blocks, TopBlockOptions};

/// Ridge λ relative to the mean diagonal of G's feature block: (G + λ·tr(G_hh)/H · D)θ = c.
/// Small enough to leave a well-determined fit alone (thousands of texts, hundreds of
/// dimensions), large enough to keep near-collinear directions of the hidden states (a few
/// coordinates of a small LM's residual stream carry most of the scale) from blowing up w.
pub const DEFAULT_RIDGE: f64 = 1e-3;

/// How texts become prefix statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureOptions {
    /// Texts run together (left-padded to the longest of the batch).
    pub batch_size: usize,
    /// A longer text is cut to its first this-many tokens (it is then scored as that prefix).
    pub max_tokens: usize,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_tokens: 128,
        }
    }
}

/// The sufficient statistics of a set of texts for the head's loss, float64 on the CPU, with
/// x = [h, 1] (h the reward model's hidden state at a position).
pub struct PrefixFeatures {
    /// G = Σᵢ Σₜ wᵢₜ xᵢₜ xᵢₜᵀ, `[H+1, H+1]`.
    pub gram: Tensor,
    /// x̄ᵢ = Σₜ wᵢₜ xᵢₜ per text, `[n, H+1]`, in the order of the texts.
    pub mean: Tensor,
    /// x at each text's last token, `[n, H+1]`.
    pub last: Tensor,
    /// Positions summed over.
    pub prefixes: usize,
}

impl PrefixFeatures {
    pub fn texts(&self) -> usize {
        self.mean.size()[0] as usize
    }

    /// The statistics of several sets together (texts in the order given).
    pub fn concat(parts: &[&PrefixFeatures]) -> Self {
        Self {
            gram: parts
                .iter()
                .map(|p| p.gram.shallow_clone())
                .reduce(|a, b| a + b)
                .expect("at least one part"),
            mean: Tensor::cat(&parts.iter().map(|p| &p.mean).collect::<Vec<_>>(), 0),
            last: Tensor::cat(&parts.iter().map(|p| &p.last).collect::<Vec<_>>(), 0),
            prefixes: parts.iter().map(|p| p.prefixes).sum(),
        }
    }
}

/// RAD's prefix weights and their statistics for one batch: `hidden` `[B, T, H]` (any float
/// kind), `mask` `[B, T]` 1 on real tokens and 0 on left padding. Returns (G `[H+1, H+1]`,
/// x̄ `[B, H+1]`, x at the last column `[B, H+1]`), float64 on the CPU.
pub fn accumulate_prefixes(hidden: &Tensor, mask: &Tensor) -> (Tensor, Tensor, Tensor) {
    let hidden = hidden.to_kind(Kind::Double).to_device(Device::Cpu);
    let mask = mask.to_kind(Kind::Double).to_device(Device::Cpu);
    let (b, t) = (hidden.size()[0], hidden.size()[1]);
    let x = Tensor::cat(
        &[hidden, Tensor::ones([b, t, 1], (Kind::Double, Device::Cpu))],
        2,
    );
    let weights = prefix_weights(&mask, Kind::Double);
    let weighted = &x * weights.unsqueeze(-1);
    let width = x.size()[2];
    let gram = weighted
        .view([-1, width])
        .transpose(0, 1)
        .matmul(&x.view([-1, width]));
    let mean = weighted.sum_dim_intlist(1, false, Kind::Double);
    (gram, mean, x.select(1, -1))
}

/// RAD's prefix weights 2t/(l(l+1)) `[B, T]` for a real-token mask `[B, T]` (left padding 0),
/// in `kind` on the mask's device: t the position of a real token among its row's (1-based), l
/// the row's length; zero on padding; each row sums to 1.
pub fn prefix_weights(mask: &Tensor, kind: Kind) -> Tensor {
    let mask = mask.to_kind(kind);
    let position = mask.cumsum(1, kind) * &mask;
    let length = mask.sum_dim_intlist(1, true, kind);
    position * 2.0 / (&length * (&length + 1.0))
}

/// `texts` tokenized as prompts are (no special tokens) and cut to `options.max_tokens` (and the
/// model's positions); a text with no tokens is an error naming it.
pub fn encode_texts(
    model: &dyn CausalLm,
    tokenizer: &TextTokenizer,
    texts: &[&str],
    options: &FeatureOptions,
) -> Result<Vec<Vec<i64>>> {
    if options.batch_size == 0 || options.max_tokens == 0 {
        bail!("batch size and max tokens must be at least 1");
    }
    let info = model.info();
    let max_tokens = info
        .max_positions
        .map_or(options.max_tokens, |m| options.max_tokens.min(m as usize));
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut ids = tokenizer.encode(text)?;
            ids.truncate(max_tokens);
            if ids.is_empty() {
                bail!("text {i} ({text:?}) has no tokens");
            }
            check_token_ids(&ids, info.vocab_size).with_context(|| format!("text {i}"))?;
            Ok(ids)
        })
        .collect()
}

/// The prefix statistics of `texts` under `model` (the reward model's backbone). Texts are
/// tokenized as prompts are (no special tokens), cut to `max_tokens`, and run in batches of
/// similar length. `progress` gets the number of texts done after each batch.
pub fn prefix_features(
    model: &dyn CausalLm,
    tokenizer: &TextTokenizer,
    texts: &[&str],
    options: &FeatureOptions,
    mut progress: impl FnMut(usize),
) -> Result<PrefixFeatures> {
    let info = model.info();
    let encoded = encode_texts(model, tokenizer, texts, options)?;
    let width = info.hidden_size + 1;
    let mut gram = Tensor::zeros([width, width], (Kind::Double, Device::Cpu));
    let mut mean = Tensor::zeros([texts.len() as i64, width], (Kind::Double, Device::Cpu));
    let mut last = mean.zeros_like();
    // Similar lengths together, so little of each batch is padding.
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| (encoded[i].len(), i));
    let _no_grad = tch::no_grad_guard();
    let mut done = 0;
    for chunk in order.chunks(options.batch_size) {
        let rows: Vec<&[i64]> = chunk.iter().map(|&i| encoded[i].as_slice()).collect();
        let (ids, mask) = left_pad(&rows, info.device);
        let hidden = model.forward_hidden(&ids, &mask, &mut model.new_cache());
        let (g, m, l) = accumulate_prefixes(&hidden, &mask);
        gram += g;
        let index = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
        mean = mean.index_copy(0, &index, &m);
        last = last.index_copy(0, &index, &l);
        done += chunk.len();
        progress(done);
    }
    Ok(PrefixFeatures {
        gram,
        mean,
        last,
        prefixes: encoded.iter().map(Vec::len).sum(),
    })
}

/// θ = [w, b] minimising Σ L + λ‖w‖² for statistics G and c = Σᵢ yᵢ x̄ᵢ, with λ = `ridge` × the
/// mean diagonal of G's feature block.
pub fn solve_head(gram: &Tensor, rhs: &Tensor, ridge: f64) -> Result<(Vec<f64>, f64)> {
    if !(ridge >= 0.0 && ridge.is_finite()) {
        bail!("the ridge must be a finite number >= 0, got {ridge}");
    }
    let width = gram.size()[0];
    let hidden = width - 1;
    let gram = gram.to_kind(Kind::Double);
    let scale = gram
        .diagonal(0, 0, 1)
        .narrow(0, 0, hidden)
        .mean(Kind::Double);
    let mut penalty = vec![1.0f64; width as usize];
    penalty[hidden as usize] = 0.0;
    let system = &gram + Tensor::from_slice(&penalty).diag(0) * (scale * ridge);
    let theta = Tensor::f_linalg_solve(&system, &rhs.to_kind(Kind::Double).unsqueeze(1), true)
        .context("solving the head's normal equations")?
        .squeeze_dim(1);
    let theta = Vec::<f64>::try_from(theta)?;
    if theta.iter().any(|v| !v.is_finite()) {
        bail!("the head's normal equations are singular (raise the ridge)");
    }
    let b = theta[hidden as usize];
    Ok((theta[..hidden as usize].to_vec(), b))
}

/// c = Σᵢ yᵢ x̄ᵢ.
fn target_moment(features: &PrefixFeatures, targets: &[f64]) -> Tensor {
    features
        .mean
        .transpose(0, 1)
        .matmul(&Tensor::from_slice(targets))
}

/// Last-token MSE, mean prefix loss and ROC-AUC (toxic: target ≥ 0.5) of θ = [w, b].
pub fn reward_metrics(
    w: &[f64],
    b: f64,
    features: &PrefixFeatures,
    targets: &[f64],
) -> RewardMetrics {
    let n = targets.len();
    let theta = Tensor::from_slice(&[w, &[b]].concat());
    let rewards = Vec::<f64>::try_from(features.last.matmul(&theta)).expect("rewards");
    let mse = rewards
        .iter()
        .zip(targets)
        .map(|(r, y)| (r - y).powi(2))
        .sum::<f64>()
        / n.max(1) as f64;
    let quadratic = theta.dot(&features.gram.matmul(&theta)).double_value(&[]);
    let linear = theta
        .dot(&target_moment(features, targets))
        .double_value(&[]);
    let squares: f64 = targets.iter().map(|y| y * y).sum();
    let toxic: Vec<bool> = targets.iter().map(|&y| y >= 0.5).collect();
    let pairs: Vec<(f64, f64)> = rewards
        .iter()
        .copied()
        .zip(targets.iter().copied())
        .collect();
    RewardMetrics {
        texts: n,
        mse,
        prefix_loss: (quadratic - 2.0 * linear + squares) / n.max(1) as f64,
        roc_auc: metrics::roc_auc(&rewards, &toxic),
        spearman: metrics::spearman(&pairs),
    }
}

/// Everything [`fit_reward`] needs besides the backbone and the texts.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    pub features: FeatureOptions,
    pub ridge: f64,
    /// Copied into the file's record (how the texts were chosen and split).
    pub record: RewardFitRecord,
    /// A folder where each source part's prefix statistics are kept (safetensors named by a hash
    /// of checkpoint, layers, device, dtype, token cut and texts), so a refit with another ridge
    /// or mix of sources does not run the backbone again.
    pub feature_cache: Option<PathBuf>,
    /// Also train the reward model's top blocks with the head (starting from the closed form);
    /// `None` fits the head alone.
    pub top_blocks: Option<TopBlockOptions>,
}

/// Prefix statistics of `items`, through the cache folder when there is one.
fn features_of(
    loaded: &LoadedModel,
    fingerprint: &str,
    what: &str,
    items: &[LabelledText],
    options: &FitOptions,
    use_cache: bool,
    log: &mut impl FnMut(&str),
) -> Result<PrefixFeatures> {
    let info = loaded.model.info();
    let texts: Vec<&str> = items.iter().map(|t| t.text.as_str()).collect();
    let cache = options.feature_cache.as_ref().filter(|_| use_cache);
    let path = cache.map(|dir| {
        let mut key = format!(
            "rad|{fingerprint}|{}|{:?}|{:?}|{}",
            info.num_layers, info.device, info.kind, options.features.max_tokens
        )
        .into_bytes();
        for text in &texts {
            key.extend_from_slice(&(text.len() as u64).to_le_bytes());
            key.extend_from_slice(text.as_bytes());
        }
        dir.join(format!("{:016x}.safetensors", paths::stable_hash(&key)))
    });
    if let Some(path) = path.as_ref().filter(|p| p.is_file()) {
        let mut tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)
            .with_context(|| format!("{}: cannot read cached features", path.display()))?
            .into_iter()
            .collect();
        let mut take = |name: &str| {
            tensors
                .remove(name)
                .with_context(|| format!("{}: no {name:?} tensor", path.display()))
        };
        let features = PrefixFeatures {
            gram: take("gram")?,
            mean: take("mean")?,
            last: take("last")?,
            prefixes: take("prefixes")?.int64_value(&[]) as usize,
        };
        let width = info.hidden_size + 1;
        if features.mean.size() != [texts.len() as i64, width] {
            bail!(
                "{}: cached features have shape {:?}, expected [{}, {width}]",
                path.display(),
                features.mean.size(),
                texts.len()
            );
        }
        log(&format!(
            "{what}: {} texts from {}",
            texts.len(),
            path.display()
        ));
        return Ok(features);
    }
    let started = std::time::Instant::now();
    let mut next_report = 1000;
    let features = prefix_features(
        loaded.model.as_ref(),
        &loaded.tokenizer,
        &texts,
        &options.features,
        |done| {
            if done >= next_report {
                log(&format!("  {what}: {done}/{} texts", texts.len()));
                next_report = done + 1000;
            }
        },
    )?;
    log(&format!(
        "{what}: ran {} texts ({} prefixes) in {:.0}s",
        texts.len(),
        features.prefixes,
        started.elapsed().as_secs_f64()
    ));
    if let Some(path) = &path {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
        }
        let prefixes = Tensor::from(features.prefixes as i64);
        Tensor::write_safetensors(
            &[
                ("gram", &features.gram),
                ("mean", &features.mean),
                ("last", &features.last),
                ("prefixes", &prefixes),
            ],
            path,
        )
        .with_context(|| format!("{}: cannot write features", path.display()))?;
    }
    Ok(features)
}

/// Statistics of one part (train or held-out) of each source, `None` where it has no texts.
type Parts = Vec<Option<PrefixFeatures>>;

/// Metrics of θ = [w, b] on the held-out texts of every source pooled, or of only the sources
/// fitted on (those with training texts) when `fitted_only`; `None` when there are none.
fn pooled_metrics(
    w: &[f64],
    b: f64,
    sources: &[SourceTexts],
    held_out: &Parts,
    fitted_only: bool,
) -> Option<RewardMetrics> {
    let (mut parts, mut y) = (Vec::new(), Vec::new());
    for (source, part) in sources.iter().zip(held_out) {
        if let Some(features) = part
            .as_ref()
            .filter(|_| !fitted_only || !source.train.is_empty())
        {
            parts.push(features);
            y.extend(targets(&source.held_out));
        }
    }
    (!parts.is_empty()).then(|| reward_metrics(w, b, &PrefixFeatures::concat(&parts), &y))
}

fn targets(items: &[LabelledText]) -> Vec<f64> {
    items.iter().map(|t| f64::from(t.label)).collect()
}

/// Fits the head on the training texts of every source and measures it on their held-out texts
/// (per source, pooled over the sources fitted on, and over all). `loaded` is the backbone
/// loaded with the blocks the reward model will run. `log` receives progress lines.
pub fn fit_reward(
    loaded: &LoadedModel,
    sources: &[SourceTexts],
    options: &FitOptions,
    mut log: impl FnMut(&str),
) -> Result<RewardHead> {
    let info = loaded.model.info();
    let backbone = ModelIdentity::of_folder(&loaded.dir, info)?;
    let total_layers = ArchitectureConfig::from_file(&loaded.dir.join("config.json"))?.num_layers();
    if sources.iter().all(|s| s.train.is_empty()) {
        bail!("no training texts");
    }
    // The cache holds the frozen backbone's statistics; a model whose top blocks were trained
    // here is measured afresh.
    let statistics = |use_cache: bool, log: &mut dyn FnMut(&str)| -> Result<(Parts, Parts)> {
        let (mut train, mut held_out) = (Vec::new(), Vec::new());
        for source in sources {
            for (part, items, out) in [
                ("train", &source.train, &mut train),
                ("held-out", &source.held_out, &mut held_out),
            ] {
                let what = format!("{} {part}", source.name);
                out.push(if items.is_empty() {
                    None
                } else {
                    Some(features_of(
                        loaded,
                        &backbone.fingerprint,
                        &what,
                        items,
                        options,
                        use_cache,
                        &mut |line: &str| log(line),
                    )?)
                });
            }
        }
        Ok((train, held_out))
    };
    let (mut train, mut held_out) = statistics(true, &mut log)?;
    let train_targets: Vec<f64> = sources.iter().flat_map(|s| targets(&s.train)).collect();
    let (w, b) = {
        let train_all = PrefixFeatures::concat(&train.iter().flatten().collect::<Vec<_>>());
        solve_head(
            &train_all.gram,
            &target_moment(&train_all, &train_targets),
            options.ridge,
        )?
    };
    // Measured with the head as stored (float32), so the numbers describe the file.
    let mut w: Vec<f64> = w.iter().map(|&v| f64::from(v as f32)).collect();
    let mut b = f64::from(b as f32);

    let mut trained_blocks = None;
    if let Some(top) = &options.top_blocks {
        let frozen_held_out = pooled_metrics(&w, b, sources, &held_out, true);
        let texts: Vec<&str> = sources
            .iter()
            .flat_map(|s| s.train.iter().map(|t| t.text.as_str()))
            .collect();
        let trained = train_top_blocks(
            loaded.model.as_ref(),
            &loaded.tokenizer,
            &texts,
            &train_targets,
            (&w, b),
            &options.features,
            top,
            &mut log,
        )?;
        (w, b) = (trained.w, trained.b);
        (train, held_out) = statistics(false, &mut log)?;
        trained_blocks = Some(TrainedBlocks {
            first_block: info.num_layers - top.blocks,
            options: top.clone(),
            epoch_losses: trained.epoch_losses,
            frozen_held_out,
        });
    }
    let train_all = PrefixFeatures::concat(&train.iter().flatten().collect::<Vec<_>>());

    let mut record = options.record.clone();
    for (source, part) in sources.iter().zip(&held_out) {
        if let Some(features) = part {
            let y = targets(&source.held_out);
            record
                .held_out_by_source
                .insert(source.name.clone(), reward_metrics(&w, b, features, &y));
        }
        let items = source.train.iter().chain(&source.held_out);
        let toxic = items.clone().filter(|t| t.label >= 0.5).count();
        record.sources.insert(
            source.name.clone(),
            SourceCounts {
                toxic,
                non_toxic: items.count() - toxic,
                train: source.train.len(),
                held_out: source.held_out.len(),
            },
        );
    }
    record.held_out = pooled_metrics(&w, b, sources, &held_out, true);
    record.held_out_all_sources = pooled_metrics(&w, b, sources, &held_out, false);
    record.trained_blocks = trained_blocks;
    record.train_metrics = Some(reward_metrics(&w, b, &train_all, &train_targets));
    record.train_texts = train_targets.len();
    record.train_prefixes = train_all.prefixes;
    record.max_tokens = options.features.max_tokens;
    record.device = format!("{:?}", info.device).to_lowercase();
    record.dtype = format!("{:?}", info.kind).to_lowercase();
    record.ridge = options.ridge;
    if record.target.is_empty() {
        record.target = "the source's toxicity label in [0, 1]: binary (1 toxic, 0 not) except \
                         rtp-*, whose labels are Perspective toxicity probabilities"
            .into();
    }
    RewardHead::new(
        backbone,
        info.num_layers,
        total_layers,
        record,
        w.iter().map(|&v| v as f32).collect(),
        b as f32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One text: its hidden state at each real position, and its target.
    type Text = (Vec<Vec<f64>>, f64);

    /// RAD's loss of θ on explicit per-position features, written out term by term.
    fn explicit_loss(theta: &[f64], rows: &[Text]) -> f64 {
        rows.iter()
            .map(|(positions, y)| {
                let l = positions.len() as f64;
                positions
                    .iter()
                    .enumerate()
                    .map(|(t, h)| {
                        let r: f64 = h.iter().zip(theta).map(|(a, b)| a * b).sum::<f64>()
                            + theta[theta.len() - 1];
                        (t + 1) as f64 * (r - y).powi(2)
                    })
                    .sum::<f64>()
                    * 2.0
                    / (l * (l + 1.0))
            })
            .sum()
    }

    /// Ragged texts of random features, left-padded into one batch, with targets that depend
    /// on the features (so the best θ is far from zero).
    fn synthetic(seed: i64) -> (Tensor, Tensor, Vec<Text>) {
        tch::manual_seed(seed);
        let (batch, width, hidden) = (12i64, 7i64, 5i64);
        let x = Tensor::randn([batch, width, hidden], (Kind::Double, Device::Cpu));
        let lengths: Vec<i64> = (0..batch).map(|i| 1 + (i * 5) % width).collect();
        let mut mask = vec![0i64; (batch * width) as usize];
        let mut rows = Vec::new();
        for (i, &l) in lengths.iter().enumerate() {
            let mut positions = Vec::new();
            for t in (width - l)..width {
                mask[i * width as usize + t as usize] = 1;
                positions.push(Vec::<f64>::try_from(x.get(i as i64).get(t)).unwrap());
            }
            let y = if positions.last().unwrap()[0] + positions[0][1] > 0.0 {
                1.0
            } else {
                0.0
            };
            rows.push((positions, y));
        }
        let mask = Tensor::from_slice(&mask).view([batch, width]);
        // Padding positions hold garbage: the statistics must ignore them.
        let x = x
            + (mask.ones_like() - &mask)
                .unsqueeze(-1)
                .to_kind(Kind::Double)
                * 100.0;
        (x, mask, rows)
    }

    /// The prefix statistics of [`synthetic`] texts, their targets and the texts.
    fn synthetic_features(seed: i64) -> (PrefixFeatures, Vec<f64>, Vec<Text>) {
        let (x, mask, rows) = synthetic(seed);
        let (gram, mean, last) = accumulate_prefixes(&x, &mask);
        let y: Vec<f64> = rows.iter().map(|r| r.1).collect();
        let features = PrefixFeatures {
            gram,
            mean,
            last,
            prefixes: 0,
        };
        (features, y, rows)
    }

    #[test]
    fn the_closed_form_head_minimises_rads_prefix_loss() {
        let (features, y, rows) = synthetic_features(3);
        let (w, b) = solve_head(&features.gram, &target_moment(&features, &y), 0.0).unwrap();
        let theta: Vec<f64> = [w.clone(), vec![b]].concat();
        let best = explicit_loss(&theta, &rows);
        // The statistics reproduce the explicit loss (per text, averaged).
        let metrics = reward_metrics(&w, b, &features, &y);
        assert!(
            (metrics.prefix_loss * rows.len() as f64 - best).abs() < 1e-9,
            "{} vs {best}",
            metrics.prefix_loss * rows.len() as f64
        );
        // Every small move of any coordinate raises the loss, and the gradient vanishes.
        for i in 0..theta.len() {
            for step in [1e-3, -1e-3] {
                let mut moved = theta.clone();
                moved[i] += step;
                assert!(
                    explicit_loss(&moved, &rows) > best,
                    "coordinate {i} step {step}"
                );
            }
            let mut plus = theta.clone();
            let mut minus = theta.clone();
            plus[i] += 1e-6;
            minus[i] -= 1e-6;
            let gradient = (explicit_loss(&plus, &rows) - explicit_loss(&minus, &rows)) / 2e-6;
            assert!(gradient.abs() < 1e-6, "coordinate {i}: gradient {gradient}");
        }
        // Gradient descent on the explicit loss, from zero, ends no lower.
        let mut theta_gd = vec![0.0; theta.len()];
        for _ in 0..20_000 {
            let base = explicit_loss(&theta_gd, &rows);
            let grad: Vec<f64> = (0..theta_gd.len())
                .map(|i| {
                    let mut p = theta_gd.clone();
                    p[i] += 1e-7;
                    (explicit_loss(&p, &rows) - base) / 1e-7
                })
                .collect();
            for (t, g) in theta_gd.iter_mut().zip(grad) {
                *t -= 0.05 * g;
            }
        }
        let descended = explicit_loss(&theta_gd, &rows);
        assert!(descended >= best - 1e-9, "{descended} < {best}");
        assert!(
            descended - best < 1e-3,
            "descent stopped far off: {descended} vs {best}"
        );
    }

    #[test]
    fn the_ridge_shrinks_w_and_leaves_the_bias_free() {
        let (features, y, _) = synthetic_features(4);
        let rhs = target_moment(&features, &y);
        let norm = |w: &[f64]| w.iter().map(|v| v * v).sum::<f64>().sqrt();
        let (w0, _) = solve_head(&features.gram, &rhs, 0.0).unwrap();
        let (w1, b1) = solve_head(&features.gram, &rhs, 1e3).unwrap();
        assert!(
            norm(&w1) < 0.05 * norm(&w0),
            "{} vs {}",
            norm(&w1),
            norm(&w0)
        );
        // With w forced to ~0 the best bias is the weighted mean target, i.e. the mean of y
        // (each text's weights sum to 1).
        let mean_y = y.iter().sum::<f64>() / y.len() as f64;
        assert!((b1 - mean_y).abs() < 0.05, "{b1} vs {mean_y}");
        assert!(solve_head(&features.gram, &rhs, -1.0).is_err());
    }

    #[test]
    fn the_last_column_is_each_texts_last_token() {
        let (x, mask, rows) = synthetic(5);
        let (_, mean, last) = accumulate_prefixes(&x, &mask);
        for (i, (positions, _)) in rows.iter().enumerate() {
            let got = Vec::<f64>::try_from(last.get(i as i64)).unwrap();
            assert_eq!(&got[..got.len() - 1], positions.last().unwrap().as_slice());
            assert_eq!(got[got.len() - 1], 1.0);
            // The weights sum to 1: the bias coordinate of x̄ is 1.
            let m = Vec::<f64>::try_from(mean.get(i as i64)).unwrap();
            assert!((m[m.len() - 1] - 1.0).abs() < 1e-12);
        }
    }
}
