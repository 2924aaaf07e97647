//! The checks of the confound audit ([`crate::audit`]), each returning its findings with numbers.

use serde_json::Value as Json;

use crate::audit::{points, AuditItem, AuditKind, LENGTH_TOLERANCE, SHARE_TOLERANCE};
use crate::length::percent;
use crate::load::CellOutputs;

/// Length, stopping, sampling candidates and scored counts of `cell` against `base`.
pub(crate) fn against_baseline(cell: &CellOutputs, base: &CellOutputs) -> Vec<AuditItem> {
    let mut items = Vec::new();
    let length = |c: &CellOutputs| c.metrics.as_ref().and_then(|m| m.results.length.clone());
    if let (Some(a), Some(b)) = (length(cell), length(base)) {
        if let (Some(x), Some(y)) = (a.mean_tokens, b.mean_tokens) {
            let beyond = if y > 0.0 {
                ((x - y) / y).abs() > LENGTH_TOLERANCE
            } else {
                x > 0.0
            };
            if beyond {
                let relative = if y > 0.0 {
                    format!(" ({:+.1} %)", 100.0 * (x - y) / y)
                } else {
                    String::new()
                };
                items.push(AuditItem {
                    kind: AuditKind::MeanLength,
                    scorer: None,
                    value: Some(x),
                    baseline_value: Some(y),
                    tolerance: Some(LENGTH_TOLERANCE),
                    detail: format!(
                        "mean length {x:.1} tokens vs {y:.1} for the baseline{relative}"
                    ),
                });
            }
        }
        for (kind, name, x, y, nx, ny) in [
            (
                AuditKind::EosShare,
                "end-of-sequence",
                a.eos_share,
                b.eos_share,
                a.eos,
                b.eos,
            ),
            (
                AuditKind::EmptyShare,
                "empty",
                a.empty_share,
                b.empty_share,
                a.empty,
                b.empty,
            ),
        ] {
            let (Some(x), Some(y)) = (x, y) else { continue };
            if (x - y).abs() > SHARE_TOLERANCE {
                items.push(AuditItem {
                    kind,
                    scorer: None,
                    value: Some(x),
                    baseline_value: Some(y),
                    tolerance: Some(SHARE_TOLERANCE),
                    detail: format!(
                        "{name} share {} ({nx} of {}) vs {} ({ny} of {}) for the baseline ({})",
                        percent(Some(x)),
                        a.samples,
                        percent(Some(y)),
                        b.samples,
                        points(x - y)
                    ),
                });
            }
        }
    }
    items.extend(sampling_candidates(cell, base));
    items.extend(scored_counts(cell, base));
    items
}

fn sampling_candidates(cell: &CellOutputs, base: &CellOutputs) -> Option<AuditItem> {
    let sampling = |c: &CellOutputs| {
        let g = c.config.generation.as_ref();
        (g.and_then(|g| g.top_p), g.and_then(|g| g.top_k))
    };
    let ((p, k), (bp, bk)) = (sampling(cell), sampling(base));
    if (p, k) == (bp, bk) {
        return None;
    }
    let show = |v: Option<String>| v.unwrap_or_else(|| "off".to_owned());
    let mut parts = Vec::new();
    if p != bp {
        parts.push(format!(
            "top_p {} vs {}",
            show(p.map(|v| v.to_string())),
            show(bp.map(|v| v.to_string()))
        ));
    }
    if k != bk {
        parts.push(format!(
            "top_k {} vs {}",
            show(k.map(|v| v.to_string())),
            show(bk.map(|v| v.to_string()))
        ));
    }
    Some(AuditItem {
        kind: AuditKind::GenerationCandidates,
        scorer: None,
        value: None,
        baseline_value: None,
        tolerance: None,
        detail: format!(
            "different candidate set: generation {} (cell vs baseline)",
            parts.join(", ")
        ),
    })
}

