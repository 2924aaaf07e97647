//! Fitting the discriminant: the model's own hidden states of labelled text, class statistics in
//! float64, and the closed-form linear rule of two Gaussian classes with a shared covariance.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use artifact::{ModelIdentity, SourceCounts, SourceTexts};
use data::LabelledText;
use lm::{check_token_ids, left_pad, CausalLm, LoadedModel, TextTokenizer};
use tch::{Device, Kind, Tensor};

use crate::subspace::{ClassifierMetrics, FitRecord, Subspace};

/// Eigenvalues of the pooled covariance below this fraction of the largest one are treated as
/// zero in its pseudo-inverse. The hidden states of a small LM spread their variance over a few
/// orders of magnitude; directions 10⁶ times weaker than the strongest carry float noise, and
/// inverting them would let that noise dominate w. (Ko et al. cut at "about 1e-6"; we read it
/// as relative to the largest eigenvalue, which makes the rule independent of the hidden
/// states' scale.)
pub const DEFAULT_EIGEN_CUTOFF: f64 = 1e-6;

/// How texts become hidden states.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmbedOptions {
    /// Texts run together (left-padded to the longest of the batch).
    pub batch_size: usize,
    /// A longer text is cut to its first this-many tokens (the labelled sources are sentences and
    /// tweets; the cut only guards the memory of an odd long line).
    pub max_tokens: usize,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_tokens: 128,
        }
    }
}

/// Final-norm hidden state at each text's last real token, `[texts, hidden]` float64 on the CPU,
/// in the order of `texts`. Texts are tokenized as prompts are (no special tokens) and run in
/// batches of similar length, left-padded so that the last column is every row's last real
/// token. `progress` is called with the number of texts done after each batch.
pub fn embed_texts(
    model: &dyn CausalLm,
    tokenizer: &TextTokenizer,
    texts: &[&str],
    options: &EmbedOptions,
    mut progress: impl FnMut(usize),
) -> Result<Tensor> {
    if options.batch_size == 0 || options.max_tokens == 0 {
        bail!("batch size and max tokens must be at least 1");
    }
    let info = model.info();
    let max_tokens = match info.max_positions {
        Some(max) => options.max_tokens.min(max as usize),
        None => options.max_tokens,
    };
    let mut encoded = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let mut ids = tokenizer.encode(text)?;
        if ids.is_empty() {
            bail!("text {i} ({text:?}) has no tokens");
        }
        ids.truncate(max_tokens);
        check_token_ids(&ids, info.vocab_size).with_context(|| format!("text {i}"))?;
        encoded.push(ids);
    }
    // Similar lengths together, so little of each batch is padding.
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| (encoded[i].len(), i));
    let _no_grad = tch::no_grad_guard();
    let mut parts = Vec::new();
    let mut done = 0;
    for chunk in order.chunks(options.batch_size) {
        let rows: Vec<&[i64]> = chunk.iter().map(|&i| encoded[i].as_slice()).collect();
        let (ids, mask) = left_pad(&rows, info.device);
        let mut cache = model.new_cache();
        let hidden = model.forward_hidden(&ids, &mask, &mut cache);
        parts.push(
            hidden
                .select(1, -1)
                .to_kind(Kind::Double)
                .to_device(Device::Cpu),
        );
        done += chunk.len();
        progress(done);
    }
    if parts.is_empty() {
        return Ok(Tensor::zeros(
            [0, info.hidden_size],
            (Kind::Double, Device::Cpu),
        ));
    }
    // Row r of the concatenation is text order[r]; put every text back in its place.
    let sorted = Tensor::cat(&parts, 0);
    let mut inverse = vec![0i64; order.len()];
    for (r, &i) in order.iter().enumerate() {
        inverse[i] = r as i64;
    }
    Ok(sorted.index_select(0, &Tensor::from_slice(&inverse)))
}

/// The fitted rule, in float64.
#[derive(Debug, Clone, PartialEq)]
pub struct Discriminant {
    /// Σ⁺(μ₊ − μ₋), normalised to unit length.
    pub w: Vec<f64>,
    /// (μ₊ + μ₋) / 2.
    pub b: Vec<f64>,
    pub eigenvalues_kept: usize,
    pub eigenvalues_total: usize,
    pub non_toxic: usize,
    pub toxic: usize,
}

