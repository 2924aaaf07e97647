//! Binary classification quality of a scorer against labels.

use crate::agreement::average_ranks;

/// Area under the ROC curve of `scores` for binary `labels` (true = positive): the Mann–Whitney
/// statistic, tied scores counting half. `None` when a class is missing.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|&&l| l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    let ranks = average_ranks(scores);
    let positive_rank_sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l)
        .map(|(r, _)| r)
        .sum();
    Some((positive_rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_by_hand() {
        // Positives 0.8, 0.4; negatives 0.5, 0.1: pairs (0.8>0.5, 0.8>0.1, 0.4<0.5, 0.4>0.1) → 3/4.
        assert_eq!(
            roc_auc(&[0.8, 0.4, 0.5, 0.1], &[true, true, false, false]),
            Some(0.75)
        );
        // A tie between a positive and a negative counts half: (1 + 0.5) / 2.
        assert_eq!(roc_auc(&[0.5, 0.9, 0.5], &[true, true, false]), Some(0.75));
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    }
}