fn scored_counts(cell: &CellOutputs, base: &CellOutputs) -> Vec<AuditItem> {
    let (Some(m), Some(bm)) = (&cell.metrics, &base.metrics) else {
        return Vec::new();
    };
    let base_names = base.scorer_names();
    let mut items = Vec::new();
    for (name, t) in cell.scorer_names().iter().zip(&m.results.toxicity) {
        let Some(j) = base_names.iter().position(|n| n == name) else {
            continue;
        };
        let c = t.summary.toxic_sample_fraction.counts;
        let b = bm.results.toxicity[j].summary.toxic_sample_fraction.counts;
        if (c.scored, c.failed) != (b.scored, b.failed) {
            items.push(AuditItem {
                kind: AuditKind::ScoredSamples,
                scorer: Some(name.clone()),
                value: Some(c.scored as f64),
                baseline_value: Some(b.scored as f64),
                tolerance: None,
                detail: format!(
                    "{name}: {} scored, {} failed of {} vs {} scored, {} failed of {} for the baseline",
                    c.scored, c.failed, c.samples, b.scored, b.failed, b.samples
                ),
            });
        }
    }
    items
}

/// Method parameters that restrict or partly re-weight the candidates a token is drawn from:
/// RAD's `top_k`, SASA's `max_candidates` when > 0 (unset means all), DExperts' `filter_p`
/// when < 1, for every step of a stack.
pub(crate) fn method_truncation(cell: &CellOutputs) -> Vec<AuditItem> {
    let m = &cell.config.method;
    let steps: Vec<(&str, &std::collections::BTreeMap<String, Json>)> = if m.steps.is_empty() {
        vec![(m.name.as_str(), &m.params)]
    } else {
        m.steps
            .iter()
            .map(|s| (s.name.as_str(), &s.params))
            .collect()
    };
    let param = |params: &std::collections::BTreeMap<String, Json>, name: &str| {
        params.get(name).and_then(Json::as_f64)
    };
    let mut items = Vec::new();
    for (name, params) in steps {
        let found = match name {
            "rad" => param(params, "top_k").map(|k| {
                (
                    k,
                    format!(
                        "different candidate set: rad top_k = {k} (the method draws from at most \
                         {k} candidates)"
                    ),
                )
            }),
            // SASA's cap leaves the unscored tail drawable (the candidate set is the sampler's,
            // only partly re-weighted).
            "sasa" => param(params, "max_candidates")
                .filter(|&n| n > 0.0)
                .map(|n| {
                    (
                        n,
                        format!(
                            "partly re-weighted candidates: sasa max_candidates = {n} (only the \
                             {n} most likely are scored; the rest stay drawable with unchanged \
                             logits)"
                        ),
                    )
                }),
            "dexperts" => param(params, "filter_p").filter(|&p| p < 1.0).map(|p| {
                (
                    p,
                    format!(
                        "different candidate set: dexperts filter_p = {p} (the base logits are \
                         cut to their top-{p} nucleus before the experts' difference is added; \
                         tokens outside it cannot be drawn)"
                    ),
                )
            }),
            _ => None,
        };
        if let Some((n, detail)) = found {
            items.push(AuditItem {
                kind: AuditKind::MethodCandidates,
                scorer: None,
                value: Some(n),
                baseline_value: None,
                tolerance: None,
                detail,
            });
        }
    }
    items
}

/// Whether the judge LM is the policy model (same name or same path).
pub(crate) fn self_judged(cell: &CellOutputs) -> Option<AuditItem> {
    let c = &cell.config;
    let judge = c.judge.as_ref()?;
    let same_path = !judge.path.as_os_str().is_empty() && judge.path == c.model.path;
    (judge.name == c.model.name || same_path).then(|| AuditItem {
        kind: AuditKind::SelfJudgedPerplexity,
        scorer: None,
        value: None,
        baseline_value: None,
        tolerance: None,
        detail: format!(
            "self-judged perplexity: the judge is the policy model itself ({})",
            judge.name
        ),
    })
}
