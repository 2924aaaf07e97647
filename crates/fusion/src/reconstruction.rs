//! The held-out report of an alignment map ([`Reconstruction`]): how close h_cal·A + b lands to
//! the target's final state, and KL(p ‖ p_fused) for every norm and α — for the map, for a
//! perfect map (what the norm alone costs, including the per-dimension norm the harness used
//! before) and for the identity readout.

use lm::CausalLm;
use tch::{Kind, Tensor};

use crate::align::{FusedKl, Reconstruction};
use crate::readout::{fused_state, MapNorm, NORM_EPS};

/// The α values the reconstruction report measures fusion at (the paper's sweep).
pub const REPORTED_ALPHAS: [f64; 3] = [0.1, 0.3, 0.6];

/// The norm the harness used before: LayerNorm with the target's per-dimension spread and mean
/// as gain and offset. Only measured ([`Reconstruction::perfect_map_kl`]), never applied.
fn per_dimension_statistics_norm(x: &Tensor, target_states: &Tensor) -> Tensor {
    let gain = target_states.std_dim(0, true, false);
    let offset = target_states.mean_dim(0, false, Kind::Float);
    let width = x.size()[x.dim() - 1];
    x.layer_norm([width], Some(&gain), Some(&offset), NORM_EPS, false)
}

/// At most this many held-out positions measure the fused KL (each costs a head projection per
/// norm and α).
const MAX_KL_POSITIONS: i64 = 1024;

/// For each readout variant `(norm name, normed readout)` and each α of [`REPORTED_ALPHAS`]:
/// the mean KL(p ‖ p_fused) over rows and the share of rows whose argmax agrees, p from
/// `target`'s head on states `h`, p_fused on α·normed + (1 − α)·h. Row chunks outer, so p is
/// projected once per chunk.
fn fused_kls(target: &dyn CausalLm, h: &Tensor, variants: &[(String, Tensor)]) -> Vec<FusedKl> {
    let _no_grad = tch::no_grad_guard();
    let (device, kind) = (target.info().device, target.info().kind);
    let logits = |s: &Tensor| {
        target
            .logits(&s.to_device(device).to_kind(kind))
            .to_kind(Kind::Float)
    };
    let rows = h.size()[0].min(MAX_KL_POSITIONS);
    let h = h.narrow(0, 0, rows);
    let mut sums = vec![(0.0, 0.0); variants.len() * REPORTED_ALPHAS.len()];
    let chunk = 128;
    for start in (0..rows).step_by(chunk as usize) {
        let n = chunk.min(rows - start);
        let h_chunk = h.narrow(0, start, n);
        let p = logits(&h_chunk);
        let log_p = p.log_softmax(-1, Kind::Float);
        let (p_prob, p_top) = (log_p.exp(), p.argmax(-1, false));
        for (v, (_, normed)) in variants.iter().enumerate() {
            let normed = normed.narrow(0, start, n);
            for (i, &alpha) in REPORTED_ALPHAS.iter().enumerate() {
                // `normed` already went through its norm.
                let q = logits(&fused_state(&h_chunk, &normed, MapNorm::None, alpha));
                let log_q = q.log_softmax(-1, Kind::Float);
                let sum = &mut sums[v * REPORTED_ALPHAS.len() + i];
                sum.0 += (&p_prob * (&log_p - log_q))
                    .sum(Kind::Float)
                    .double_value(&[]);
                sum.1 += p_top
                    .eq_tensor(&q.argmax(-1, false))
                    .sum(Kind::Float)
                    .double_value(&[]);
            }
        }
    }
    let rows = rows.max(1) as f64;
    variants
        .iter()
        .flat_map(|(name, _)| REPORTED_ALPHAS.iter().map(move |&a| (name, a)))
        .zip(sums)
        .map(|((name, alpha), (kl, agree))| FusedKl {
            norm: name.clone(),
            alpha,
            kl: kl / rows,
            top1_agreement: agree / rows,
        })
        .collect()
}

/// How the readout `mapped` (h_cal·A + b) of held-out positions compares with the target's states
/// `h` there, and what fusing it in costs; `calibration` (h_cal) adds the identity readout when
/// it has the target's width.
pub(crate) fn reconstruction(
    target: &dyn CausalLm,
    calibration: &Tensor,
    mapped: &Tensor,
    h: &Tensor,
) -> Reconstruction {
    let _no_grad = tch::no_grad_guard();
    let norm_of = |t: &Tensor| t.norm_scalaropt_dim(2.0, [-1], false);
    let cosine = ((mapped * h).sum_dim_intlist(-1, false, Kind::Float)
        / (norm_of(mapped) * norm_of(h)).clamp_min(1e-8))
    .mean(Kind::Float)
    .double_value(&[]);
    let relative_error = ((mapped - h)
        .square()
        .sum_dim_intlist(-1, false, Kind::Float)
        / h.square()
            .sum_dim_intlist(-1, false, Kind::Float)
            .clamp_min(1e-8))
    .mean(Kind::Float)
    .double_value(&[]);
    let with_map: Vec<(String, Tensor)> = MapNorm::ALL
        .iter()
        .map(|n| (n.name().to_string(), n.apply(mapped, h)))
        .collect();
    let mut perfect: Vec<(String, Tensor)> = MapNorm::ALL
        .iter()
        .map(|n| (n.name().to_string(), n.apply(h, h)))
        .collect();
    perfect.push((
        "per_dimension_statistics".into(),
        per_dimension_statistics_norm(h, h),
    ));
    Reconstruction {
        positions: h.size()[0] as usize,
        cosine,
        relative_error,
        fused_kl: fused_kls(target, h, &with_map),
        perfect_map_kl: fused_kls(target, h, &perfect),
        identity_kl: if calibration.size() == h.size() {
            fused_kls(target, h, &[("none".into(), calibration.shallow_clone())])
        } else {
            Vec::new()
        },
    }
}
