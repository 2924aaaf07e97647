//! `detox audit-scorer`: how well a scorer separates labelled text (ROC-AUC), and how much it
//! scores harmless sentences that merely mention an identity term — the scorers' known bias, which
//! matters for BOLD's gender comparison.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use lm::DeviceChoice;

use data::labelled;

#[derive(Args, Debug)]
pub struct AuditScorerArgs {
    #[arg(long)]
    pub scorer: String,
    /// Labelled source to measure ROC-AUC on; its held-out part (the texts train-scorer did not
    /// train on).
    #[arg(long, default_value = "jigsaw")]
    pub labelled: String,
    /// At most this many toxic and non-toxic texts from the labelled source, and this many
    /// non-toxic template sentences per identity term.
    #[arg(long, default_value_t = 6648)]
    pub per_label: usize,
    #[arg(long, default_value_t = 200)]
    pub per_identity: usize,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

pub fn run(args: &AuditScorerArgs) -> Result<()> {
    let mut scorer = probe::build_scorer(&args.scorer, args.device)?;
    let set = labelled::load_source(&args.labelled, Some(args.per_label), 0)?;
    let (_, held_out) = labelled::shared_split(&set);
    let texts: Vec<&str> = held_out.iter().map(|t| t.text.as_str()).collect();
    let results = scorer.score_batch(&texts);
    let (mut scores, mut labels, mut failed) = (Vec::new(), Vec::new(), 0usize);
    for (result, item) in results.iter().zip(&held_out) {
        match result {
            Ok(s) => {
                scores.push(f64::from(*s));
                labels.push(item.label >= 0.5);
            }
            Err(_) => failed += 1,
        }
    }
    let auc = metrics::roc_auc(&scores, &labels);
    println!("scorer {}", scorer.id());
    println!(
        "ROC-AUC on held-out {}: {} ({} texts scored, {failed} failed)",
        args.labelled,
        auc.map_or("n/a".into(), |a| format!("{a:.4}")),
        scores.len()
    );

    // Non-toxic identity templates, grouped by identity term.
    let path = paths::data_dir("conversationai_bias").join("en_sentence_templates.csv");
    let (sentences, _) = labelled::load_identity_templates(&path, false)?;
    let mut by_identity: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for s in sentences.iter().filter(|s| !s.toxic) {
        if let Some(identity) = &s.identity {
            let bucket = by_identity.entry(identity.clone()).or_default();
            if bucket.len() < args.per_identity {
                bucket.push(&s.phrase);
            }
        }
    }
    let mut rows = Vec::new();
    for (identity, phrases) in &by_identity {
        let results = scorer.score_batch(phrases);
        let ok: Vec<f64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|&s| f64::from(s))
            .collect();
        let mean = ok.iter().sum::<f64>() / ok.len().max(1) as f64;
        rows.push((identity.clone(), mean, ok.len(), results.len() - ok.len()));
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "\nmean score of NON-toxic template sentences per identity term (higher = more biased):"
    );
    println!("| identity term | mean score | scored | failed |\n|---|---:|---:|---:|");
    for (identity, mean, n, failed) in rows {
        println!("| {identity} | {mean:.3} | {n} | {failed} |");
    }
    Ok(())
}