impl Discriminant {
    /// Margins wᵀ(x − b) of rows `[n, hidden]` (any float kind, CPU).
    pub fn margins(&self, x: &Tensor) -> Vec<f64> {
        let w = Tensor::from_slice(&self.w);
        let b = Tensor::from_slice(&self.b);
        Vec::<f64>::try_from((x.to_kind(Kind::Double) - b).matmul(&w)).expect("margins")
    }
}

/// Fits the linear discriminant of two Gaussian classes with a shared covariance on `x`
/// `[n, hidden]` (CPU; used as float64), `non_toxic[i]` the class of row i:
///
/// μ₊, μ₋ the class means; Σ the pooled within-class covariance (divided by n − 2); its
/// pseudo-inverse from the symmetric eigendecomposition, keeping eigenvalues above
/// `relative_cutoff` × the largest; w = Σ⁺(μ₊ − μ₋) (the usual ½ vanishes in the normalising);
/// b = (μ₊ + μ₋)/2. Then m(x) = wᵀ(x − b) > 0 on the non-toxic side.
pub fn fit_discriminant(
    x: &Tensor,
    non_toxic: &[bool],
    relative_cutoff: f64,
) -> Result<Discriminant> {
    let size = x.size();
    if size.len() != 2 || size[0] as usize != non_toxic.len() {
        bail!(
            "embeddings have shape {size:?} but there are {} labels",
            non_toxic.len()
        );
    }
    if !(0.0..1.0).contains(&relative_cutoff) {
        bail!("the eigenvalue cut-off must be in [0, 1), got {relative_cutoff}");
    }
    let x = x.to_kind(Kind::Double).to_device(Device::Cpu);
    if x.isfinite().logical_not().any().int64_value(&[]) != 0 {
        bail!("the embeddings contain non-finite values");
    }
    let index_of = |class: bool| -> Vec<i64> {
        (0..non_toxic.len() as i64)
            .filter(|&i| non_toxic[i as usize] == class)
            .collect()
    };
    let (positive, negative) = (index_of(true), index_of(false));
    if positive.len() < 2 || negative.len() < 2 {
        bail!(
            "need at least 2 texts of each class, got {} non-toxic and {} toxic",
            positive.len(),
            negative.len()
        );
    }
    let x_pos = x.index_select(0, &Tensor::from_slice(&positive));
    let x_neg = x.index_select(0, &Tensor::from_slice(&negative));
    let mu_pos = x_pos.mean_dim(0, false, Kind::Double);
    let mu_neg = x_neg.mean_dim(0, false, Kind::Double);
    let centered = Tensor::cat(&[&x_pos - &mu_pos, &x_neg - &mu_neg], 0);
    let n = non_toxic.len() as f64;
    let covariance = centered.transpose(0, 1).matmul(&centered) / (n - 2.0);
    let covariance = (&covariance + covariance.transpose(0, 1)) / 2.0;
    let (eigenvalues, eigenvectors) = covariance.linalg_eigh("L");
    let values = Vec::<f64>::try_from(&eigenvalues)?;
    let largest = values.iter().copied().fold(0.0, f64::max);
    if largest <= 0.0 {
        bail!("the pooled covariance is zero: every text of a class has the same hidden state");
    }
    let kept: Vec<i64> = values
        .iter()
        .enumerate()
        .filter(|(_, &v)| v > relative_cutoff * largest)
        .map(|(i, _)| i as i64)
        .collect();
    let basis = eigenvectors.index_select(1, &Tensor::from_slice(&kept));
    let inverse: Vec<f64> = kept.iter().map(|&i| 1.0 / values[i as usize]).collect();
    let difference = &mu_pos - &mu_neg;
    let coordinates = basis.transpose(0, 1).matmul(&difference) * Tensor::from_slice(&inverse);
    let direction = basis.matmul(&coordinates);
    let norm = direction.norm().double_value(&[]);
    if !(norm.is_finite() && norm > 0.0) {
        bail!("the class means do not differ within the kept eigen-directions (|w| = {norm})");
    }
    Ok(Discriminant {
        w: Vec::<f64>::try_from(direction / norm)?,
        b: Vec::<f64>::try_from((&mu_pos + &mu_neg) / 2.0)?,
        eigenvalues_kept: kept.len(),
        eigenvalues_total: values.len(),
        non_toxic: positive.len(),
        toxic: negative.len(),
    })
}

/// Accuracy of the margin's sign and ROC-AUC of the margin, for the class "non-toxic".
pub fn classifier_metrics(margins: &[f64], non_toxic: &[bool]) -> ClassifierMetrics {
    let correct = margins
        .iter()
        .zip(non_toxic)
        .filter(|(&m, &clean)| (m > 0.0) == clean)
        .count();
    ClassifierMetrics {
        texts: margins.len(),
        accuracy: if margins.is_empty() {
            0.0
        } else {
            correct as f64 / margins.len() as f64
        },
        roc_auc: metrics::roc_auc(margins, non_toxic),
    }
}

/// Everything [`fit_subspace`] needs besides the model and the texts.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    pub embed: EmbedOptions,
    pub eigen_cutoff: f64,
    /// Copied into the file's [`FitRecord`] (how the texts were chosen and split).
    pub record: FitRecord,
    /// A folder where the hidden states of each source's train and held-out texts are kept
    /// (safetensors, named by a hash of the checkpoint, device, dtype, token cut and texts), so
    /// refitting with another cut-off or another mix of sources does not run the model again.
    pub embedding_cache: Option<PathBuf>,
}

/// Hidden states of `items` through the cache folder when there is one.
fn embed_labelled(
    loaded: &LoadedModel,
    fingerprint: &str,
    what: &str,
    items: &[LabelledText],
    options: &FitOptions,
    log: &mut impl FnMut(&str),
) -> Result<Tensor> {
    let model = loaded.model.as_ref();
    let info = model.info();
    let texts: Vec<&str> = items.iter().map(|t| t.text.as_str()).collect();
    let cached = options.embedding_cache.as_ref().map(|dir| {
        let mut key = format!(
            "{fingerprint}|{:?}|{:?}|{}",
            info.device, info.kind, options.embed.max_tokens
        )
        .into_bytes();
        for text in &texts {
            key.extend_from_slice(&(text.len() as u64).to_le_bytes());
            key.extend_from_slice(text.as_bytes());
        }
        dir.join(format!("{:016x}.safetensors", paths::stable_hash(&key)))
    });
    if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
        let x = Tensor::read_safetensors(path)
            .with_context(|| format!("{}: cannot read cached embeddings", path.display()))?
            .into_iter()
            .find(|(name, _)| name == "embeddings")
            .map(|(_, x)| x)
            .with_context(|| format!("{}: no \"embeddings\" tensor", path.display()))?;
        if x.size() != [texts.len() as i64, info.hidden_size] {
            bail!(
                "{}: cached embeddings have shape {:?}, expected [{}, {}]",
                path.display(),
                x.size(),
                texts.len(),
                info.hidden_size
            );
        }
        log(&format!(
            "{what}: {} texts from {}",
            texts.len(),
            path.display()
        ));
        return Ok(x);
    }
    let started = std::time::Instant::now();
    let mut next_report = 2000;
    let x = embed_texts(model, &loaded.tokenizer, &texts, &options.embed, |done| {
        if done >= next_report {
            log(&format!("  {what}: {done}/{} texts", texts.len()));
            next_report = done + 2000;
        }
    })?;
    log(&format!(
        "{what}: embedded {} texts in {:.0}s",
        texts.len(),
        started.elapsed().as_secs_f64()
    ));
    if let Some(path) = &cached {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
        }
        Tensor::write_safetensors(&[("embeddings", &x)], path)
            .with_context(|| format!("{}: cannot write embeddings", path.display()))?;
    }
    Ok(x)
}

/// Fits the subspace of `loaded` on the training texts of every source and measures it on their
/// held-out texts (per source, and pooled over the sources with training texts; a source with
/// held-out texts only is measured, not fitted on). `log` receives progress lines.
pub fn fit_subspace(
    loaded: &LoadedModel,
    sources: &[SourceTexts],
    options: &FitOptions,
    mut log: impl FnMut(&str),
) -> Result<Subspace> {
    let model = loaded.model.as_ref();
    let identity = ModelIdentity::of_folder(&loaded.dir, model.info())?;
    let is_clean = |t: &LabelledText| t.label < 0.5;
    if sources.iter().all(|s| s.train.is_empty()) {
        bail!("no training texts");
    }
    let mut train_parts = Vec::new();
    let mut held_out_parts = Vec::new();
    for source in sources {
        for (part, items, out) in [
            ("train", &source.train, &mut train_parts),
            ("held-out", &source.held_out, &mut held_out_parts),
        ] {
            if !items.is_empty() {
                let what = format!("{} {part}", source.name);
                out.push(embed_labelled(
                    loaded,
                    &identity.fingerprint,
                    &what,
                    items,
                    options,
                    &mut log,
                )?);
            }
        }
    }
    let x_train = Tensor::cat(&train_parts, 0);
    let train_labels: Vec<bool> = sources
        .iter()
        .flat_map(|s| &s.train)
        .map(is_clean)
        .collect();
    let discriminant = fit_discriminant(&x_train, &train_labels, options.eigen_cutoff)?;
    let train_metrics = classifier_metrics(&discriminant.margins(&x_train), &train_labels);

    let held_out_margins = if held_out_parts.is_empty() {
        Vec::new()
    } else {
        discriminant.margins(&Tensor::cat(&held_out_parts, 0))
    };
    let held_out_labels: Vec<bool> = sources
        .iter()
        .flat_map(|s| &s.held_out)
        .map(is_clean)
        .collect();
    let mut by_source = BTreeMap::new();
    // Pooled over the sources fitted on; a source with no training texts is only measured.
    let (mut fitted_margins, mut fitted_labels) = (Vec::new(), Vec::new());
    let mut start = 0;
    for source in sources {
        let end = start + source.held_out.len();
        if end > start {
            by_source.insert(
                source.name.clone(),
                classifier_metrics(&held_out_margins[start..end], &held_out_labels[start..end]),
            );
        }
        if !source.train.is_empty() {
            fitted_margins.extend_from_slice(&held_out_margins[start..end]);
            fitted_labels.extend_from_slice(&held_out_labels[start..end]);
        }
        start = end;
    }

    let mut record = options.record.clone();
    for source in sources {
        let all = source.train.iter().chain(&source.held_out);
        let non_toxic = all.clone().filter(|t| is_clean(t)).count();
        record.sources.insert(
            source.name.clone(),
            SourceCounts {
                toxic: all.count() - non_toxic,
                non_toxic,
                train: source.train.len(),
                held_out: source.held_out.len(),
            },
        );
    }
    record.max_tokens = options.embed.max_tokens;
    record.device = format!("{:?}", model.info().device).to_lowercase();
    record.dtype = format!("{:?}", model.info().kind).to_lowercase();
    record.eigen_cutoff = options.eigen_cutoff;
    record.eigenvalues_kept = discriminant.eigenvalues_kept;
    record.eigenvalues_total = discriminant.eigenvalues_total;
    record.train_toxic = discriminant.toxic;
    record.train_non_toxic = discriminant.non_toxic;
    record.train_metrics = Some(train_metrics);
    record.held_out =
        (!fitted_margins.is_empty()).then(|| classifier_metrics(&fitted_margins, &fitted_labels));
    record.held_out_by_source = by_source;
    record.held_out_all_sources = (!held_out_margins.is_empty())
        .then(|| classifier_metrics(&held_out_margins, &held_out_labels));

    let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let mut w = to_f32(&discriminant.w);
    // Renormalise after rounding to float32, so the stored w is unit length to float32 precision.
    let norm = w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
    w.iter_mut()
        .for_each(|v| *v = (f64::from(*v) / norm) as f32);
    Subspace::new(identity, record, w, to_f32(&discriminant.b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Gaussian classes with means `mu_pos`, `mu_neg` and covariance `a aᵀ`, `n` each.
    fn gaussian_classes(
        n: i64,
        a: &Tensor,
        mu_pos: &Tensor,
        mu_neg: &Tensor,
        seed: i64,
    ) -> (Tensor, Vec<bool>) {
        tch::manual_seed(seed);
        let dim = a.size()[1];
        let z = Tensor::randn([2 * n, dim], (Kind::Double, Device::Cpu));
        let noise = z.matmul(&a.transpose(0, 1));
        let means = Tensor::cat(
            &[
                mu_pos.unsqueeze(0).expand([n, -1], false),
                mu_neg.unsqueeze(0).expand([n, -1], false),
            ],
            0,
        );
        let labels = (0..2 * n).map(|i| i < n).collect();
        (noise + means, labels)
    }

    fn cosine(a: &[f64], b: &[f64]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / (norm(a) * norm(b))
    }

    #[test]
    fn recovers_the_analytic_direction_and_the_midpoint() {
        let dim = 8;
        tch::manual_seed(5);
        // A correlated covariance, so Σ⁻¹(μ₊ − μ₋) points well away from μ₊ − μ₋ itself.
        let a = Tensor::randn([dim, dim], (Kind::Double, Device::Cpu)) * 0.7
            + Tensor::eye(dim, (Kind::Double, Device::Cpu));
        let mu_pos = Tensor::from_slice(&[1.0f64, 0.5, -0.3, 0.0, 2.0, 0.1, -1.0, 0.4]);
        let mu_neg = Tensor::from_slice(&[0.2f64, 0.9, -0.1, 0.5, 1.0, 0.0, -0.2, 0.1]);
        let (x, labels) = gaussian_classes(20_000, &a, &mu_pos, &mu_neg, 11);
        let fit = fit_discriminant(&x, &labels, DEFAULT_EIGEN_CUTOFF).unwrap();

        let sigma = a.matmul(&a.transpose(0, 1));
        let analytic = Vec::<f64>::try_from(sigma.inverse().matmul(&(&mu_pos - &mu_neg))).unwrap();
        let naive = Vec::<f64>::try_from(&mu_pos - &mu_neg).unwrap();
        assert!(
            cosine(&analytic, &naive) < 0.95,
            "the test covariance should matter"
        );
        let c = cosine(&fit.w, &analytic);
        assert!(c > 0.99, "cosine with Σ⁻¹Δμ is {c}");
        let norm = fit.w.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-12);
        let midpoint = Vec::<f64>::try_from((&mu_pos + &mu_neg) / 2.0).unwrap();
        for (got, want) in fit.b.iter().zip(&midpoint) {
            assert!((got - want).abs() < 0.05, "b {got} vs midpoint {want}");
        }
        assert_eq!(fit.eigenvalues_kept, dim as usize);
        // Positive margins on the non-toxic side.
        let metrics = classifier_metrics(&fit.margins(&x), &labels);
        assert!(metrics.roc_auc.unwrap() > 0.8, "{metrics:?}");
    }

    #[test]
    fn a_rank_deficient_covariance_goes_through_the_cut_off() {
        // 5 informative dimensions mapped into 9: the covariance has rank 5 (and the class means
        // differ only inside that span).
        tch::manual_seed(6);
        let a = Tensor::randn([9, 5], (Kind::Double, Device::Cpu));
        let mu_pos = a.matmul(&Tensor::from_slice(&[1.0f64, 0.0, 0.5, -0.5, 0.0]));
        let mu_neg = a.matmul(&Tensor::from_slice(&[0.0f64, 0.3, 0.0, 0.0, 0.2]));
        let (x, labels) = gaussian_classes(5_000, &a, &mu_pos, &mu_neg, 12);
        let fit = fit_discriminant(&x, &labels, DEFAULT_EIGEN_CUTOFF).unwrap();
        assert_eq!(
            fit.eigenvalues_kept, 5,
            "the four null directions are dropped"
        );
        assert!(fit.w.iter().all(|v| v.is_finite()));
        // w lies in the span of a (no component in the null space), and equals the analytic
        // direction there: the pseudo-inverse of a aᵀ applied to Δμ.
        let sigma = a.matmul(&a.transpose(0, 1));
        let analytic =
            Vec::<f64>::try_from(sigma.pinverse(1e-10).matmul(&(&mu_pos - &mu_neg))).unwrap();
        let c = cosine(&fit.w, &analytic);
        assert!(c > 0.99, "cosine {c}");
        let metrics = classifier_metrics(&fit.margins(&x), &labels);
        assert!(metrics.accuracy > 0.7, "{metrics:?}");
    }

    #[test]
    fn refuses_a_missing_class_and_a_bad_cut_off() {
        let x = Tensor::randn([4, 3], (Kind::Double, Device::Cpu));
        assert!(fit_discriminant(&x, &[true, true, true, false], 1e-6).is_err());
        assert!(fit_discriminant(&x, &[true, true, false, false], 1.0).is_err());
        assert!(fit_discriminant(&x, &[true, false], 1e-6).is_err());
    }
}
